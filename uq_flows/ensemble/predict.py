"""Evaluate one ensemble member on a batch of structures, recording every failure as data.

The forces collected here are the F_ijk of paper 001, eq. 1. A structure a member cannot
predict gets a status and a reason instead of numbers, so U is never computed from a
silently smaller ensemble. Structures that are physically broken are screened before any
model runs: non-finite positions or cell give ``invalid``, atoms closer than the hard
minimum distance give ``rejected`` (``STRUCTURE_STATUSES``: the same for every member).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import chemical_symbols

from uq_flows.ensemble.members import MemberSpec, load_calculator, supported_numbers
from uq_flows.ensemble.stored import MissingPrediction
from uq_flows.errors import InputError
from uq_flows.screening import (
    HARD_MIN_DISTANCE,
    check_min_distance,
    non_finite_problem,
    structure_problem,
)
from uq_flows.records import jsonable
from uq_flows.settings import get_settings

logger = logging.getLogger(__name__)

STRUCTURE_STATUSES = ("invalid", "rejected")  # the structure's fault, not a member's
STATUSES = ("ok", "unsupported_element", "non_finite", "error", "missing_prediction", *STRUCTURE_STATUSES)
_MAX_REASON = 1000


@dataclass(eq=False)
class MemberPredictions:
    """One member's energies (eV), forces (eV/Å) and Voigt stresses (eV/Å³) on n structures.

    Forces of all structures are concatenated in structure order (``n_atoms`` gives the
    split). Entries of structures whose status is not "ok" are NaN; stresses are also NaN
    for structures that are not periodic in 3D or when the member has no stress. ``reasons``
    explain every status other than "ok"; an "ok" structure may carry a note when its
    stress could not be computed.
    """

    member: str
    n_atoms: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    stresses: np.ndarray
    status: list[str]
    reasons: list[str | None]
    version: str | None = None

    def __post_init__(self) -> None:
        try:
            self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64).reshape(-1)
            self.energies = np.asarray(self.energies, dtype=float).reshape(-1)
            self.forces = np.asarray(self.forces, dtype=float).reshape(-1, 3)
            self.stresses = np.asarray(self.stresses, dtype=float).reshape(-1, 6)
        except (TypeError, ValueError) as exc:
            raise InputError(f"predictions of {self.member}: {exc}") from exc
        n = len(self.n_atoms)
        self.status = list(self.status)
        self.reasons = list(self.reasons)
        if np.any(self.n_atoms < 0):
            raise InputError(f"predictions of {self.member}: negative atom counts")
        sizes = {
            "energies": len(self.energies),
            "stresses": len(self.stresses),
            "status": len(self.status),
            "reasons": len(self.reasons),
        }
        wrong = {key: size for key, size in sizes.items() if size != n}
        if wrong:
            raise InputError(f"predictions of {self.member}: {n} structures but lengths {wrong}")
        if len(self.forces) != int(self.n_atoms.sum()):
            raise InputError(
                f"predictions of {self.member}: {len(self.forces)} force rows for {int(self.n_atoms.sum())} atoms"
            )
        unknown = sorted({s for s in self.status if s not in STATUSES})
        if unknown:
            raise InputError(f"predictions of {self.member}: unknown status {unknown}")

    @classmethod
    def failed(
        cls, member: str, n_atoms: Sequence[int], status: str = "error", reason: str | None = None, version: str | None = None
    ) -> MemberPredictions:
        """All-NaN predictions for structures the member never evaluated (e.g. a lost job)."""
        if status == "ok" or status not in STATUSES:
            raise InputError(f"failed predictions need a failure status, not {status!r}")
        n_atoms = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
        n = len(n_atoms)
        return cls(
            member=member,
            n_atoms=n_atoms,
            energies=np.full(n, np.nan),
            forces=np.full((int(n_atoms.sum()), 3), np.nan),
            stresses=np.full((n, 6), np.nan),
            status=[status] * n,
            reasons=[reason] * n,
            version=version,
        )

    @property
    def n_structures(self) -> int:
        return len(self.n_atoms)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of structures with status "ok"."""
        return np.array([s == "ok" for s in self.status], dtype=bool)

    @property
    def offsets(self) -> np.ndarray:
        """Row where each structure's forces start, plus the total (length n + 1)."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)])

    def structure_forces(self, i: int) -> np.ndarray:
        """Forces (n_atoms[i], 3) of structure ``i`` (a view)."""
        if not -self.n_structures <= i < self.n_structures:
            raise IndexError(f"structure {i} out of range for {self.n_structures} structures")
        i %= self.n_structures
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.forces[start:stop]

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, NaN written as None (strict JSON); MSONable keys for jobflow."""
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "member": self.member,
            "version": self.version,
            "n_atoms": [int(n) for n in self.n_atoms],
            "energies": jsonable(self.energies),
            "forces": jsonable(self.forces),
            "stresses": jsonable(self.stresses),
            "status": list(self.status),
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberPredictions:
        try:
            return cls(
                member=data["member"],
                n_atoms=np.asarray(data["n_atoms"], dtype=np.int64),
                energies=_float_array(data["energies"]),
                forces=_float_array(data["forces"]).reshape(-1, 3),
                stresses=_float_array(data["stresses"]).reshape(-1, 6),
                status=data["status"],
                reasons=data["reasons"],
                version=data.get("version"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a member-predictions document: {type(exc).__name__}: {exc}") from exc


def _float_array(values: Any) -> np.ndarray:
    """None (JSON for NaN) back to NaN."""
    return np.array(values if len(values) else [], dtype=float)


def predict_member(
    spec: MemberSpec,
    structures: Sequence[Atoms],
    calculator: BaseCalculator | None = None,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
    min_distance: float = HARD_MIN_DISTANCE,
    shortest: Sequence[float | None] | None = None,
) -> MemberPredictions:
    """Energy, forces and (3D-periodic cells) stress of every structure with one member.

    Structures with non-finite positions or cell (``invalid``), atoms closer than
    ``min_distance`` Å, periodic images included (``rejected``), and elements the member does
    not cover are reported before calling the model; the model is loaded only if some
    structure passes these screens. Non-finite output and exceptions become statuses with
    reasons, never a crash of the batch. The user's Atoms are not modified (the member sees
    copies without constraints). ``progress(k)`` is called with the number of structures
    done after each one. ``shortest``: each structure's stored shortest distance
    (``screening.shortest_distance_within``), when known.
    """
    structures = list(structures)
    if not structures:
        raise InputError(f"no structures to predict with {spec.name}")
    for i, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise InputError(f"structure {i} is a {type(atoms).__name__}, not an ase.Atoms")
    min_distance = check_min_distance(min_distance)
    known = list(shortest) if shortest is not None else [None] * len(structures)
    screened = [_screen(atoms, min_distance, d) for atoms, d in zip(structures, known)]
    covered, can_stress = None, False
    if any(result is None for result in screened):
        if calculator is None:
            calculator = load_calculator(spec, device)
        if "torch" in sys.modules:  # the member uses torch: machines are shared
            sys.modules["torch"].set_num_threads(get_settings().torch_threads)
        covered = supported_numbers(spec, calculator)
        can_stress = "stress" in getattr(calculator, "implemented_properties", ())

    n_atoms = np.array([len(atoms) for atoms in structures], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    energies = np.full(len(structures), np.nan)
    forces = np.full((int(offsets[-1]), 3), np.nan)
    stresses = np.full((len(structures), 6), np.nan)
    status: list[str] = []
    reasons: list[str | None] = []
    with warnings.catch_warnings():
        _quiet_known_warnings()
        for i, (atoms, result) in enumerate(zip(structures, screened)):
            if result is None:
                result = _predict_one(spec, calculator, atoms, covered, can_stress)
            status.append(result.status)
            reasons.append(result.reason)
            if result.status == "ok":
                energies[i] = result.energy
                forces[offsets[i] : offsets[i + 1]] = result.forces
                if result.stress is not None:
                    stresses[i] = result.stress
            if progress is not None:
                progress(i + 1)
    n_bad = sum(s != "ok" for s in status)
    if n_bad:
        logger.warning("%s: %d of %d structures not predicted", spec.name, n_bad, len(structures))
    return MemberPredictions(
        member=spec.name,
        n_atoms=n_atoms,
        energies=energies,
        forces=forces,
        stresses=stresses,
        status=status,
        reasons=reasons,
        version=spec.version,
    )


@dataclass
class _Result:
    status: str
    reason: str | None = None
    energy: float = np.nan
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None


def _screen(atoms: Atoms, min_distance: float, shortest: float | None = None) -> _Result | None:
    """The status of a structure no member should see, or None if it may be predicted."""
    if len(atoms) == 0:
        return _Result("error", "structure has no atoms")
    problem = non_finite_problem(atoms)
    if problem:
        return _Result("invalid", f"structure has {problem}")
    problem = structure_problem(atoms, min_distance, shortest) if min_distance > 0 else None
    if problem:
        return _Result("rejected", problem)
    return None


def _predict_one(
    spec: MemberSpec, calculator: BaseCalculator, atoms: Atoms, covered: frozenset[int] | None, can_stress: bool
) -> _Result:
    if covered is not None:
        missing = sorted({int(z) for z in atoms.numbers} - covered)
        if missing:
            names = ", ".join(f"{_symbol(z)} (Z={z})" for z in missing)
            return _Result("unsupported_element", f"{spec.name} does not cover {names}")
    work = atoms.copy()  # a copy carries no calculator; drop constraints: we want raw forces
    work.set_constraint()
    if spec.kind == "chgnet" and work.cell.rank < 3:
        # CHGNet needs an invertible lattice; vectors along non-periodic directions do not
        # change its result, so zero vectors there are completed (checked in the tests)
        missing = work.cell.lengths() == 0
        if work.pbc[missing].any() or work.cell.rank + missing.sum() != 3:
            return _Result("error", f"cell {work.cell.lengths().round(3).tolist()} with pbc {work.pbc.tolist()} is degenerate")
        work.cell = work.cell.complete()
    try:
        if hasattr(calculator, "reset"):
            calculator.reset()
        work.calc = calculator
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=float)
        if forces.shape != (len(work), 3):
            return _Result("error", f"forces of shape {forces.shape} for {len(work)} atoms")
    except MissingPrediction as exc:  # a stored-predictions member that never saw this structure
        return _Result("missing_prediction", str(exc))
    except Exception as exc:  # any member failure is data, not a crash of the batch
        logger.debug("%s failed on a structure", spec.name, exc_info=True)
        return _Result("error", _exception_text(exc))
    else:
        problems = []
        if not np.isfinite(energy):
            problems.append(f"non-finite energy ({energy})")
        bad_atoms = np.flatnonzero(~np.isfinite(forces).all(axis=1))
        if bad_atoms.size:
            problems.append(f"non-finite forces on atoms {bad_atoms.tolist()}")
        if problems:
            return _Result("non_finite", "; ".join(problems))
        reason, stress = None, None
        if can_stress and work.pbc.all() and work.cell.rank == 3:
            stress, reason = _stress(work)
        return _Result("ok", reason, energy, forces, stress)
    finally:
        work.calc = None


def _stress(work: Atoms) -> tuple[np.ndarray | None, str | None]:
    """Voigt stress, or None and a note when the member cannot give a finite one."""
    try:
        stress = np.array(work.get_stress(voigt=True), dtype=float).reshape(6)
    except Exception as exc:
        return None, f"no stress: {_exception_text(exc)}"
    if not np.isfinite(stress).all():
        return None, "no stress: non-finite values"
    return stress, None


def _quiet_known_warnings() -> None:
    """Hide warnings the members raise on every call that say nothing about the result."""
    # CHGNet converts a grad-requiring tensor to a float; e3nn/SevenNet script modules
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support")


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def _exception_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
