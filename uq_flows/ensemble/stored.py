"""Stored predictions as an ensemble member: a uMLIP's labels computed once, read back by id.

Paper 001 measured its headline result on stored predictions of 20 uMLIPs over an existing DFT
set; the members ``NAME=precomputed:PATH`` (total energies) and
``NAME=precomputed-per-atom:PATH`` replay such files in every place a member runs. A structure
is found by its ``uq_id`` where the stored file has one for it, else by its content id
(``records.structure_id``); a structure with no stored prediction is an error the member
reports (status ``missing_prediction``), never a silent number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from uq_flows.errors import InputError
from uq_flows.io import read_labels, read_structures
from uq_flows.records import structure_id


SAME_LABEL = 1e-4  # eV and eV/Å: one structure's two stored labels that agree this well are one answer


class MissingPrediction(LookupError):
    """The stored file has no prediction for this structure."""


class StoredPredictions(Calculator):
    """An ASE calculator answering from one file of labelled structures (any format ``io`` reads).

    Energies are stored total (``energy="total"``) or per atom; forces in eV/Å; a stress (eV/Å³,
    Voigt) where the file has one. The file is read once, when the member is loaded.
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, path: str | Path, energy: str = "total", decimals: int = 4) -> None:
        super().__init__()
        self.path = Path(path)
        self.decimals = decimals
        stored = read_structures(self.path)
        labels = read_labels(stored, energy, name=str(self.path))
        offsets = np.concatenate([[0], np.cumsum(labels.n_atoms)])
        self._numbers = [atoms.numbers.copy() for atoms in stored]
        self._energies = labels.energies
        self._forces = [labels.forces[offsets[k]:offsets[k + 1]] for k in range(len(stored))]
        self._stresses = [_stress(atoms) for atoms in stored]
        self._by_uq_id: dict[str, int] = {}
        self._by_content: dict[str, int] = {}
        for index, atoms in enumerate(stored):
            uq_id = atoms.info.get("uq_id")
            if uq_id not in (None, ""):
                self._add_once(self._by_uq_id, str(uq_id), index, "uq_id")
            self._add_once(self._by_content, structure_id(atoms, decimals), index, "content id")

    def __len__(self) -> int:
        return len(self._energies)

    def index_of(self, atoms: Atoms) -> int:
        """The stored structure that is ``atoms``: the one stored with its uq_id (or, as uq-flows
        names structures by content, with its content id as uq_id), else the one with its content."""
        uq_id = atoms.info.get("uq_id")
        content = structure_id(atoms, self.decimals)
        found = [self._by_uq_id.get(key) for key in (uq_id, content) if key not in (None, "")]
        index = next((k for k in found if k is not None), self._by_content.get(content))
        if index is None:
            raise MissingPrediction(f"no stored prediction in {self.path.name} for this structure "
                                    f"(uq_id {uq_id or 'none'}, content id {content})")
        if not np.array_equal(self._numbers[index], atoms.numbers):
            raise MissingPrediction(f"the stored structure {index} of {self.path.name} with this id has other atoms "
                                    f"({len(self._numbers[index])} stored, {len(atoms)} given)")
        return index

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        index = self.index_of(self.atoms)
        self.results = {"energy": float(self._energies[index]), "forces": self._forces[index].copy()}
        if "stress" in properties:
            if self._stresses[index] is None:
                raise MissingPrediction(f"{self.path.name} stores no stress for structure {index}")
            self.results["stress"] = self._stresses[index].copy()


    def _add_once(self, table: dict[str, int], key: str, index: int, kind: str) -> None:
        """Index ``key``; a structure stored twice is fine with the same labels (to 1e-4 eV and eV/Å: a
        float32 model's two runs differ by 1e-6), ambiguous with others."""
        first = table.setdefault(key, index)
        if first != index and not (abs(self._energies[first] - self._energies[index]) <= SAME_LABEL
                                   and np.allclose(self._forces[first], self._forces[index], rtol=0, atol=SAME_LABEL)):
            raise InputError(f"{self.path}: structures {first} and {index} have the same {kind} {key} but different "
                             "labels: stored predictions must give each structure one answer")


def _stress(atoms: Atoms) -> np.ndarray | None:
    results = atoms.calc.results if atoms.calc is not None else {}
    stress = results.get("stress", atoms.info.get("stress"))
    if stress is None:
        return None
    stress = np.asarray(stress, dtype=float)
    if stress.shape == (3, 3):
        stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return stress.reshape(6) if stress.size == 6 else None
