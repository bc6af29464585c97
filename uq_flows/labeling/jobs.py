"""jobflow Makers for the labelling stage: threshold, DFT and teacher labels, assembly.

The number of DFT jobs is known only after thresholding, so the label stage is a job that
replaces itself with one DFT job per routed structure (category ``cpu``), one teacher job
(category ``gpu``) and an assembly job that accepts missing inputs (``OnMissing.NONE``):
a failed DFT job becomes a failed label with its reason, and the loop goes on while the
success fraction stays above the configured minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from jobflow import Flow, Job, Maker, OnMissing, Response, job
from pydantic import BaseModel

from uq_flows.ensemble.jobs import UncertaintyDocument, _set_category
from uq_flows.ensemble.members import parse_member
from uq_flows.labeling.assembly import DistilledDataset, assemble_dataset
from uq_flows.labeling.cp2k import Cp2kLabeller, Cp2kSettings
from uq_flows.labeling.labels import DFT, REJECTED, TEACHER, Label
from uq_flows.labeling.routing import (
    DEFAULT_UC,
    Route,
    audit_sample,
    count_routes,
    route_by_uncertainty,
    uc_for_target_rmse,
)
from uq_flows.labeling.screening import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE, structure_problem
from uq_flows.labeling.teacher import teacher_labels
from uq_flows.records import StructureRecord

LABEL_DATA = ["forces"]


class RoutingDocument(BaseModel):
    """The threshold used, how it was chosen, and every structure's route."""

    uc: float
    uc_source: str
    routes: list[Route]
    counts: dict[str, int]
    audit_labels: list[Label] = []


@job(data=LABEL_DATA)
def cp2k_label(structure: StructureRecord, settings: Cp2kSettings, U: float | None = None) -> Label:
    """Run CP2K in the job's folder and return the label (failed with reason on any error)."""
    return Cp2kLabeller.from_settings(settings).label(structure.to_atoms(), structure.id, Path.cwd(), U=U)


@dataclass
class Cp2kLabelMaker(Maker):
    """A CP2K single point per structure (PBE; METHODS §9)."""

    name: str = "cp2k label"
    settings: Cp2kSettings = field(default_factory=Cp2kSettings)
    category: str | None = "cpu"

    def make(self, structure: StructureRecord, U: float | None = None) -> Job:
        new_job = cp2k_label(structure, self.settings, U)
        new_job.name = f"{self.name} {structure.id}"
        return _set_category(new_job, self.category)


@job(data=LABEL_DATA)
def teacher_label_job(structures: list[StructureRecord], energy_from: str, forces_from: str | None, device: str | None) -> list[Label]:
    """Teacher labels of ``structures`` (paper 001: energies and forces from chosen members)."""
    return teacher_labels(
        [s.to_atoms() for s in structures], [s.id for s in structures], parse_member(energy_from),
        parse_member(forces_from) if forces_from else None, device,
    )


@dataclass
class TeacherLabelMaker(Maker):
    """Label structures with a uMLIP member or ASE calculator (category ``gpu``)."""

    name: str = "teacher labels"
    energy_from: str = "chgnet-0.3.0"
    forces_from: str | None = None
    device: str | None = None
    category: str | None = "gpu"

    def make(self, structures: list[StructureRecord]) -> Job:
        new_job = teacher_label_job(structures, self.energy_from, self.forces_from, self.device)
        new_job.name = self.name
        return _set_category(new_job, self.category)


@job
def route_job(uncertainty: UncertaintyDocument, uc: float, dft_budget: int | None, uc_source: str = "given",
              forced_dft: list[str] | None = None, audit_labels: list[Label] | None = None) -> RoutingDocument:
    routes = route_by_uncertainty(
        [s.id for s in uncertainty.structures], [s.U for s in uncertainty.structures], uc, dft_budget, forced_dft or ()
    )
    return RoutingDocument(uc=uc, uc_source=uc_source, routes=routes, counts=count_routes(routes),
                           audit_labels=[label for label in audit_labels or [] if label is not None])


@job
def audit_threshold_job(structures, uncertainty, audit_dft: list[Label | None], audit_teacher: list[Label],
                        target: float, dft_budget: int | None) -> Response:
    """U_c from the audit sample: the largest threshold whose teacher forces reach ``target``."""
    by_id = {s.id: s for s in structures}
    u_of = {s.id: s.U for s in uncertainty.structures}
    teacher = {label.id: label for label in audit_teacher}
    usable = [label for label in audit_dft if label is not None and label.ok and teacher.get(label.id)
              and teacher[label.id].ok and u_of.get(label.id) is not None]
    if not usable:
        raise RuntimeError("no audit structure has both a DFT label, a teacher label and U: cannot choose U_c")
    import numpy as np

    uc = uc_for_target_rmse(
        [u_of[label.id] for label in usable],
        np.concatenate([teacher[label.id].forces for label in usable]),
        np.concatenate([label.forces for label in usable]),
        [by_id[label.id].n_atoms for label in usable],
        target,
    )
    source = f"audit: {len(usable)} structures, target force RMSE {target:g} eV/Å"
    routing = route_job(uncertainty, uc, dft_budget, source, [label.id for label in usable], usable)
    return Response(replace=routing)


@dataclass
class ThresholdMaker(Maker):
    """Route structures by U_c, or by the U_c that reaches a target RMSE on a DFT audit sample."""

    name: str = "threshold"
    uc: float = DEFAULT_UC
    dft_budget: int | None = None
    target_force_rmse: float | None = None
    audit_size: int = 20
    seed: int = 0
    audit_dft_maker: Maker = field(default_factory=Cp2kLabelMaker)
    audit_teacher_maker: TeacherLabelMaker = field(default_factory=TeacherLabelMaker)
    category: str | None = "cpu"

    def make(self, structures: list[StructureRecord], uncertainty) -> Job | Flow:
        if self.target_force_rmse is None:
            new_job = route_job(uncertainty, self.uc, self.dft_budget)
            new_job.name = self.name
            return _set_category(new_job, self.category)
        sample = set(audit_sample([s.id for s in structures], self.audit_size, self.seed))
        audited = [s for s in structures if s.id in sample]
        dft_jobs = [self.audit_dft_maker.make(s) for s in audited]
        teacher = self.audit_teacher_maker.make(audited)
        decide = audit_threshold_job(structures, uncertainty, [j.output for j in dft_jobs], teacher.output,
                                     self.target_force_rmse, self.dft_budget)
        decide.name = f"{self.name} from audit"
        decide.config.on_missing_references = OnMissing.NONE
        _set_category(decide, self.category)
        return Flow([*dft_jobs, teacher, decide], output=decide.output, name=self.name)


@job
def assemble_job(structures: list[StructureRecord], routing: RoutingDocument, dft_labels: list[Label | None],
                 teacher_labels: list[Label] | None, screened: list[Label], min_success_fraction: float,
                 max_force: float, align_energies: bool, iteration: int | None, loop: str | None) -> DistilledDataset:
    """The distilled dataset; missing DFT outputs arrive as None and become failed labels."""
    by_id = {s.id: s.to_atoms() for s in structures}
    dft = [*routing.audit_labels, *dft_labels]
    return assemble_dataset(by_id, routing.routes, dft, teacher_labels or [], screened, min_success_fraction,
                            max_force, align_energies, iteration, loop)


@dataclass
class AssembleMaker(Maker):
    name: str = "assemble"
    min_success_fraction: float = 0.8
    max_force: float = DEFAULT_MAX_FORCE
    align_energies: bool = True
    iteration: int | None = None
    loop: str | None = None
    category: str | None = "cpu"

    def make(self, structures, routing, dft_labels, teacher_labels, screened=()) -> Job:
        new_job = assemble_job(structures, routing, dft_labels, teacher_labels, list(screened),
                               self.min_success_fraction, self.max_force, self.align_energies, self.iteration,
                               self.loop)
        new_job.name = self.name
        new_job.config.on_missing_references = OnMissing.NONE
        return _set_category(new_job, self.category)


@job
def label_stage_job(structures: list[StructureRecord], routing: RoutingDocument, maker: LabelStageMaker) -> Response:
    """Replace itself by the DFT jobs, the teacher job and the assembly for these routes."""
    by_id = {s.id: s for s in structures}
    audited = {label.id for label in routing.audit_labels}
    rejected, dft_jobs = [], []
    for route in routing.routes:
        if route.route == "deferred" or route.id in audited:
            continue
        problem = structure_problem(by_id[route.id].to_atoms(), maker.min_distance)
        if problem:
            kind = DFT if route.route == "dft" else TEACHER
            rejected.append(Label(id=route.id, status=REJECTED, kind=kind, source="screen", reason=problem))
        elif route.route == "dft":
            dft_jobs.append(maker.dft_maker.make(by_id[route.id]))
    screened = {label.id for label in rejected}
    # teacher labels for teacher routes, and for DFT routes to align energies (METHODS §2)
    taught = [by_id[r.id] for r in routing.routes if r.route != "deferred" and r.id not in screened and r.id not in audited]
    jobs = list(dft_jobs)
    teacher_output = None
    if taught and maker.teacher_maker is not None:
        teacher = maker.teacher_maker.make(taught)
        jobs.append(teacher)
        teacher_output = teacher.output
    assemble = maker.assemble_maker.make(structures, routing, [j.output for j in dft_jobs], teacher_output, rejected)
    return Response(replace=Flow([*jobs, assemble], output=assemble.output, name=maker.name))


@dataclass
class LabelStageMaker(Maker):
    """DFT for structures routed to DFT, teacher labels for the rest, then assembly."""

    name: str = "label"
    dft_maker: Maker = field(default_factory=Cp2kLabelMaker)
    teacher_maker: TeacherLabelMaker | None = field(default_factory=TeacherLabelMaker)
    assemble_maker: AssembleMaker = field(default_factory=AssembleMaker)
    min_distance: float = DEFAULT_MIN_DISTANCE
    category: str | None = "cpu"

    def make(self, structures: list[StructureRecord], routing) -> Job:
        if not math.isfinite(self.min_distance) or self.min_distance < 0:
            raise ValueError(f"min_distance must be a non-negative number, got {self.min_distance}")
        new_job = label_stage_job(structures, routing, self)
        new_job.name = self.name
        return _set_category(new_job, self.category)
