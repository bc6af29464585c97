"""jobflow Makers for the labelling stage: threshold, DFT (CP2K, VASP) and teacher labels, assembly.

The number of DFT jobs is known only after thresholding, so the label stage is a job that
replaces itself with one DFT job per routed structure (category ``cpu``), one teacher job
(category ``gpu``) and an assembly job that accepts missing inputs
(``stages.tolerate_failed_parents``: once a failed job's retries are spent): a failed DFT job
becomes a failed label with its reason, and the loop goes on while the success fraction stays
above the configured minimum.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

# _DATA_OBJECTS: atomate2's list of large output objects that go to the JobStore's data store
from atomate2.vasp.jobs.base import _DATA_OBJECTS
from atomate2.vasp.jobs.core import StaticMaker
from atomate2.vasp.sets.base import VaspInputGenerator
from atomate2.vasp.sets.core import StaticSetGenerator
from jobflow import CURRENT_JOB, Flow, Job, Maker, Response, job
import numpy as np
from monty.json import MontyDecoder
from pydantic import BaseModel, Field
from pymatgen.io.vasp import Kpoints

from uq_flows.campaign import TEACH, Campaign, StructureSet, records_of, stored_shortest, structure_ids
from uq_flows.campaign.jobs import chunk_jobs
from uq_flows.ensemble.jobs import UncertaintyDocument
from uq_flows.ensemble.predict import MemberPredictions
from uq_flows.ensemble.members import MemberSpec, parse_member
from uq_flows.stages import (
    ASSEMBLE,
    CHUNK_KEY,
    DFT_LABEL,
    MEMBER_KEY,
    MEMBER_PREDICTION,
    STAGE_KEY,
    TEACHER_LABEL,
    THRESHOLD,
    set_category,
    tag_stage,
    tolerate_failed_parents,
)
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL
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
from uq_flows.screening import (
    DEFAULT_MAX_FORCE,
    DEFAULT_MIN_DISTANCE,
    structure_problem,
)
from uq_flows.labeling.source_screens import SourceScreens
from uq_flows.labeling.stored import store_labels
from uq_flows.labeling.teacher import labels_from_predictions, teacher_labels
from uq_flows.labeling.vasp import (
    PAPER_INCAR,
    PAPER_KPOINT_SPACING,
    SOURCE,
    VaspRunFailure,
    kpoints_for_spacing,
    label_from_task_doc,
    record_to_structure,
)
from uq_flows.records import StructureRecord, chemical_system
from uq_flows.settings import get_settings

logger = logging.getLogger(__name__)

LABEL_DATA = ["forces"]


class RoutingDocument(BaseModel):
    """The threshold used, how it was chosen, and every structure's route."""

    uc: float
    uc_source: str
    routes: list[Route]
    counts: dict[str, int]
    audit_labels: list[Label] = Field(default_factory=list, description="DFT labels the audit already made.")
    audit_teacher_labels: list[Label] = Field(default_factory=list, description="Their teacher labels.")


@job(data=LABEL_DATA)
def cp2k_label(structure: StructureRecord, settings: Cp2kSettings, U: float | None = None) -> Label:
    """Run CP2K in the job's folder and return the label (failed with reason on any error)."""
    return Cp2kLabeller.from_settings(settings).label(structure.to_atoms(), structure.id, Path.cwd(), U=U)


@job(data=LABEL_DATA)
def cp2k_label_batch(structures: list[StructureRecord], settings: Cp2kSettings, us: list[float | None]) -> list[Label]:
    """CP2K single points of several small structures, one after another, each in its own folder."""
    labeller = Cp2kLabeller.from_settings(settings)
    labels = []
    for structure, u in zip(structures, us):
        folder = Path.cwd() / structure.id
        folder.mkdir(exist_ok=True)
        labels.append(labeller.label(structure.to_atoms(), structure.id, folder, U=u))
    return labels


@dataclass
class Cp2kLabelMaker(Maker):
    """A CP2K single point per structure (PBE; METHODS §9)."""

    name: str = "cp2k label"
    settings: Cp2kSettings = field(default_factory=Cp2kSettings)
    category: str | None = "cpu"

    def make(self, structure: StructureRecord, U: float | None = None) -> Job:
        new_job = cp2k_label(structure, self.settings, U)
        new_job.name = f"{self.name} {structure.id}"
        return set_category(tag_stage(new_job, DFT_LABEL), self.category)

    def make_batch(self, structures: list[StructureRecord], us: list[float | None]) -> Job:
        """One job for several structures (``dft_batch_size``); its output is their labels, in order."""
        new_job = cp2k_label_batch(structures, self.settings, us)
        new_job.name = f"{self.name} batch of {len(structures)} ({structures[0].id} ...)"
        return set_category(tag_stage(new_job, DFT_LABEL), self.category)


@job(data=LABEL_DATA)
def calculator_label(structure: StructureRecord | list[StructureRecord], calculator: str,
                     U: float | list[float | None] | None = None) -> Label | list[Label]:
    """Reference label(s) from an ASE calculator or member (a known truth such as EMT, or a stand-in),
    or replayed from a dataset's stored labels (a ``precomputed`` spec)."""
    batch = isinstance(structure, list)
    structures, us = (structure, U) if batch else ([structure], [U])
    spec = parse_member(calculator)
    labels = teacher_labels([s.to_atoms() for s in structures], [s.id for s in structures], spec)
    origin = {"replayed_from": spec.model} if spec.kind == "precomputed" else {"stand_in_for_dft": True}
    labels = [label.model_copy(update={"kind": DFT, "U": u, "provenance": {**label.provenance, **origin}})
              for label, u in zip(labels, us)]
    return labels if batch else labels[0]


@dataclass
class CalculatorLabelMaker(Maker):
    """Reference labels from an ASE calculator in place of DFT (recorded as such in provenance)."""

    name: str = "reference label"
    calculator: str = "emt=ase:ase.calculators.emt:EMT"
    category: str | None = "cpu"

    def make(self, structure: StructureRecord, U: float | None = None) -> Job:
        new_job = calculator_label(structure, self.calculator, U)
        new_job.name = f"{self.name} {structure.id}"
        return set_category(tag_stage(new_job, DFT_LABEL), self.category)

    def make_batch(self, structures: list[StructureRecord], us: list[float | None]) -> Job:
        """One job for several structures (``dft_batch_size``); its output is their labels, in order."""
        new_job = calculator_label(structures, self.calculator, us)
        new_job.name = f"{self.name} batch of {len(structures)} ({structures[0].id} ...)"
        return set_category(tag_stage(new_job, DFT_LABEL), self.category)


@job(data=LABEL_DATA)
def teacher_label_job(structures: list[StructureRecord] | StructureSet, energy_from: str, forces_from: str | None,
                      device: str | None, only: list[str] | None = None, only_marked: bool = False,
                      scored_members: list[str] | None = None) -> list[Label]:
    """Teacher labels of ``structures`` (paper 001: energies and forces from chosen members); ``only``
    these ids, or (``only_marked``, a ``StructureSet``) those whose campaign row the label stage marked.

    ``scored_members``: the ensemble that scored this stored chunk. When the teacher's members
    are among them, the labels are taken from their scoring jobs' predictions (found in the
    JobStore by stage, member and chunk) instead of running the models again; a missing one (a
    scoring job that failed) means the models run.
    """
    if only_marked:
        with Campaign.open() as campaign:
            only = [row["id"] for row in campaign.rows(structures, ("id", TEACH)) if row.get(TEACH)]
    energy_spec = parse_member(energy_from)
    forces_spec = parse_member(forces_from) if forces_from else None
    if scored_members and isinstance(structures, StructureSet) and len(structures.chunks) == 1:
        energy, forces = (_scored_predictions(structures.chunks[0], scored_members, spec)
                          for spec in (energy_spec, forces_spec))
        if energy is not None and (forces_spec is None or forces is not None):
            ids, _ = structure_ids(structures)
            wanted = None if only is None else set(only)
            picks = [(j, i) for j, i in enumerate(ids) if wanted is None or i in wanted]
            return labels_from_predictions(picks, energy, forces or energy, energy_spec, forces_spec)
    structures = records_of(structures, only)
    return teacher_labels([s.to_atoms() for s in structures], [s.id for s in structures], energy_spec, forces_spec,
                          device)


def _scored_predictions(chunk: str, members: list[str], spec: MemberSpec | None) -> MemberPredictions | None:
    """What the scoring job of ``chunk`` predicted with the member ``spec`` (by its parsed spec), or None."""
    member = None if spec is None else next((text for text in members if parse_member(text) == spec), None)
    if member is None:
        return None
    doc = CURRENT_JOB.store.query_one({f"metadata.{STAGE_KEY}": MEMBER_PREDICTION, f"metadata.{MEMBER_KEY}": member,
                                       f"metadata.{CHUNK_KEY}": chunk, "output": {"$ne": None}},
                                      properties=["output"], load=True)
    output = None if doc is None else MontyDecoder().process_decoded(doc["output"])
    return output if isinstance(output, MemberPredictions) else None


@dataclass
class TeacherLabelMaker(Maker):
    """Label structures with a uMLIP member or ASE calculator (category ``gpu``)."""

    name: str = "teacher labels"
    energy_from: str = "chgnet-0.3.0"
    forces_from: str | None = None
    device: str | None = None
    category: str | None = "gpu"

    def make(self, structures: list[StructureRecord] | StructureSet, only: list[str] | None = None,
             only_marked: bool = False, scored_members: list[str] | None = None) -> Job:
        """``scored_members``: the ensemble that scored ``structures`` (one stored chunk); a teacher
        among them takes its labels from those predictions."""
        new_job = teacher_label_job(structures, self.energy_from, self.forces_from, self.device, only, only_marked,
                                    scored_members or None)
        new_job.config.expose_store = bool(scored_members)  # it reads the scoring predictions from the JobStore
        new_job.name = self.name
        return set_category(tag_stage(new_job, TEACHER_LABEL), self.category)


@dataclass
class PaperStaticSetGenerator(StaticSetGenerator):
    """atomate2's static input set with the papers' settings (METHODS §9, papers 000 and 001).

    ``PAPER_INCAR`` is merged under ``user_incar_settings`` (so user keys win and ``None``
    removes a tag), and the KPOINTS is the Γ-centred mesh of resolution ``kpoint_spacing``
    computed for each structure. ``user_kpoints_settings`` or an INCAR ``KSPACING`` replace
    that mesh, as in any pymatgen input set.
    """

    kpoint_spacing: float = PAPER_KPOINT_SPACING
    gamma_centered: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.user_incar_settings = {**PAPER_INCAR, **self.user_incar_settings}

    @property
    def kpoints_updates(self) -> Kpoints:
        return kpoints_for_spacing(self.structure, self.kpoint_spacing, self.gamma_centered)


@dataclass
class VaspStaticMaker(StaticMaker):
    """atomate2 VASP static with the paper defaults, whose failures are returned, not raised.

    ``incar_overrides`` and ``kpoints_overrides`` (a dict such as ``{"reciprocal_density":
    100}`` or a ``Kpoints``) are applied to the input set generator when the job is made.
    Custodian runs with atomate2's default handlers and validators (``run_vasp_kwargs`` empty:
    ``atomate2.vasp.run.DEFAULT_HANDLERS``, ``VasprunXMLValidator``, ``VaspFilesValidator``).
    With ``return_failures`` (the default) a run that raises yields a ``VaspRunFailure``
    document instead of a failed job; set it to False to get atomate2's behaviour back.
    """

    name: str = "vasp static"
    input_set_generator: VaspInputGenerator = field(default_factory=PaperStaticSetGenerator)
    incar_overrides: dict = field(default_factory=dict)
    kpoints_overrides: dict | Kpoints | None = None
    # unconverged runs complete (TaskDoc.state == "failed") and do not stop children
    stop_children_kwargs: dict = field(default_factory=lambda: {"handle_unsuccessful": False})
    return_failures: bool = True
    category: str | None = "cpu"

    def make(self, structure, prev_dir: str | Path | None = None) -> Job:
        """The static job for ``structure`` (a pymatgen Structure), category set."""
        generator = self.input_set_generator
        if self.incar_overrides or self.kpoints_overrides:
            updates = {"user_incar_settings": {**generator.user_incar_settings, **self.incar_overrides}}
            if self.kpoints_overrides:
                updates["user_kpoints_settings"] = self.kpoints_overrides
            generator = dataclasses.replace(generator, **updates)
        # the job is bound to this copy, so the stored job shows the settings it runs with
        maker = dataclasses.replace(self, input_set_generator=generator, incar_overrides={}, kpoints_overrides=None)
        new_job = maker.run_static(structure, prev_dir)
        new_job.name = self.name
        return set_category(new_job, self.category)

    @job(data=_DATA_OBJECTS)
    def run_static(self, structure, prev_dir: str | Path | None = None):
        """atomate2's static job body (its undecorated ``make``); a raised error becomes data.

        No ``output_schema``: the output is a TaskDoc or a ``VaspRunFailure``.
        """
        try:
            return StaticMaker.make.original(self, structure, prev_dir)
        except Exception as error:
            if not self.return_failures:
                raise
            failure = VaspRunFailure.from_exception(error, Path.cwd(), task_label=self.name)
            logger.warning("VASP job %s failed: %s", self.name, failure.reason)
            return Response(output=failure)


@job
def vasp_label(task_doc, structure: StructureRecord, vasp_job: str | None = None, fields: dict | None = None) -> Label:
    """The ``Label`` of ``structure`` from its static job's output (``None`` if that job died)."""
    fields = dict(fields or {})
    if task_doc is None:
        return Label.failed(
            structure.id, DFT, SOURCE,
            f"VASP job {vasp_job + ' ' if vasp_job else ''}did not complete: its output is missing "
            "(the job raised, fizzled or was lost; see its error in the workflow manager)",
            **fields,
        )
    try:
        return label_from_task_doc(task_doc, structure.id, structure=structure.to_atoms(), **fields)
    except Exception as error:  # an unforeseen output must not kill the loop either
        logger.exception("could not convert the output of VASP job %s", vasp_job)
        reason = f"VASP output of job {vasp_job} could not be converted to a label: {type(error).__name__}: {error}"
        return Label.failed(structure.id, DFT, SOURCE, reason[:1000], **fields)


@dataclass
class VaspLabelMaker(Maker):
    """A VASP label per structure: atomate2's static job (category ``cpu``), then a light
    job turning its TaskDoc, failure document or missing output into a ``Label``."""

    name: str = "vasp label"
    static_maker: VaspStaticMaker = field(default_factory=VaspStaticMaker)
    category: str | None = field(default_factory=lambda: get_settings().combine_category)

    def make(self, structure: StructureRecord, U: float | None = None) -> Flow:
        static = self.static_maker.make(record_to_structure(structure))
        static.name = f"{self.static_maker.name} {structure.formula} {structure.id}"
        label = vasp_label(static.output, structure, f"{static.name!r} ({static.uuid})", {"U": U})
        label.name = f"{self.name} {structure.id}"
        tolerate_failed_parents(label)
        set_category(tag_stage(label, DFT_LABEL), self.category)
        return Flow([static, label], output=label.output, name=f"{self.name} {structure.id}")


def dft_label_flow(maker: Maker, structures: list[StructureRecord], name: str = "dft labels") -> Flow:
    """DFT labels (CP2K or VASP Maker) for a list of structures; output: labels in input order."""
    if not structures:
        raise ValueError("no structures to label")
    parts = [maker.make(structure) for structure in structures]
    return Flow(parts, output=[part.output for part in parts], name=name)


def run_vasp_locally(structures, ids, folder: Path, kpoints=None) -> list[Label]:
    """VASP labels of ``structures`` run in-process (``uq-flows label --model vasp``)."""
    import shlex
    import shutil

    from atomate2 import SETTINGS
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from uq_flows.errors import UqFlowsError

    executable = shlex.split(SETTINGS.VASP_CMD)[0]
    if shutil.which(executable) is None:
        raise UqFlowsError(
            f"VASP executable {executable!r} not found: set ATOMATE2_VASP_CMD (atomate2's VASP_CMD) "
            "to your VASP command, e.g. 'srun vasp_std'"
        )
    overrides = {"kpoints_overrides": Kpoints.gamma_automatic(kpoints)} if kpoints else {}
    maker = VaspLabelMaker(static_maker=VaspStaticMaker(**overrides))
    records = [StructureRecord.from_atoms(atoms).model_copy(update={"id": i}) for atoms, i in zip(structures, ids)]
    flow = dft_label_flow(maker, records)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(flow, store=store, root_dir=folder, log=False)
    with store:
        return [Label.model_validate(store.get_output(ref.uuid, load=True)) for ref in flow.output]


SCREENED_STATUSES = ("invalid", "rejected")  # scoring found the structure unphysical


@job
def route_job(uncertainty: UncertaintyDocument, uc: float, dft_budget: int | None, uc_source: str = "given",
              audit: list[str] | None = None, audit_labels: list[Label] | None = None,
              audit_teacher_labels: list[Label] | None = None, audit_size: int = 0,
              audit_seed: int = 0, structures: list[StructureRecord] | StructureSet | None = None) -> RoutingDocument:
    """Routes by U; ``audit`` ids (or a random sample of ``audit_size`` scorable ones, stratified
    by chemical system when ``structures`` are given) go to DFT whatever U."""
    audit_groups = {s.id: chemical_system(s.numbers) for s in records_of(structures)} \
        if structures is not None and audit is None and audit_size > 0 else None
    rejected = {s.id: s.reason or s.status for s in uncertainty.structures if s.status in SCREENED_STATUSES}
    if audit is None and audit_size > 0:
        scorable = [s.id for s in uncertainty.structures if s.id not in rejected]
        groups = [audit_groups[i] for i in scorable] if audit_groups else None
        audit = audit_sample(scorable, audit_size, audit_seed, groups)
    routes = route_by_uncertainty(
        [s.id for s in uncertainty.structures], [s.U for s in uncertainty.structures], uc, dft_budget, audit or (),
        rejected,
    )
    return RoutingDocument(uc=uc, uc_source=uc_source, routes=routes, counts=count_routes(routes),
                           audit_labels=[label for label in audit_labels or [] if label is not None],
                           audit_teacher_labels=list(audit_teacher_labels or []))


@job
def audit_threshold_job(structures, uncertainty, audit_dft: list[Label | None], audit_teacher: list[Label],
                        target: float, dft_budget: int | None) -> Response:
    """U_c from the audit sample: the largest threshold whose teacher forces reach ``target``."""
    by_id = {s.id: s for s in records_of(structures)}
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
    routing = route_job(uncertainty, uc, dft_budget, source, [label.id for label in usable], usable,
                        [teacher[label.id] for label in usable])
    return Response(replace=routing)


@dataclass
class ThresholdMaker(Maker):
    """Route structures by U_c, or by the U_c that reaches a target RMSE on a DFT audit sample.

    With a fixed U_c, ``audit_size`` > 0 still sends a random sample to DFT whatever its U
    (and to the teacher): the unbiased pairs for the energy alignment and ρ (METHODS §2). The
    sample is stratified by chemical system, so every element combination present is audited
    when the size allows.
    """

    name: str = "threshold"
    uc: float = DEFAULT_UC
    dft_budget: int | None = None
    target_force_rmse: float | None = None
    audit_size: int = 20
    seed: int = 0
    audit_with_fixed_uc: bool = False
    audit_dft_maker: Maker = field(default_factory=Cp2kLabelMaker)
    audit_teacher_maker: TeacherLabelMaker = field(default_factory=TeacherLabelMaker)
    category: str | None = "cpu"

    def make(self, structures: list[StructureRecord] | StructureSet, uncertainty) -> Job | Flow:
        """``structures`` by value or by reference (``StructureSet``); jobs get them as given."""
        if self.target_force_rmse is None:
            audit_size = self.audit_size if self.audit_with_fixed_uc else 0
            new_job = route_job(uncertainty, self.uc, self.dft_budget, audit_size=audit_size, audit_seed=self.seed,
                                structures=structures if audit_size else None)
            new_job.name = self.name
            return set_category(tag_stage(new_job, THRESHOLD), self.category)
        records = records_of(structures)
        sample = set(audit_sample([s.id for s in records], self.audit_size, self.seed,
                                  [chemical_system(s.numbers) for s in records]))
        audited = [s for s in records if s.id in sample]
        dft_jobs = [self.audit_dft_maker.make(s) for s in audited]
        teacher = self.audit_teacher_maker.make(audited)
        decide = audit_threshold_job(structures, uncertainty, [j.output for j in dft_jobs], teacher.output,
                                     self.target_force_rmse, self.dft_budget)
        decide.name = f"{self.name} from audit"
        tolerate_failed_parents(decide)
        set_category(tag_stage(decide, THRESHOLD), self.category)  # its routing job inherits the tag
        return Flow([*dft_jobs, teacher, decide], output=decide.output, name=self.name)


@job
def assemble_job(structures: list[StructureRecord] | StructureSet, routing: RoutingDocument,
                 dft_labels: list[Label | None], teacher_labels: list[Label | list[Label] | None] | None, screened: list[Label], min_success_fraction: float,
                 max_force: float | None, align_energies: bool, iteration: int | None, loop: str | None,
                 max_forces: dict[str, float | None] | None = None, max_residual: float = DEFAULT_MAX_RESIDUAL,
                 screen: dict | None = None) -> DistilledDataset:
    """The distilled dataset; missing DFT or teacher outputs arrive as None and become failed labels.

    ``dft_labels`` and ``teacher_labels``: labels, or lists of labels (a batch or chunk job each).
    ``screen`` (``{"screens", "min_distance"}``, the label stage's): the routes are screened here
    (``screen_routes``), replacing ``screened`` and ``max_forces``.
    """
    records = {s.id: s for s in records_of(structures)}
    if screen is not None:
        screens = screen["screens"]
        screens = SourceScreens.model_validate(screens) if isinstance(screens, dict) else screens
        screened, max_forces = screen_routes(records, routing, screens, screen["min_distance"],
                                             stored_shortest(structures))
        max_forces = max_forces if screens is not None else None
    by_id = {i: s.to_atoms() for i, s in records.items()}
    dft = [*routing.audit_labels, *_flat(dft_labels)]
    teacher = [*routing.audit_teacher_labels, *_flat(teacher_labels or [])]
    dataset = assemble_dataset(by_id, routing.routes, dft, teacher, screened, min_success_fraction,
                               max_force, align_energies, iteration, loop, max_forces, max_residual)
    if not isinstance(structures, StructureSet):
        return dataset
    # a stored candidate set: the labels go to the campaign database; the output keeps the teacher
    # labels without their forces (the bulk of the data), so no job reads them by value again
    with Campaign.open() as campaign:
        store_labels(campaign, structures.loop, structures.iteration, dataset.labels,
                     {i: s.n_atoms for i, s in records.items()})
    slim = [x if x.kind == DFT else x.model_copy(update={"forces": None, "stress": None}) for x in dataset.labels]
    return dataset.model_copy(update={"labels": slim, "forces_stored": True})


def _flat(outputs) -> list[Label | None]:
    """Job outputs (a label, a list of labels, lists of those from a group of jobs, or None for a
    job that did not finish) as labels."""
    return [x for output in outputs for x in (_flat(output) if isinstance(output, list) else [output])]


@dataclass
class AssembleMaker(Maker):
    """Final labels, screens and alignment pairs; ``align_energies`` False stores teacher energies unaligned."""

    name: str = "assemble"
    min_success_fraction: float = 0.8
    max_force: float | None = DEFAULT_MAX_FORCE
    align_energies: bool = True
    max_residual: float = DEFAULT_MAX_RESIDUAL
    iteration: int | None = None
    loop: str | None = None
    category: str | None = "cpu"

    def make(self, structures, routing, dft_labels, teacher_labels, screened=(), max_forces=None,
             screen: dict | None = None) -> Job:
        new_job = assemble_job(structures, routing, dft_labels, teacher_labels, list(screened),
                               self.min_success_fraction, self.max_force, self.align_energies, self.iteration,
                               self.loop, max_forces, self.max_residual, screen)
        new_job.name = self.name
        tolerate_failed_parents(new_job)
        if self.iteration is not None:  # the iteration it belongs to, whoever makes it
            new_job.metadata["iteration"] = self.iteration
        return set_category(tag_stage(new_job, ASSEMBLE), self.category)


@job
def label_stage_job(structures: list[StructureRecord] | StructureSet, routing: RoutingDocument,
                    maker: LabelStageMaker, scored_members: list[str] | None = None) -> Response:
    """Replace itself by the DFT jobs and the teacher jobs for these routes.

    Its output: references to their labels (``dft``, ``teacher``) only, for the assembly job
    (made beside it, so it gets the routing by reference); the assembly screens the routes
    itself, so nothing per structure passes through a job input. Structures given by
    reference (``StructureSet``) get one teacher job per stored chunk (in groups, see
    ``campaign.jobs``); ``scored_members`` (the ensemble that scored them) let a teacher that is
    a member reuse the scoring stage's predictions.
    """
    records = records_of(structures)
    by_id = {s.id: s for s in records}
    audited = {label.id for label in routing.audit_labels}
    rejected, _ = screen_routes(by_id, routing, maker.screens, maker.min_distance, stored_shortest(structures))
    screened = {label.id for label in rejected}
    to_dft = [r for r in routing.routes if r.route == "dft" and r.id not in audited and r.id not in screened]
    dft_jobs = _dft_jobs(maker, [by_id[r.id] for r in to_dft], [r.U for r in to_dft])
    # teacher labels for teacher routes, and for DFT routes to align energies (METHODS §2)
    taught = [by_id[r.id] for r in routing.routes if r.route in ("dft", "teacher") and r.id not in screened
              and r.id not in audited]
    jobs = list(dft_jobs)
    teacher_output = None
    if taught and maker.teacher_maker is not None:
        if isinstance(structures, StructureSet):
            # which structures a chunk's teacher job labels is marked in the campaign rows, so its
            # spec does not grow with the chunk
            wanted = {s.id for s in taught}
            with Campaign.open() as campaign:
                campaign.update_structures(structures.loop, structures.iteration,
                                           {s.id: {TEACH: s.id in wanted} for s in records})
            offsets = np.cumsum([0, *structures.sizes])
            keep = [k for k in range(len(structures.chunks))
                    if any(s.id in wanted for s in records[offsets[k]:offsets[k + 1]])]
            taught_chunks = structures.model_copy(update={"chunks": [structures.chunks[k] for k in keep],
                                                          "sizes": [structures.sizes[k] for k in keep]})
            teachers = chunk_jobs(maker.teacher_maker, taught_chunks, only_marked=True, scored_members=scored_members)
            jobs += teachers
            teacher_output = [t.output for t in teachers]
        else:
            teacher = maker.teacher_maker.make(taught)
            jobs.append(teacher)
            teacher_output = teacher.output
    made = {"dft": [j.output for j in dft_jobs], "teacher": teacher_output}
    if not jobs:
        return Response(output=made)
    return Response(replace=Flow(jobs, output=made, name=f"{maker.name} jobs"))


def screen_routes(by_id: dict[str, StructureRecord], routing: RoutingDocument, screens: SourceScreens | None,
                  min_distance: float, shortest: dict[str, float] | None = None,
                  ) -> tuple[list[Label], dict[str, float | None]]:
    """Routes to label whose structure fails its source's screen (rejected labels), and each routed
    structure's force screen (``max_forces``; empty without ``screens``). The audit is labelled already."""
    audited = {label.id for label in routing.audit_labels}
    rejected, max_forces = [], {}
    for route in routing.routes:
        if route.route in ("deferred", "rejected") or route.id in audited:
            continue
        screen = screens.for_source(by_id[route.id].source) if screens else None
        if screen is not None:
            max_forces[route.id] = screen.max_force
        problem = structure_problem(by_id[route.id].to_atoms(), screen.min_distance if screen else min_distance,
                                    (shortest or {}).get(route.id))
        if problem:
            kind = DFT if route.route == "dft" else TEACHER
            rejected.append(Label(id=route.id, status=REJECTED, kind=kind, source="screen", reason=problem))
    return rejected, max_forces


def _dft_jobs(maker: LabelStageMaker, structures: list[StructureRecord], us: list[float | None]) -> list:
    """One DFT job per structure, or per ``dft_batch_size`` structures where the DFT Maker batches."""
    size = maker.dft_batch_size
    if size <= 1 or not hasattr(maker.dft_maker, "make_batch"):
        return [maker.dft_maker.make(s) for s in structures]
    return [maker.dft_maker.make_batch(structures[i:i + size], us[i:i + size]) for i in range(0, len(structures), size)]


@dataclass
class LabelStageMaker(Maker):
    """DFT for structures routed to DFT, teacher labels for the rest, then assembly.

    ``screens`` (per source: candidates, MD, CAGO) replace ``min_distance`` and the
    assembly's ``max_force`` when given (METHODS §7: the CAGO filters are for CAGO output).
    ``dft_batch_size`` > 1 labels that many small structures per DFT job (CP2K and calculator
    labellers; VASP keeps one atomate2 job per structure).
    """

    name: str = "label"
    dft_maker: Maker = field(default_factory=Cp2kLabelMaker)
    teacher_maker: TeacherLabelMaker | None = field(default_factory=TeacherLabelMaker)
    assemble_maker: AssembleMaker = field(default_factory=AssembleMaker)
    min_distance: float = DEFAULT_MIN_DISTANCE
    screens: SourceScreens | None = None
    dft_batch_size: int = 1
    category: str | None = "cpu"

    def make(self, structures: list[StructureRecord] | StructureSet, routing,
             scored_members: list[str] | None = None) -> Flow:
        """The labelling jobs (made once the routes exist) and the assembly; ``scored_members`` (the
        ensemble that scored a ``StructureSet``) spare a teacher that is a member a second model pass."""
        if not math.isfinite(self.min_distance) or self.min_distance < 0:
            raise ValueError(f"min_distance must be a non-negative number, got {self.min_distance}")
        stage = label_stage_job(structures, routing, self, scored_members)
        stage.name = self.name
        set_category(stage, self.category)
        made = stage.output
        assemble = self.assemble_maker.make(structures, routing, made["dft"], made["teacher"],
                                            screen={"screens": self.screens, "min_distance": self.min_distance})
        return Flow([stage, assemble], output=assemble.output, name=self.name)
