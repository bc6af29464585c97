"""Ensembles from precomputed predictions: member files aligned with reference labels.

Used to evaluate U against reference (DFT) labels and to build distilled datasets without
rerunning the members (paper 001, Figs. 2-5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.ensemble.scoring import MemberWeights, resolve_weights
from uq_flows.errors import InputError
from uq_flows.io import EnergyConvention, Labels, read_labels, read_structures
from uq_flows.uncertainty import (
    ensemble_mean_force_error,
    force_uncertainty,
    inverse_rmse_weights,
    top_n_members,
)


@dataclass(frozen=True)
class PrecomputedEnsemble:
    """Reference structures and labels with every member's labels on the same structures."""

    structures: list[Atoms]
    reference: Labels
    predictions: dict[str, Labels]

    @classmethod
    def load(
        cls,
        reference: str | Path,
        predictions: Mapping[str, str | Path],
        reference_energy: EnergyConvention = "total",
        prediction_energy: EnergyConvention = "total",
    ) -> PrecomputedEnsemble:
        """Read and cross-check files: same configurations, same atoms, same order."""
        if not predictions:
            raise InputError("no --prediction files given")
        structures = read_structures(reference)
        labels = read_labels(structures, reference_energy, name=str(reference))
        members = {}
        for name, path in predictions.items():
            predicted = read_structures(path)
            _check_aligned(structures, predicted, reference, path)
            members[name] = read_labels(predicted, prediction_energy, name=f"{name} ({path})")
        return cls(structures, labels, members)

    @property
    def n_atoms(self) -> np.ndarray:
        return self.reference.n_atoms

    def weights(
        self,
        rmse: Mapping[str, float] | None = None,
        scheme: str | Path = "auto",
        top_n: int | None = None,
    ) -> MemberWeights:
        """Members ranked by RMSE (TopN, METHODS §1) with weights renormalised over them."""
        names = list(self.predictions)
        if rmse:
            unknown = sorted(set(rmse) - set(names))
            missing = [name for name in names if name not in rmse]
            if unknown:
                raise InputError(f"--rmse for {', '.join(unknown)}, which has no --prediction")
            if missing:
                raise InputError(f"--rmse missing for {', '.join(missing)}: give one per prediction")
            table, source = dict(rmse), "given"
        elif top_n is not None or scheme != "equal":
            resolved = resolve_weights(names, scheme)
            if resolved.rmse is None:
                if top_n is not None:
                    raise InputError("--top-n ranks members by RMSE: give --rmse NAME=VALUE or --weights paper|FILE")
                return resolved
            table, source = resolved.rmse, resolved.source
        else:
            return resolve_weights(names, "equal")
        used = top_n_members(table, top_n)
        return MemberWeights(used, inverse_rmse_weights([table[n] for n in used]), source, {n: table[n] for n in used})

    def member_forces(self, members: Sequence[str]) -> np.ndarray:
        return np.stack([self.predictions[name].forces for name in members])

    def uncertainty(self, weights: MemberWeights, variant: int = 1) -> np.ndarray:
        """U per configuration over the chosen members (paper 001, eqs. 1-3)."""
        return force_uncertainty(self.member_forces(weights.members), self.n_atoms, weights.weights, variant)

    def mean_force_error(self, members: Sequence[str]) -> np.ndarray:
        """Error of the plain ensemble-mean force, max over atoms (paper 001, eq. 5)."""
        return ensemble_mean_force_error(self.reference.forces, self.member_forces(members), self.n_atoms)

    def mean_labels(self, members: Sequence[str]) -> Labels:
        """The plain ensemble mean of energies and forces over ``members``."""
        return Labels(
            np.mean([self.predictions[n].energies for n in members], axis=0),
            self.member_forces(members).mean(axis=0),
            self.n_atoms,
        )


def _check_aligned(reference: Sequence[Atoms], other: Sequence[Atoms], ref_path, other_path) -> None:
    if len(reference) != len(other):
        raise InputError(f"{other_path} has {len(other)} configurations, {ref_path} has {len(reference)}")
    for index, (a, b) in enumerate(zip(reference, other)):
        if len(a) != len(b):
            raise InputError(f"{other_path}: configuration {index} has {len(b)} atoms, {ref_path} has {len(a)}")
        if not np.array_equal(a.numbers, b.numbers):
            raise InputError(f"{other_path}: configuration {index} has other elements or atom order than {ref_path}")
