"""uq-flows label → fit → gamma on the command line (linear ACE), and its errors."""

import json
import re
from pathlib import Path

import pytest
from ase.build import bulk
from ase.io import write

from tests.ace.ace_data import cu_bulk, out_of_distribution
from tests.cli_helpers import run, run_json
from uq_flows.io import write_extxyz
from uq_flows.records import structure_id
from uq_flows.settings import get_settings


def said(result, text: str) -> bool:
    """``text`` in the command's stderr, ignoring how rich wrapped the lines."""
    return re.sub(r"\s+", "", text) in re.sub(r"\s+", "", result.stderr)


@pytest.fixture(scope="module")
def labelled_by_the_labelling_stage(tmp_path_factory):
    """Training and test pickles written by `uq-flows label` (EMT as the teacher)."""
    folder = tmp_path_factory.mktemp("labelled")
    for name, structures in (("train", cu_bulk(24, seed=0)), ("test", cu_bulk(6, seed=1))):
        for atoms in structures:
            atoms.calc = None
        write(folder / f"{name}-candidates.extxyz", structures)
        run_json("label", folder / f"{name}-candidates.extxyz", "--model", "emt=ase:ase.calculators.emt:EMT",
                 "--out", folder / f"{name}.pkl.gz")
    return folder / "train.pkl.gz", folder / "test.pkl.gz"


@pytest.fixture(scope="module")
def fitted_ensemble(labelled_by_the_labelling_stage, tmp_path_factory):
    train, test = labelled_by_the_labelling_stage
    out = tmp_path_factory.mktemp("fit") / "ace"
    payload = run_json("fit", train, "--backend", "linear", "--test", test, "--n-members", 3, "--functions", 20,
                       "--out", out)
    return payload, out


def test_fit_json_contract(fitted_ensemble):
    payload, out = fitted_ensemble
    assert payload["potential"] == payload["potentials"][0] == str(out / "member-0" / "potential.yaml")
    assert len(payload["potentials"]) == 3 and all(Path(p).exists() for p in payload["potentials"])
    assert payload["active_set"] == str(out / "member-0" / "potential.asi") and Path(payload["active_set"]).exists()
    assert payload["metrics_of"] == "ensemble mean" and payload["n_train"] == 24 and payload["n_test"] == 6
    assert payload["train_energy_rmse_per_atom"] < 1e-3 and payload["train_force_rmse"] < 0.02
    assert payload["test_energy_rmse_per_atom"] < 1e-3 and payload["test_force_rmse"] < 0.02
    assert set(payload["committee_thresholds"]) == {"energy", "force_config", "force_atom"}
    assert json.loads(Path(payload["summary"]).read_text())["n_train"] == 24


def test_gamma_json_in_input_order_across_files(fitted_ensemble, tmp_path):
    payload, _ = fitted_ensemble
    in_domain, ood = cu_bulk(2, seed=7), out_of_distribution()
    write_extxyz(tmp_path / "a.extxyz", in_domain)
    write(tmp_path / "b.extxyz", ood)
    result = run_json("gamma", "--model", payload["potential"], tmp_path / "a.extxyz", tmp_path / "b.extxyz")
    rows = result["structures"]
    assert [r["id"] for r in rows] == [structure_id(a) for a in in_domain + ood]
    assert result["active_set"] == payload["active_set"]  # found beside the potential
    assert all(r["gamma"] == pytest.approx(max(r["gamma_atoms"])) for r in rows)
    assert [len(r["gamma_atoms"]) for r in rows] == [4, 8, 2, 2, 4]
    assert max(r["gamma"] for r in rows[:2]) < 2 and min(r["gamma"] for r in rows[2:]) > 15
    assert result["n_extrapolative"] >= 3 and "committee" not in result


def test_gamma_with_the_ensemble_adds_committee_uq(fitted_ensemble, tmp_path):
    payload, out = fitted_ensemble
    write(tmp_path / "ood.extxyz", out_of_distribution())
    args = [a for p in payload["potentials"] for a in ("--model", p)]
    result = run_json("gamma", *args, tmp_path / "ood.extxyz")
    committee = result["committee"]
    assert committee["thresholds_source"] == str(out / "fit.json") and committee["n_novel"] == 3
    assert committee["thresholds"] == pytest.approx(payload["committee_thresholds"])
    for row in result["structures"]:
        assert row["novel"] is True and row["force_uncertainty"] == pytest.approx(max(row["force_uncertainty_atoms"]))


def test_unknown_element_in_structures_to_score_is_exit_2(fitted_ensemble, tmp_path):
    payload, _ = fitted_ensemble
    write(tmp_path / "mixed.extxyz", [bulk("Cu", "fcc", a=3.61), bulk("Ag", "fcc", a=4.09)])
    result = run("gamma", "--model", payload["potential"], tmp_path / "mixed.extxyz", "--json", expect=2)
    error = json.loads(result.stdout)["error"]  # with --json, the error is the one JSON object
    assert error["kind"] == "bad_input" and "Ag not in the potential" in error["message"]
    assert said(result, "mixed.extxyz:1") and said(result, "Ag not in the potential")


def test_bad_training_inputs_are_exit_2(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert said(run("fit", empty, "--backend", "linear", "--out", tmp_path / "o", expect=2), "file is empty")
    unlabelled = tmp_path / "unlabelled.extxyz"
    write(unlabelled, bulk("Cu", "fcc", a=3.61))
    result = run("fit", unlabelled, "--backend", "linear", "--out", tmp_path / "o", expect=2)
    assert said(result, "unlabelled.extxyz: structure 0 has no energy")
    assert said(run("fit", empty, "--backend", "mace", expect=2), "--backend must be one of pacemaker, linear")
    assert not (tmp_path / "o").exists()


def test_missing_pacemaker_names_the_setting_and_make_target(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_PACEMAKER_COMMAND", str(tmp_path / "no-such-env" / "bin" / "pacemaker"))
    get_settings.cache_clear()
    write_extxyz(tmp_path / "train.extxyz", cu_bulk(12, seed=0))
    result = run("fit", tmp_path / "train.extxyz", "--backend", "pacemaker", "--functions", 5, "--out", tmp_path / "o",
                 expect=2)
    assert said(result, "UQ_FLOWS_PACEMAKER_COMMAND") and said(result, "make fit-env")
    assert said(result, "not found")


def test_gamma_without_an_active_set_says_where_to_get_one(fitted_ensemble, tmp_path):
    payload, _ = fitted_ensemble
    lonely = tmp_path / "lonely.yaml"
    lonely.write_text(Path(payload["potential"]).read_text())
    write(tmp_path / "s.extxyz", bulk("Cu", "fcc", a=3.61))
    result = run("gamma", "--model", lonely, tmp_path / "s.extxyz", expect=2)
    assert said(result, "no active set beside") and said(result, "--active-set")
