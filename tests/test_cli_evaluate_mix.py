"""evaluate and mix on precomputed predictions (EMT reference, perturbed fake members)."""

import math

import numpy as np
import pytest

from tests.cli_helpers import run, run_json
from tests.conftest import perturbed
from uq_flows.io import read_labels, read_structures, with_labels, write_extxyz


def predictions(paths, *names):
    return [arg for name in names for arg in ("--prediction", f"{name}={paths[name]}")]


def test_evaluate_ranks_members_and_counts_thresholds(labelled_set):
    reference, paths = labelled_set
    result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(paths, "poor", "good", "fair"),
        "--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=0.8", "--top-n", "2",
        "--uc", "0", "--uc", "inf", "--uc", "0.15",
    )
    assert result["n_configs"] == 12 and result["n_atoms"] == sum(len(a) for a in reference)
    assert [m["name"] for m in result["members"]] == ["good", "fair"]
    assert [m["rank"] for m in result["members"]] == [1, 2]
    assert np.allclose([m["weight"] for m in result["members"]], [2 / 3, 1 / 3])
    assert result["spearman"] > 0.8  # member spread and error both grow along the set
    none, everything, middle = result["thresholds"]
    assert none["n_below"] == 0 and none["dft_atom_fraction"] == 1 and math.isnan(none["force_rmse_below"] or math.nan)
    assert everything["n_below"] == 12 and everything["dft_atom_fraction"] == 0
    assert everything["force_rmse_below"] == pytest.approx(result["force_rmse"])
    assert 0 < middle["n_below"] < 12
    assert middle["dft_atom_fraction"] == pytest.approx(1 - middle["n_atoms_below"] / result["n_atoms"])


def test_evaluate_equal_weights_by_default_for_unknown_members(labelled_set):
    _, paths = labelled_set
    result = run_json("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair"))
    assert result["weights_source"] == "equal"
    assert [m["weight"] for m in result["members"]] == [0.5, 0.5]


def test_variant_zero_ignores_rmse(labelled_set):
    _, paths = labelled_set
    # three members: with two, both deviate equally from the plain mean and weights cannot matter
    common = ("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"))
    rmse = ("--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=1.0")
    weighted = run_json(*common, *rmse, "--variant", "1")
    equal0 = run_json(*common, *rmse, "--variant", "0")
    equal1 = run_json(*common, "--variant", "1", "--weights", "equal")
    assert equal0["u"] == pytest.approx(equal1["u"])
    assert weighted["u"]["max"] != pytest.approx(equal0["u"]["max"])


def test_per_atom_prediction_energies(labelled_set, tmp_path):
    reference, paths = labelled_set
    per_atom = []
    for atoms in read_structures(paths["good"]):
        per_atom.append(with_labels(atoms, atoms.get_potential_energy() / len(atoms), atoms.get_forces()))
    write_extxyz(tmp_path / "good_pa.extxyz", per_atom)
    total = run_json("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair"))
    mixed_conv = run_json(
        "evaluate", "--reference", paths["ref"], "--prediction", f"good={tmp_path / 'good_pa.extxyz'}",
        "--prediction", f"fair={paths['fair']}", "--prediction-energy", "per-atom",
    )
    # fair is stored as totals: reading it as per-atom multiplies its energies by N
    assert mixed_conv["energy_rmse_per_atom"] > 10 * total["energy_rmse_per_atom"]
    both = paths.copy()
    write_extxyz(tmp_path / "fair_pa.extxyz", [
        with_labels(a, a.get_potential_energy() / len(a), a.get_forces()) for a in read_structures(paths["fair"])
    ])
    both["good"], both["fair"] = tmp_path / "good_pa.extxyz", tmp_path / "fair_pa.extxyz"
    per_atom_result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(both, "good", "fair"), "--prediction-energy", "per-atom"
    )
    assert per_atom_result["energy_rmse_per_atom"] == pytest.approx(total["energy_rmse_per_atom"])


def test_evaluate_plots_and_target(labelled_set, tmp_path):
    _, paths = labelled_set
    result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"),
        "--plot", tmp_path / "figs", "--target-rmse", "0.05",
    )
    for png in result["plots"]:
        with open(png, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["uc_for_target_rmse"]["uc"] > 0


def test_mix_takes_energy_and_forces_from_chosen_members(labelled_set, tmp_path):
    reference, paths = labelled_set
    common = ("--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"),
              "--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=0.8", "--top-n", "2")
    evaluation = run_json("evaluate", *common, "--uc", "0.15")
    out = tmp_path / "mixed.pkl.gz"
    result = run_json("mix", *common, "--uc", "0.15", "--energy-from", "poor", "--forces-from", "fair", "--out", out)

    threshold = evaluation["thresholds"][0]
    assert result["n_teacher"] == threshold["n_below"]
    assert result["dft_atom_fraction"] == pytest.approx(threshold["dft_atom_fraction"])
    assert result["dft_config_fraction"] == pytest.approx(threshold["dft_config_fraction"])

    mixed = read_structures(out)
    poor, fair = read_structures(paths["poor"]), read_structures(paths["fair"])
    sq_energy, sq_force = [], []
    for j, atoms in enumerate(mixed):
        teacher = atoms.info["label_source"] == "teacher"
        assert teacher == (atoms.info["U"] < 0.15)
        expected_e = (poor if teacher else reference)[j].get_potential_energy()
        expected_f = (fair if teacher else reference)[j].get_forces()
        assert atoms.get_potential_energy() == pytest.approx(expected_e)
        assert np.allclose(atoms.get_forces(), expected_f)
        sq_energy.append(((expected_e - reference[j].get_potential_energy()) / len(atoms)) ** 2)
        sq_force.extend(((expected_f - reference[j].get_forces()) ** 2).ravel())
    assert result["energy_rmse_per_atom"] == pytest.approx(np.sqrt(np.mean(sq_energy)))
    assert result["force_rmse"] == pytest.approx(np.sqrt(np.mean(sq_force)))


def test_mix_writes_extxyz_with_provenance(labelled_set, tmp_path):
    _, paths = labelled_set
    out = tmp_path / "mixed.extxyz"
    result = run_json("mix", "--reference", paths["ref"], *predictions(paths, "good", "fair"), "--uc", "inf",
                      "--energy-from", "good", "--forces-from", "good", "--out", out)
    assert result["dft_atom_fraction"] == 0
    structures = read_structures(out)
    assert {a.info["energy_source"] for a in structures} == {"good"}
    assert all(a.info["uq_id"].startswith("uq-") for a in structures)


@pytest.mark.parametrize("problem", ["fewer", "atoms", "nan", "elements"])
def test_mismatched_predictions_are_rejected_without_output(labelled_set, tmp_path, problem):
    reference, paths = labelled_set
    bad = perturbed(reference, 0.01, 9)
    if problem == "fewer":
        bad = bad[:-1]
    elif problem == "atoms":
        bad[3] = bad[3][:-1]
    elif problem == "nan":
        bad[2].calc.results["forces"][0, 1] = np.nan
    else:
        bad[0].numbers[0] = 29 + 18  # Ag instead of Cu
    write_extxyz(tmp_path / "bad.extxyz", bad)
    out = tmp_path / "out.pkl.gz"
    result = run("mix", "--reference", paths["ref"], "--prediction", f"good={paths['good']}",
                 "--prediction", f"bad={tmp_path / 'bad.extxyz'}", "--uc", "1",
                 "--energy-from", "good", "--forces-from", "good", "--out", out, expect=2)
    assert "error" in result.stderr
    assert not out.exists()


def test_usage_errors(labelled_set, tmp_path):
    _, paths = labelled_set
    base = ("--reference", paths["ref"], *predictions(paths, "good", "fair"))
    assert "no --prediction of that name" in run("mix", *base, "--uc", "1", "--energy-from", "nope",
                                                 "--forces-from", "good", "--out", tmp_path / "o.xyz", expect=2).stderr
    assert "must end in" in run("mix", *base, "--uc", "1", "--energy-from", "good", "--forces-from", "good",
                                "--out", tmp_path / "o.txt", expect=2).stderr
    assert "--top-n ranks members by RMSE" in run("evaluate", *base, "--top-n", "1", expect=2).stderr
    assert "NAME=VALUE" in run("evaluate", "--reference", paths["ref"], "--prediction", str(paths["good"]), expect=2).stderr
    assert "--rmse for" in run("evaluate", *base, "--rmse", "x=1", expect=2).stderr
    assert list(tmp_path.glob("o.*")) == []
