"""Committees for CAGO and calibration: ACE potential files or uMLIP members (paper 004).

A committee entry is a path to an ACE potential (``.yaml``/``.yace``) or a member spec as
for ``uq-flows score`` (built-in uMLIP, ``mace:PATH``, ``ase:module:Class``). CHGNet members
are evaluated in true batches through ``CHGNet.predict_structure``; other members structure
by structure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.cago.calibration import committee_force_sigma
from uq_flows.cago.optimizer import CalculatorCommittee
from uq_flows.errors import InputError

POTENTIAL_SUFFIXES = (".yaml", ".yace")


def committee_identity(entries: Sequence[str]) -> list[str]:
    """Stable names of committee entries: a potential file's SHA-256, or the member spec."""
    out = []
    for entry in entries:
        path = Path(entry)
        if path.suffix in POTENTIAL_SUFFIXES and path.is_file():
            out.append(f"{path.name}:sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}")
        else:
            out.append(entry)
    return out


def load_model(entry: str, device: str | None = None):
    """An ASE calculator for a committee entry: ACE potential file or uMLIP member spec
    (parsed as QBC parses its committee, so ACE files are members like any other)."""
    from uq_flows.ensemble.members import load_calculator
    from uq_flows.selection.committee import parse_committee_member

    return load_calculator(parse_committee_member(entry), device)


def load_committee(entries: Sequence[str], batched: bool = True, device: str | None = None) -> CalculatorCommittee:
    """ASE calculators for every entry (and batch functions where every model batches)."""
    if len(entries) < 2:
        raise InputError("a committee needs at least two members")
    calculators = [load_model(entry, device) for entry in entries]
    committee = CalculatorCommittee(calculators)
    if batched and all(_is_chgnet(c) for c in calculators):
        committee.member_batch = [_chgnet_batch(c) for c in calculators]
    return committee


def _is_chgnet(calculator) -> bool:
    return type(calculator).__name__ == "CHGNetCalculator"


def _chgnet_batch(calculator):
    from pymatgen.io.ase import AseAtomsAdaptor

    def forces(structures: Sequence[Atoms]) -> np.ndarray:
        predictions = calculator.model.predict_structure(
            [AseAtomsAdaptor.get_structure(a) for a in structures], task="ef", batch_size=len(structures)
        )
        predictions = predictions if isinstance(predictions, list) else [predictions]
        return np.stack([p["f"] for p in predictions])

    return forces


def committee_errors(committee: CalculatorCommittee, structures: Sequence[Atoms], reference_forces: Sequence[np.ndarray]):
    """σ̂_Fi (eq. 9) of every atom and every member's force error F^m_i − F^ref_i, (M, N, 3)."""
    if len(structures) != len(reference_forces) or not structures:
        raise InputError("calibration needs labelled structures (energy and forces)")
    sigma, errors = [], []
    for atoms, reference in zip(structures, reference_forces):
        forces = committee.forces([atoms])[:, 0]  # (M, N, 3)
        sigma.append(committee_force_sigma(forces))
        errors.append(forces - np.asarray(reference)[None])
    return np.concatenate(sigma), np.concatenate(errors, axis=1)


def member_force_rmse(member_forces: np.ndarray, reference_forces: np.ndarray) -> np.ndarray:
    """σ_rmse per atom (paper 004, eq. 1): sqrt((1/M) Σ_m ‖F^m_i − F^ref_i‖²)."""
    return np.sqrt(np.mean(np.sum((np.asarray(member_forces) - np.asarray(reference_forces)[None]) ** 2, axis=-1), axis=0))
