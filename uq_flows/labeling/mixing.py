"""Uncertainty-aware model distillation (UAMD, paper 001, "Methods"; METHODS §2).

Configurations with U < U_c take teacher labels (energy and forces possibly from two
different members, as in the paper); the others keep their reference (DFT) labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uq_flows.errors import InputError
from uq_flows.io import Labels

DFT = "dft"
TEACHER = "teacher"


@dataclass(frozen=True)
class MixedLabels:
    """The distilled labels, which configurations are teacher-labelled, and summary metrics."""

    labels: Labels
    teacher: np.ndarray  # bool per configuration

    @property
    def label_source(self) -> list[str]:
        return [TEACHER if t else DFT for t in self.teacher]

    @property
    def dft_config_fraction(self) -> float:
        return float(np.mean(~self.teacher))

    @property
    def dft_atom_fraction(self) -> float:
        """DFT share counted by atomic environments (METHODS §2)."""
        n_atoms = self.labels.n_atoms
        return float(n_atoms[~self.teacher].sum() / n_atoms.sum())


def mix_labels(reference: Labels, energy_from: Labels, forces_from: Labels, u: np.ndarray, uc: float) -> MixedLabels:
    """Teacher labels where U < U_c, reference labels elsewhere."""
    u = np.asarray(u, dtype=float)
    if u.shape != reference.energies.shape:
        raise InputError(f"{u.size} U values for {reference.energies.size} configurations")
    if np.isnan(uc) or uc < 0:
        raise InputError(f"U_c must be a non-negative number, got {uc}")
    teacher = u < uc
    atom_teacher = np.repeat(teacher, reference.n_atoms)
    energies = np.where(teacher, energy_from.energies, reference.energies)
    forces = np.where(atom_teacher[:, None], forces_from.forces, reference.forces)
    return MixedLabels(Labels(energies, forces, reference.n_atoms), teacher)


def label_errors(mixed: Labels, reference: Labels) -> tuple[float, float]:
    """Energy RMSE per atom (eV/atom) and force RMSE over all components (eV/Å)."""
    energy = np.sqrt(np.mean(((mixed.energies - reference.energies) / reference.n_atoms) ** 2))
    force = np.sqrt(np.mean((mixed.forces - reference.forces) ** 2))
    return float(energy), float(force)
