"""Committee (max-deviation) uncertainties and adaptive thresholds (paper 000; METHODS.md section 4).

For an ensemble of K models (e.g. ACE fits with different seeds), the uncertainty is the
largest deviation of any member from the committee mean.
"""

from __future__ import annotations

import numpy as np

from uq_flows.errors import InputError
from uq_flows.uncertainty._checks import (
    as_float_array,
    check_forces,
    check_n_atoms,
    segment_max,
    squared_deviation,
)


def energy_committee_uncertainty(energies) -> np.ndarray:
    """U_E,cfg = max_k |E_jk - <E_j>| for energies of shape (K, n_configs) (paper 000, CBE)."""
    array = as_float_array(energies, "energies", ndim=2)
    if array.shape[0] < 2:
        raise InputError(f"energies has {array.shape[0]} ensemble member(s); at least 2 are needed for a spread")
    return np.abs(array - array.mean(axis=0)).max(axis=0)


def _atom_max_squared(forces: np.ndarray) -> np.ndarray:
    return squared_deviation(forces, forces.mean(axis=0)).max(axis=0)


def atom_force_committee_uncertainty(forces) -> np.ndarray:
    """U_F,atom = max_k ||F_ik - <F_i>|| for forces (K, N_total, 3), shape (N_total,) (paper 000, ABF)."""
    return np.sqrt(_atom_max_squared(check_forces(forces, min_members=2)))


def config_force_committee_uncertainty(forces, n_atoms) -> np.ndarray:
    """U_F,cfg = max over atoms of configuration j of U_F,atom, shape (n_configs,) (paper 000, CBF)."""
    array = check_forces(forces, min_members=2)
    _, starts = check_n_atoms(n_atoms, array.shape[1])
    return np.sqrt(segment_max(_atom_max_squared(array), starts))


def adaptive_threshold(values) -> float:
    """Paper 000: epsilon = Q3 + 1.5 * IQR of ``values`` (any shape, flattened).

    Quartiles from ``np.percentile`` with its default linear interpolation. Apply it to the
    training-set distribution of the same quantity; larger values flag novel data.
    """
    array = as_float_array(values, "values").ravel()
    q1, q3 = np.percentile(array, [25.0, 75.0])
    return float(q3 + 1.5 * (q3 - q1))
