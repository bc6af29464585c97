"""jobflow Makers for the selection stage: QBC, descriptors, DIRECT (METHODS §6).

``SelectionMaker().make(records)`` builds the stage: the committee predicts the candidates
in (member × chunk) jobs, a ``qbc`` job applies MP-ALOE's thresholds, a ``describe`` job
computes descriptors of the QBC-selected candidates, and a ``direct`` job down-samples them.
Categories: ``selection_category`` (``cpu``) for QBC, descriptors and DIRECT; committee
predictions of uMLIP members go to ``score_category`` (``gpu``) like scoring, those of ACE
potentials to ``selection_category``. ``ElementalReferenceMaker`` relaxes the elements'
reference crystals with the teacher (``score_category``) for QBC's formation-energy
pre-filter. Forces, stresses and feature matrices go to the
JobStore's ``data`` store; the index documents keep indices, ids, metrics and counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jobflow import Flow, Job, Maker, job
from pydantic import BaseModel, Field

from uq_flows.campaign import StructureSet, records_of, structure_ids
from uq_flows.ensemble.members import MemberSpec, load_calculator, parse_member
from uq_flows.ensemble.predict import MemberPredictions, predict_member
from uq_flows.ensemble.scoring import concatenate_predictions
from uq_flows.stages import DIRECT, QBC, set_category, tag_stage, tolerate_failed_parents
from uq_flows.records import StructureRecord
from uq_flows.selection.committee import ACE_FACTORY, member_version, parse_committee
from uq_flows.selection.coverage import feature_coverage
from uq_flows.selection.descriptors import compute_descriptors, parse_descriptor
from uq_flows.selection.direct import DirectConfig, check_features, direct_sample
from uq_flows.selection.qbc import QBCConfig, select_from_predictions
from uq_flows.selection.references import (
    DEFAULT_FMAX,
    DEFAULT_MAX_STEPS,
    ElementalReference,
    check_reference_elements,
    check_relaxation_settings,
    reference_energies,
    reference_notes,
    relax_reference_crystals,
)
from uq_flows.settings import get_settings

PREDICTION_DATA = ["energies", "forces", "stresses"]


def _selection_category() -> str:
    return get_settings().selection_category


def _score_category() -> str:
    return get_settings().score_category


# --------------------------------------------------------------------------- documents


class QBCStructure(BaseModel):
    """QBC verdict on one candidate."""

    id: str
    status: str
    reason: str | None = None
    metrics: dict[str, float | None] = Field(description="energy (eV/atom), force (eV/Å), stress (eV/Å³) disagreement.")
    thresholds: dict[str, float | None]
    prefiltered: bool
    prefilter_reason: str | None = None
    selected: bool


class QBCDocument(BaseModel):
    """Output of the QBC job: which candidates the committee disagrees on."""

    members: list[str]
    versions: dict[str, str]
    config: dict[str, Any]
    n_candidates: int
    n_failed: int
    n_prefiltered: int
    n_exceeding: dict[str, int]
    selected: list[int] = Field(description="Indices into the candidates, ascending.")
    selected_ids: list[str]
    structures: list[QBCStructure]


class DescriptorDocument(BaseModel):
    """Descriptors of some candidates (``indices`` into the candidates); rows in that order."""

    descriptor: str
    version: str
    indices: list[int]
    ids: list[str]
    status: list[str]
    reasons: list[str | None]
    n_features: int
    n_cached: int
    features: list[list[float | None]] = Field(description="One row per index; None where not described.")


class SelectionDocument(BaseModel):
    """Output of the selection stage: candidates to label, and how they were chosen."""

    selected: list[int] = Field(description="Indices into the candidates, ascending.")
    selected_ids: list[str]
    n_candidates: int
    n_after_qbc: int
    n_described: int
    n_clusters: int
    coverage: dict[str, Any] | None = None
    qbc: dict[str, Any] | None = None
    descriptor: str | None = None
    direct: dict[str, Any] | None = None
    failed: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    labels: list[int] = Field(default_factory=list, description="Cluster of every candidate (-1: not clustered).")


class ElementalReferenceDocument(BaseModel):
    """Elemental reference energies from a teacher's relaxed reference crystals (QBC's
    formation-energy pre-filter, MP-ALOE paper 003). ``elemental_references`` are on the
    teacher's scale: for a committee fitted on aligned labels, add the alignment shifts μ_el
    (``uq_flows.selection.references.shifted_references``)."""

    teacher: str
    version: str
    elemental_references: dict[str, float] = Field(
        description="{symbol: eV/atom} for QBCConfig.elemental_references."
    )
    references: list[ElementalReference]
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- jobs


@job(data=PREDICTION_DATA)
def committee_chunk(member: dict[str, Any], structures: list[StructureRecord] | StructureSet,
                    device: str | None = None) -> MemberPredictions:
    """One committee member's energies, forces and stresses on one chunk of candidates."""
    spec = MemberSpec.from_dict(member)
    atoms = [record.to_atoms() for record in records_of(structures)]
    predictions = predict_member(spec, atoms, calculator=load_calculator(spec, device))
    predictions.version = member_version(spec)
    return predictions


@job
def qbc(
    structure_ids: list[str] | StructureSet,
    numbers: list[list[int]] | None,
    chunk_sizes: list[int],
    predictions: dict[str, list[MemberPredictions | None]],
    versions: dict[str, str],
    config: dict[str, Any] | None = None,
) -> QBCDocument:
    """MP-ALOE's QBC on every member's chunks; a chunk whose job failed arrives as None
    (``OnMissing.NONE``) and its candidates get status ``error`` instead of stopping the stage.
    Given a ``StructureSet``, ids and atomic numbers are read from the campaign database."""
    if isinstance(structure_ids, StructureSet):
        records = records_of(structure_ids)
        structure_ids, numbers = [r.id for r in records], [list(r.numbers) for r in records]
    qbc_config = QBCConfig.from_dict(config)
    n_atoms = [len(z) for z in numbers]
    offsets = np.concatenate([[0], np.cumsum(chunk_sizes)])
    joined = []
    for member, chunks in predictions.items():
        parts = []
        for c, chunk in enumerate(chunks):
            if chunk is None:
                sizes = n_atoms[offsets[c] : offsets[c + 1]]
                chunk = MemberPredictions.failed(member, sizes, "error", f"prediction job for chunk {c} did not complete")
            parts.append(chunk)
        joined.append(concatenate_predictions(parts))
    result = select_from_predictions(joined, numbers, qbc_config)
    rows = [
        QBCStructure(id=structure_id, **{k: row[k] for k in QBCStructure.model_fields if k != "id"})
        for structure_id, row in zip(structure_ids, result.rows())
    ]
    summary = result.summary()
    return QBCDocument(
        members=result.members,
        versions=versions,
        config=summary["config"],
        n_candidates=result.n_structures,
        n_failed=summary["n_failed"],
        n_prefiltered=summary["n_prefiltered"],
        n_exceeding=summary["n_exceeding"],
        selected=[int(i) for i in result.selected_indices],
        selected_ids=[structure_ids[i] for i in result.selected_indices],
        structures=rows,
    )


def _indices(keep: QBCDocument | dict | list[int] | None, n: int) -> list[int]:
    if keep is None:
        return list(range(n))
    if isinstance(keep, QBCDocument):
        return list(keep.selected)
    if isinstance(keep, dict):
        return list(keep["selected"])
    return [int(i) for i in keep]


@job(data=["features"])
def describe(
    structures: list[StructureRecord] | StructureSet,
    descriptor: str | None = None,
    keep: QBCDocument | dict | list[int] | None = None,
    device: str | None = None,
    cache: bool = True,
) -> DescriptorDocument:
    """Descriptors of the candidates in ``keep`` (a QBC document: its selection; indices; None: all)."""
    structures = records_of(structures)
    indices = _indices(keep, len(structures))
    spec = parse_descriptor(descriptor)
    if not indices:
        return DescriptorDocument(descriptor=spec.name, version=spec.version, indices=[], ids=[], status=[], reasons=[],
                                  n_features=0, n_cached=0, features=[])
    result = compute_descriptors([structures[i].to_atoms() for i in indices], spec, cache=cache, device=device)
    features = [[None if not math.isfinite(x) else float(x) for x in row] for row in result.features]
    return DescriptorDocument(
        descriptor=result.name, version=result.version, indices=indices, ids=result.ids, status=result.status,
        reasons=result.reasons, n_features=int(result.features.shape[1]), n_cached=result.n_cached, features=features,
    )


@job(data=["labels"])
def direct(
    descriptors: DescriptorDocument | dict,
    n_candidates: int,
    config: dict[str, Any] | None = None,
    candidate_ids: list[str] | StructureSet | None = None,
    n_atoms: list[int] | None = None,
    qbc_document: QBCDocument | dict | None = None,
    n_bins: int = 50,
) -> SelectionDocument:
    """DIRECT on the described candidates; indices in the output refer to all candidates.

    ``candidate_ids`` may be a ``StructureSet``: ids and atom counts come from the campaign database.
    """
    if isinstance(candidate_ids, StructureSet):
        candidate_ids, n_atoms = structure_ids(candidate_ids)
    if isinstance(descriptors, dict):
        descriptors = DescriptorDocument.model_validate(descriptors)
    if isinstance(qbc_document, dict):
        qbc_document = QBCDocument.model_validate(qbc_document)
    direct_config = DirectConfig.from_dict(config)
    failed = []
    if qbc_document is not None:
        failed += [{"index": j, "stage": "qbc", "status": row.status, "reason": row.reason}
                   for j, row in enumerate(qbc_document.structures) if row.status != "ok"]
    ok = [j for j, s in enumerate(descriptors.status) if s == "ok"]
    failed += [{"index": descriptors.indices[j], "stage": "descriptor", "status": descriptors.status[j],
                "reason": descriptors.reasons[j]} for j, s in enumerate(descriptors.status) if s != "ok"]
    described = np.array([descriptors.indices[j] for j in ok], dtype=np.int64)
    ids = candidate_ids or [None] * n_candidates
    base = {
        "n_candidates": n_candidates,
        "n_after_qbc": len(descriptors.indices),
        "n_described": len(described),
        "qbc": None if qbc_document is None else qbc_document.model_dump(exclude={"structures"}),
        "descriptor": descriptors.descriptor,
        "failed": failed,
    }
    if len(described) == 0:
        note = "QBC selected no candidate" if not descriptors.indices else "no candidate could be described"
        return SelectionDocument(selected=[], selected_ids=[], n_clusters=0, notes=[note], labels=[-1] * n_candidates, **base)
    rows = check_features(np.array([descriptors.features[j] for j in ok], dtype=float), name="descriptors")
    sites = None if n_atoms is None else np.asarray(n_atoms)[described]
    result = direct_sample(rows, direct_config, sites)
    selected = described[result.selected]
    labels = np.full(n_candidates, -1, dtype=np.int64)
    labels[described] = result.labels
    return SelectionDocument(
        selected=[int(i) for i in selected],
        selected_ids=[ids[i] for i in selected] if candidate_ids else [],
        n_clusters=result.n_clusters,
        coverage=feature_coverage(result.scores, result.selected, n_bins=n_bins, seed=direct_config.seed),
        direct=result.summary(),
        notes=list(result.notes),
        labels=[int(x) for x in labels],
        **base,
    )


@job
def elemental_references(
    elements: list[str], teacher: str, device: str | None = None, fmax: float = DEFAULT_FMAX,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> ElementalReferenceDocument:
    """Relax every element's reference crystal with the teacher (a member spec string)."""
    spec = parse_member(teacher)
    references = relax_reference_crystals(elements, load_calculator(spec, device), fmax, max_steps)
    return ElementalReferenceDocument(
        teacher=spec.name, version=member_version(spec), elemental_references=reference_energies(references),
        references=references, notes=reference_notes(references),
    )


# --------------------------------------------------------------------------- makers


@dataclass
class ElementalReferenceMaker(Maker):
    """One job relaxing the elements' reference crystals with the teacher (category ``gpu``:
    ``score_category``, it runs a uMLIP); output ``ElementalReferenceDocument``."""

    name: str = "elemental references"
    teacher: str = "chgnet-0.3.0"
    fmax: float = DEFAULT_FMAX
    max_steps: int = DEFAULT_MAX_STEPS
    device: str | None = None
    category: str | None = field(default_factory=_score_category)

    def make(self, elements: list[str]) -> Job:
        parse_member(self.teacher)  # fail early on unknown members and bad settings
        check_relaxation_settings(self.fmax, self.max_steps)
        if isinstance(elements, (list, tuple, str)):
            elements = check_reference_elements(elements)  # and on elements without a reference crystal
        new_job = elemental_references(elements, self.teacher, self.device, self.fmax, self.max_steps)
        new_job.name = self.name
        return set_category(new_job, self.category)


@dataclass
class QBCMaker(Maker):
    """Query by committee: (member × chunk) prediction jobs and one ``qbc`` job.

    ``committee``: uMLIP member forms or ACE potential files (``[NAME=]PATH.yaml``).
    ``config``: ``QBCConfig`` fields (thresholds, multipliers, pre-filters).
    """

    name: str = "qbc"
    committee: list[str] = field(default_factory=lambda: ["chgnet-0.2.0", "chgnet-0.3.0"])
    config: dict[str, Any] = field(default_factory=dict)
    chunk_size: int = field(default_factory=lambda: get_settings().score_chunk_size)
    device: str | None = None
    prediction_category: str | None = None  # None: gpu (score_category) for uMLIPs, selection_category for ACE
    category: str | None = field(default_factory=_selection_category)

    def make(self, structures: list[StructureRecord] | StructureSet) -> Flow:
        """Candidates by value, or by reference (``StructureSet``: one job per member and stored chunk)."""
        if isinstance(structures, StructureSet) and structures.n == 0 or not structures:
            raise ValueError("no candidates for QBC")
        QBCConfig.from_dict(self.config)  # fail early on bad settings
        specs = parse_committee(self.committee)
        if isinstance(structures, StructureSet):
            chunks, ids, numbers, sizes = structures.split(), structures, None, structures.sizes
        else:
            n_chunks = math.ceil(len(structures) / self.chunk_size)
            chunks = [structures[c * self.chunk_size : (c + 1) * self.chunk_size] for c in range(n_chunks)]
            ids, numbers = [s.id for s in structures], [list(s.numbers) for s in structures]
            sizes = [len(c) for c in chunks]
        n_chunks = len(chunks)
        jobs, predictions = [], {}
        for spec in specs:
            category = self.prediction_category or (
                self.category if spec.model == ACE_FACTORY else get_settings().score_category
            )
            predictions[spec.name] = []
            for c, chunk in enumerate(chunks):
                predict = committee_chunk(spec.as_dict(), chunk, self.device)
                predict.name = f"{self.name} {spec.name} {c + 1}/{n_chunks}"
                jobs.append(set_category(predict, category))
                predictions[spec.name].append(predict.output)
        combine = qbc(ids, numbers, sizes, predictions, {spec.name: member_version(spec) for spec in specs},
                      dict(self.config))
        combine.name = self.name
        tolerate_failed_parents(combine)
        jobs.append(set_category(tag_stage(combine, QBC), self.category))
        return Flow(jobs, output=combine.output, name=self.name)


@dataclass
class DescriptorMaker(Maker):
    """Descriptors of candidates (all, or those a QBC document selected); cached on disk."""

    name: str = "descriptors"
    descriptor: str | None = None  # None: chgnet-0.3.0
    device: str | None = None
    cache: bool = True
    category: str | None = field(default_factory=_selection_category)

    def make(self, structures: list[StructureRecord] | StructureSet, keep: Any = None) -> Job:
        parse_descriptor(self.descriptor)  # fail early on unknown names
        new_job = describe(structures, self.descriptor, keep, self.device, self.cache)
        new_job.name = self.name
        return set_category(new_job, self.category)


@dataclass
class DirectMaker(Maker):
    """DIRECT down-sampling of described candidates (``DirectConfig`` fields as attributes)."""

    name: str = "direct"
    n_clusters: int | None = None
    threshold: float | None = None
    k: int = 1
    mode: str = "center"
    weighting: bool = True
    centre: str = "birch"
    seed: int = 0
    n_bins: int = 50
    category: str | None = field(default_factory=_selection_category)

    def config(self) -> dict[str, Any]:
        return DirectConfig(n_clusters=self.n_clusters, threshold=self.threshold, k=self.k, mode=self.mode,
                            weighting=self.weighting, centre=self.centre, seed=self.seed).as_dict()

    def make(self, descriptors, n_candidates: int, candidate_ids=None, n_atoms=None, qbc_document=None) -> Job:
        new_job = direct(descriptors, n_candidates, self.config(), candidate_ids, n_atoms, qbc_document, self.n_bins)
        new_job.name = self.name
        return set_category(tag_stage(new_job, DIRECT), self.category)


@dataclass
class SelectionMaker(Maker):
    """The selection stage: QBC (unless ``qbc_maker`` is None) → descriptors → DIRECT."""

    name: str = "select candidates"
    qbc_maker: QBCMaker | None = field(default_factory=QBCMaker)
    descriptor_maker: DescriptorMaker = field(default_factory=DescriptorMaker)
    direct_maker: DirectMaker = field(default_factory=DirectMaker)

    def make(self, structures: list[StructureRecord] | StructureSet) -> Flow:
        """Candidates by value, or by reference (``StructureSet``): then no job input holds them."""
        if isinstance(structures, StructureSet) and structures.n == 0 or not structures:
            raise ValueError("no candidates to select from")
        self.direct_maker.config()  # fail early on bad DIRECT settings
        jobs: list[Job | Flow] = []
        qbc_output = None
        if self.qbc_maker is not None:
            qbc_flow = self.qbc_maker.make(structures)
            jobs.append(qbc_flow)
            qbc_output = qbc_flow.output
        describe_job = self.descriptor_maker.make(structures, qbc_output)
        if isinstance(structures, StructureSet):
            direct_job = self.direct_maker.make(describe_job.output, structures.n, structures, None, qbc_output)
        else:
            direct_job = self.direct_maker.make(describe_job.output, len(structures), [s.id for s in structures],
                                                [s.n_atoms for s in structures], qbc_output)
        jobs += [describe_job, direct_job]
        return Flow(jobs, output=direct_job.output, name=self.name)
