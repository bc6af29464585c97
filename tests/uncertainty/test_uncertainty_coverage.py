"""Accuracy-coverage curves and U_c thresholds (paper 001) on hand-computed cases."""

import math

import numpy as np
import pytest

from uq_flows.errors import InputError
from uq_flows.uncertainty import (
    CoverageCurve,
    ThresholdSummary,
    accuracy_coverage,
    force_error_terms,
    summarize_thresholds,
    threshold_for_target_force_rmse,
)


def test_force_error_terms():
    # config A (atoms 0, 1): errors (1,2,2) and (0,0,3) -> 1+4+4+9 = 18, 6 components
    # config B (atom 2): error (0,0,0) -> 0, 3 components
    reference = np.zeros((3, 3))
    predicted = np.array([[1, 2, 2], [0, 0, 3], [0, 0, 0]], dtype=float)
    sq, comps = force_error_terms(reference, predicted, [2, 1])
    np.testing.assert_allclose(sq, [18.0, 0.0])
    np.testing.assert_array_equal(comps, [6, 3])


def test_force_error_terms_rejects():
    with pytest.raises(InputError, match="shape"):
        force_error_terms(np.zeros((3, 3)), np.zeros((2, 3)), [3])
    with pytest.raises(InputError, match="sums to"):
        force_error_terms(np.zeros((3, 3)), np.zeros((3, 3)), [2])
    with pytest.raises(InputError, match="NaN"):
        force_error_terms(np.zeros((3, 3)), np.full((3, 3), np.nan), [3])


def test_accuracy_coverage_hand():
    # sorted by U: 0.1 (e=1, sq 3 / 3), 0.2 (e=-2, sq 6 / 6), 0.3 (e=3, sq 12 / 3)
    u = [0.3, 0.1, 0.2]
    curve = accuracy_coverage(u, [3.0, 1.0, -2.0], [12.0, 3.0, 6.0], [3, 3, 6])
    assert isinstance(curve, CoverageCurve)
    np.testing.assert_allclose(curve.coverage, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(curve.u_max, [0.1, 0.2, 0.3])
    # energy: sqrt(1/1), sqrt((1+4)/2), sqrt((1+4+9)/3)
    np.testing.assert_allclose(curve.energy_rmse, [1.0, math.sqrt(2.5), math.sqrt(14 / 3)])
    # force: sqrt(3/3), sqrt(9/9), sqrt(21/12)
    np.testing.assert_allclose(curve.force_rmse, [1.0, 1.0, math.sqrt(21 / 12)])


def test_accuracy_coverage_last_point_is_overall_rmse():
    rng = np.random.default_rng(0)
    n_atoms = rng.integers(1, 6, size=40)
    reference = rng.normal(size=(n_atoms.sum(), 3))
    predicted = reference + rng.normal(scale=0.3, size=reference.shape)
    sq, comps = force_error_terms(reference, predicted, n_atoms)
    energy_error = rng.normal(size=40)
    curve = accuracy_coverage(rng.uniform(size=40), energy_error, sq, comps)
    overall_force = math.sqrt(np.mean((predicted - reference) ** 2))
    assert curve.coverage[-1] == 1.0
    assert curve.force_rmse[-1] == pytest.approx(overall_force, rel=1e-12)
    assert curve.energy_rmse[-1] == pytest.approx(math.sqrt(np.mean(energy_error**2)), rel=1e-12)


def test_accuracy_coverage_subsampled_and_no_energy():
    u = np.arange(10.0)
    curve = accuracy_coverage(u, None, np.ones(10), np.full(10, 3), n_points=4)
    # k = ceil(m * 10 / 4) for m = 1..4 -> 3, 5, 8, 10
    np.testing.assert_allclose(curve.coverage, [0.3, 0.5, 0.8, 1.0])
    np.testing.assert_allclose(curve.u_max, [2.0, 4.0, 7.0, 9.0])
    assert np.isnan(curve.energy_rmse).all()
    one = accuracy_coverage(u, None, np.ones(10), np.full(10, 3), n_points=1)
    np.testing.assert_allclose(one.coverage, [1.0])
    many = accuracy_coverage(u, None, np.ones(10), np.full(10, 3), n_points=50)
    assert many.coverage.size == 10


def test_accuracy_coverage_rejects():
    with pytest.raises(InputError, match="entries"):
        accuracy_coverage([0.1, 0.2], None, [1.0], [3])
    with pytest.raises(InputError, match="entries"):
        accuracy_coverage([0.1, 0.2], [1.0], [1.0, 1.0], [3, 3])
    with pytest.raises(InputError, match="n_points"):
        accuracy_coverage([0.1, 0.2], None, [1.0, 1.0], [3, 3], n_points=0)
    with pytest.raises(InputError, match="n_components"):
        accuracy_coverage([0.1, 0.2], None, [1.0, 1.0], [3, 0])
    with pytest.raises(InputError, match="non-negative"):
        accuracy_coverage([0.1, 0.2], None, [1.0, -1.0], [3, 3])
    with pytest.raises(InputError, match="NaN"):
        accuracy_coverage([0.1, np.nan], None, [1.0, 1.0], [3, 3])
    with pytest.raises(InputError, match="empty"):
        accuracy_coverage([], None, [], [])


# Threshold case, given in scrambled order. Sorted by U:
#   U      0.5  1.0  1.0  2.0
#   atoms  1    2    3    4       (10 in total)
#   sq     3    12   6    48
#   comps  3    6    9    12
#   e      1    -2   2    4
ORDER = [3, 1, 0, 2]
U = np.array([0.5, 1.0, 1.0, 2.0])[ORDER]
N_ATOMS = np.array([1, 2, 3, 4])[ORDER]
SQ = np.array([3.0, 12.0, 6.0, 48.0])[ORDER]
COMPS = np.array([3, 6, 9, 12])[ORDER]
E = np.array([1.0, -2.0, 2.0, 4.0])[ORDER]


def test_summarize_thresholds_counts_ties_and_inf():
    s0, s1, s15, sinf = summarize_thresholds(U, N_ATOMS, [0.0, 1.0, 1.5, math.inf], SQ, COMPS, E)
    assert isinstance(s0, ThresholdSummary)
    # U_c = 0: nothing below, all DFT
    assert (s0.uc, s0.n_below, s0.n_atoms_below) == (0.0, 0, 0)
    assert (s0.dft_atom_fraction, s0.dft_config_fraction) == (1.0, 1.0)
    assert math.isnan(s0.force_rmse_below) and math.isnan(s0.energy_rmse_below)
    # U_c = 1.0: strictly below -> only U = 0.5; the tied 1.0s go to DFT
    assert (s1.n_below, s1.n_atoms_below) == (1, 1)
    assert s1.dft_atom_fraction == pytest.approx(9 / 10)
    assert s1.dft_config_fraction == pytest.approx(3 / 4)
    assert s1.force_rmse_below == pytest.approx(1.0)  # sqrt(3/3)
    assert s1.energy_rmse_below == pytest.approx(1.0)
    # U_c = 1.5: 0.5, 1.0, 1.0 below; 1+2+3 = 6 atoms
    assert (s15.n_below, s15.n_atoms_below) == (3, 6)
    assert s15.dft_atom_fraction == pytest.approx(0.4)
    assert s15.dft_config_fraction == pytest.approx(0.25)
    assert s15.force_rmse_below == pytest.approx(math.sqrt(21 / 18))
    assert s15.energy_rmse_below == pytest.approx(math.sqrt((1 + 4 + 4) / 3))
    # U_c = inf: everything below
    assert (sinf.uc, sinf.n_below, sinf.n_atoms_below) == (math.inf, 4, 10)
    assert (sinf.dft_atom_fraction, sinf.dft_config_fraction) == (0.0, 0.0)
    assert sinf.force_rmse_below == pytest.approx(math.sqrt(69 / 30))
    assert sinf.energy_rmse_below == pytest.approx(2.5)  # sqrt((1+4+4+16)/4)


def test_summarize_thresholds_scalar_and_no_energy():
    (only,) = summarize_thresholds(U, N_ATOMS, 1.5, SQ, COMPS)
    assert only.n_below == 3 and math.isnan(only.energy_rmse_below)


def test_summarize_thresholds_rejects():
    with pytest.raises(InputError, match="NaN"):
        summarize_thresholds(U, N_ATOMS, [1.0, math.nan], SQ, COMPS)
    with pytest.raises(InputError, match="entries"):
        summarize_thresholds(U, N_ATOMS[:3], [1.0], SQ, COMPS)
    with pytest.raises(InputError, match="at least one atom"):
        summarize_thresholds(U, [1, 0, 2, 3], [1.0], SQ, COMPS)


# Target case, one atom (3 components) per configuration. Sorted by U:
#   U    0.1 | 0.2  0.2 | 0.5 | 0.9
#   sq   3   | 0    15  | 0   | 57
# RMSE of {U < U_c} for the candidate U_c:
#   U_c = 0.1: empty                  (nothing below)
#   U_c = 0.2: sqrt(3/3)   = 1
#   U_c = 0.5: sqrt(18/9)  = 1.414    (the tie at 0.2 enters as a whole;
#                                      splitting it would give sqrt(3/6) = 0.707)
#   U_c = 0.9: sqrt(18/12) = 1.225    (RMSE falls again: not monotone)
#   U_c = inf: sqrt(75/15) = 2.236
T_ORDER = [4, 1, 0, 2, 3]  # stable sort puts the tied sq=0 config before sq=15
T_U = np.array([0.1, 0.2, 0.2, 0.5, 0.9])[T_ORDER]
T_SQ = np.array([3.0, 0.0, 15.0, 0.0, 57.0])[T_ORDER]
T_COMPS = np.full(5, 3)


@pytest.mark.parametrize(
    "target, expected",
    [
        (1.3, 0.9),  # largest passing candidate, though U_c = 0.5 fails
        (1.0, 0.2),  # only {0.1} passes (exactly at the target)
        (0.9, 0.1),  # the tie must not be split: nothing passes -> smallest U
        (0.5, 0.1),
        (3.0, math.inf),
        (math.sqrt(5.0), math.inf),
    ],
)
def test_threshold_for_target_force_rmse(target, expected):
    assert threshold_for_target_force_rmse(T_U, T_SQ, T_COMPS, target) == expected


def test_threshold_for_target_force_rmse_all_tied():
    assert threshold_for_target_force_rmse([0.4, 0.4], [3.0, 3.0], [3, 3], 1.0) == math.inf
    assert threshold_for_target_force_rmse([0.4, 0.4], [3.0, 3.0], [3, 3], 0.5) == 0.4


@pytest.mark.parametrize("target", [-0.1, math.nan, "x"])
def test_threshold_for_target_force_rmse_rejects(target):
    with pytest.raises(InputError, match="target"):
        threshold_for_target_force_rmse(T_U, T_SQ, T_COMPS, target)
