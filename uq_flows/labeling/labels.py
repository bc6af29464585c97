"""The label record every labeller returns: DFT (VASP, CP2K), ASE calculators and uMLIP teachers.

Units: energy total in eV, forces (N, 3) in eV/Å, stress as 6 Voigt components
(xx, yy, zz, yz, xz, xy) in eV/Å³ with ASE's sign (positive = tensile; VASP's kBar
"pressure" convention has the opposite sign). A failed or rejected label carries no numbers
and a human-readable reason; nothing is silently dropped (DESIGN.md, "Queues and resume").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field

OK, FAILED, REJECTED = "ok", "failed", "rejected"
DFT, TEACHER = "dft", "teacher"


class Label(BaseModel):
    """Energy, forces and stress of one structure, or why there are none."""

    id: str = Field(description="Structure id (records.structure_id).")
    status: Literal["ok", "failed", "rejected"]
    kind: Literal["dft", "teacher"] = Field(description="DFT reference or uMLIP/ASE teacher label.")
    source: str = Field(description="Code or model: 'vasp', 'cp2k', a member name, a calculator path.")
    energy: float | None = None
    forces: list[list[float]] | None = None
    stress: list[float] | None = None
    reason: str | None = Field(None, description="Why the label failed or was rejected.")
    provenance: dict = Field(default_factory=dict, description="Versions, input settings, energy shifts.")
    U: float | None = Field(None, description="The uncertainty the structure was routed with.")
    iteration: int | None = None
    loop: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def failed(cls, id: str, kind: str, source: str, reason: str, **fields) -> Label:
        return cls(id=id, status=FAILED, kind=kind, source=source, reason=reason, **fields)

    @classmethod
    def from_results(cls, id: str, kind: str, source: str, energy: float, forces, stress=None, **fields) -> Label:
        """An ``ok`` label from calculator results, or ``failed`` if any number is not finite."""
        forces = np.asarray(forces, dtype=float)
        stress = None if stress is None else np.asarray(stress, dtype=float).reshape(-1)
        finite = np.isfinite(energy) and np.all(np.isfinite(forces))
        if stress is not None and not np.all(np.isfinite(stress)):
            stress = None
        if not finite:
            return cls.failed(id, kind, source, "non-finite energy or forces", **fields)
        if stress is not None and stress.size == 9:
            stress = stress.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        return cls(
            id=id, status=OK, kind=kind, source=source, energy=float(energy), forces=forces.tolist(),
            stress=None if stress is None else stress.tolist(), **fields,
        )

    def to_atoms(self, structure: Atoms) -> Atoms:
        """``structure`` carrying this label (SinglePointCalculator) and its metadata in info."""
        from uq_flows.io import with_labels

        if not self.ok:
            raise ValueError(f"label {self.id} is {self.status}: {self.reason}")
        atoms = with_labels(structure, self.energy, np.array(self.forces), uq_id=self.id,
                            label_source=self.kind, label_code=self.source)
        if self.stress is not None:
            atoms.calc.results["stress"] = np.array(self.stress)
        if self.U is not None:
            atoms.info["U"] = self.U
        return atoms
