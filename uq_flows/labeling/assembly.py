"""Assemble the distilled dataset from routed structures and their labels (METHODS §2).

Missing labels (a job that never finished) become failed labels; labels with unphysical
forces are rejected; teacher energies are aligned to DFT per element when both sources
exist. Assembly refuses to continue when the fraction of successful labels of a kind (DFT
or teacher) falls below ``min_success_fraction``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms
from pydantic import BaseModel

from uq_flows.errors import InputError, UqFlowsError
from uq_flows.labeling.alignment import EnergyAlignment, fit_energy_alignment
from uq_flows.labeling.labels import DFT, OK, REJECTED, TEACHER, Label
from uq_flows.labeling.routing import Route
from uq_flows.labeling.screening import DEFAULT_MAX_FORCE, force_problem


class LabellingFailed(UqFlowsError):
    """Too many labels of a kind failed for the dataset to be trusted."""


class AssemblySummary(BaseModel):
    n_structures: int
    n_dft: int
    n_teacher: int
    n_failed: int
    n_rejected: int
    n_deferred: int
    dft_atom_fraction: float
    dft_config_fraction: float
    success_fraction: dict[str, float]
    alignment: EnergyAlignment | None = None


class DistilledDataset(BaseModel):
    """Every structure's final label (ok, failed or rejected) in input order, and a summary."""

    labels: list[Label]
    summary: AssemblySummary

    def ok_labels(self) -> list[Label]:
        return [label for label in self.labels if label.status == OK]


def assemble_dataset(
    structures: Mapping[str, Atoms],
    routes: Sequence[Route],
    dft_labels: Sequence[Label | None],
    teacher_labels: Sequence[Label | None],
    screened: Sequence[Label] = (),
    min_success_fraction: float = 0.8,
    max_force: float = DEFAULT_MAX_FORCE,
    align_energies: bool = True,
    iteration: int | None = None,
    loop: str | None = None,
) -> DistilledDataset:
    """Final labels per routed structure: DFT for ``dft`` routes, aligned teacher for ``teacher``.

    ``dft_labels`` and ``teacher_labels`` are matched to routes by id (None entries are
    jobs that produced nothing); a teacher label of a DFT-routed structure is used only for
    the energy alignment. ``screened`` labels (structures rejected before labelling) win
    over any other label of the same id.
    """
    dft = _by_id(dft_labels, DFT)
    teacher = _by_id(teacher_labels, TEACHER)
    alignment = _alignment(structures, dft, teacher) if align_energies else None
    rejected = {label.id: label for label in screened}
    final, n_deferred = [], 0
    for route in routes:
        if route.route == "deferred":
            n_deferred += 1
            continue
        kind = DFT if route.route == "dft" else TEACHER
        label = rejected.get(route.id) or (dft if kind == DFT else teacher).get(route.id)
        if label is None:
            label = Label.failed(route.id, kind, "unknown", f"{kind} label job produced no output")
        if label.status == OK:
            label = _checked(label, structures[route.id], alignment if kind == TEACHER else None, max_force)
        final.append(label.model_copy(update={"U": route.U, "iteration": iteration, "loop": loop,
                                              "provenance": {**label.provenance, "route": route.reason}}))
    summary = _summary(final, structures, n_deferred, alignment)
    for kind, fraction in summary.success_fraction.items():
        if fraction < min_success_fraction:
            failed = [label for label in final if label.kind == kind and label.status != OK]
            examples = "; ".join(f"{label.id}: {label.reason}" for label in failed[:3])
            raise LabellingFailed(
                f"only {fraction:.0%} of {kind} labels succeeded (minimum {min_success_fraction:.0%}); e.g. {examples}"
            )
    return DistilledDataset(labels=final, summary=summary)


def _by_id(labels: Sequence[Label | None], kind: str) -> dict[str, Label]:
    out = {}
    for label in labels:
        if label is None:
            continue
        if label.kind != kind:
            raise InputError(f"label {label.id} is a {label.kind} label among {kind} labels")
        out[label.id] = label
    return out


def _alignment(structures, dft: dict[str, Label], teacher: dict[str, Label]) -> EnergyAlignment | None:
    both = [i for i, label in dft.items() if label.status == OK and teacher.get(i) is not None and teacher[i].status == OK]
    if not both or not teacher:
        return None
    return fit_energy_alignment(
        [structures[i].numbers for i in both], [dft[i].energy for i in both], [teacher[i].energy for i in both]
    )


def _checked(label: Label, atoms: Atoms, alignment: EnergyAlignment | None, max_force: float) -> Label:
    problem = force_problem(label.forces, max_force)
    if problem:
        return label.model_copy(update={"status": REJECTED, "reason": problem})
    if alignment is None:
        return label
    try:
        shift = alignment.shift(atoms.numbers)
    except InputError as error:
        return label.model_copy(update={"status": "failed", "reason": str(error)})
    provenance = {**label.provenance, "energy_shift": shift, "unaligned_energy": label.energy}
    return label.model_copy(update={"energy": label.energy + shift, "provenance": provenance})


def _summary(labels: Sequence[Label], structures, n_deferred: int, alignment) -> AssemblySummary:
    ok = [label for label in labels if label.status == OK]
    atoms_of = {label.id: len(structures[label.id]) for label in ok}
    dft_atoms = sum(atoms_of[label.id] for label in ok if label.kind == DFT)
    success = {}
    for kind in (DFT, TEACHER):
        attempted = [label for label in labels if label.kind == kind and label.status != REJECTED]
        if attempted:
            success[kind] = sum(label.status == OK for label in attempted) / len(attempted)
    return AssemblySummary(
        n_structures=len(labels) + n_deferred,
        n_dft=sum(label.kind == DFT for label in ok),
        n_teacher=sum(label.kind == TEACHER for label in ok),
        n_failed=sum(label.status == "failed" for label in labels),
        n_rejected=sum(label.status == REJECTED for label in labels),
        n_deferred=n_deferred,
        dft_atom_fraction=dft_atoms / sum(atoms_of.values()) if ok else float("nan"),
        dft_config_fraction=float(np.mean([label.kind == DFT for label in ok])) if ok else float("nan"),
        success_fraction=success,
        alignment=alignment,
    )


def write_dataset(path, dataset: DistilledDataset, structures: Mapping[str, Atoms]) -> int:
    """Write the ok labels as a pacemaker pickle or extxyz; returns how many were written.

    Per structure: ``uq_id``, ``label_source`` (dft or teacher), ``source`` (code or model),
    ``version``, ``U`` (NaN if unknown), ``iteration`` (−1 if none) and ``loop``; pacemaker
    pickles also carry the full ``provenance`` (input settings, shifts, routing reason).
    """
    from pathlib import Path

    from uq_flows.io import PACEMAKER_SUFFIXES, write_structures

    labels = dataset.ok_labels()
    if not labels:
        raise InputError("the dataset has no successful labels to write")
    columns = {
        "uq_id": [x.id for x in labels],
        "label_source": [x.kind for x in labels],
        "source": [x.source for x in labels],
        "version": [str(x.provenance.get("version") or x.provenance.get("energy_version") or "") for x in labels],
        "U": [float("nan") if x.U is None else x.U for x in labels],
        "iteration": [-1 if x.iteration is None else x.iteration for x in labels],
        "loop": [x.loop or "" for x in labels],
    }
    if Path(path).name.lower().endswith(PACEMAKER_SUFFIXES):
        columns["provenance"] = [x.provenance for x in labels]
    write_structures(path, [x.to_atoms(structures[x.id]) for x in labels], **columns)
    return len(labels)
