"""Heterogeneous-ensemble force uncertainty U (paper 001, eqs. 1-5; METHODS.md section 1).

Notation here: configuration j, atom i, member k. (The paper writes configuration i and
atom j.) Forces are laid out as (K, N_total, 3) with ``n_atoms`` giving each configuration's
atom count; see ``uq_flows.uncertainty._checks``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from uq_flows.errors import InputError
from uq_flows.uncertainty._checks import (
    as_float_array,
    check_atom_vectors,
    check_forces,
    check_n_atoms,
    check_positive_int,
    check_weights,
    segment_max,
    squared_deviation,
)

VARIANTS = (0, 1, 2)


def inverse_rmse_weights(rmse) -> np.ndarray:
    """Paper 001, eq. 2: w_k = RMSE_k^-1 / sum_k' RMSE_k'^-1 over the members given.

    ``rmse`` is a 1-D sequence of member force RMSEs (or a mapping name -> RMSE, whose
    values are used in insertion order). The weights sum to 1.
    """
    values = list(rmse.values()) if isinstance(rmse, Mapping) else rmse
    array = as_float_array(values, "rmse", ndim=1)
    if np.any(array <= 0):
        raise InputError("member RMSEs must be positive")
    inverse = 1.0 / array
    return inverse / inverse.sum()


def top_n_members(rmse: Mapping[str, float], n: int | None) -> list[str]:
    """TopN selection (paper 001, Fig. 2a): member names by RMSE ascending, first ``n``.

    Ties keep the mapping's insertion order; ``n=None`` returns every member.
    """
    if not isinstance(rmse, Mapping) or len(rmse) == 0:
        raise InputError("rmse must be a non-empty mapping of member name -> force RMSE")
    as_float_array(list(rmse.values()), "rmse", ndim=1)
    ranked = sorted(rmse, key=lambda name: float(rmse[name]))  # sorted() is stable
    if n is None:
        return ranked
    n = check_positive_int(n, "n")
    if n > len(ranked):
        raise InputError(f"n = {n} exceeds the {len(ranked)} members available")
    return ranked[:n]


def _mean_force(forces: np.ndarray, weights: np.ndarray | None, weighted_mean: bool) -> np.ndarray:
    """Plain mean <F_i> = (1/K) sum_k F_ik, or weighted mean sum_k w_k F_ik (paper 001, eq. 4)."""
    if weighted_mean:
        if weights is None:
            raise InputError("weighted_mean=True needs weights")
        return np.tensordot(weights, forces, axes=(0, 0))
    return forces.mean(axis=0)


def _validated(forces, weights) -> tuple[np.ndarray, np.ndarray | None]:
    array = check_forces(forces, min_members=2)
    w = None if weights is None else check_weights(weights, array.shape[0])
    return array, w


def per_atom_deviation(forces, weights=None, weighted_mean: bool = False) -> np.ndarray:
    """||F_ik - <F_i>|| for every member and atom, shape (K, N_total) (paper 001, eqs. 1, 3).

    The mean is the plain member mean, or the weighted mean of eq. 4 when ``weighted_mean``.
    """
    array, w = _validated(forces, weights)
    return np.sqrt(squared_deviation(array, _mean_force(array, w, weighted_mean)))


def _member_max_squared(forces: np.ndarray, n_atoms, weights, weighted_mean: bool) -> np.ndarray:
    _, starts = check_n_atoms(n_atoms, forces.shape[1])
    squared = squared_deviation(forces, _mean_force(forces, weights, weighted_mean))
    return segment_max(squared, starts)


def member_max_deviation(forces, n_atoms, weights=None, weighted_mean: bool = False) -> np.ndarray:
    """d_jk = max over atoms i of configuration j of ||F_ijk - <F_ij>||, shape (K, n_configs).

    Paper 001, the bracket in eqs. 1 and 3 (weighted mean of eq. 4 when ``weighted_mean``).
    """
    array, w = _validated(forces, weights)
    return np.sqrt(_member_max_squared(array, n_atoms, w, weighted_mean))


def force_uncertainty(forces, n_atoms, weights=None, variant: int = 1) -> np.ndarray:
    """Configuration uncertainty U_j = sqrt(sum_k w_k d_jk^2), shape (n_configs,).

    - ``variant=0``: U(0), equal weights 1/K and the plain mean (``weights`` is ignored);
    - ``variant=1``: U(1), paper 001 eq. 1, the paper's U: member weights, plain mean;
    - ``variant=2``: U(2), paper 001 eq. 3: the weighted mean of eq. 4 inside d_jk.
    Variants 1 and 2 need ``weights`` (e.g. from ``inverse_rmse_weights``, eq. 2).
    """
    if isinstance(variant, bool) or variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    array = check_forces(forces, min_members=2)
    n_members = array.shape[0]
    if variant == 0:
        w = np.full(n_members, 1.0 / n_members)
    elif weights is None:
        raise InputError(f"variant {variant} needs member weights (see inverse_rmse_weights)")
    else:
        w = check_weights(weights, n_members)
    squared = _member_max_squared(array, n_atoms, w, weighted_mean=variant == 2)
    return np.sqrt(w @ squared)


def ensemble_mean_force_error(reference_forces, forces, n_atoms) -> np.ndarray:
    """Paper 001, eq. 5: e_j = max_i ||F_ij^ref - <F_ij>|| with the plain member mean.

    ``reference_forces`` (N_total, 3), e.g. DFT; ``forces`` (K, N_total, 3), K >= 1.
    Returns shape (n_configs,); this is the error U is judged against (Spearman rho).
    """
    array = check_forces(forces, min_members=1)
    reference = check_atom_vectors(reference_forces, array.shape[1], "reference_forces")
    _, starts = check_n_atoms(n_atoms, array.shape[1])
    diff = reference - array.mean(axis=0)
    squared = np.einsum("ic,ic->i", diff, diff)
    return np.sqrt(segment_max(squared, starts))
