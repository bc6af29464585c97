"""Accuracy-coverage curves and uncertainty thresholds U_c (paper 001, Figs. 2e-f, 3, 4; METHODS.md sections 1-2).

Force RMSEs over a set of configurations are pooled over force components:
RMSE_F = sqrt(sum of squared component errors / number of components), so every
configuration contributes in proportion to its atom count. ``force_error_terms`` gives the
per-configuration pieces (``sq_sum``, ``n_components``) that the other functions add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uq_flows.errors import InputError
from uq_flows.uncertainty._checks import (
    as_float_array,
    check_atom_vectors,
    check_n_atoms,
    check_positive_int,
    check_same_length,
    check_thresholds,
    segment_sum,
)
from uq_flows.uncertainty.calibration import spearman
from uq_flows.uncertainty.ensemble import ensemble_mean_force_error


def force_error_terms(reference_forces, predicted_forces, n_atoms) -> tuple[np.ndarray, np.ndarray]:
    """Per configuration: sum of squared force-component errors and its count 3 * n_atoms.

    ``reference_forces`` and ``predicted_forces`` have shape (N_total, 3).
    """
    reference = check_atom_vectors(reference_forces, None, "reference_forces")
    predicted = check_atom_vectors(predicted_forces, reference.shape[0], "predicted_forces")
    counts, starts = check_n_atoms(n_atoms, reference.shape[0])
    diff = predicted - reference
    sq_sum = segment_sum(np.einsum("ic,ic->i", diff, diff), starts)
    return sq_sum, 3 * counts


def _check_terms(u, force_sq_sum, n_components) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = as_float_array(u, "u", ndim=1)
    sq = as_float_array(force_sq_sum, "force_sq_sum", ndim=1)
    comps = as_float_array(n_components, "n_components", ndim=1)
    check_same_length("u", u, "force_sq_sum", sq)
    check_same_length("u", u, "n_components", comps)
    if np.any(sq < 0):
        raise InputError("force_sq_sum must be non-negative")
    if np.any(comps <= 0):
        raise InputError("n_components must be positive")
    return u, sq, comps


def _check_energy_error(energy_error, u: np.ndarray) -> np.ndarray | None:
    if energy_error is None:
        return None
    errors = as_float_array(energy_error, "energy_error", ndim=1)
    check_same_length("u", u, "energy_error", errors)
    return errors


@dataclass(frozen=True)
class CoverageCurve:
    """Accuracy vs coverage: point k keeps the k least uncertain configurations.

    ``coverage`` = k / n; ``u_max`` = largest U kept; RMSEs over the kept configurations
    (``energy_rmse`` is NaN when no energy errors were given).
    """

    coverage: np.ndarray
    u_max: np.ndarray
    energy_rmse: np.ndarray
    force_rmse: np.ndarray


def accuracy_coverage(u, energy_error, force_sq_sum, n_components, n_points: int | None = None) -> CoverageCurve:
    """Accuracy-coverage curve (paper 001, Fig. 2e-f): drop the most uncertain, report RMSE.

    Configurations are sorted by ``u`` ascending (stable: ties keep input order, so inside
    a tie the order of removal is arbitrary but reproducible). For k = 1..n the k least
    uncertain are kept: energy RMSE = sqrt(mean energy_error^2) over them (pass whatever
    per-configuration energy error is wanted, e.g. per atom; ``None`` gives NaN) and force
    RMSE = sqrt(sum sq_sum / sum n_components). ``n_points`` keeps only the points
    k = ceil(m * n / n_points), m = 1..n_points (coverage just at or above m / n_points,
    always including coverage 1); ``None`` keeps all n points.
    """
    u, sq, comps = _check_terms(u, force_sq_sum, n_components)
    errors = _check_energy_error(energy_error, u)
    n = u.size
    order = np.argsort(u, kind="stable")
    kept = np.arange(1, n + 1)
    if n_points is not None:
        n_points = check_positive_int(n_points, "n_points")
        if n_points < n:
            m = np.arange(1, n_points + 1)
            kept = np.unique((m * n + n_points - 1) // n_points)
    index = kept - 1
    force_rmse = np.sqrt(np.cumsum(sq[order])[index] / np.cumsum(comps[order])[index])
    if errors is None:
        energy_rmse = np.full(index.size, np.nan)
    else:
        energy_rmse = np.sqrt(np.cumsum(errors[order] ** 2)[index] / kept)
    return CoverageCurve(coverage=kept / n, u_max=u[order][index], energy_rmse=energy_rmse, force_rmse=force_rmse)


@dataclass(frozen=True)
class ThresholdSummary:
    """Label split at one threshold U_c (paper 001, UAMD, Fig. 4b).

    Configurations with U < U_c are "below" (surrogate/uMLIP labels); the rest get DFT.
    ``dft_atom_fraction`` counts atoms in configurations with U >= U_c over all atoms,
    ``dft_config_fraction`` the same by configurations. RMSEs are over the configurations
    below U_c and NaN when none is below (or, for energy, when no energy errors are given).
    """

    uc: float
    n_below: int
    n_atoms_below: int
    dft_atom_fraction: float
    dft_config_fraction: float
    force_rmse_below: float
    energy_rmse_below: float


def summarize_thresholds(
    u, n_atoms, thresholds, force_sq_sum, n_components, energy_error=None
) -> list[ThresholdSummary]:
    """One ``ThresholdSummary`` per threshold (strict: below means U < U_c; inf allowed).

    Paper 001 studies U_c = inf, 10, 1, 0.5, 0.1, 0; U_c = 1 eV/A is the rule of thumb.
    """
    u, sq, comps = _check_terms(u, force_sq_sum, n_components)
    counts, _ = check_n_atoms(n_atoms, None)
    check_same_length("u", u, "n_atoms", counts)
    errors = _check_energy_error(energy_error, u)
    uc = check_thresholds(thresholds)

    order = np.argsort(u, kind="stable")
    n_below = np.searchsorted(u[order], uc, side="left")  # count of U strictly below each U_c

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(values[order], dtype=np.float64)))

    atoms_below = np.concatenate(([0], np.cumsum(counts[order])))[n_below]
    sq_below, comps_below = prefix(sq)[n_below], prefix(comps)[n_below]
    has_any = n_below > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        force_rmse = np.where(has_any, np.sqrt(sq_below / comps_below), np.nan)
        if errors is None:
            energy_rmse = np.full(uc.size, np.nan)
        else:
            energy_rmse = np.where(has_any, np.sqrt(prefix(errors**2)[n_below] / n_below), np.nan)
    total_atoms, total_configs = int(counts.sum()), u.size
    return [
        ThresholdSummary(
            uc=float(uc[t]),
            n_below=int(n_below[t]),
            n_atoms_below=int(atoms_below[t]),
            dft_atom_fraction=(total_atoms - int(atoms_below[t])) / total_atoms,
            dft_config_fraction=(total_configs - int(n_below[t])) / total_configs,
            force_rmse_below=float(force_rmse[t]),
            energy_rmse_below=float(energy_rmse[t]),
        )
        for t in range(uc.size)
    ]


def threshold_for_target_force_rmse(u, force_sq_sum, n_components, target: float) -> float:
    """Largest U_c whose trusted set {U < U_c} has force RMSE <= ``target`` (paper 001, Fig. 3d-h).

    Candidates are the distinct U values and +inf; U_c = v keeps exactly the configurations
    with U strictly below v, so tied configurations are kept or dropped together. Returns
    +inf when every configuration can be kept. The RMSE need not fall monotonically with
    U_c; the largest passing candidate is returned even if a smaller one fails. If no
    non-empty trusted set meets the target, returns the smallest U: nothing lies below it,
    i.e. no configuration gets teacher (uMLIP) labels and all go to DFT.
    """
    u, sq, comps = _check_terms(u, force_sq_sum, n_components)
    try:
        target = float(target)
    except (TypeError, ValueError):
        raise InputError(f"target must be a number, got {target!r}") from None
    if math.isnan(target) or target < 0:
        raise InputError(f"target must be a non-negative number, got {target}")
    order = np.argsort(u, kind="stable")
    u_sorted = u[order]
    # last index of each group of equal U: keeping through it means U_c = next distinct U
    group_end = np.flatnonzero(np.append(u_sorted[1:] != u_sorted[:-1], True))
    rmse = np.sqrt(np.cumsum(sq[order])[group_end] / np.cumsum(comps[order])[group_end])
    candidates = np.append(u_sorted[group_end[:-1] + 1], np.inf)
    passing = np.flatnonzero(rmse <= target)
    if passing.size == 0:
        return float(u_sorted[0])
    return float(candidates[passing[-1]])


@dataclass(frozen=True)
class ReferenceErrors:
    """Per reference-labelled structure: U and the ensemble-mean force error (paper 001, eq. 5).

    ``max_error`` = max_i ‖F_i^DFT − ⟨F_i⟩‖; ``sq_sum`` and ``n_components`` pool force
    RMSEs over components (``uncertainty.coverage``).
    """

    u: np.ndarray
    max_error: np.ndarray
    sq_sum: np.ndarray
    n_components: np.ndarray
    iteration: np.ndarray

    @classmethod
    def from_forces(cls, u, reference, mean, iteration: int) -> ReferenceErrors:
        """From per-structure reference and ensemble-mean forces, each (n_atoms_j, 3)."""
        n_atoms = [len(r) for r in reference]
        reference, mean = np.concatenate(reference), np.concatenate(mean)
        sq_sum, n_components = force_error_terms(reference, mean, n_atoms)
        return cls(u=np.asarray(u, float), max_error=ensemble_mean_force_error(reference, mean[None], n_atoms),
                   sq_sum=sq_sum, n_components=n_components, iteration=np.full(len(n_atoms), iteration))

    @classmethod
    def concatenate(cls, parts: list[ReferenceErrors]) -> ReferenceErrors:
        names = ("u", "max_error", "sq_sum", "n_components", "iteration")
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0) for name in names})

    def __len__(self) -> int:
        return self.u.size

    def spearman(self) -> float | None:
        """ρ(U, max error); None below three structures or when undefined."""
        if len(self) < 3:
            return None
        rho = spearman(self.u, self.max_error)
        return None if np.isnan(rho) else float(rho)
