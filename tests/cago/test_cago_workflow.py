"""calibrate / cago / explore / generate from the CLI and as Makers (Lennard-Jones committee)."""


import pytest
from ase.build import bulk
from ase.io import write
from jobflow import Flow, run_locally

from tests.cago.lj_members import COMMITTEE, truth
from tests.cli_helpers import run, run_json
from tests.conftest import flow_output
from uq_flows.cago.jobs import CagoMaker
from uq_flows.cago.optimizer import CagoSettings
from uq_flows.explore.jobs import GenerateMaker, MDExploreMaker
from uq_flows.explore.md import MDSettings
from uq_flows.io import read_structures, with_labels

COMMITTEE_ARGS = [arg for entry in COMMITTEE for arg in ("--model", entry)]


def labelled_lj(n=6):
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.65, cubic=True)
        atoms.rattle(0.03 + 0.03 * k, seed=k)
        atoms.calc = truth()
        out.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


def test_calibrate_then_cago_from_the_command_line(tmp_path):
    write(tmp_path / "validation.extxyz", labelled_lj())
    calibration = run_json("calibrate", tmp_path / "validation.extxyz", *COMMITTEE_ARGS,
                           "--out", tmp_path / "cal.json", "--plot", tmp_path / "figs")
    assert calibration["fitted"]["z_std"] == pytest.approx(1.0, abs=0.15)
    assert calibration["n_members"] == 4 and len(calibration["committee"]) == 4
    n_atoms = sum(len(atoms) for atoms in labelled_lj())
    assert calibration["fitted"]["n_atoms"] <= n_atoms and calibration["uncalibrated"]["n_atoms"] == n_atoms
    assert calibration["uncalibrated"]["n_errors"] == 4 * n_atoms  # every member's error on every atom
    with open(calibration["plot"], "rb") as handle:
        assert handle.read(4) == b"\x89PNG"

    seeds = labelled_lj(2)
    write(tmp_path / "seeds.extxyz", seeds)
    result = run_json("cago", tmp_path / "seeds.extxyz", *COMMITTEE_ARGS[:6], "--target", "0.1",
                      "--calibration", tmp_path / "cal.json", "--steps", "20", "--out", tmp_path / "adv.extxyz")
    assert result["n_seeds"] == 2 and result["n_kept"] == 2 and result["calibration"].endswith("cal.json")
    assert all(abs(row["mean_sigma_cal"] - 0.1) < 0.02 for row in result["structures"])
    written = read_structures(tmp_path / "adv.extxyz")
    assert [a.info["cago_seed"] for a in written] == [0, 1]


def test_cago_refuses_a_calibration_of_another_committee(tmp_path):
    write(tmp_path / "validation.extxyz", labelled_lj())
    run_json("calibrate", tmp_path / "validation.extxyz", *COMMITTEE_ARGS[:4], "--out", tmp_path / "cal.json")
    result = run("cago", tmp_path / "validation.extxyz", *COMMITTEE_ARGS, "--target", "0.1",
                 "--calibration", tmp_path / "cal.json", "--out", tmp_path / "adv.extxyz", expect=2)
    assert "fitted for another committee" in result.stderr and not (tmp_path / "adv.extxyz").exists()
    (tmp_path / "broken.json").write_text("{")
    assert "not a calibration file" in run("cago", tmp_path / "validation.extxyz", *COMMITTEE_ARGS, "--target", "0.1",
                                           "--calibration", tmp_path / "broken.json", "--out", tmp_path / "a.extxyz",
                                           expect=2).stderr


def test_generate_and_explore_from_the_command_line(tmp_path):
    generated = run_json("generate", "Cu", "--n", "2", "--kind", "strained", "--kind", "vacancies",
                         "--out", tmp_path / "gen.extxyz")
    assert generated["kinds"] == {"strained-rattled": 2, "vacancy": 1} and generated["max_atoms"] == 16
    explored = run_json("explore", tmp_path / "gen.extxyz", "--model", "emt=ase:ase.calculators.emt:EMT",
                        "--steps", "60", "--every", "20", "--temperature", "300", "--temperature", "600",
                        "--out", tmp_path / "md.extxyz")
    assert explored["n_snapshots"] == 9 and explored["n_unstable"] == 0
    assert len(read_structures(tmp_path / "md.extxyz")) == 9
    assert "--ensemble must be" in run("explore", tmp_path / "gen.extxyz", "--model", "x", "--ensemble", "nve",
                                       "--out", tmp_path / "x.extxyz", expect=2).stderr
    cold = run("explore", tmp_path / "gen.extxyz", "--model", "emt=ase:ase.calculators.emt:EMT",
               "--temperature", "300", "--temperature", "-300", "--out", tmp_path / "x.extxyz", expect=2).stderr
    assert "--temperature (value 2): Input should be greater than 0" in cold and not (tmp_path / "x.extxyz").exists()


def test_generate_explore_cago_as_makers(job_store):
    generate = GenerateMaker(n=1, kinds=["strained"]).make(["Cu"])
    md = MDExploreMaker(calculator="emt=ase:ase.calculators.emt:EMT",
                        settings=MDSettings(steps=40, snapshot_every=20)).make(generate.output)
    adversarial = CagoMaker(settings=CagoSettings(max_steps=10)).make(md.output.snapshots, COMMITTEE[:3])
    flow = Flow([generate, md, adversarial], output=adversarial.output)
    assert (generate.config.manager_config["_category"], md.config.manager_config["_category"],
            adversarial.config.manager_config["_category"]) == ("cpu", "gpu", "gpu")
    run_locally(flow, store=job_store, ensure_success=True)
    document = flow_output(job_store, flow)
    assert len(document.seeds) == 2 and not document.calibrated
    assert len(document.structures) == sum(s.kept for s in document.seeds)
    assert all(abs(s.mean_sigma_cal - 0.1) < 0.05 for s in document.seeds if s.converged)
