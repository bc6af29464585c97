"""pacemaker backend: the generated input (paper-001 defaults) and a real small fit in the fit environment."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.ace.ace_data import cu_bulk, out_of_distribution
from tests.cli_helpers import run_json
from uq_flows.ace import AceFitOptions, extrapolation_grades, training_set
from uq_flows.ace.pacemaker import PacemakerError, pacemaker_command, pacemaker_input
from uq_flows.io import write_extxyz
from uq_flows.settings import get_settings


def test_input_has_paper_001_defaults():
    config = pacemaker_input(["Cu", "W"], AceFitOptions(n_functions=72), seed=7)
    embedding = config["potential"]["embeddings"]["ALL"]
    assert embedding["npot"] == "FinnisSinclairShiftedScaled" and embedding["ndensity"] == 8
    assert embedding["fs_parameters"][1::2] == [1, 0.5, 0.125, 0.25, 0.375, 0.75, 0.875, 2]  # φ exponents
    bonds = config["potential"]["bonds"]["ALL"]
    assert bonds["radbase"] == "SBessel" and bonds["rcut"] == 5.0
    assert config["fit"]["loss"]["kappa"] == 0.01 and config["fit"]["optimizer"] == "BFGS"
    assert config["fit"]["maxiter"] == 2000 and config["seed"] == 7 and config["cutoff"] == 5.0
    assert config["potential"]["functions"]["number_of_functions_per_element"] == 72
    assert config["potential"]["elements"] == ["Cu", "W"]
    assert "reference_energy" not in config["data"]  # energy_corrected comes with the data


def test_ensembles_start_from_random_coefficients():
    # pacemaker's default zero start ignores the seed: ensemble members would be identical
    single = pacemaker_input(["Cu"], AceFitOptions(), seed=1)["potential"]["functions"]
    members = pacemaker_input(["Cu"], AceFitOptions(ensemble_size=3), seed=1)["potential"]["functions"]
    assert all("coefs_init" not in block for block in single.values() if isinstance(block, dict))
    assert all(block["coefs_init"] == "random" for block in members.values() if isinstance(block, dict))


def test_overrides_are_deep_merged():
    options = AceFitOptions(pacemaker_input={"fit": {"loss": {"kappa": 0.3}}, "backend": {"batch_size": 10}})
    config = pacemaker_input(["Cu"], options, seed=1)
    assert config["fit"]["loss"] == {"kappa": 0.3, "L1_coeffs": 1e-8, "L2_coeffs": 1e-8}
    assert config["backend"]["batch_size"] == 10 and config["fit"]["optimizer"] == "BFGS"


def test_missing_executable_is_a_clear_error(tmp_path):
    with pytest.raises(PacemakerError, match=r"not found .*UQ_FLOWS_PACEMAKER_COMMAND.*make fit-env"):
        pacemaker_command(str(tmp_path / "pacemaker"))


def fit_environment() -> str:
    command = get_settings().pacemaker_command
    if ".venv-fit" not in command or not os.access(command, os.X_OK):
        pytest.fail(f"the fit environment is not built (pacemaker_command={command!r}); run `make fit-env`")
    return command


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_pacemaker_fit_through_the_cli(tmp_path):
    fit_environment()
    write_extxyz(tmp_path / "train.extxyz", cu_bulk(16, seed=0))
    write_extxyz(tmp_path / "test.extxyz", cu_bulk(4, seed=1))
    payload = run_json("fit", tmp_path / "train.extxyz", "--backend", "pacemaker", "--functions", 8, "--steps", 30,
                       "--n-members", 2, "--test", tmp_path / "test.extxyz", "--out", tmp_path / "fit")
    potential = Path(payload["potential"])
    config = yaml.safe_load((potential.parent / "pacemaker" / "input.yaml").read_text())
    assert config["fit"]["maxiter"] == 30 and config["potential"]["embeddings"]["ALL"]["ndensity"] == 8
    assert [Path(p).parent.name for p in payload["potentials"]] == ["member-0", "member-1"]
    assert [m["seed"] for m in payload["members"]] == [42, 43]
    # different seeds → different members (random start), so the committee has a spread
    forces = [m["train_force_rmse"] for m in payload["members"]]
    assert forces[0] != pytest.approx(forces[1], rel=1e-6)
    assert payload["committee_thresholds"]["force_config"] > 1e-4
    # a nonlinear 8-density potential, our reference energy in its metadata, the .yace and .asi beside it
    text = potential.read_text()
    assert "ndensityi: 8" in text and "reference_energy" in text and "pacemaker_version: 0.4.0rc1" in text
    assert potential.with_suffix(".yace").exists() and Path(payload["active_set"]).exists()
    # 30 BFGS steps on 8 functions: far better than predicting zero force
    train = training_set(cu_bulk(16, seed=0))
    zero_force_rmse = float(np.sqrt(np.mean(train.all_forces() ** 2)))
    assert payload["train_force_rmse"] < 0.5 * zero_force_rmse
    assert payload["train_energy_rmse_per_atom"] < 0.02 and payload["test_force_rmse"] < 0.5 * zero_force_rmse
    # our RMSEs from evaluating the written files reproduce pacemaker's own log numbers
    summary = yaml.safe_load(Path(payload["summary"]).read_text())  # JSON is YAML
    reported = summary["members"][0]["pacemaker_reported"]
    first = summary["members"][0]["metrics"]
    assert reported["force_rmse"] == pytest.approx(first["train_force_rmse"], rel=0.01, abs=1e-4)
    assert reported["energy_rmse_per_atom"] == pytest.approx(first["train_energy_rmse_per_atom"], rel=0.01, abs=1e-4)
    grades = extrapolation_grades(potential, train.structures + out_of_distribution(), payload["active_set"])
    kept = summary["members"][0]["active_set_info"]["training_gamma_max"]["Cu"]
    assert kept <= 1.01 + 1e-9
    assert np.median(np.concatenate(grades[:16])) < 1
    dimer_20, dimer_24, squeezed = (g.max() for g in grades[16:])
    # 8 functions see a 2.4 Å dimer (one neighbour near the bulk bond length) as only mildly new;
    # shorter bonds are far out (measured: 6.5, 1.6, 59)
    assert dimer_20 > 4 and squeezed > 20 and dimer_24 > 1
