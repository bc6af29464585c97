"""Force-RMSE tables: the paper's data file, user files, and measuring against references."""

import json
import math

import numpy as np
import pytest

from uq_flows.ensemble import MemberPredictions, measure_force_rmse, paper_force_rmse, read_rmse_file, write_rmse_file
from uq_flows.errors import InputError

PAPER = {
    "esen-omat": 0.23719,
    "eqV2-31-omat": 0.243286,
    "eqV2-86-omat": 0.24351,
    "7net-omat-2": 0.253712,
    "7net-omat": 0.2643,
    "7net": 0.27751,
    "MACE-omat": 0.350226,
    "orb-omat-20": 0.48766,
    "orb-omat-c-inf-conf": 0.49757,
    "orb-omat-d-20": 0.50635,
    "orb-omat-d-inf": 0.5111,
    "eqV2-31": 0.779,
    "eqV2-86": 0.81703,
    "esen": 1.0775,
    "GRACE-2L-OMAT": 1.384136,
    "GRACE-2L-OAM": 1.5914649,
    "DPA3-V2": 2.46236,
    "DPA3-v1": 6.22137,
    "eqV2-153-omat": 0.2382,
    "eqV2-153": 0.87125,
}


def test_paper_table_is_exactly_the_published_values():
    table = paper_force_rmse()
    assert table == PAPER
    table["esen"] = 99.0  # callers get a copy
    assert paper_force_rmse()["esen"] == 1.0775
    # the offline members are not in the paper's benchmark: no invented values
    assert not any(name.lower().startswith(("chgnet", "sevennet")) for name in paper_force_rmse())


def test_packaged_file_can_be_read_as_an_rmse_file():
    from importlib import resources

    with resources.as_file(resources.files("uq_flows") / "data" / "umlip_force_rmse.json") as path:
        assert read_rmse_file(path) == PAPER
        assert "Table S1" in json.loads(path.read_text())["source"]


def test_write_read_round_trip(tmp_path):
    rmse = {"chgnet-0.3.0": 0.31, "my-mace": 0.12}
    path = tmp_path / "sub" / "rmse.json"
    write_rmse_file(path, rmse, {"reference": "set.extxyz", "n_used": {"my-mace": 3}, "x": np.float64(1.5)})
    data = json.loads(path.read_text())
    assert data == {"rmse": rmse, "meta": {"reference": "set.extxyz", "n_used": {"my-mace": 3}, "x": 1.5}}
    assert read_rmse_file(path) == rmse
    assert [p.name for p in path.parent.iterdir()] == ["rmse.json"]  # no temporary left behind


def test_write_replaces_existing_file_and_validates(tmp_path):
    path = tmp_path / "rmse.json"
    write_rmse_file(path, {"a": 1.0})
    write_rmse_file(path, {"b": 2.0})
    assert read_rmse_file(path) == {"b": 2.0}
    with pytest.raises(InputError):
        write_rmse_file(path, {"a": -1.0})
    assert read_rmse_file(path) == {"b": 2.0}  # a failed write leaves the old file


def test_yaml_and_csv(tmp_path):
    (tmp_path / "r.yaml").write_text("a: 0.2\nb: 1\n")
    assert read_rmse_file(tmp_path / "r.yaml") == {"a": 0.2, "b": 1.0}
    (tmp_path / "r.yml").write_text("rmse:\n  a: 0.2\nmeta:\n  note: x\n")
    assert read_rmse_file(tmp_path / "r.yml") == {"a": 0.2}
    (tmp_path / "r.csv").write_text("member,rmse\nchgnet-0.3.0, 0.3\n\nmy-mace,0.125\n")
    assert read_rmse_file(tmp_path / "r.csv") == {"chgnet-0.3.0": 0.3, "my-mace": 0.125}
    (tmp_path / "swapped.csv").write_text("rmse,member\n0.5,x\n")
    assert read_rmse_file(tmp_path / "swapped.csv") == {"x": 0.5}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.json", "{}"),
        ("blank.json", ""),
        ("list.json", "[0.1, 0.2]"),
        ("negative.json", '{"a": -0.1}'),
        ("zero.json", '{"a": 0}'),
        ("nan.json", '{"a": NaN}'),
        ("inf.yaml", "a: .inf\n"),
        ("text.json", '{"a": "0.1"}'),
        ("bool.yaml", "a: true\n"),
        ("null.yaml", "a:\n"),
        ("empty.yaml", ""),
        ("empty_rmse.json", '{"rmse": {}}'),
        ("broken.json", '{"a": 0.1'),
        ("broken.yaml", "a: [1\n"),
        ("empty.csv", ""),
        ("header_only.csv", "member,rmse\n"),
        ("no_header.csv", "a,0.1\n"),
        ("word.csv", "member,rmse\na,fast\n"),
        ("negative.csv", "member,rmse\na,-1\n"),
        ("short.csv", "member,rmse\na\n"),
        ("twice.csv", "member,rmse\na,0.1\na,0.2\n"),
        ("table.txt", "a 0.1\n"),
    ],
)
def test_bad_rmse_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError):
        read_rmse_file(path)


def test_missing_rmse_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_rmse_file(tmp_path / "nope.json")


def _predictions(forces, n_atoms, status):
    n = len(n_atoms)
    return MemberPredictions(
        member="m",
        n_atoms=np.array(n_atoms),
        energies=np.zeros(n),
        forces=np.asarray(forces, dtype=float),
        stresses=np.full((n, 6), np.nan),
        status=status,
        reasons=[None if s == "ok" else "x" for s in status],
    )


def test_measure_force_rmse_hand_case():
    # structure 0: 1 atom, errors (1, 2, 2) → squared 9; structure 1: 2 atoms, all errors 1 → 6
    # structure 2 failed (its NaN must not count); structure 3 ok but its reference is missing
    predicted = [[1, 2, 2], [1, 1, 1], [1, 1, 1], [np.nan] * 3, [5, 5, 5]]
    reference = [[0, 0, 0], [0, 0, 0], [2, 2, 2], [7, 7, 7], [np.nan, 0, 0]]
    p = _predictions(predicted, [1, 2, 1, 1], ["ok", "ok", "error", "ok"])
    rmse, used = measure_force_rmse(p, np.array(reference, dtype=float))
    assert used == 2
    assert rmse == pytest.approx(math.sqrt((9 + 6) / 9))


def test_measure_force_rmse_errors():
    p = _predictions([[0, 0, 0], [0, 0, 0]], [1, 1], ["ok", "error"])
    with pytest.raises(InputError, match="shape"):
        measure_force_rmse(p, np.zeros((3, 3)))
    with pytest.raises(InputError, match="shape"):
        measure_force_rmse(p, np.zeros(6))
    failed = _predictions([[0, 0, 0]], [1], ["error"])
    with pytest.raises(InputError):
        measure_force_rmse(failed, np.zeros((1, 3)))
