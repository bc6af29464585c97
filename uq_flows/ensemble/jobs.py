"""jobflow Makers for the scoring stage (DESIGN.md, "Queues and resume").

One job per (member, chunk of structures), FireWorks category ``gpu`` by default, so each
member can run on a worker whose environment has that model and model loading is amortised
over a chunk. A light job (category ``cpu``) combines the members' predictions into U.
Forces, energies and stresses go to the JobStore's ``data`` store; the index document keeps
ids, U, statuses and reasons only. Structures with non-finite positions or cell (status
``invalid``) or atoms closer than ``min_distance`` (``rejected``) reach no member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from jobflow import Flow, Job, Maker, job
from pydantic import BaseModel, Field

from uq_flows.campaign import Campaign, StructureSet, records_of, stored_shortest
from uq_flows.campaign.jobs import chunk_jobs, ungroup
from uq_flows.campaign import structure_ids as structure_ids_of
from uq_flows.ensemble.members import parse_member
from uq_flows.ensemble.predict import MemberPredictions, predict_member
from uq_flows.ensemble.scoring import (
    combine_predictions,
    concatenate_predictions,
    resolve_weights,
)
from uq_flows.stages import CHUNK_KEY, MEMBER_KEY, MEMBER_PREDICTION, SCORE, set_category, tag_stage, tolerate_failed_parents
from uq_flows.screening import HARD_MIN_DISTANCE, check_min_distance
from uq_flows.records import StructureRecord
from uq_flows.settings import get_settings

DATA_KEYS = ["energies", "forces", "stresses"]


MEAN_FORCES = "mean_forces"  # campaign set arrays: the ensemble-mean forces of a scored set


class StructureUncertainty(BaseModel):
    """U of one structure and whether every member could predict it."""

    id: str
    U: float | None = Field(None, description="eV/Å; None when not every member predicted it.")
    status: str
    reason: str | None = None
    n_atoms: int
    max_deviation: dict[str, float | None] = Field(description="d_jk per member (paper 001, eq. 1).")
    mean_forces: list[list[float]] | None = Field(None, description="Plain ensemble-mean forces (eV/Å), data store; "
                                                                    "None when they are in the campaign database.")


class UncertaintyDocument(BaseModel):
    """Output of the scoring stage: U per structure in input order, and how it was made."""

    members: list[str]
    versions: dict[str, str]
    weights: list[float]
    weights_source: str
    variant: int
    n_ok: int
    n_failed: int
    structures: list[StructureUncertainty]
    mean_forces_in: StructureSet | None = Field(
        None, description="The scored set whose ensemble-mean forces are in the campaign database (MEAN_FORCES).")

    def mean_forces(self, ids) -> dict[str, np.ndarray]:
        """Ensemble-mean forces of these structures (those scored ok), wherever they are kept."""
        if self.mean_forces_in is None:
            wanted = set(ids)
            return {s.id: np.asarray(s.mean_forces) for s in self.structures if s.id in wanted and s.mean_forces}
        with Campaign.open() as campaign:
            return {i: f.reshape(-1, 3) for i, f in campaign.set_arrays(self.mean_forces_in, MEAN_FORCES, ids).items()}




@job(data=DATA_KEYS)
def predict_chunk(
    member: str, structures: list[StructureRecord] | StructureSet, device: str | None = None,
    min_distance: float = HARD_MIN_DISTANCE,
) -> MemberPredictions:
    """One member's energies, forces and stresses on one chunk of structures (screened first)."""
    spec = parse_member(member)
    records = records_of(structures)
    shortest = stored_shortest(structures)
    return predict_member(spec, [r.to_atoms() for r in records], device=device, min_distance=min_distance,
                          shortest=None if shortest is None else [shortest.get(r.id) for r in records])


@dataclass
class MemberPredictionMaker(Maker):
    """Run one ensemble member on a chunk of structures."""

    name: str = "member predictions"
    device: str | None = None
    category: str | None = field(default_factory=lambda: get_settings().score_category)

    def make(self, member: str, structures: list[StructureRecord] | StructureSet,
             min_distance: float = HARD_MIN_DISTANCE) -> Job:
        """Tagged with the member and, for a stored chunk, its id: a teacher that is this member finds it."""
        new_job = predict_chunk(member, structures, self.device, check_min_distance(min_distance))
        new_job.name = f"{self.name} {member}"
        new_job.metadata[MEMBER_KEY] = member
        if isinstance(structures, StructureSet) and len(structures.chunks) == 1:
            new_job.metadata[CHUNK_KEY] = structures.chunks[0]
        return set_category(tag_stage(new_job, MEMBER_PREDICTION), self.category)


@job(data=["mean_forces"])
def combine_uncertainty(
    structure_ids: list[str] | StructureSet,
    n_atoms: list[int] | None,
    chunk_sizes: list[int],
    predictions: dict[str, list[MemberPredictions | None]],
    versions: dict[str, str],
    weights: str | dict[str, float] = "auto",
    variant: int = 1,
) -> UncertaintyDocument:
    """U per structure (paper 001, eq. 1) from every member's chunks.

    A chunk whose job failed arrives as ``None`` (``OnMissing.NONE``): its structures get
    status ``error`` with that reason instead of stopping the stage. Given a ``StructureSet``
    (and no ``n_atoms``), ids and atom counts are read from the campaign database.
    """
    stored = structure_ids if isinstance(structure_ids, StructureSet) else None
    if stored is not None:
        structure_ids, n_atoms = structure_ids_of(stored)
    members = list(predictions)
    offsets = np.concatenate([[0], np.cumsum(chunk_sizes)])
    joined = []
    for member in members:
        chunks = []
        for c, chunk in enumerate(ungroup(predictions[member], len(chunk_sizes))):
            if chunk is None:
                sizes = n_atoms[offsets[c] : offsets[c + 1]]
                reason = f"prediction job for chunk {c} did not complete"
                chunk = MemberPredictions.failed(member, sizes, "error", reason)
            chunks.append(chunk)
        joined.append(concatenate_predictions(chunks))
    scores = combine_predictions(joined, resolve_weights(members, weights), variant)
    mean = np.mean([p.forces for p in joined], axis=0)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    ok = [row["status"] == "ok" for row in scores.rows()]
    means = [mean[offsets[j] : offsets[j + 1]] if ok[j] else None for j in range(len(ok))]
    if stored is not None:  # beside the geometry, not in this output: it would grow with every atom scored
        with Campaign.open() as campaign:
            campaign.add_set_arrays(stored, MEAN_FORCES, means)
    rows = [
        StructureUncertainty(
            id=structure_id, **{k: row[k] for k in ("U", "status", "reason", "n_atoms", "max_deviation")},
            mean_forces=None if stored is not None or means[j] is None else means[j].tolist(),
        )
        for j, (structure_id, row) in enumerate(zip(structure_ids, scores.rows()))
    ]
    n_failed = sum(row.status != "ok" for row in rows)
    return UncertaintyDocument(
        members=members,
        versions=versions,
        weights=scores.weights.tolist(),
        weights_source=scores.weights_source,
        variant=variant,
        n_ok=len(rows) - n_failed,
        n_failed=n_failed,
        structures=rows,
        mean_forces_in=stored,
    )


@dataclass
class CombineUncertaintyMaker(Maker):
    """Combine member predictions into U; light, category ``cpu``."""

    name: str = "ensemble uncertainty"
    weights: str | dict[str, float] = "auto"
    variant: int = field(default_factory=lambda: get_settings().uncertainty_variant)
    category: str | None = field(default_factory=lambda: get_settings().combine_category)

    def make(self, structure_ids, n_atoms, chunk_sizes, predictions, versions) -> Job:
        new_job = combine_uncertainty(
            structure_ids, n_atoms, chunk_sizes, predictions, versions, self.weights, self.variant
        )
        new_job.name = self.name
        tolerate_failed_parents(new_job)
        return set_category(new_job, self.category)


@dataclass
class EnsembleScoreMaker(Maker):
    """Score structures with a heterogeneous uMLIP ensemble: (members × chunks) jobs + combine.

    ``min_distance`` (Å, finite, ≥ 0; 0 turns the screen off): structures with two atoms
    closer than this, periodic images included, get status ``rejected`` and reach no member.
    """

    name: str = "score ensemble"
    members: list[str] = field(default_factory=lambda: ["chgnet-0.3.0", "sevennet-0-11jul2024"])
    chunk_size: int = field(default_factory=lambda: get_settings().score_chunk_size)
    min_distance: float = HARD_MIN_DISTANCE
    prediction_maker: MemberPredictionMaker = field(default_factory=MemberPredictionMaker)
    combine_maker: CombineUncertaintyMaker = field(default_factory=CombineUncertaintyMaker)

    def make(self, structures: list[StructureRecord] | StructureSet) -> Flow:
        """Structures by value, or by reference (a ``StructureSet``: one job per member and stored chunk)."""
        if isinstance(structures, StructureSet) and structures.n == 0 or not structures:
            raise ValueError("no structures to score")
        specs = [parse_member(m) for m in self.members]  # fail early on unknown members
        jobs, predictions = [], {}
        if isinstance(structures, StructureSet):
            ids, n_atoms, sizes = structures, None, structures.sizes
            for text, spec in zip(self.members, specs):
                made = chunk_jobs(self.prediction_maker, structures, member=text, min_distance=self.min_distance)
                jobs += made
                predictions[spec.name] = [j.output for j in made]
        else:
            n_chunks = math.ceil(len(structures) / self.chunk_size)
            chunks = [structures[c * self.chunk_size : (c + 1) * self.chunk_size] for c in range(n_chunks)]
            ids, n_atoms, sizes = [s.id for s in structures], [s.n_atoms for s in structures], [len(c) for c in chunks]
            for text, spec in zip(self.members, specs):
                predictions[spec.name] = []
                for c, chunk in enumerate(chunks):
                    predict = self.prediction_maker.make(text, chunk, self.min_distance)
                    predict.name = f"{predict.name} {c + 1}/{n_chunks}"
                    jobs.append(predict)
                    predictions[spec.name].append(predict.output)
        combine = self.combine_maker.make(
            ids, n_atoms, sizes, predictions,
            {spec.name: spec.version for spec in specs},
        )
        return Flow([*jobs, tag_stage(combine, SCORE)], output=combine.output, name=self.name)
