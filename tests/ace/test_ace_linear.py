"""Real linear ACE fits (pyace) on EMT-labelled Cu and Cu/Al: accuracy, files, γ (paper 000)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk

from tests.ace.ace_data import cu_al, cu_bulk, out_of_distribution
from uq_flows.ace import AceCalculator, AceFitOptions, extrapolation_grades, fit_ace, training_set
from uq_flows.ace.data import fit_reference_energies
from uq_flows.ace.linear import fit_linear_ace, row_weights
from uq_flows.ace.potential import REFERENCE_KEY, predict
from uq_flows.errors import InputError


def test_linear_fit_is_accurate_on_held_out_cells(cu_linear):
    metrics = cu_linear.metrics
    assert cu_linear.metrics_of == "potential" and cu_linear.n_train == 24 and cu_linear.n_test == 8
    # EMT Cu rattled by ≤ 0.12 Å: 20 linear functions reach ~0.2 meV/atom and ~5 meV/Å
    assert metrics.train_energy_rmse_per_atom < 1e-3 and metrics.train_force_rmse < 0.015
    assert metrics.test_energy_rmse_per_atom < 1e-3 and metrics.test_force_rmse < 0.015
    assert cu_linear.functions_per_element == {"Cu": 20}
    summary = json.loads((Path(cu_linear.out) / "fit.json").read_text())
    assert summary["metrics"]["test_force_rmse"] == pytest.approx(metrics.test_force_rmse)


def test_files_carry_the_reference_energy_and_give_total_energies(cu_linear, cu_test):
    yaml_path, yace_path = Path(cu_linear.potential), Path(cu_linear.members[0].potential_yace)
    reference = cu_linear.reference_energies["Cu"]
    stored = json.loads(yaml.safe_load(yaml_path.read_text())["metadata"][REFERENCE_KEY])
    assert stored == {"Cu": pytest.approx(reference), "shift": 0.0}
    assert f"E0: [{reference!r}]" in yace_path.read_text()
    e_yaml, f_yaml = predict(AceCalculator(yaml_path), cu_test.structures)
    e_yace, f_yace = predict(AceCalculator(yace_path), cu_test.structures)
    assert np.allclose(e_yaml, e_yace, atol=1e-8) and np.allclose(np.concatenate(f_yaml), np.concatenate(f_yace))
    # total energies: within a few meV/atom of EMT, while the reference alone is N·ē
    per_atom_error = (e_yaml - cu_test.energies) / cu_test.n_atoms
    assert np.abs(per_atom_error).max() < 0.01
    atoms = cu_test.structures[0].copy()
    atoms.calc = AceCalculator(yaml_path)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())


def test_reference_energies_solve_composition_least_squares():
    structures = cu_al(10, seed=3)
    training = training_set(structures)
    reference = fit_reference_energies(training)
    counts = np.array([[a.get_chemical_symbols().count(e) for e in ("Al", "Cu")] for a in structures])
    expected, *_ = np.linalg.lstsq(counts, training.energies, rcond=None)
    assert list(reference) == ["Al", "Cu"]
    assert [reference["Al"], reference["Cu"]] == pytest.approx(expected)


def test_row_weights_follow_the_pacemaker_loss():
    weights = row_weights(np.array([2, 4]), kappa=0.01)
    assert weights[:2] == pytest.approx([0.495, 0.495])
    assert len(weights) == 2 + 18 and weights[2:] == pytest.approx(np.full(18, 0.01 / 6))
    drawn_twice = row_weights(np.array([2, 4]), kappa=0.01, counts=np.array([2, 0]))  # a sample of two copies of the first
    assert drawn_twice[:2] == pytest.approx([0.99, 0.0]) and drawn_twice[2:8] == pytest.approx(np.full(6, 2 * 0.01 / 4))
    assert not drawn_twice[8:].any() and drawn_twice.sum() == pytest.approx(1.02)


def test_a_bootstrap_fit_predicts_the_whole_training_set_as_its_potential_does(cu_training, tmp_path):
    """Training-set predictions come from the design matrix; a structure drawn k times weighs as k copies."""
    from uq_flows.ace.data import bootstrap_indices
    from uq_flows.ace.potential import save_potential

    options = AceFitOptions(backend="linear", n_functions=20)
    reference = fit_reference_energies(cu_training)
    drawn = bootstrap_indices(len(cu_training), seed=7)
    assert len(set(drawn.tolist())) < len(drawn)  # some structures drawn twice, some not at all
    basis, energies, forces = fit_linear_ace(cu_training, reference, options, sample=drawn)
    copies, *_ = fit_linear_ace(cu_training.subset(drawn), reference, options)
    # the same ridge objective, solved on another matrix: equal to the solver's precision (measured 7e-7 relative)
    assert np.allclose(basis.get_all_coeffs(), copies.get_all_coeffs(), rtol=1e-5, atol=1e-6)
    save_potential(basis, tmp_path / "potential.yaml", reference)
    e_calc, f_calc = predict(AceCalculator(tmp_path / "potential.yaml"), cu_training.structures)
    assert len(energies) == len(forces) == len(cu_training)
    assert np.allclose(energies, e_calc, rtol=0, atol=1e-8)
    assert np.allclose(np.concatenate(forces), np.concatenate(f_calc), rtol=0, atol=1e-8)


def test_gamma_is_at_most_one_on_training_and_large_out_of_distribution(cu_linear, cu_training):
    train_gamma = extrapolation_grades(cu_linear.potential, cu_training.structures, cu_linear.active_set)
    assert max(g.max() for g in train_gamma) <= 1.01 + 1e-9  # MaxVol tolerance, every atom in MaxVol
    assert np.median(np.concatenate(train_gamma)) < 0.9
    dimer_20, dimer_24, squeezed = (g.max() for g in extrapolation_grades(
        cu_linear.potential, out_of_distribution(), cu_linear.active_set))
    assert dimer_20 > 30 and dimer_24 > 15 and squeezed > 50  # measured: 72, 32, 233
    assert dimer_20 > dimer_24  # the shorter bond is further from the data
    assert cu_linear.members[0].active_set_info["training_gamma_max"]["Cu"] <= 1.01 + 1e-9


def test_calculator_gamma_matches_projections_times_inverse(cu_linear, cu_test):
    calculator = AceCalculator(cu_linear.potential, cu_linear.active_set)
    atoms = cu_test.structures[3].copy()
    atoms.calc = calculator
    atoms.get_potential_energy()
    inverse = np.load(cu_linear.active_set)["Cu"]
    by_hand = np.abs(np.array(calculator.projections()) @ inverse).max(axis=1)
    assert np.allclose(calculator.results["gamma"], by_hand, rtol=1e-8)


def test_default_outlier_filter_drops_badly_fitted_atoms(tmp_path, cu_training):
    options = AceFitOptions(backend="linear", n_functions=20)  # pace_activeset's force-error filter
    result = fit_ace(cu_training, options, tmp_path)
    info = result.members[0].active_set_info
    assert info["n_dropped"]["Cu"] > 0
    assert info["n_environments"]["Cu"] + info["n_dropped"]["Cu"] == int(cu_training.n_atoms.sum())


def test_two_elements_fit_and_both_active_sets_load(tmp_path):
    train, test = training_set(cu_al(24, seed=0)), training_set(cu_al(6, seed=1))
    result = fit_ace(train, AceFitOptions(backend="linear", n_functions=12, outlier_filter="none"), tmp_path, test)
    assert result.elements == ["Al", "Cu"] and set(np.load(result.active_set).files) == {"Al", "Cu"}
    assert result.metrics.test_force_rmse < 0.05 and result.metrics.test_energy_rmse_per_atom < 0.01
    grades = extrapolation_grades(result.potential, train.structures, result.active_set)
    assert max(g.max() for g in grades) <= 1.01 + 1e-9


def test_unknown_element_and_partial_periodicity_are_clear_errors(cu_linear):
    gold = bulk("Au", "fcc", a=4.08)
    with pytest.raises(InputError, match=r"element\(s\) Au not in the potential .*elements: Cu"):
        extrapolation_grades(cu_linear.potential, [gold], cu_linear.active_set)
    slab = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3.6, 3.6, 20], pbc=[True, True, False])
    with pytest.raises(InputError, match="fully periodic or a fully open"):
        extrapolation_grades(cu_linear.potential, [slab], cu_linear.active_set)


def test_too_many_functions_for_an_active_set_fail_before_fitting(tmp_path):
    training = training_set(cu_bulk(4, seed=0))  # 24 atoms
    with pytest.raises(InputError, match="24 Cu atoms in the training set for 30 basis functions"):
        fit_ace(training, AceFitOptions(backend="linear", n_functions=30), tmp_path)
    assert not (tmp_path / "potential.yaml").exists()
