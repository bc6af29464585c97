"""Physical sanity screens for structures and labels (paper 004 filters; METHODS §7).

Structures with atoms closer than ``min_distance`` are not worth a DFT calculation;
labels with any force above ``max_force`` are not worth fitting. Defaults follow the CAGO
paper: 0.75 Å and 30 eV/Å.

Before an ensemble member or teacher sees a structure (``ensemble.predict.predict_member``),
two harder screens apply: positions and cell must be finite numbers (structure files are
checked when read), and no two atoms (periodic images included) may be closer than
``HARD_MIN_DISTANCE`` (0.5 Å, well below any bond: H₂ is 0.74 Å). A structure failing them is
broken, not merely uncertain: a uMLIP still returns numbers for it (U of 1e11 eV/Å and more for
atoms 0.1 Å apart), and none of them can be trusted or taught.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from uq_flows.errors import InputError

DEFAULT_MIN_DISTANCE = 0.75  # Å
DEFAULT_MAX_FORCE = 30.0  # eV/Å
HARD_MIN_DISTANCE = 0.5  # Å: closer atoms make a structure unusable for scoring and labelling
STORED_DISTANCE_CAP = 3.0  # Å: the campaign stores each structure's shortest distance, exact below this


SMALL_CELL_ATOMS = 64  # up to this size the shortest distance is one numpy expression over images


def min_interatomic_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Shortest distance between two atoms, periodic images included (inf if none within cutoff).

    Small cells (the candidates of a campaign) take every pair against every lattice image that
    can lie within ``cutoff`` in one array expression; larger ones use ASE's neighbour list.
    """
    if len(atoms) == 1 and not atoms.pbc.any():
        return float("inf")
    shortest = _small_cell_min_distance(atoms, cutoff) if len(atoms) <= SMALL_CELL_ATOMS else None
    if shortest is None:
        distances = neighbor_list("d", atoms, cutoff)
        shortest = float(distances.min()) if distances.size else float("inf")
    return shortest if shortest <= cutoff else float("inf")


def _small_cell_min_distance(atoms: Atoms, cutoff: float) -> float | None:
    """The shortest pair distance over the images within ``cutoff``; None when the cell is
    singular along a periodic direction or needs too many images (the neighbour list decides)."""
    positions, pbc, cell = atoms.positions, atoms.pbc, atoms.cell.array
    repeats = np.zeros(3, dtype=int)
    if pbc.any():
        volume = abs(np.linalg.det(cell))
        if not volume > 1e-9:
            return None
        fractional = np.linalg.solve(cell.T, positions.T).T
        fractional[:, pbc] %= 1.0  # wrapped: pair differences are within one cell per periodic axis
        positions = fractional @ cell
        spacing = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        repeats[pbc] = np.floor(cutoff / spacing[pbc]).astype(int) + 1
        if np.prod(2 * repeats + 1) * len(atoms) ** 2 > 2_000_000:
            return None
    ranges = [np.arange(-r, r + 1) for r in repeats]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3) @ cell
    pairs = positions[None, :, None, :] - positions[:, None, None, :] + shifts[None, None, :, :]
    squared = np.einsum("ijsk,ijsk->ijs", pairs, pairs)
    own = np.flatnonzero(~shifts.any(axis=1))  # the zero shift: an atom and itself
    squared[np.arange(len(atoms)), np.arange(len(atoms)), own] = np.inf
    return float(np.sqrt(squared.min())) if squared.size else float("inf")


def shortest_distance_within(atoms: Atoms, cap: float = STORED_DISTANCE_CAP) -> float:
    """The shortest interatomic distance if below ``cap`` (Å), else ``cap``: what the campaign stores."""
    return min(min_interatomic_distance(atoms, cutoff=cap), cap)


def structure_problem(atoms: Atoms, min_distance: float = DEFAULT_MIN_DISTANCE,
                      shortest: float | None = None) -> str | None:
    """Why ``atoms`` should not be labelled, or None; ``shortest``: a stored ``shortest_distance_within``
    (exact below ``STORED_DISTANCE_CAP``), used instead of measuring again when it decides."""
    if shortest is None or (shortest >= STORED_DISTANCE_CAP and min_distance > STORED_DISTANCE_CAP):
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


def non_finite_problem(atoms: Atoms) -> str | None:
    """Which positions or cell entries of ``atoms`` are NaN or infinite, or None."""
    problems = []
    bad_atoms = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad_atoms.size:
        shown = bad_atoms[:10].tolist()
        problems.append(f"non-finite positions on atoms {shown}{' ...' if bad_atoms.size > 10 else ''}")
    if not np.isfinite(atoms.cell.array).all():
        problems.append("a non-finite cell")
    return " and ".join(problems) or None


def check_min_distance(min_distance: float) -> float:
    """``min_distance`` as a float, or InputError unless it is a finite number ≥ 0 (Å)."""
    is_number = isinstance(min_distance, Real) and not isinstance(min_distance, bool)
    if not is_number or not math.isfinite(min_distance) or min_distance < 0:
        raise InputError(f"minimum distance must be a finite number ≥ 0 Å, got {min_distance!r}")
    return float(min_distance)
