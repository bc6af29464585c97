"""What a loop has produced, read from the launchpad and the JobStore.

The CLI's ``status``, ``results`` and ``report`` and the notebooks share these queries. Every
job of a loop carries the loop id in its metadata, and the jobs read here also their
iteration and stage (``uq_flows.stages``), so a loop's documents are found by metadata alone,
whatever the jobs are named; a running loop gives what it has so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from monty.json import MontyDecoder

from uq_flows.errors import InputError
from uq_flows.flows.loop import (
    IterationSummary,
    dft_force_errors,
    force_errors,
    iteration_counts,
)
from uq_flows.labeling.pool import AUDIT_KEY
from uq_flows.report import LoopReport
from uq_flows.campaign import STRUCTURES, Campaign
from uq_flows.flows.campaign_pool import load_pool
from uq_flows.stages import ASSEMBLE, LOOP_KEY, SCORE, STAGE_KEY, THRESHOLD
from uq_flows.uncertainty import ReferenceErrors

if TYPE_CHECKING:
    from fireworks import LaunchPad
    from jobflow import JobStore

STATES = {"COMPLETED": "completed", "FIZZLED": "failed", "DEFUSED": "stopped", "PAUSED": "stopped"}


@contextlib.contextmanager
def connect() -> Iterator[tuple[LaunchPad, JobStore]]:
    """The configured launchpad and JobStore, checked, both closed on exit (embedded or server)."""
    from uq_flows.manager.doctor import preflight
    from uq_flows.manager.launchpad import close_launchpad

    _, lp, store = preflight()
    try:
        with store:
            yield lp, store
    finally:
        close_launchpad(lp)


def _decode(document: dict) -> Any:
    return MontyDecoder().process_decoded(document["output"])


def _newest_per_iteration(store: JobStore, stage: str, loop: str) -> dict[int, Any]:
    """Decoded outputs of a loop's jobs of one stage, the newest per iteration (a rebuilt one wins)."""
    docs = store.query({f"metadata.{STAGE_KEY}": stage, f"metadata.{LOOP_KEY}": loop, "output": {"$ne": None}},
                       properties=["output", "metadata", "completed_at"], load=True)
    newest: dict[int, dict] = {}
    for doc in docs:
        iteration = (doc.get("metadata") or {}).get("iteration")
        if iteration is not None and (iteration not in newest or doc.get("completed_at", "") > newest[iteration].get("completed_at", "")):
            newest[iteration] = doc
    return {iteration: _decode(doc) for iteration, doc in sorted(newest.items())}


def iteration_summaries(loop: str) -> list[dict]:
    """The loop-state documents of finished iterations (``IterationSummary`` fields), in order, from
    ``campaign_loops``."""
    with Campaign.open() as campaign:
        documents = campaign.loop_documents(loop, "state")
    fields = set(IterationSummary.model_fields) - {"continuation"}
    return [{k: v for k, v in doc.items() if k in fields} for doc in documents]


def only_loop() -> str:
    """The one loop of the campaign database (an error naming them when there are several)."""
    with Campaign.open() as campaign:
        loops = campaign.loops()
    if len(loops) != 1:
        raise InputError(f"name the loop: the database holds {len(loops)} ({', '.join(loops) or 'none'})")
    return loops[0]


def loop_overview(lp: LaunchPad, store: JobStore, loop: str | None = None) -> dict[str, Any]:
    """``{"loops": [...]}``: per loop its state (completed, running, failed, stopped), the
    finished iterations' summaries, its jobs by category and state, and its failed jobs."""
    from uq_flows.manager.status import loop_status

    loops = []
    for entry in loop_status(lp, loop)["loops"]:
        if entry["loop"] is None:
            continue
        iterations = iteration_summaries(entry["loop"])
        state = STATES.get(entry["state"], "running")
        if state == "completed" and iterations and not iterations[-1]["converged"]:
            state = "running"  # the next iteration has not been added yet
        loops.append({"id": entry["loop"], "state": state, "iterations": iterations,
                      "jobs": entry["categories"], "fizzled": entry["fizzled"], "silent": entry["silent"]})
    return {"loops": loops}


def training_pool(loop: str):
    """The newest training pool of the loop: ``({id: Atoms}, [ok Label, ...])``.

    Teacher energies carry the loop's current energy alignment (the DFT zero); teacher labels
    it cannot place yet are left out (``uq-flows status`` counts them).
    """
    with Campaign.open() as campaign:
        if campaign[STRUCTURES].count_documents({"loop": loop}) == 0:
            raise InputError(f"loop {loop!r} is not in the campaign database")
        try:
            pool = load_pool(campaign, loop)
        except KeyError:
            raise InputError(f"loop {loop!r} has no labelled structures yet") from None
    return {s.id: s.to_atoms() for s in pool.structures}, pool.training_split().train_labels


def report_data(store: JobStore, loop: str, state: str = "unknown") -> LoopReport:
    """Everything ``uq_flows.report`` draws, from a finished or running loop.

    Iterations without a loop-state document yet get a partial row (counts from their
    scoring, routing and labels so far; ``complete`` False).
    """
    scores = _newest_per_iteration(store, SCORE, loop)
    routings = _newest_per_iteration(store, THRESHOLD, loop)
    datasets = _newest_per_iteration(store, ASSEMBLE, loop)
    finished = {row["iteration"]: row for row in iteration_summaries(loop)}
    if not (scores or finished):
        raise InputError(f"loop {loop!r} has no results yet (nothing scored)")
    rows, dft_so_far = [], 0
    errors, audit = [], []
    for iteration in sorted(set(scores) | set(finished)):
        if iteration in finished:
            row = {**finished[iteration], "complete": True}
        else:
            row = {**dict.fromkeys(IterationSummary.model_fields), "loop": loop, "iteration": iteration, "complete": False,
                   **iteration_counts(scores[iteration], routings.get(iteration), datasets.get(iteration), dft_so_far)}
            row.pop("continuation")
        dft_so_far = row.get("dft_total") or dft_so_far
        row["uc"] = routings[iteration].uc if iteration in routings else None
        rows.append(row)
        if iteration in scores:
            if iteration in datasets:
                errors.append(dft_force_errors(scores[iteration], datasets[iteration], iteration))
                audited = [x for x in datasets[iteration].labels if x.provenance.get(AUDIT_KEY)]
                audit.append(force_errors(scores[iteration], audited, iteration))
    with Campaign.open() as campaign:
        candidate_u = [d["U"] for d in campaign[STRUCTURES].find({"loop": loop, "U": {"$ne": None}}, {"U": 1})]
    first = next(iter(scores.values()), None)
    return LoopReport(loop=loop, state=state, members=first.members if first else [],
                      weights_source=first.weights_source if first else "unknown", iterations=rows,
                      candidate_u=np.array(candidate_u, float), dft=ReferenceErrors.concatenate(errors),
                      audit=ReferenceErrors.concatenate(audit))
