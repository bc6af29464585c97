"""Heterogeneous-ensemble U (paper 001, eqs. 1-5) on hand-computed cases."""

import math

import numpy as np
import pytest

from uq_flows.errors import InputError
from uq_flows.uncertainty import (
    ensemble_mean_force_error,
    force_uncertainty,
    inverse_rmse_weights,
    member_max_deviation,
    per_atom_deviation,
    top_n_members,
)
from uq_flows.uncertainty import _checks

UNEQUAL = np.array([0.5, 0.25, 0.25])


def test_per_atom_deviation_plain_mean(hand_forces):
    # atom 0: |(3,0,0)-(1,0,0)| = 2, |(0,0,0)-(1,0,0)| = 1, 1
    # atom 1: |(0,-2,0)| = 2, |(0,4,0)| = 4, 2
    # atom 2: |(3,4,0)| = 5, 5, 0
    expected = np.array([[2, 2, 5], [1, 4, 5], [1, 2, 0]], dtype=float)
    np.testing.assert_allclose(per_atom_deviation(hand_forces), expected)


def test_per_atom_deviation_weighted_mean(hand_forces):
    # weighted means (eq. 4, w = .5, .25, .25): atom 0 (1.5,0,0), atom 1 (0,1.5,0),
    # atom 2 .5*(3,4,0) + .25*(-3,-4,0) = (.75, 1, 0)
    # atom 2 deviations: |(2.25,3,0)| = 3.75, |(-3.75,-5,0)| = 6.25, |(-.75,-1,0)| = 1.25
    expected = np.array([[1.5, 1.5, 3.75], [1.5, 4.5, 6.25], [1.5, 1.5, 1.25]])
    np.testing.assert_allclose(per_atom_deviation(hand_forces, UNEQUAL, weighted_mean=True), expected)


def test_member_max_deviation(hand_forces, hand_n_atoms):
    # config A: max over atoms 0, 1 per member: (2, 4, 2); config B: atom 2 only: (5, 5, 0)
    expected = np.array([[2, 5], [4, 5], [2, 0]], dtype=float)
    np.testing.assert_allclose(member_max_deviation(hand_forces, hand_n_atoms), expected)


def test_u0_hand(hand_forces, hand_n_atoms):
    # A: sqrt((2^2 + 4^2 + 2^2) / 3) = sqrt(8); B: sqrt((25 + 25 + 0) / 3)
    u0 = force_uncertainty(hand_forces, hand_n_atoms, variant=0)
    np.testing.assert_allclose(u0, [math.sqrt(8), math.sqrt(50 / 3)])


def test_u1_hand(hand_forces, hand_n_atoms):
    # eq. 1: A: sqrt(.5*4 + .25*16 + .25*4) = sqrt(7); B: sqrt(.5*25 + .25*25 + 0) = sqrt(18.75)
    u1 = force_uncertainty(hand_forces, hand_n_atoms, UNEQUAL, variant=1)
    np.testing.assert_allclose(u1, [math.sqrt(7), math.sqrt(18.75)])


def test_u2_hand(hand_forces, hand_n_atoms):
    # eq. 3: d_A = (1.5, 4.5, 1.5), d_B = (3.75, 6.25, 1.25)
    # A: sqrt(.5*2.25 + .25*20.25 + .25*2.25) = sqrt(6.75)
    # B: sqrt(.5*14.0625 + .25*39.0625 + .25*1.5625) = sqrt(17.1875)
    u2 = force_uncertainty(hand_forces, hand_n_atoms, UNEQUAL, variant=2)
    np.testing.assert_allclose(u2, [math.sqrt(6.75), math.sqrt(17.1875)])
    assert not np.allclose(u2, force_uncertainty(hand_forces, hand_n_atoms, UNEQUAL, variant=1))


def test_variants_agree_with_equal_weights():
    rng = np.random.default_rng(1)
    forces = rng.normal(size=(5, 12, 3))
    n_atoms = [3, 1, 8]
    equal = np.full(5, 0.2)
    u0 = force_uncertainty(forces, n_atoms, variant=0)
    np.testing.assert_allclose(force_uncertainty(forces, n_atoms, equal, variant=1), u0, rtol=1e-12)
    np.testing.assert_allclose(force_uncertainty(forces, n_atoms, equal, variant=2), u0, rtol=1e-12)


def test_variant0_ignores_weights(hand_forces, hand_n_atoms):
    u0 = force_uncertainty(hand_forces, hand_n_atoms, variant=0)
    np.testing.assert_array_equal(force_uncertainty(hand_forces, hand_n_atoms, UNEQUAL, variant=0), u0)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_invariant_to_common_force(variant):
    rng = np.random.default_rng(2)
    forces = rng.normal(size=(4, 10, 3))
    n_atoms = [4, 6]
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    shift = rng.normal(scale=50.0, size=(10, 3))  # same for every member, differs per atom
    before = force_uncertainty(forces, n_atoms, weights, variant=variant)
    after = force_uncertainty(forces + shift, n_atoms, weights, variant=variant)
    np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_invariant_to_member_permutation(variant):
    rng = np.random.default_rng(3)
    forces = rng.normal(size=(4, 9, 3))
    n_atoms = [2, 5, 2]
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(
        force_uncertainty(forces[perm], n_atoms, weights[perm], variant=variant),
        force_uncertainty(forces, n_atoms, weights, variant=variant),
        rtol=1e-12,
    )


def test_matches_loop_reference_on_ragged_data():
    rng = np.random.default_rng(4)
    n_atoms = rng.integers(1, 9, size=25)
    forces = rng.normal(size=(6, n_atoms.sum(), 3))
    weights = inverse_rmse_weights(rng.uniform(0.2, 2.0, size=6))
    expected = []
    start = 0
    for count in n_atoms:  # eq. 1 literally, one configuration at a time
        block = forces[:, start : start + count]
        start += count
        d = [max(np.linalg.norm(block[k, i] - block[:, i].mean(axis=0)) for i in range(count)) for k in range(6)]
        expected.append(math.sqrt(sum(w * dk**2 for w, dk in zip(weights, d))))
    np.testing.assert_allclose(force_uncertainty(forces, n_atoms, weights), expected, rtol=1e-12)


def test_atom_blocks_do_not_change_result(monkeypatch):
    rng = np.random.default_rng(5)
    forces = rng.normal(size=(3, 50, 3))
    n_atoms = [7, 13, 30]
    whole = force_uncertainty(forces, n_atoms, variant=0)
    monkeypatch.setattr(_checks, "_BLOCK_BYTES", 24 * 3 * 4)  # blocks of 4 atoms
    np.testing.assert_array_equal(force_uncertainty(forces, n_atoms, variant=0), whole)


def test_ensemble_mean_force_error(hand_forces, hand_n_atoms):
    # plain means: atom 0 (1,0,0), atom 1 (0,2,0), atom 2 (0,0,0)
    # reference: atom 0 (1,3,4) -> 5; atom 1 (0,2,1) -> 1; atom 2 (2,0,0) -> 2
    reference = np.array([[1, 3, 4], [0, 2, 1], [2, 0, 0]], dtype=float)
    np.testing.assert_allclose(ensemble_mean_force_error(reference, hand_forces, hand_n_atoms), [5, 2])


def test_ensemble_mean_force_error_single_member():
    forces = np.array([[[1.0, 0, 0], [0, 0, 0]]])
    np.testing.assert_allclose(ensemble_mean_force_error(np.zeros((2, 3)), forces, [2]), [1.0])


def test_inverse_rmse_weights():
    # inverses 1, 1/2, 1/4 sum to 7/4
    np.testing.assert_allclose(inverse_rmse_weights([1.0, 2.0, 4.0]), [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(inverse_rmse_weights({"a": 1.0, "b": 1.0}), [0.5, 0.5])


def test_top_n_members_order_and_ties():
    rmse = {"a": 0.3, "b": 0.1, "c": 0.3, "d": 0.2}
    assert top_n_members(rmse, None) == ["b", "d", "a", "c"]
    assert top_n_members(rmse, 2) == ["b", "d"]
    assert top_n_members({"c": 0.3, "a": 0.3}, 1) == ["c"]  # tie: insertion order


@pytest.mark.parametrize("rmse", [[1.0, 0.0], [1.0, -2.0], [1.0, float("nan")], [float("inf")], []])
def test_inverse_rmse_weights_rejects(rmse):
    with pytest.raises(InputError):
        inverse_rmse_weights(rmse)


@pytest.mark.parametrize("n", [0, -1, 5, 2.0, True])
def test_top_n_members_rejects(n):
    with pytest.raises(InputError):
        top_n_members({"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}, n)


def test_top_n_members_rejects_bad_values():
    with pytest.raises(InputError):
        top_n_members({}, None)
    with pytest.raises(InputError):
        top_n_members({"a": float("nan")}, None)


def _forces(k=3, n=3):
    return np.zeros((k, n, 3))


@pytest.mark.parametrize(
    "forces, n_atoms, weights, variant, message",
    [
        (_forces(k=1), [2, 1], None, 0, "at least 2"),
        (_forces(), [2, 2], None, 0, "sums to 4"),
        (_forces(), [3, 0], None, 0, "at least one atom"),
        (_forces(), [], None, 0, "empty"),
        (_forces(), [[3]], None, 0, "one-dimensional"),
        (_forces(), [1.5, 1.5], None, 0, "whole numbers"),
        (np.zeros((3, 3, 2)), [3], None, 0, "shape"),
        (np.zeros((3, 3)), [3], None, 0, "3 dimension"),
        (_forces(), [3], None, 1, "needs member weights"),
        (_forces(), [3], None, 2, "needs member weights"),
        (_forces(), [3], [0.5, 0.5], 1, "2 entries"),
        (_forces(), [3], [1.2, -0.1, -0.1], 1, "non-negative"),
        (_forces(), [3], [0.4, 0.4, 0.4], 1, "sum to 1"),
        (_forces(), [3], [1 / 3, 1 / 3, 1 / 3 + 1e-7], 1, "sum to 1"),
        (_forces(), [3], [0.5, 0.5, float("nan")], 1, "NaN"),
        (_forces(), [3], None, 3, "variant"),
        (_forces(), [3], None, True, "variant"),
    ],
)
def test_force_uncertainty_rejects(forces, n_atoms, weights, variant, message):
    with pytest.raises(InputError, match=message):
        force_uncertainty(forces, n_atoms, weights, variant=variant)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_forces_rejected(bad):
    forces = _forces()
    forces[1, 2, 0] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        force_uncertainty(forces, [3], variant=0)
    with pytest.raises(InputError, match="NaN or infinite"):
        per_atom_deviation(forces)


def test_huge_finite_forces_are_not_called_non_finite():
    # their sum overflows to inf, which must not be mistaken for a non-finite input
    forces = np.full((2, 2, 3), 1e308)
    forces[1] = 0.0
    with np.errstate(over="ignore"):
        assert per_atom_deviation(forces).shape == (2, 2)


def test_weight_sum_tolerance_accepts_rounding(hand_forces, hand_n_atoms):
    weights = np.array([0.5, 0.25, 0.25 + 5e-9])
    force_uncertainty(hand_forces, hand_n_atoms, weights)


def test_other_rejections(hand_forces, hand_n_atoms):
    with pytest.raises(InputError, match="needs weights"):
        per_atom_deviation(hand_forces, weighted_mean=True)
    with pytest.raises(InputError, match="at least 2"):
        member_max_deviation(hand_forces[:1], hand_n_atoms)
    with pytest.raises(InputError, match="shape"):
        ensemble_mean_force_error(np.zeros((2, 3)), hand_forces, hand_n_atoms)
    with pytest.raises(InputError, match="sums to"):
        ensemble_mean_force_error(np.zeros((3, 3)), hand_forces, [1, 1])
    with pytest.raises(InputError, match="empty"):
        ensemble_mean_force_error(np.zeros((3, 3)), np.zeros((0, 3, 3)), hand_n_atoms)
