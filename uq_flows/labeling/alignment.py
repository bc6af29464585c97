"""Per-element energy alignment between label sources (METHODS §2).

Teacher (uMLIP) and DFT energies differ by per-element reference energies when the code,
pseudopotentials or functional differ. On structures that carry both, fit
E_DFT − E_teacher ≈ Σ_el n_el μ_el by least squares and add Σ_el n_el μ_el to teacher
energies. The residual RMSE per atom says how well a constant shift per element explains the
difference; a large residual means the sources disagree beyond a reference shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import chemical_symbols
from pydantic import BaseModel

from uq_flows.errors import InputError


class EnergyAlignment(BaseModel):
    """Shifts μ_el (eV/atom) to add to teacher energies, and how well they fit."""

    shifts: dict[str, float]
    n_structures: int
    residual_rmse_per_atom: float
    rank_deficient: bool

    def shift(self, numbers: Sequence[int]) -> float:
        """Σ_el n_el μ_el for a structure; InputError if an element has no shift."""
        symbols = [chemical_symbols[z] for z in numbers]
        missing = sorted(set(symbols) - set(self.shifts))
        if missing:
            raise InputError(f"no energy alignment for {', '.join(missing)}: no structure with both labels contains it")
        return float(sum(self.shifts[s] for s in symbols))


def fit_energy_alignment(
    numbers: Sequence[Sequence[int]], dft_energies: Sequence[float], teacher_energies: Sequence[float]
) -> EnergyAlignment:
    """Least-squares per-element shifts from structures with both DFT and teacher energies."""
    if len(numbers) == 0:
        raise InputError("energy alignment needs at least one structure with both DFT and teacher energies")
    if not len(numbers) == len(dft_energies) == len(teacher_energies):
        raise InputError("energy alignment: numbers, DFT and teacher energies differ in length")
    elements = sorted({int(z) for zs in numbers for z in zs})
    counts = np.array([[np.count_nonzero(np.asarray(zs) == z) for z in elements] for zs in numbers], dtype=float)
    difference = np.asarray(dft_energies, float) - np.asarray(teacher_energies, float)
    if not np.all(np.isfinite(difference)):
        raise InputError("energy alignment: non-finite energies")
    mu, _, rank, _ = np.linalg.lstsq(counts, difference, rcond=None)
    residual = (difference - counts @ mu) / counts.sum(axis=1)
    return EnergyAlignment(
        shifts={chemical_symbols[z]: float(m) for z, m in zip(elements, mu)},
        n_structures=len(numbers),
        residual_rmse_per_atom=float(np.sqrt(np.mean(residual**2))),
        rank_deficient=bool(rank < len(elements)),
    )
