"""Filters around CAGO labelling (paper 004, "Methods"; METHODS §7).

Before labelling: discard structures whose committee-mean maximum force exceeds 40 eV/Å or
whose shortest interatomic distance is below 0.75 Å. After labelling, references with any
force above 30 eV/Å are rejected by the labelling stage (uq_flows.screening).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uq_flows.screening import DEFAULT_MIN_DISTANCE, structure_problem

DEFAULT_MAX_COMMITTEE_FORCE = 40.0  # eV/Å


def prelabel_problem(
    atoms: Atoms,
    member_forces: np.ndarray,
    max_committee_force: float = DEFAULT_MAX_COMMITTEE_FORCE,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> str | None:
    """Why a generated structure should not go to DFT, or None. ``member_forces``: (M, N, 3)."""
    largest = float(np.mean(np.max(np.linalg.norm(np.asarray(member_forces), axis=-1), axis=-1)))
    if largest > max_committee_force:
        return f"committee-mean largest force {largest:.3g} eV/Å exceeds {max_committee_force:g} eV/Å"
    return structure_problem(atoms, min_distance)
