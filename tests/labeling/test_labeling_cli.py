"""uq-flows label: JSON contract, outputs, failures."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from tests.cli_helpers import run, run_json
from tests.labeling.cp2k_support import ensure_cp2k
from uq_flows.io import read_structures
from uq_flows.records import structure_id

sys.path.insert(0, str(Path(__file__).parents[1] / "ensemble"))  # test calculators


def cu_cells():
    cells = []
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=k)
        cells.append(atoms)
    return cells


def test_teacher_label_json_matches_the_calculator(tmp_path):
    cells = cu_cells()
    write(tmp_path / "in.extxyz", cells)
    result = run_json("label", tmp_path / "in.extxyz", "--model", "emt=ase:ase.calculators.emt:EMT",
                      "--out", tmp_path / "out.pkl.gz")
    assert [x["id"] for x in result["labels"]] == [structure_id(a) for a in cells]
    for row, atoms in zip(result["labels"], cells):
        atoms.calc = EMT()
        assert row["status"] == "ok" and row["kind"] == "teacher" and row["source"] == "emt"
        assert row["energy"] == pytest.approx(atoms.get_potential_energy())
        assert np.allclose(row["forces"], atoms.get_forces()) and len(row["stress"]) == 6
    written = read_structures(tmp_path / "out.pkl.gz")
    assert [a.info["label_source"] for a in written] == ["teacher"] * 3


def test_failed_labels_exit_1_and_write_nothing(tmp_path):
    cells = cu_cells()
    cells[1].numbers[:] = 79  # FailsOnCopper raises for any Cu: the all-Au cell survives
    write(tmp_path / "in.extxyz", cells)
    out = tmp_path / "out.extxyz"
    result = run("label", tmp_path / "in.extxyz", "--model", "bad=ase:uqf_ensemble_calculators:FailsOnCopper",
                 "--out", out, "--json", expect=1)
    rows = json.loads(result.stdout)["labels"]
    assert [r["status"] for r in rows] == ["failed", "ok", "failed"]
    assert rows[0]["energy"] is None and rows[0]["reason"].startswith("bad: error:")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "chgnet-0.3.0", "--kpoints", "2", "2", "2"], "--kpoints applies"),
        (["--model", "cp2k", "--forces-from", "chgnet-0.3.0"], "--forces-from applies"),
        (["--model", "nonsense"], "nonsense"),
    ],
)
def test_usage_errors(tmp_path, args, message):
    write(tmp_path / "in.extxyz", cu_cells())
    assert message in run("label", tmp_path / "in.extxyz", *args, expect=2).stderr


@pytest.mark.slow
def test_cp2k_label_from_the_command_line(tmp_path):
    ensure_cp2k()
    atoms = bulk("Si", "diamond", a=5.40)
    atoms.rattle(0.05, seed=1)
    write(tmp_path / "POSCAR", atoms, format="vasp")
    result = run_json("label", tmp_path / "POSCAR", "--model", "cp2k", "--kpoints", "2", "2", "2",
                      "--workdir", tmp_path / "runs")
    (row,) = result["labels"]
    assert row["status"] == "ok" and row["source"] == "cp2k" and row["energy"] < -200
    assert np.array(row["forces"]).shape == (2, 3)
    assert (tmp_path / "runs" / f"cp2k-{row['id']}" / "uq.out").exists()
