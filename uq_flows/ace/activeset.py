"""D-optimality: active sets by MaxVol and the extrapolation grade γ (paper 000 §2.2.2; METHODS §5).

Per element μ, the rows B_i of the basis-function projections of every training atom form
B̂_μ; MaxVol picks the n_v rows A_μ of (approximately) maximal |det|, and
γ_i = max_k |(B_i A_μ⁻¹)_k| (eq. 12): γ ≤ 1 interpolation, γ > 1 extrapolation;
γ_cfg = max_i γ_i (eq. 14). The library functions of pyace (``pace_activeset``) do the work;
the file is pace_activeset's ``.asi`` (an npz of A_μ⁻¹ keyed by element).

Before MaxVol, pace_activeset drops atoms whose force *error* |F_ref − F_ACE|/√3 exceeds
Q3 + 1.5·IQR of that element (``outlier_filter="force-error"``, the default, as users will
compare against it); paper 000's text describes the same bound on force *magnitudes*
(``"force"``); ``"none"`` keeps every atom (``pace_activeset --all-atoms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.ace.data import TrainingSet
from uq_flows.ace.potential import AceCalculator, evaluate_each
from uq_flows.errors import InputError
from uq_flows.io import atomic_path


@dataclass
class Projections:
    """Per-element projection matrices of a training set with, per row, structure and keep flag."""

    elements: list[str]
    matrices: dict[str, np.ndarray]
    structure_index: dict[str, np.ndarray]
    keep: dict[str, np.ndarray]


@dataclass
class ActiveSetSummary:
    """What went into an active set: environments per element, rows selected, atoms dropped."""

    path: str
    n_environments: dict[str, int]
    n_dropped: dict[str, int]
    n_functions: dict[str, int]
    training_gamma_max: dict[str, float] = field(default_factory=dict)


def training_projections(potential: str | Path, training: TrainingSet, outlier_filter: str = "force-error") -> Projections:
    """B-projections of every training atom and which atoms MaxVol may use."""
    from pyace import ACEBBasisSet
    from pyace.activelearning import (
        compute_B_projections,
        extract_reference_forces_dict,
    )

    basis = ACEBBasisSet(str(potential))
    elements = [str(e) for e in basis.elements_name]
    unknown = sorted(set(training.elements) - set(elements))
    if unknown:
        raise InputError(f"training element(s) {', '.join(unknown)} not in potential {Path(potential).name}")
    atoms_list = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in training.structures]
    projections, structure_index, predicted = compute_B_projections(
        basis, atoms_list, structure_ind_list=list(range(len(atoms_list))), compute_forces_dict=True
    )
    reference = extract_reference_forces_dict(atoms_list, training.forces, basis.elements_to_index_map)
    matrices, index, keep = {}, {}, {}
    for element in elements:
        st = basis.elements_to_index_map[element]
        if st not in projections or len(projections[st]) == 0:
            continue
        matrices[element] = projections[st]
        index[element] = np.asarray(structure_index[st])
        keep[element] = _keep_mask(reference[st], predicted[st], outlier_filter)
    return Projections(elements, matrices, index, keep)


def _keep_mask(reference_forces: np.ndarray, predicted_forces: np.ndarray, outlier_filter: str) -> np.ndarray:
    if outlier_filter == "none":
        return np.ones(len(reference_forces), dtype=bool)
    if outlier_filter == "force-error":
        values = np.linalg.norm(reference_forces - predicted_forces, axis=1) / np.sqrt(3)
    elif outlier_filter == "force":
        values = np.linalg.norm(reference_forces, axis=1)
    else:
        raise ValueError(f"unknown outlier filter {outlier_filter!r}")
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return values <= q3 + 1.5 * (q3 - q1)


def maxvol_inverse(matrix: np.ndarray, element: str, tolerance: float = 1.01, max_iters: int = 300,
                   where: str = "") -> np.ndarray:
    """A⁻¹ of the MaxVol active set of one element's projection rows (pyace's MaxVol)."""
    from pyace.activelearning import compute_A_active_inverse, compute_active_set

    n_rows, n_functions = matrix.shape
    if n_rows < n_functions:
        raise InputError(
            f"{where}{n_rows} atomic environments of {element} for {n_functions} basis functions: "
            "an active set needs at least as many environments as functions; add data or use fewer functions"
        )
    try:
        active = compute_active_set({0: np.array(matrix, copy=True)}, tol=tolerance, max_iters=max_iters)
        return compute_A_active_inverse(active)[0]
    except (ValueError, np.linalg.LinAlgError) as error:  # pyace: "Input matrix must not be singular"
        raise InputError(
            f"{where}no active set for {element}: its {n_rows} atomic environments span fewer than {n_functions} "
            f"independent directions ({error}); symmetric cells repeat environments: add distorted structures, "
            "use fewer functions, or fit without an active set"
        ) from error


def grades(matrix: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """γ_i = max_k |(B_i A⁻¹)_k| for each row of ``matrix`` (paper 000, eq. 12)."""
    return np.abs(matrix @ inverse).max(axis=1)


def build_active_set(potential: str | Path, training: TrainingSet, path: str | Path | None = None,
                     outlier_filter: str = "force-error", tolerance: float = 1.01, max_iters: int = 300,
                     projections: Projections | None = None) -> ActiveSetSummary:
    """Write the ``.asi`` active set inverse of ``potential`` built from ``training``."""
    potential = Path(potential)
    path = Path(path) if path is not None else potential.with_suffix(".asi")
    projections = projections or training_projections(potential, training, outlier_filter)
    inverses, n_env, n_drop, n_fun, gmax = {}, {}, {}, {}, {}
    for element, matrix in projections.matrices.items():
        kept = matrix[projections.keep[element]]
        inverses[element] = maxvol_inverse(kept, element, tolerance, max_iters)
        n_env[element], n_drop[element], n_fun[element] = len(kept), len(matrix) - len(kept), matrix.shape[1]
        gmax[element] = float(grades(kept, inverses[element]).max())
    write_inverses(path, inverses)
    return ActiveSetSummary(str(path), n_env, n_drop, n_fun, gmax)


def write_inverses(path: str | Path, inverses: dict[str, np.ndarray]) -> None:
    """An ``.asi`` file: npz of A⁻¹ per element (pace_activeset's format)."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **inverses)


def extrapolation_grades(potential: str | Path, structures: Sequence[Atoms],
                         active_set: str | Path) -> list[np.ndarray]:
    """γ per atom of every structure, from pyace's evaluator with the active set loaded."""
    calculator = AceCalculator(potential, active_set)
    return [np.array(results["gamma"], dtype=float) for _, results in evaluate_each(calculator, structures)]
