"""uq-flows score with real offline members on cells of ≤ 16 atoms."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from tests.cli_helpers import run, run_json
from uq_flows.io import read_structures
from uq_flows.records import structure_id

MEMBERS = ("chgnet-0.3.0", "sevennet-0-11jul2024", "chgnet-0.2.0")
MEMBER_ARGS = [arg for m in MEMBERS for arg in ("--model", m)]


def rattled_si(amplitudes):
    out = []
    for k, amplitude in enumerate(amplitudes):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(amplitude, seed=11 + k)
        out.append(atoms)
    return out


@pytest.mark.slow
def test_u_grows_with_distortion_and_outputs_compose(tmp_path):
    structures = rattled_si([0.01, 0.1, 0.3])
    write(tmp_path / "in.extxyz", structures)
    write(tmp_path / "POSCAR", bulk("Cu", "fcc", a=3.61, cubic=True).copy(), format="vasp")
    result = run_json("score", tmp_path / "in.extxyz", tmp_path / "POSCAR", *MEMBER_ARGS,
                      "--out", tmp_path / "scored.extxyz", "--predictions", tmp_path / "preds")
    rows = result["structures"]
    assert [r["id"] for r in rows[:3]] == [structure_id(a) for a in structures]
    assert [r["formula"] for r in rows] == ["Si8", "Si8", "Si8", "Cu4"]
    assert all(r["status"] == "ok" for r in rows)
    u = [r["U"] for r in rows[:3]]
    assert u[0] < u[1] < u[2] and u[0] < 0.1
    assert result["weights_source"] == "equal" and result["warnings"] == []
    assert [m["name"] for m in result["members"]] == list(MEMBERS)

    scored = read_structures(tmp_path / "scored.extxyz")
    assert np.allclose([a.info["U"] for a in scored], [r["U"] for r in rows])

    # the per-member prediction files feed evaluate: same members, equal weights, same U
    evaluation = run_json(
        "evaluate", "--reference", tmp_path / "preds" / "chgnet-0.3.0.extxyz",
        *[arg for m in MEMBERS for arg in ("--prediction", f"{m}={tmp_path / 'preds' / (m + '.extxyz')}")],
        "--weights", "equal", "--uc", "inf",
    )
    assert evaluation["u"]["max"] == pytest.approx(max(r["U"] for r in rows), rel=1e-6)


@pytest.mark.slow
def test_unscorable_structures_fail_loudly_and_write_nothing(tmp_path):
    structures = rattled_si([0.1, 0.1])
    structures[1].numbers[0] = 118  # Og: no member covers it
    write(tmp_path / "in.extxyz", structures)
    out = tmp_path / "scored.extxyz"
    result = run("score", tmp_path / "in.extxyz", *MEMBER_ARGS, "--out", out, "--json", expect=1)
    payload = json.loads(result.stdout)
    assert [r["status"] for r in payload["structures"]] == ["ok", "unsupported_element"]
    assert payload["structures"][1]["U"] is None and "Og" in payload["structures"][1]["reason"]
    assert "could not be scored" in result.stderr and not out.exists()

    kept = run_json("score", tmp_path / "in.extxyz", *MEMBER_ARGS, "--out", out, "--allow-failed")
    assert kept["n_failed"] == 1 and out.exists()
    assert [a.info["status"] for a in read_structures(out)] == ["ok", "unsupported_element"]


@pytest.mark.slow
def test_nan_member_gives_status_not_number(tmp_path):
    write(tmp_path / "in.extxyz", rattled_si([0.1]))
    result = run("score", tmp_path / "in.extxyz", "--model", "chgnet-0.3.0",
                 "--model", "nan=ase:uqf_ensemble_calculators:NaNForces", "--json", expect=1)
    row = json.loads(result.stdout)["structures"][0]
    assert row["status"] == "non_finite" and row["U"] is None and row["reason"].startswith("nan:")


def test_functional_mix_is_warned(tmp_path):
    from uq_flows.ensemble.members import parse_member
    from uq_flows.ensemble.scoring import functional_warnings

    specs = [parse_member(n) for n in ("chgnet-0.3.0", "chgnet-r2scan", "ase:ase.calculators.emt:EMT")]
    (warning,) = functional_warnings(specs)
    assert "r2SCAN: chgnet-r2scan" in warning and "PBE: chgnet-0.3.0" in warning
    assert functional_warnings(specs[:1] + specs[2:]) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "chgnet-0.3.0", "--model", "no-such-model"], "no-such-model"),
        (["--model", "chgnet-0.3.0"], "at least two"),
        (["--model", "chgnet-0.3.0", "--model", "chgnet-0.2.0", "--weights", "paper"], "no force RMSE"),
        (["--model", "chgnet-0.3.0", "--model", "chgnet-0.2.0", "--out", "x.csv"], "must end in"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, args, message):
    write(tmp_path / "in.extxyz", rattled_si([0.1]))
    result = run("score", tmp_path / "in.extxyz", *args, expect=2)
    assert message in result.stderr


def test_empty_input_file_exit_2(tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    result = run("score", tmp_path / "empty.extxyz", "--model", "chgnet-0.3.0", "--model", "chgnet-0.2.0", expect=2)
    assert "empty" in result.stderr


def too_close_pair():
    """Two Cu atoms 0.1 Å apart in a 6 Å cell: a broken structure, not a hard one."""
    return Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.1]], cell=[6, 6, 6], pbc=True)


BROKEN_MEMBERS = [arg for k in (1, 2) for arg in ("--model", f"broken{k}=ase:uqf_ensemble_calculators:BrokenInit")]


def test_non_finite_positions_exit_2_before_any_model_and_write_nothing(tmp_path):
    structures = rattled_si([0.1, 0.1])
    structures[1].positions[5] = [np.nan, 1.0, 1.0]
    write(tmp_path / "in.extxyz", structures)
    out, predictions = tmp_path / "scored.extxyz", tmp_path / "preds"
    # members that cannot load: reaching a model would fail with another message
    result = run("score", tmp_path / "in.extxyz", *BROKEN_MEMBERS, "--out", out, "--predictions", predictions,
                 "--allow-failed", expect=2)
    assert f"{tmp_path / 'in.extxyz'}: structure 1 has non-finite positions on atoms [5]" in result.stderr
    assert not out.exists() and not predictions.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_bad_min_distance_exit_2(tmp_path, value):
    write(tmp_path / "in.extxyz", rattled_si([0.1]))
    result = run("score", tmp_path / "in.extxyz", *BROKEN_MEMBERS, "--min-distance", value, expect=2)
    assert "minimum distance must be a finite number ≥ 0 Å" in result.stderr


def test_an_all_rejected_input_loads_no_member(tmp_path):
    write(tmp_path / "in.extxyz", [too_close_pair()])
    result = run("score", tmp_path / "in.extxyz", *BROKEN_MEMBERS, "--json", expect=1)
    (row,) = json.loads(result.stdout)["structures"]
    assert row["status"] == "rejected" and row["U"] is None
    assert row["reason"] == "atoms 0.100 Å apart, closer than the minimum distance 0.5 Å"


@pytest.mark.slow
def test_too_close_atoms_are_rejected_not_scored_by_real_members(tmp_path):
    copper = bulk("Cu", "fcc", a=3.61, cubic=True)
    copper.rattle(0.05, seed=2)
    write(tmp_path / "in.extxyz", [copper, too_close_pair()])
    members = [arg for m in MEMBERS[:2] for arg in ("--model", m)]
    result = run("score", tmp_path / "in.extxyz", *members, "--json", expect=1)
    assert "1 of 2 structures could not be scored" in result.stderr
    kept = run_json("score", tmp_path / "in.extxyz", *members, "--allow-failed",
                    "--out", tmp_path / "scored.extxyz", "--predictions", tmp_path / "preds")
    rows = kept["structures"]
    assert [r["status"] for r in rows] == ["ok", "rejected"] and kept["min_distance"] == 0.5
    assert rows[0]["U"] < 1 and rows[1]["U"] is None and rows[1]["mean_energy"] is None
    assert "0.100 Å apart" in rows[1]["reason"]
    assert [a.info["status"] for a in read_structures(tmp_path / "scored.extxyz")] == ["ok", "rejected"]
    for member in MEMBERS[:2]:  # no member predicted the pair: its labels are NaN
        predicted = read_structures(tmp_path / "preds" / f"{member}.extxyz")
        assert np.isfinite(predicted[0].get_forces()).all()
        assert np.isnan(predicted[1].get_potential_energy()) and np.isnan(predicted[1].get_forces()).all()

    # what the screen prevents: with it relaxed, the members give the pair an "ok" and a wild U
    relaxed = run_json("score", tmp_path / "in.extxyz", *members, "--min-distance", "0.05")
    assert [r["status"] for r in relaxed["structures"]] == ["ok", "ok"]
    assert relaxed["structures"][1]["U"] > 10 * relaxed["structures"][0]["U"]
