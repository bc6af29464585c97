"""Structure identity and the serialisable structure record.

Every structure has a stable id: a SHA-256 of its atomic numbers, periodicity, cell and
Cartesian positions rounded to ``decimals`` Å (DESIGN.md, "Data and databases"). Atom order
is part of the identity because per-atom labels (forces) follow it; positions are not
wrapped into the cell, so a structure and its translated image have different ids.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

ID_PREFIX = "uq-"
ID_HEX_CHARS = 24  # 96 bits: collisions are negligible for any realistic dataset


def structure_id(atoms: Atoms, decimals: int = 4) -> str:
    """Content hash of ``atoms`` at a precision of 10**-decimals Å."""
    digest = hashlib.sha256()
    digest.update(f"v1|{decimals}|".encode())
    digest.update(np.asarray(atoms.numbers, dtype="<i8").tobytes())
    digest.update(np.asarray(atoms.pbc, dtype="u1").tobytes())
    for array in (atoms.cell.array, atoms.positions):
        # + 0.0 turns -0.0 into 0.0 so the sign of a rounded zero does not change the id
        rounded = np.round(np.asarray(array, dtype=float), decimals) + 0.0
        digest.update(rounded.astype("<f8").tobytes())
    return ID_PREFIX + digest.hexdigest()[:ID_HEX_CHARS]


class StructureRecord(BaseModel):
    """A structure as plain data, for job inputs, outputs and JSON export."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Content hash, see structure_id.")
    numbers: list[int]
    cell: list[list[float]]
    positions: list[list[float]]
    pbc: tuple[bool, bool, bool]
    source: str | None = Field(None, description="Where it was read from (file:index).")

    @classmethod
    def from_atoms(cls, atoms: Atoms, decimals: int = 4, source: str | None = None) -> StructureRecord:
        return cls(
            id=structure_id(atoms, decimals),
            numbers=[int(z) for z in atoms.numbers],
            cell=atoms.cell.array.tolist(),
            positions=atoms.positions.tolist(),
            pbc=tuple(bool(p) for p in atoms.pbc),
            source=source if source is not None else atoms.info.get("uq_source"),
        )

    def to_atoms(self) -> Atoms:
        atoms = Atoms(numbers=self.numbers, cell=self.cell, positions=self.positions, pbc=self.pbc)
        atoms.info["uq_id"] = self.id
        if self.source is not None:
            atoms.info["uq_source"] = self.source
        return atoms

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def formula(self) -> str:
        return Atoms(numbers=self.numbers).get_chemical_formula()


def chemical_system(numbers) -> str:
    """The elements of a structure, sorted and joined (``Ge-Si``): the audit's strata, a campaign row field."""
    from ase.data import chemical_symbols

    return "-".join(sorted({chemical_symbols[int(z)] for z in numbers}))


def records_from_atoms(structures: list[Atoms], decimals: int = 4) -> list[StructureRecord]:
    return [StructureRecord.from_atoms(atoms, decimals) for atoms in structures]


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays to plain Python, NaN/inf to None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
