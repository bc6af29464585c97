"""Physical sanity screens for structures and labels (paper 004 filters; METHODS §7).

Structures with atoms closer than ``min_distance`` are not worth a DFT calculation;
labels with any force above ``max_force`` are not worth fitting. Defaults follow the CAGO
paper: 0.75 Å and 30 eV/Å.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

DEFAULT_MIN_DISTANCE = 0.75  # Å
DEFAULT_MAX_FORCE = 30.0  # eV/Å


def min_interatomic_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Shortest distance between two atoms, periodic images included (inf if none within cutoff)."""
    if len(atoms) == 1 and not atoms.pbc.any():
        return float("inf")
    distances = neighbor_list("d", atoms, cutoff)
    return float(distances.min()) if distances.size else float("inf")


def structure_problem(atoms: Atoms, min_distance: float = DEFAULT_MIN_DISTANCE) -> str | None:
    """Why ``atoms`` should not be labelled, or None."""
    shortest = min_interatomic_distance(atoms, cutoff=max(3.0, 2 * min_distance))
    if shortest < min_distance:
        return f"atoms {shortest:.3f} Å apart, closer than the minimum distance {min_distance:g} Å"
    return None


def force_problem(forces, max_force: float = DEFAULT_MAX_FORCE) -> str | None:
    """Why a label's forces are unphysical, or None."""
    largest = float(np.max(np.linalg.norm(np.asarray(forces, dtype=float), axis=1)))
    if largest > max_force:
        return f"largest force {largest:.3g} eV/Å exceeds the maximum {max_force:g} eV/Å"
    return None
