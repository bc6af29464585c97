"""Per-element energy alignment between label sources (METHODS §2).

Teacher (uMLIP) and DFT energies differ by per-element reference energies when the code,
pseudopotentials or functional differ. On structures that carry both labels, fit

    (E_DFT − E_teacher) / N ≈ Σ_el (n_el / N) μ_el

by least squares *per atom* (so a structure weighs the same whatever its size) and add
Σ_el n_el μ_el to teacher energies. The pairs must be an unbiased sample: a random audit
sample labelled by both sources, not the high-U structures routed to DFT, where the teacher's
error is largest (paper 001: > 1 eV on W dimers and short-range configurations).

The fit is refused for a structure whose composition the pairs do not determine (rank
deficiency: if every pair is equiatomic MoW, the shift of pure Mo is unknown) and altogether
when the per-atom residual exceeds a limit (the sources then differ by more than a reference
shift per element).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from pydantic import BaseModel, Field

from uq_flows.errors import InputError

DEFAULT_MAX_RESIDUAL = 0.020  # eV/atom
AUDIT = "audit"
HIGH_U = "high_u"
PairSample = Literal["audit", "high_u"]


class AlignmentPair(BaseModel):
    """One structure labelled by both sources: what the alignment is fitted on."""

    id: str
    counts: dict[str, int] = Field(description="Atoms per element.")
    reference_energy: float = Field(description="DFT total energy (eV).")
    teacher_energy: float = Field(description="Unaligned teacher total energy (eV).")
    sample: PairSample = Field(description="audit: a random sample; high_u: routed to DFT by U (biased).")
    iteration: int | None = None

    @classmethod
    def of(cls, structure_id: str, numbers: Sequence[int], reference_energy: float, teacher_energy: float,
           sample: PairSample, iteration: int | None = None) -> AlignmentPair:
        return cls(id=structure_id, counts=composition(numbers), reference_energy=float(reference_energy),
                   teacher_energy=float(teacher_energy), sample=sample, iteration=iteration)


def composition(numbers: Sequence[int]) -> dict[str, int]:
    """Atoms per element symbol."""
    values, counts = np.unique(np.asarray(numbers, dtype=int), return_counts=True)
    return {chemical_symbols[int(z)]: int(n) for z, n in zip(values, counts)}


class EnergyAlignment(BaseModel):
    """Shifts μ_el (eV/atom) to add to teacher energies, how well they fit, and where they apply."""

    shifts: dict[str, float]
    n_structures: int
    residual_rmse_per_atom: float = Field(description="eV/atom, over the pairs fitted.")
    rank_deficient: bool
    undetermined: list[dict[str, float]] = Field(
        default_factory=list, description="Null space of the pairs' compositions: combinations the pairs do not fix."
    )
    sample: str = Field(AUDIT, description="audit or random (unbiased), high_u (fallback, biased toward large errors).")
    max_residual: float = DEFAULT_MAX_RESIDUAL
    refused: str | None = Field(None, description="Why no teacher energy may be aligned with this fit.")

    @property
    def usable(self) -> bool:
        return self.refused is None

    @property
    def warning(self) -> str | None:
        """What a user must know about this fit (shown by ``status``), or None."""
        if self.refused:
            return self.refused
        if self.sample == HIGH_U:
            return (f"energy alignment fitted on {self.n_structures} DFT-routed (high-U) structures, not a random "
                    "audit sample: biased toward large teacher errors")
        return None

    def problem(self, numbers: Sequence[int]) -> str | None:
        """Why a structure's teacher energy cannot be aligned by this fit, or None."""
        if self.refused:
            return self.refused
        counts = composition(numbers)
        missing = sorted(set(counts) - set(self.shifts))
        if missing:
            return f"no energy alignment for {', '.join(missing)}: no structure with both labels contains it"
        if self.undetermined:
            n = sum(counts.values())
            x = np.array([counts.get(el, 0) / n for el in self.shifts])
            basis = np.array([[v.get(el, 0.0) for el in self.shifts] for v in self.undetermined])
            if np.linalg.norm(basis @ x) > 1e-6 * np.linalg.norm(x):
                return (f"energy alignment cannot determine the shift of {_formula(counts)}: the compositions "
                        f"labelled by both sources do not span it (rank-deficient fit)")
        return None

    def shift(self, numbers: Sequence[int]) -> float:
        """Σ_el n_el μ_el for a structure; InputError if the fit cannot align it."""
        problem = self.problem(numbers)
        if problem:
            raise InputError(problem)
        return float(sum(n * self.shifts[el] for el, n in composition(numbers).items()))


def _formula(counts: dict[str, int]) -> str:
    return "".join(f"{el}{n if n > 1 else ''}" for el, n in sorted(counts.items()))


def fit_energy_alignment(
    numbers: Sequence[Sequence[int]],
    dft_energies: Sequence[float],
    teacher_energies: Sequence[float],
    max_residual: float = DEFAULT_MAX_RESIDUAL,
    sample: str = AUDIT,
) -> EnergyAlignment:
    """Per-element shifts by least squares on per-atom energy differences (METHODS §2).

    The fit is marked ``refused`` when its per-atom residual RMSE exceeds ``max_residual``.
    """
    if len(numbers) == 0:
        raise InputError("energy alignment needs at least one structure with both DFT and teacher energies")
    if not len(numbers) == len(dft_energies) == len(teacher_energies):
        raise InputError("energy alignment: numbers, DFT and teacher energies differ in length")
    if not max_residual > 0:
        raise InputError(f"the alignment's residual limit must be positive, got {max_residual}")
    elements = sorted({int(z) for zs in numbers for z in zs})
    counts = np.array([[np.count_nonzero(np.asarray(zs) == z) for z in elements] for zs in numbers], dtype=float)
    n_atoms = counts.sum(axis=1)
    difference = np.asarray(dft_energies, float) - np.asarray(teacher_energies, float)
    if not np.all(np.isfinite(difference)):
        raise InputError("energy alignment: non-finite energies")
    fractions = counts / n_atoms[:, None]
    mu, _, rank, _ = np.linalg.lstsq(fractions, difference / n_atoms, rcond=None)
    residual = difference / n_atoms - fractions @ mu
    rmse = float(np.sqrt(np.mean(residual**2)))
    symbols = [chemical_symbols[z] for z in elements]
    # thin SVD (a full one builds an n × n matrix: gigabytes for 10⁴ pairs); zero rows keep vt square
    padded = np.vstack([fractions, np.zeros((max(0, len(elements) - len(numbers)), len(elements)))])
    _, singular, vt = np.linalg.svd(padded, full_matrices=False)
    tolerance = max(fractions.shape) * np.finfo(float).eps * (singular[0] if singular.size else 0.0)
    null = vt[int(np.sum(singular > tolerance)):]
    refused = None
    if rmse > max_residual:
        refused = (f"energy alignment refused: per-atom residual {rmse * 1000:.3g} meV/atom over {len(numbers)} "
                   f"structures exceeds {max_residual * 1000:.3g} meV/atom (the sources differ by more than a "
                   "shift per element)")
    return EnergyAlignment(
        shifts={el: float(m) for el, m in zip(symbols, mu)},
        n_structures=len(numbers),
        residual_rmse_per_atom=rmse,
        rank_deficient=bool(rank < len(elements)),
        undetermined=[{el: float(v) for el, v in zip(symbols, row)} for row in null],
        sample=sample,
        max_residual=max_residual,
        refused=refused,
    )


def fit_from_pairs(pairs: Sequence[AlignmentPair], max_residual: float = DEFAULT_MAX_RESIDUAL) -> EnergyAlignment | None:
    """The alignment from accumulated pairs: audit pairs when there are any, else high-U pairs (biased).

    A fit on high-U pairs says so in ``sample``; callers show it as a warning.
    """
    audit = [p for p in pairs if p.sample == AUDIT]
    used = audit or list(pairs)
    if not used:
        return None
    numbers = [[atomic_numbers[el] for el, n in p.counts.items() for _ in range(n)] for p in used]
    return fit_energy_alignment(numbers, [p.reference_energy for p in used], [p.teacher_energy for p in used],
                                max_residual, AUDIT if audit else HIGH_U)
