"""Assemble the distilled dataset from routed structures and their labels (METHODS §2).

Missing labels (a job that never finished) become failed labels; labels with forces above a
structure's screen are rejected. Structures labelled by both sources become alignment pairs,
marked ``audit`` (the random audit sample, unbiased) or ``high_u`` (routed to DFT by U). A
single-shot distillation aligns teacher energies here, on those pairs (audit pairs when there
are any); the loop stores teacher energies unaligned and applies its one alignment, fitted
on every pair so far, when it draws a training set from its pool (``labeling.pool``).
Assembly refuses to continue when the fraction of successful labels of a kind (DFT or
teacher) falls below ``min_success_fraction``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field

from uq_flows.errors import InputError, UqFlowsError
from uq_flows.labeling.alignment import (
    AUDIT,
    DEFAULT_MAX_RESIDUAL,
    HIGH_U,
    AlignmentPair,
    EnergyAlignment,
    fit_from_pairs,
)
from uq_flows.labeling.labels import DFT, OK, REJECTED, TEACHER, Label
from uq_flows.labeling.pool import AUDIT_KEY
from uq_flows.labeling.routing import Route
from uq_flows.screening import DEFAULT_MAX_FORCE, force_problem


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
    alignment: EnergyAlignment | None = Field(None, description="Applied here (single-shot distillation only).")
    n_pairs: dict[str, int] = Field(default_factory=dict, description="Alignment pairs by sample (audit, high_u).")


class DistilledDataset(BaseModel):
    """Every structure's final label (ok, failed or rejected) in input order, and a summary."""

    labels: list[Label]
    summary: AssemblySummary
    pairs: list[AlignmentPair] = Field(default_factory=list, description="Structures with DFT and teacher labels.")
    forces_stored: bool = Field(False, description="The labels are in the campaign database (campaign_labels) and "
                                                   "the teacher labels here carry no forces or stress.")

    def ok_labels(self) -> list[Label]:
        return [label for label in self.labels if label.status == OK]


def assemble_dataset(
    structures: Mapping[str, Atoms],
    routes: Sequence[Route],
    dft_labels: Sequence[Label | None],
    teacher_labels: Sequence[Label | None],
    screened: Sequence[Label] = (),
    min_success_fraction: float = 0.8,
    max_force: float | None = DEFAULT_MAX_FORCE,
    align_energies: bool = True,
    iteration: int | None = None,
    loop: str | None = None,
    max_forces: Mapping[str, float | None] | None = None,
    max_residual: float = DEFAULT_MAX_RESIDUAL,
) -> DistilledDataset:
    """Final labels per routed structure: DFT for ``dft`` routes, teacher for ``teacher``.

    ``dft_labels`` and ``teacher_labels`` are matched to routes by id (None entries are
    jobs that produced nothing); a teacher label of a DFT-routed structure is used only for
    the energy alignment. ``screened`` labels (structures rejected before labelling) win
    over any other label of the same id. ``max_forces`` overrides ``max_force`` per id
    (None: no force screen). With ``align_energies`` teacher energies are shifted here.
    """
    dft = _by_id(dft_labels, DFT)
    teacher = _by_id(teacher_labels, TEACHER)
    pairs = _pairs(structures, routes, dft, teacher, iteration)
    alignment = fit_from_pairs(pairs, max_residual) if align_energies else None
    rejected = {label.id: label for label in screened}
    final, n_deferred = [], 0
    for route in routes:
        if route.route == "deferred":
            n_deferred += 1
            continue
        kind = TEACHER if route.route == "teacher" else DFT
        label = rejected.get(route.id) or (dft if kind == DFT else teacher).get(route.id)
        if route.route == "rejected" and label is None:
            label = Label(id=route.id, status=REJECTED, kind=DFT, source="screen", reason=route.reason)
        if label is None:
            label = Label.failed(route.id, kind, "unknown", f"{kind} label job produced no output")
        if label.status == OK:
            limit = max_forces.get(route.id, max_force) if max_forces is not None else max_force
            label = _checked(label, structures[route.id], alignment if kind == TEACHER else None, limit)
        provenance = {**label.provenance, "route": route.reason, **({AUDIT_KEY: True} if route.audit else {})}
        final.append(label.model_copy(update={"U": route.U, "iteration": iteration, "loop": loop,
                                              "provenance": provenance}))
    summary = _summary(final, structures, n_deferred, alignment)
    summary.n_pairs = {sample: sum(p.sample == sample for p in pairs) for sample in (AUDIT, HIGH_U)}
    for kind, fraction in summary.success_fraction.items():
        if fraction < min_success_fraction:
            failed = [label for label in final if label.kind == kind and label.status != OK]
            examples = "; ".join(f"{label.id}: {label.reason}" for label in failed[:3])
            raise LabellingFailed(
                f"only {fraction:.0%} of {kind} labels succeeded (minimum {min_success_fraction:.0%}); e.g. {examples}"
            )
    return DistilledDataset(labels=final, summary=summary, pairs=pairs)


def _by_id(labels: Sequence[Label | None], kind: str) -> dict[str, Label]:
    out = {}
    for label in labels:
        if label is None:
            continue
        if label.kind != kind:
            raise InputError(f"label {label.id} is a {label.kind} label among {kind} labels")
        out[label.id] = label
    return out


def _pairs(structures, routes: Sequence[Route], dft: dict[str, Label], teacher: dict[str, Label],
           iteration: int | None) -> list[AlignmentPair]:
    """Structures with ok DFT and teacher labels: audit routes are the unbiased sample."""
    pairs = []
    for route in routes:
        reference, taught = dft.get(route.id), teacher.get(route.id)
        if route.route == "dft" and reference is not None and reference.ok and taught is not None and taught.ok:
            pairs.append(AlignmentPair.of(route.id, structures[route.id].numbers, reference.energy, taught.energy,
                                          AUDIT if route.audit else HIGH_U, iteration))
    return pairs


def _checked(label: Label, atoms: Atoms, alignment: EnergyAlignment | None, max_force: float | None) -> Label:
    problem = force_problem(label.forces, max_force) if max_force is not None else None
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
