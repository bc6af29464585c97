"""Uncertainty-aware model distillation (UAMD, paper 001, "Methods"; METHODS §2).

Configurations with U < U_c take teacher labels (energy and forces possibly from two
different members, as in the paper); the others keep their reference (DFT) labels. When the
reference and the teacher put the zero of energy in different places (CP2K with GTH
pseudopotentials against VASP-PBE-trained uMLIPs: ~100 eV/atom apart for Si), teacher
energies are first shifted by per-element constants fitted on a random sample of
configurations (``uq_flows.labeling.alignment``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uq_flows.errors import InputError
from uq_flows.io import Labels
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL, EnergyAlignment, fit_energy_alignment

DFT = "dft"
TEACHER = "teacher"
ALIGN_MODES = ("auto", "on", "off")
AUTO_ALIGN_THRESHOLD = 0.1  # eV/atom between mean per-atom energies
RANDOM = "random"


@dataclass(frozen=True)
class MixedLabels:
    """The distilled labels, which configurations are teacher-labelled, and summary metrics."""

    labels: Labels
    teacher: np.ndarray  # bool per configuration
    energy_shift: np.ndarray  # eV added to each teacher energy (0 where reference labels are kept)
    unalignable: np.ndarray  # bool: U < U_c but kept reference labels (alignment cannot determine the shift)

    @property
    def label_source(self) -> list[str]:
        return [TEACHER if t else DFT for t in self.teacher]

    @property
    def dft_config_fraction(self) -> float:
        return float(np.mean(~self.teacher))

    @property
    def dft_atom_fraction(self) -> float:
        """DFT share of the labels, counted by atomic environments (METHODS §2)."""
        n_atoms = self.labels.n_atoms
        return float(n_atoms[~self.teacher].sum() / n_atoms.sum())

    def paid_atom_fraction(self, also: Sequence[int]) -> float:
        """Share of atoms that need a reference (DFT) calculation: the reference-labelled
        configurations and ``also`` (the alignment sample, labelled by both sources whatever its U)."""
        paid = ~self.teacher
        paid[np.asarray(also, dtype=int)] = True
        return float(self.labels.n_atoms[paid].sum() / self.labels.n_atoms.sum())


def mix_labels(
    reference: Labels, energy_from: Labels, forces_from: Labels, u: np.ndarray, uc: float,
    energy_shift: np.ndarray | None = None,
) -> MixedLabels:
    """Teacher labels where U < U_c, reference labels elsewhere.

    ``energy_shift`` (eV per configuration, ``TeacherAlignment.configuration_shifts``) is added
    to teacher energies; a NaN shift marks a configuration whose teacher energy cannot be
    aligned: it keeps its reference labels whatever its U.
    """
    u = np.asarray(u, dtype=float)
    if u.shape != reference.energies.shape:
        raise InputError(f"{u.size} U values for {reference.energies.size} configurations")
    if np.isnan(uc) or uc < 0:
        raise InputError(f"U_c must be a non-negative number, got {uc}")
    shift = np.zeros(u.shape) if energy_shift is None else np.asarray(energy_shift, dtype=float)
    if shift.shape != u.shape:
        raise InputError(f"{shift.size} energy shifts for {u.size} configurations")
    below = u < uc
    unalignable = below & np.isnan(shift)
    teacher = below & ~unalignable
    shift = np.where(teacher, shift, 0.0)
    atom_teacher = np.repeat(teacher, reference.n_atoms)
    energies = np.where(teacher, energy_from.energies + shift, reference.energies)
    forces = np.where(atom_teacher[:, None], forces_from.forces, reference.forces)
    return MixedLabels(Labels(energies, forces, reference.n_atoms), teacher, shift, unalignable)


def label_errors(mixed: Labels, reference: Labels, configurations: np.ndarray | None = None) -> tuple[float, float]:
    """Energy RMSE per atom (eV/atom) and force RMSE over all components (eV/Å).

    Over all configurations, or over those where the boolean mask ``configurations`` is true
    (NaN when it selects none).
    """
    chosen = np.ones(len(reference.energies), bool) if configurations is None else np.asarray(configurations, bool)
    if not chosen.any():
        return float("nan"), float("nan")
    atoms = np.repeat(chosen, reference.n_atoms)
    energy = np.sqrt(np.mean(((mixed.energies - reference.energies)[chosen] / reference.n_atoms[chosen]) ** 2))
    force = np.sqrt(np.mean((mixed.forces[atoms] - reference.forces[atoms]) ** 2))
    return float(energy), float(force)


def mean_energy_difference(reference: Labels, teacher: Labels) -> float:
    """Mean per-atom reference energy minus mean per-atom teacher energy (eV/atom)."""
    return float(np.mean(reference.energies / reference.n_atoms) - np.mean(teacher.energies / teacher.n_atoms))


def alignment_sample(n_configs: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(size, n_configs)`` configurations drawn at random without replacement."""
    if size < 1:
        raise InputError(f"the alignment sample needs at least one configuration, got {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_configs, size=min(size, n_configs), replace=False))


@dataclass(frozen=True)
class TeacherAlignment:
    """Whether teacher energies are shifted onto the reference's scale, and by what."""

    mode: str
    mean_difference_per_atom: float  # reference − teacher, eV/atom, over all configurations
    fit: EnergyAlignment | None  # None: no shift applied
    sample: np.ndarray  # configurations the fit used
    seed: int

    @property
    def applied(self) -> bool:
        return self.fit is not None

    @property
    def warning(self) -> str | None:
        """Set when the sample is too small for the residual to show a disagreement."""
        if self.fit is None:
            return None
        unknowns = len(self.fit.shifts) - len(self.fit.undetermined)
        if self.fit.n_structures <= unknowns:
            return (f"energy alignment fitted {unknowns} shift(s) on {self.fit.n_structures} configuration(s): the "
                    "residual is zero by construction and cannot show that the sources disagree; use a larger "
                    "--align-sample")
        return None

    def configuration_shifts(self, numbers: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[str | None]]:
        """Shift (eV) per configuration, NaN where the fit cannot align it, and why."""
        if self.fit is None:
            return np.zeros(len(numbers)), [None] * len(numbers)
        problems = [self.fit.problem(z) for z in numbers]
        shifts = [np.nan if problem else self.fit.shift(z) for z, problem in zip(numbers, problems)]
        return np.array(shifts, dtype=float), problems


def align_teacher_energies(
    numbers: Sequence[Sequence[int]],
    reference: Labels,
    teacher: Labels,
    mode: str = "auto",
    sample_size: int = 20,
    seed: int = 0,
    max_residual: float = DEFAULT_MAX_RESIDUAL,
) -> TeacherAlignment:
    """Per-element shifts of teacher energies onto the reference scale (METHODS §2).

    ``mode`` auto aligns when the mean per-atom energies differ by more than
    ``AUTO_ALIGN_THRESHOLD``. The shifts are fitted on a random sample of configurations, which
    carry both labels here, so the sample is unbiased (not the high-U ones). A fit whose
    per-atom residual exceeds ``max_residual`` is an InputError: the sources then differ by
    more than a constant per element.
    """
    if mode not in ALIGN_MODES:
        raise InputError(f"--align-energies must be one of {', '.join(ALIGN_MODES)}, got {mode!r}")
    difference = mean_energy_difference(reference, teacher)
    if mode == "off" or (mode == "auto" and abs(difference) <= AUTO_ALIGN_THRESHOLD):
        return TeacherAlignment(mode, difference, None, np.array([], dtype=int), seed)
    sample = alignment_sample(len(numbers), sample_size, seed)
    fit = fit_energy_alignment(
        [numbers[j] for j in sample], reference.energies[sample], teacher.energies[sample], max_residual, RANDOM
    )
    if not fit.usable:
        raise InputError(
            f"{fit.refused}. Fit on more configurations (--align-sample, now {len(sample)}), or, if you know "
            "both sources share their energy zero, --align-energies off"
        )
    return TeacherAlignment(mode, difference, fit, sample, seed)
