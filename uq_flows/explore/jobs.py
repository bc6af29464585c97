"""jobflow Makers for exploration: starting sets (``cpu``) and MD sampling (``gpu``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobflow import Job, Maker, job
from pydantic import BaseModel

from uq_flows.cago.committee import load_model
from uq_flows.explore.generators import GENERATORS, starting_set
from uq_flows.explore.md import MDSettings, run_md
from uq_flows.stages import MD_EXPLORE, set_category, tag_stage
from uq_flows.records import StructureRecord


class MDRun(BaseModel):
    start_id: str
    stable: bool
    reason: str | None
    steps_done: int
    n_snapshots: int


class ExplorationDocument(BaseModel):
    snapshots: list[StructureRecord]
    runs: list[MDRun]


@job
def md_job(starts: list[StructureRecord], calculator: str, settings: MDSettings) -> ExplorationDocument:
    model = load_model(calculator)
    snapshots, runs = [], []
    for start in starts:
        result = run_md(start.to_atoms(), model, settings)
        snapshots += [StructureRecord.from_atoms(a, source=f"md:{start.id}:{a.info['md_step']}") for a in result.snapshots]
        runs.append(MDRun(start_id=start.id, stable=result.stable, reason=result.reason,
                          steps_done=result.steps_done, n_snapshots=len(result.snapshots)))
    return ExplorationDocument(snapshots=snapshots, runs=runs)


@dataclass
class MDExploreMaker(Maker):
    """MD with an ACE potential or uMLIP member; snapshots seed CAGO and the next iteration."""

    name: str = "md explore"
    calculator: str = "chgnet-0.3.0"
    settings: MDSettings = field(default_factory=MDSettings)
    category: str | None = "gpu"

    def make(self, starts: list[StructureRecord], calculator: str | None = None) -> Job:
        new_job = md_job(starts, calculator or self.calculator, self.settings)
        new_job.name = self.name
        return set_category(tag_stage(new_job, MD_EXPLORE), self.category)


@job
def generate_job(elements: list[str], n: int, max_atoms: int, seed: int, kinds: list[str]) -> list[StructureRecord]:
    return [StructureRecord.from_atoms(a, source=a.info["generator"]) for a in starting_set(elements, n, max_atoms, seed, kinds)]


@dataclass
class GenerateMaker(Maker):
    """Starting structures for an element set (strained, vacancies, surfaces, dimers, pairs)."""

    name: str = "generate"
    n: int = 4
    max_atoms: int = 16
    seed: int = 0
    kinds: list[str] = field(default_factory=lambda: list(GENERATORS))
    category: str | None = "cpu"

    def make(self, elements: list[str]) -> Job:
        new_job = generate_job(list(elements), self.n, self.max_atoms, self.seed, self.kinds)
        new_job.name = self.name
        return set_category(new_job, self.category)
