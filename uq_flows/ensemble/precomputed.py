"""Ensembles from precomputed predictions: member files aligned with reference labels.

Used to evaluate U against reference (DFT) labels and to build distilled datasets without
rerunning the members (paper 001, Figs. 2-5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.ensemble.scoring import MemberWeights, resolve_weights
from uq_flows.errors import InputError
from uq_flows.io import EnergyConvention, Labels, read_labels, read_structures
from uq_flows.records import structure_id
from uq_flows.settings import get_settings
from uq_flows.uncertainty import (
    ensemble_mean_force_error,
    force_uncertainty,
    inverse_rmse_weights,
    top_n_members,
)

UQ_ID = "uq_id"
CONTENT_ID = "content id"


@dataclass(frozen=True)
class PrecomputedEnsemble:
    """Reference structures and labels with every member's labels on the same structures."""

    structures: list[Atoms]
    reference: Labels
    predictions: dict[str, Labels]  # in the reference's order
    matched_by: str = CONTENT_ID  # "uq_id" or "content id"
    reordered: tuple[str, ...] = ()  # prediction files that were in another order

    @classmethod
    def load(
        cls,
        reference: str | Path,
        predictions: Mapping[str, str | Path],
        reference_energy: EnergyConvention = "total",
        prediction_energy: EnergyConvention = "total",
        decimals: int | None = None,
    ) -> PrecomputedEnsemble:
        """Read the files and pair every prediction with its reference configuration by identity.

        Prediction files in another order are re-ordered to the reference's (see ``match_order``);
        a configuration missing, duplicated or different is an InputError naming it.
        """
        if not predictions:
            raise InputError("no --prediction files given")
        if decimals is None:
            decimals = get_settings().structure_id_decimals
        structures = read_structures(reference)
        predicted = {name: read_structures(path) for name, path in predictions.items()}
        by = identity_kind(structures, *predicted.values())
        labels = read_labels(structures, reference_energy, name=str(reference))
        members, reordered = {}, []
        for name, path in predictions.items():
            order = match_order(structures, predicted[name], by, decimals, reference, path)
            if not np.array_equal(order, np.arange(len(order))):
                reordered.append(name)
            members[name] = _reordered(read_labels(predicted[name], prediction_energy, name=f"{name} ({path})"), order)
        return cls(structures, labels, members, by, tuple(reordered))

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


def identity_kind(*files: Sequence[Atoms]) -> str:
    """"uq_id" when every structure of every file stores one, else "content id"."""
    stored = all(atoms.info.get("uq_id") not in (None, "") for structures in files for atoms in structures)
    return UQ_ID if stored else CONTENT_ID


def identities(structures: Sequence[Atoms], by: str, decimals: int) -> list[str]:
    """Each structure's stored ``uq_id`` (by="uq_id") or its content hash (``structure_id``)."""
    if by == UQ_ID:
        return [str(atoms.info["uq_id"]) for atoms in structures]
    return [structure_id(atoms, decimals) for atoms in structures]


def check_unique(structures: Sequence[Atoms], ids: Sequence[str], by: str = CONTENT_ID) -> None:
    """InputError naming the first structure met twice (pairing by id would be ambiguous)."""
    first: dict[str, int] = {}
    for index, key in enumerate(ids):
        if key in first:
            j = first[key]
            raise InputError(
                f"{_where(structures[j], j)} and {_where(structures[index], index)} are the same structure "
                f"({structures[index].get_chemical_formula()}, {by} {key}): remove the duplicate"
            )
        first[key] = index


def match_order(
    reference: Sequence[Atoms], other: Sequence[Atoms], by: str, decimals: int,
    ref_name: str | Path = "reference", other_name: str | Path = "predictions",
) -> np.ndarray:
    """Index into ``other`` of each reference configuration: ``other[order[j]]`` is ``reference[j]``.

    Configurations are paired by id (``uq_id`` or content hash, see ``identities``) and every
    pair is checked to be the same structure: same atoms in the same order, and cell and
    position components within 10**-decimals Å (positions up to lattice translations). An id
    is only a fast key: a content hash rounds positions, so a coordinate next to a rounding
    boundary may hash differently after a file round trip (extxyz keeps 8 decimals); such a
    configuration is found by comparing structures, first at the same position in the file.
    Raises InputError naming the first configuration missing, duplicated or different.
    """
    tolerance = 10.0 ** -decimals
    ref_ids, other_ids = identities(reference, by, decimals), identities(other, by, decimals)
    check_unique(reference, ref_ids, by)
    check_unique(other, other_ids, by)
    index = {key: j for j, key in enumerate(ref_ids)}
    matched = np.full(len(reference), -1)
    same_atoms: dict[bytes, list[int]] | None = None
    for k, atoms in enumerate(other):
        j = index.get(other_ids[k])
        if j is not None and matched[j] < 0:
            deviation = _deviation(reference[j], atoms)
            if deviation > tolerance:
                raise InputError(
                    f"{other_name}: configuration {k} ({_describe(atoms, other_ids[k])}) has the {by} of "
                    f"configuration {j} of {ref_name} ({_describe(reference[j], ref_ids[j])}) but "
                    f"{_difference(deviation)}: not the same structure"
                )
        else:
            if same_atoms is None:
                same_atoms = {}
                for i, structure in enumerate(reference):
                    same_atoms.setdefault(_atoms_key(structure), []).append(i)
            candidates = ([k] if k < len(reference) else []) + same_atoms.get(_atoms_key(atoms), [])
            j = next((i for i in candidates if matched[i] < 0 and _deviation(reference[i], atoms) <= tolerance), None)
            if j is None:
                there = (f"; position {k} there holds {reference[k].get_chemical_formula()} ({ref_ids[k]}), with "
                         f"{_difference(_deviation(reference[k], atoms))}"
                         if k < len(reference) else f" ({len(reference)} configurations)")
                raise InputError(
                    f"{other_name}: configuration {k} ({_describe(atoms, other_ids[k])}) is not in "
                    f"{ref_name}{there}"
                )
        matched[j] = k
    if np.any(matched < 0):
        j = int(np.flatnonzero(matched < 0)[0])
        raise InputError(
            f"{ref_name}: configuration {j} ({_describe(reference[j], ref_ids[j])}) has no counterpart in "
            f"{other_name} ({len(other)} configurations, {len(reference)} in {ref_name})"
        )
    return matched


def _reordered(labels: Labels, order: np.ndarray) -> Labels:
    forces = np.split(labels.forces, np.cumsum(labels.n_atoms)[:-1])
    return Labels(labels.energies[order], np.concatenate([forces[i] for i in order]), labels.n_atoms[order])


def _where(atoms: Atoms, index: int) -> str:
    return f"configuration {atoms.info.get('uq_source', index)}"


def _describe(atoms: Atoms, key: str) -> str:
    return f"{atoms.get_chemical_formula()}, {key}"


def _atoms_key(atoms: Atoms) -> bytes:
    return np.asarray(atoms.numbers, dtype="<i8").tobytes()


def _deviation(a: Atoms, b: Atoms) -> float:
    """Largest difference of a cell or position component (Å, positions up to lattice
    translations); inf when atoms, their order or periodicity differ."""
    if len(a) != len(b) or not np.array_equal(a.numbers, b.numbers) or not np.array_equal(a.pbc, b.pbc):
        return math.inf
    cell = float(np.max(np.abs(a.cell.array - b.cell.array)))
    delta = b.positions - a.positions
    if a.pbc.any() and a.cell.rank == 3:
        fractional = np.linalg.solve(a.cell.array.T, delta.T).T
        fractional[:, a.pbc] -= np.round(fractional[:, a.pbc])
        delta = fractional @ a.cell.array
    return max(cell, float(np.max(np.abs(delta))))


def _difference(deviation: float) -> str:
    if math.isinf(deviation):
        return "other atoms, atom order or periodicity"
    return f"a cell or positions {deviation:.3g} Å away"
