"""Training data for ACE fits: labelled structures, per-element reference energies, pacemaker frames.

ACE learns E − Σ_i ē_{Z_i}: the total energy minus a per-element reference (METHODS §3, "fit
E − N·ē and add it back"). ē comes from a least-squares fit of the total energies on the
element counts, ē = pinv(counts) · E, the same solve as pacemaker's ``reference_energy: auto``
but without its extra shift; the reference goes into the potential files (see
``uq_flows.ace.potential``) so predictions are total energies again.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from uq_flows.errors import InputError
from uq_flows.io import atomic_path, read_labels, read_structures


@dataclass(frozen=True)
class TrainingSet:
    """Structures with total energies (eV) and forces (eV/Å), in input order."""

    structures: list[Atoms]
    energies: np.ndarray
    forces: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(atoms) for atoms in self.structures])

    @property
    def elements(self) -> list[str]:
        """Chemical symbols present, sorted alphabetically (pacemaker's element order)."""
        return sorted({symbol for atoms in self.structures for symbol in atoms.get_chemical_symbols()})

    def atoms_per_element(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for atoms in self.structures:
            counts.update(atoms.get_chemical_symbols())
        return dict(sorted(counts.items()))

    def all_forces(self) -> np.ndarray:
        """Forces of every atom, configurations concatenated in order: (N_total, 3)."""
        return np.concatenate(self.forces)

    def subset(self, indices: Sequence[int]) -> TrainingSet:
        indices = [int(i) for i in indices]
        return TrainingSet([self.structures[i] for i in indices], self.energies[indices],
                           [self.forces[i] for i in indices])


def training_set(structures: Sequence[Atoms], name: str = "") -> TrainingSet:
    """A training set from labelled structures; every structure needs an energy and forces."""
    where = f"{name}: " if name else ""
    if not structures:
        raise InputError(f"{where}no structures to fit")
    labels = read_labels(structures, name=name)
    offsets = np.cumsum(labels.n_atoms)[:-1]
    clean = []
    for atoms, energy, forces in zip(structures, labels.energies, np.split(labels.forces, offsets)):
        copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.info.update(atoms.info)
        copy.calc = SinglePointCalculator(copy, energy=float(energy), forces=forces)
        clean.append(copy)
    from uq_flows.ace.potential import check_periodicity

    for index, atoms in enumerate(clean):
        check_periodicity(atoms, f"{where}structure {index}: ")
    return TrainingSet(clean, labels.energies.copy(), list(np.split(labels.forces, offsets)))


def read_training_set(paths: Sequence[str | Path]) -> TrainingSet:
    """Labelled structures of extxyz files, pacemaker pickles or folders, concatenated."""
    if not paths:
        raise InputError("no training files given")
    structures: list[Atoms] = []
    for path in paths:
        from_file = read_structures(path)
        read_labels(from_file, name=str(path))  # clear per-file message for missing labels
        structures.extend(from_file)
    return training_set(structures)


def labelled_structures(structures: Sequence, labels: Sequence) -> list[Atoms]:
    """Atoms carrying the ``ok`` labels of the labelling stage, matched to structures by id.

    ``structures`` are ``StructureRecord``s, ``labels`` the ``Label``s of a
    ``DistilledDataset`` (failed and rejected labels are skipped).
    """
    by_id = {record.id: record for record in structures}
    out = []
    for label in labels:
        if label.status != "ok":
            continue
        if label.id not in by_id:
            raise InputError(f"label {label.id} has no structure among the {len(by_id)} given")
        out.append(label.to_atoms(by_id[label.id].to_atoms()))
    if not out:
        raise InputError("the dataset has no successful labels to fit")
    return out


def element_counts(structures: Sequence[Atoms], elements: Sequence[str]) -> np.ndarray:
    """(n_configs, n_elements) matrix of how many atoms of each element a structure holds."""
    index = {element: k for k, element in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for j, atoms in enumerate(structures):
        for symbol in atoms.get_chemical_symbols():
            counts[j, index[symbol]] += 1
    return counts


def fit_reference_energies(training: TrainingSet) -> dict[str, float]:
    """ē per element: least-squares solution of E_j ≈ Σ_Z n_jZ ē_Z (METHODS §3).

    With one composition family (e.g. a pure element) ē is the mean energy per atom; when
    element counts are collinear the minimum-norm solution is taken, as pacemaker does.
    """
    elements = training.elements
    counts = element_counts(training.structures, elements)
    solution = np.linalg.pinv(counts, rcond=1e-10) @ training.energies
    return {element: float(value) for element, value in zip(elements, solution)}


def reference_energy(atoms: Atoms, reference: Mapping[str, float]) -> float:
    """Σ_i ē_{Z_i} − shift·N, with pacemaker's ``{"Cu": ē, "shift": s}`` convention."""
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(reference) - {"shift"})
    if missing:
        raise InputError(f"no reference energy for element(s) {', '.join(missing)}")
    return float(sum(reference[s] for s in symbols) - reference.get("shift", 0.0) * len(symbols))


def corrected_energies(training: TrainingSet, reference: Mapping[str, float]) -> np.ndarray:
    """E − Σ_i ē_{Z_i}: pacemaker's ``energy_corrected`` column, what ACE is fitted to."""
    return training.energies - np.array([reference_energy(atoms, reference) for atoms in training.structures])


def fit_frame(training: TrainingSet, reference: Mapping[str, float]) -> pd.DataFrame:
    """The pacemaker DataFrame: ase_atoms, energy, forces, energy_corrected.

    Column labels are a plain object index: a pandas-3 string index pickles as a type that
    pandas < 3 (the fit environment) cannot unpickle.
    """
    frame = pd.DataFrame(
        {
            "ase_atoms": [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in training.structures],
            "energy": training.energies.astype(float),
            "forces": [np.asarray(f, dtype=float) for f in training.forces],
            "energy_corrected": corrected_energies(training, reference),
        }
    )
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return frame


def write_fit_frame(path: str | Path, training: TrainingSet, reference: Mapping[str, float]) -> None:
    """Write ``fit_frame`` as a gzip pickle (protocol 4) that the fit environment can read."""
    frame = fit_frame(training, reference)
    with atomic_path(path) as temporary:
        with gzip.open(temporary, "wb") as handle:
            frame.to_pickle(handle, protocol=4)


def bootstrap_indices(n_structures: int, seed: int) -> np.ndarray:
    """Indices of a bootstrap sample (n draws with replacement), sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(0, n_structures, size=n_structures))
