"""Committee UQ on ACE ensembles: CBE, CBF, ABF and their adaptive thresholds (paper 000 §2.2.1; METHODS §4).

The metrics themselves live in ``uq_flows.uncertainty.committee``; this module evaluates the
members and applies ε = Q3 + 1.5·IQR of the training-set distribution of each quantity
(eq. 7). A configuration is novel if U_E,cfg > ε_E or U_F,cfg > ε_F,cfg; an atom if
U_F,atom > ε_F,atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field

from uq_flows.ace.potential import AceCalculator, predict
from uq_flows.errors import InputError
from uq_flows.uncertainty.committee import (
    adaptive_threshold,
    atom_force_committee_uncertainty,
    config_force_committee_uncertainty,
    energy_committee_uncertainty,
)


class CommitteeThresholds(BaseModel):
    """ε = Q3 + 1.5·IQR of the training-set committee uncertainties (paper 000, eq. 7)."""

    energy: float = Field(description="ε_E for U_E,cfg (CBE), eV per configuration.")
    force_config: float = Field(description="ε_F,cfg for U_F,cfg (CBF), eV/Å.")
    force_atom: float = Field(description="ε_F,atom for U_F,atom (ABF), eV/Å.")


@dataclass
class CommitteeUncertainty:
    """Per configuration U_E,cfg and U_F,cfg, per atom U_F,atom, and novelty flags."""

    energy: np.ndarray
    force_config: np.ndarray
    force_atom: np.ndarray
    n_atoms: np.ndarray
    mean_energies: np.ndarray
    mean_forces: np.ndarray
    thresholds: CommitteeThresholds | None = None

    def atom_blocks(self, values: np.ndarray) -> list[np.ndarray]:
        return np.split(values, np.cumsum(self.n_atoms)[:-1])

    @property
    def novel_configs(self) -> np.ndarray | None:
        if self.thresholds is None:
            return None
        return (self.energy > self.thresholds.energy) | (self.force_config > self.thresholds.force_config)

    @property
    def novel_atoms(self) -> np.ndarray | None:
        if self.thresholds is None:
            return None
        return self.force_atom > self.thresholds.force_atom


def member_predictions(potentials: Sequence[str | Path], structures: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Energies (K, n_configs) and forces (K, N_total, 3) of every member."""
    if len(potentials) < 2:
        raise InputError(f"committee UQ needs at least two ensemble members, got {len(potentials)}")
    energies, forces = [], []
    for potential in potentials:
        calculator = AceCalculator(potential)
        for atoms in structures:
            calculator.check_elements(atoms)
        e, f = predict(calculator, structures)
        energies.append(e)
        forces.append(np.concatenate(f))
    return np.array(energies), np.array(forces)


def committee_uncertainty(energies: np.ndarray, forces: np.ndarray, n_atoms: Sequence[int],
                          thresholds: CommitteeThresholds | None = None) -> CommitteeUncertainty:
    """CBE, CBF and ABF (paper 000, eqs. 1-3) from member predictions."""
    n_atoms = np.asarray(n_atoms, dtype=int)
    return CommitteeUncertainty(
        energy=energy_committee_uncertainty(energies),
        force_config=config_force_committee_uncertainty(forces, n_atoms),
        force_atom=atom_force_committee_uncertainty(forces),
        n_atoms=n_atoms,
        mean_energies=np.mean(energies, axis=0),
        mean_forces=np.mean(forces, axis=0),
        thresholds=thresholds,
    )


def committee_thresholds(training: CommitteeUncertainty) -> CommitteeThresholds:
    """Thresholds from the committee uncertainties of the training set."""
    return CommitteeThresholds(
        energy=adaptive_threshold(training.energy),
        force_config=adaptive_threshold(training.force_config),
        force_atom=adaptive_threshold(training.force_atom),
    )
