"""The active-learning loop (DESIGN.md; papers 001, 003, 004).

One iteration: candidates → score (uMLIP ensemble, U) → threshold → label (DFT above U_c,
teacher below) → training pool → ACE ensemble fit → MD with the fit → CAGO → QBC + DIRECT
→ the next candidates. Each iteration is a job that replaces itself with that flow once its
inputs exist (jobflow ``Response(replace=...)``); a loop-state job at the end of every
iteration records progress and adds the next iteration while no convergence criterion is
met. Every job carries ``metadata = {uq_flows_loop, iteration}``, so status, results and
resume find a loop's documents in the JobStore.

ACE potential files are written into the loop's work folder, which workers must share (the
usual HPC setup); their contents also stay in the JobStore's data store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jobflow import Flow, Maker, OnMissing, Response, job
from pydantic import BaseModel, Field

from uq_flows.ace.jobs import AceFitDocument, AceFitMaker
from uq_flows.cago.jobs import CagoMaker
from uq_flows.ensemble.jobs import (
    CombineUncertaintyMaker,
    EnsembleScoreMaker,
    UncertaintyDocument,
)
from uq_flows.explore.jobs import MDExploreMaker
from uq_flows.flows.categories import set_category
from uq_flows.flows.config import LoopConfig
from uq_flows.labeling.assembly import DistilledDataset
from uq_flows.labeling.jobs import (
    AssembleMaker,
    CalculatorLabelMaker,
    Cp2kLabelMaker,
    LabelStageMaker,
    RoutingDocument,
    TeacherLabelMaker,
    ThresholdMaker,
    VaspLabelMaker,
    VaspStaticMaker,
)
from uq_flows.labeling.labels import Label
from uq_flows.records import StructureRecord
from uq_flows.selection.jobs import (
    DescriptorMaker,
    DirectMaker,
    QBCMaker,
    SelectionMaker,
)
from uq_flows.settings import get_settings
from uq_flows.uncertainty import ReferenceErrors

LOOP_KEY = "uq_flows_loop"
STATE_JOB = "loop state"


class TrainingPool(BaseModel):
    """Every labelled structure of the loop so far (ok labels only), without duplicates."""

    structures: list[StructureRecord] = Field(default_factory=list)
    labels: list[Label] = Field(default_factory=list)


class IterationSummary(BaseModel):
    """The loop-state document of one iteration (what ``uq-flows status`` shows)."""

    loop: str
    iteration: int
    n_candidates: int
    n_high_u: int
    n_dft_ok: int
    n_dft_failed: int
    n_rejected: int = Field(description="Screened out: atoms too close, or forces above the maximum.")
    n_teacher: int
    n_deferred: int
    dft_total: int = Field(description="DFT calculations run by the loop so far (ok or failed).")
    n_training: int
    train_energy_rmse_per_atom: float | None = None
    train_force_rmse: float | None = None
    test_energy_rmse_per_atom: float | None = None
    test_force_rmse: float | None = None
    spearman_dft: float | None = Field(None, description="ρ(U, ensemble-mean force error) on DFT labels.")
    n_next_candidates: int
    converged: bool
    reason: str
    continuation: dict | None = Field(None, description="What rebuild_loop needs: config, next candidates.")


def dft_maker(config: LoopConfig):
    if config.dft.labeller == "cp2k":
        return Cp2kLabelMaker(settings=config.dft.cp2k)
    if config.dft.labeller == "vasp":
        return VaspLabelMaker(static_maker=VaspStaticMaker(incar_overrides=config.dft.incar_overrides))
    return CalculatorLabelMaker(calculator=config.dft.calculator)


@job
def merge_pool(pool: TrainingPool | None, structures: list[StructureRecord], dataset: DistilledDataset) -> TrainingPool:
    """The pool plus this iteration's ok labels; an id labelled before is not added twice."""
    pool = pool or TrainingPool()
    known = {s.id for s in pool.structures}
    by_id = {s.id: s for s in structures}
    new = [label for label in dataset.ok_labels() if label.id not in known]
    return TrainingPool(structures=[*pool.structures, *(by_id[x.id] for x in new)], labels=[*pool.labels, *new])


@job
def iteration_job(config: LoopConfig, iteration: int, candidates: list[StructureRecord], pool: TrainingPool | None,
                  dft_so_far: int, known_labels: list[Label] | None = None) -> Response:
    """Replace itself with score → threshold → label → pool → fit → after-fit.

    ``known_labels``: DFT labels an earlier, broken attempt at this iteration produced; they
    are used instead of running DFT again (see ``rebuild_loop``).
    """
    budget = config.convergence.dft_budget_per_iteration
    if config.convergence.dft_budget_total is not None:
        left = max(0, config.convergence.dft_budget_total - dft_so_far)
        budget = left if budget is None else min(budget, left)
    score = EnsembleScoreMaker(members=config.members, chunk_size=config.chunk_size,
                               combine_maker=CombineUncertaintyMaker(weights=config.weights)).make(candidates)
    threshold = ThresholdMaker(uc=config.uc, dft_budget=budget).make(candidates, score.output)
    stages = [score, threshold]
    routing = threshold.output
    if known_labels:
        reuse = reuse_labels(threshold.output, known_labels)
        reuse.name = "reuse labels"
        stages.append(set_category(reuse, "cpu"))
        routing = reuse.output
    label = LabelStageMaker(
        dft_maker=dft_maker(config),
        teacher_maker=TeacherLabelMaker(energy_from=config.teacher.energy_from, forces_from=config.teacher.forces_from),
        assemble_maker=AssembleMaker(min_success_fraction=config.dft.min_success_fraction, iteration=iteration,
                                     loop=config.name),
    ).make(candidates, routing)
    merged = merge_pool(pool, candidates, label.output)
    merged.name = "training pool"
    fit = AceFitMaker(options=config.fit).make(merged.output.structures, merged.output.labels)
    after = after_fit_job(config, iteration, candidates, score.output, routing, label.output,
                          merged.output, fit.output, dft_so_far)
    after.name = f"after fit {iteration}"
    set_category(merged, "cpu")
    set_category(after, "cpu")
    flow = Flow([*stages, label, merged, fit, after], output=after.output, name=f"iteration {iteration}")
    return Response(replace=_tagged(flow, config, iteration))


@job
def reuse_labels(routing: RoutingDocument, known: list[Label]) -> RoutingDocument:
    """DFT labels already made for structures routed to DFT count as done: none is computed twice."""
    dft_ids = {r.id for r in routing.routes if r.route == "dft"}
    have = {x.id for x in routing.audit_labels}
    reused = [x for x in known if x.ok and x.id in dft_ids and x.id not in have]
    return routing.model_copy(update={"audit_labels": [*routing.audit_labels, *reused]})


@job
def after_fit_job(config: LoopConfig, iteration: int, candidates, uncertainty: UncertaintyDocument,
                  routing: RoutingDocument, dataset: DistilledDataset, pool: TrainingPool, fit: AceFitDocument,
                  dft_so_far: int) -> Response:
    """Write the potentials where workers find them, then MD → CAGO → QBC + DIRECT → loop state."""
    folder = loop_folder(config) / f"iteration-{iteration}" / "ace"
    potentials = [str(p) for p in fit.write(folder)]
    labelled = {x.id for x in dataset.ok_labels()}
    seeds = [s for s in candidates if s.id in labelled][: config.explore.n_seeds] or pool.structures[-config.explore.n_seeds:]
    md = MDExploreMaker(calculator=potentials[0], settings=config.explore.md).make(seeds)
    jobs = [md]
    pools = [md.output.snapshots]
    if config.explore.cago is not None:
        cago_seeds = first_records(md.output.snapshots, config.explore.max_cago_seeds)
        cago_seeds.name = "cago seeds"
        cago = CagoMaker(settings=config.explore.cago).make(cago_seeds.output, potentials[: config.explore.n_cago_members])
        jobs += [cago_seeds, cago]
        pools.append(cago.output.structures)
    gather = gather_candidates(pools, config.select.max_candidates * 4)
    gather.name = "gather candidates"
    select = select_job(config, potentials, gather.output)
    select.name = "select"
    state = loop_state_job(config, iteration, uncertainty, routing, dataset, pool, fit,
                           select.output, dft_so_far)
    state.name = STATE_JOB
    for light in (gather, select, state) + ((cago_seeds,) if config.explore.cago is not None else ()):
        set_category(light, "cpu")
    flow = Flow([*jobs, gather, select, state], output=state.output, name=f"explore and select {iteration}")
    return Response(replace=_tagged(flow, config, iteration))


@job
def gather_candidates(pools: list[list[StructureRecord]], limit: int) -> list[StructureRecord]:
    """Candidates from every explorer, without duplicate ids, at most ``limit`` (evenly spread)."""
    seen, out = set(), []
    for pool in pools:
        for record in pool or []:
            if record.id not in seen:
                seen.add(record.id)
                out.append(record)
    if len(out) > limit:
        out = [out[int(k)] for k in np.linspace(0, len(out) - 1, limit)]
    return out


@job
def select_job(config: LoopConfig, potentials: list[str], candidates: list[StructureRecord]) -> Response:
    """QBC with the ACE committee, then DIRECT on ACE descriptors (MP-ALOE's recipe)."""
    if not candidates:
        return Response(output=[])
    selection = SelectionMaker(
        qbc_maker=QBCMaker(committee=potentials, config=config.select.qbc_config) if config.select.qbc else None,
        descriptor_maker=DescriptorMaker(descriptor=f"ace:{potentials[0]}"),
        direct_maker=DirectMaker(n_clusters=config.select.n_clusters, threshold=config.select.birch_threshold,
                                 k=config.select.k),
    ).make(candidates)
    pick = pick_selected(candidates, selection.output, config.select.max_candidates)
    pick.name = "selected candidates"
    set_category(pick, "cpu")
    pick.config.on_missing_references = OnMissing.NONE  # nothing selectable: the loop stops with that reason
    return Response(replace=Flow([selection, pick], output=pick.output))


@job
def pick_selected(candidates: list[StructureRecord], selection, limit: int) -> list[StructureRecord]:
    """The selected candidates, evenly thinned to ``limit``; none if selection produced nothing."""
    indices = list(selection.selected) if selection is not None else []
    if len(indices) > limit:
        indices = [indices[int(k)] for k in np.linspace(0, len(indices) - 1, limit)]
    return [candidates[i] for i in indices]


@job
def loop_state_job(config: LoopConfig, iteration: int, uncertainty: UncertaintyDocument,
                   routing: RoutingDocument, dataset: DistilledDataset, pool: TrainingPool, fit: AceFitDocument,
                   next_candidates: list[StructureRecord] | None, dft_so_far: int) -> Response:
    """Record the iteration and decide: stop (a criterion is met) or add the next iteration."""
    next_candidates = next_candidates or []
    counts = iteration_counts(uncertainty, routing, dataset, dft_so_far)
    metrics = fit.metrics
    reason = _stop_reason(config, iteration, counts["dft_total"], counts["n_high_u"] / max(counts["n_candidates"], 1), metrics,
                          next_candidates)
    state = IterationSummary(
        loop=config.name, iteration=iteration, **counts, n_training=len(pool.labels),
        train_energy_rmse_per_atom=metrics.train_energy_rmse_per_atom, train_force_rmse=metrics.train_force_rmse,
        test_energy_rmse_per_atom=metrics.test_energy_rmse_per_atom, test_force_rmse=metrics.test_force_rmse,
        spearman_dft=dft_force_errors(uncertainty, dataset, iteration).spearman(), n_next_candidates=len(next_candidates),
        converged=reason is not None, reason=reason or "continuing",
        continuation=None if reason is not None else {"config": config, "next_candidates": next_candidates},
    )
    if reason is not None:
        return Response(output=state)
    following = iteration_job(config, iteration + 1, next_candidates, pool, counts["dft_total"])
    following.name = f"iteration {iteration + 1}"
    set_category(following, "cpu")
    return Response(output=state, addition=_tagged(Flow([following], output=following.output), config, iteration + 1))


def _stop_reason(config: LoopConfig, iteration: int, dft_total: int, high_u_fraction: float, metrics,
                 next_candidates) -> str | None:
    c = config.convergence
    energy = metrics.test_energy_rmse_per_atom if metrics.test_energy_rmse_per_atom is not None else metrics.train_energy_rmse_per_atom
    force = metrics.test_force_rmse if metrics.test_force_rmse is not None else metrics.train_force_rmse
    if iteration + 1 >= c.max_iterations:
        return f"reached max_iterations = {c.max_iterations}"
    if c.dft_budget_total is not None and dft_total >= c.dft_budget_total:
        return f"DFT budget of {c.dft_budget_total} used ({dft_total})"
    if c.target_energy_rmse is not None and c.target_force_rmse is not None and energy is not None and force is not None \
            and energy <= c.target_energy_rmse and force <= c.target_force_rmse:
        return f"fit RMSEs {energy:.3g} eV/atom and {force:.3g} eV/Å reached the targets"
    if c.max_high_u_fraction is not None and high_u_fraction <= c.max_high_u_fraction:
        return f"high-U fraction {high_u_fraction:.2f} ≤ {c.max_high_u_fraction}"
    if not next_candidates:
        return "no new candidates were selected"
    return None


def iteration_counts(uncertainty: UncertaintyDocument, routing: RoutingDocument | None,
                     dataset: DistilledDataset | None, dft_so_far: int) -> dict[str, int]:
    """Candidates, high-U, and labels by outcome of one iteration (as far as it got)."""
    counts = {"n_candidates": len(uncertainty.structures), "dft_total": dft_so_far}
    if routing is not None:
        counts["n_high_u"] = routing.counts.get("dft", 0) + routing.counts.get("deferred", 0)
    if dataset is not None:
        dft_labels = [x for x in dataset.labels if x.kind == "dft" and x.status != "rejected"]  # DFT that ran
        summary = dataset.summary
        counts.update(n_dft_ok=summary.n_dft, n_dft_failed=sum(x.status == "failed" for x in dft_labels),
                      n_rejected=summary.n_rejected, n_teacher=summary.n_teacher, n_deferred=summary.n_deferred,
                      dft_total=dft_so_far + len(dft_labels))
    return counts


def dft_force_errors(uncertainty: UncertaintyDocument, dataset: DistilledDataset, iteration: int) -> ReferenceErrors:
    """U against the ensemble-mean force error on the iteration's DFT labels (paper 001, eq. 5)."""
    rows = {s.id: s for s in uncertainty.structures}
    pairs = [(rows[x.id].U, x.forces, rows[x.id].mean_forces) for x in dataset.ok_labels()
             if x.kind == "dft" and x.id in rows and rows[x.id].U is not None and rows[x.id].mean_forces is not None]
    return ReferenceErrors.from_forces(*zip(*pairs), iteration=iteration) if pairs else ReferenceErrors.concatenate([])


@job
def first_records(records: list | None, n: int) -> list:
    return list(records or [])[:n]


def _tagged(flow: Flow, config: LoopConfig, iteration: int) -> Flow:
    flow.update_metadata({LOOP_KEY: config.name}, dynamic=True)  # every job the loop ever creates
    flow.update_metadata({"iteration": iteration}, dynamic=False)  # later iterations carry their own
    return flow


def loop_folder(config: LoopConfig) -> Path:
    return Path(config.workdir or get_settings().home.expanduser() / "loops" / config.name)


@dataclass
class LoopMaker(Maker):
    """The whole loop from a config: the first iteration; later ones are added as it runs."""

    name: str = "uq-flows loop"

    def make(self, config: LoopConfig, candidates: list[StructureRecord]) -> Flow:
        if not candidates:
            raise ValueError("the loop needs initial candidates")
        first = iteration_job(config, 0, candidates, None, 0)
        first.name = "iteration 0"
        set_category(first, "cpu")
        return _tagged(Flow([first], output=first.output, name=f"{self.name} {config.name}"), config, 0)


DFT_LABEL_JOBS = r"^(cp2k label|reference label|vasp label) "


def rebuild_loop(lp, loop: str) -> dict | None:
    """Continue a loop whose flow cannot go on (a job failed for good), from its newest state.

    Called by ``uq-flows resume`` after the reruns. Nothing happens while any job of the loop
    can still run, or when the loop converged. Otherwise the broken fireworks are defused and
    the next iteration is submitted again: from the newest loop-state document, or for
    iteration 0 from the first job's own inputs. Every ok DFT label the loop already made is
    reused, so no structure goes to DFT twice.
    """
    from monty.json import MontyDecoder

    from uq_flows.manager.status import loop_status
    from uq_flows.manager.stores import open_jobstore
    from uq_flows.manager.submit import loop_fw_ids, submit_flow

    entries = loop_status(lp, loop)["loops"]
    first = lp.fireworks.find_one({"fw_id": {"$in": loop_fw_ids(lp, loop)}, "name": "iteration 0"})
    if not entries or first is None:  # not a uq-flows loop (or nothing submitted): not ours to rebuild
        return None
    states = entries[0]["states"]
    # WAITING jobs below a failed one never become ready: only READY/RUNNING/RESERVED can go on
    if any(states.get(s) for s in ("READY", "RUNNING", "RESERVED")) or not states.get("FIZZLED"):
        return None
    decode = MontyDecoder().process_decoded
    store = open_jobstore()
    with store:
        summaries = [decode(d["output"]) for d in store.query({"name": STATE_JOB, f"metadata.{LOOP_KEY}": loop},
                                                             properties=["output"])]
        known = [decode(d["output"]) for d in store.query(
            {"name": {"$regex": DFT_LABEL_JOBS}, f"metadata.{LOOP_KEY}": loop}, properties=["output"], load=True)]
        pools = {d["metadata"].get("iteration"): d for d in store.query(
            {"name": "training pool", f"metadata.{LOOP_KEY}": loop}, properties=["output", "metadata"], load=True)}
    newest = max(summaries, key=lambda state: state.iteration, default=None)
    if newest is not None and newest.converged:
        return None
    if newest is None:
        config, iteration, candidates, pool, dft_so_far = decode(first["spec"]["_tasks"][0]["job"]["function_args"])[:5]
    else:
        config, candidates = newest.continuation["config"], newest.continuation["next_candidates"]
        iteration, dft_so_far = newest.iteration + 1, newest.dft_total
        pool = decode(pools[newest.iteration]["output"])
    known = [label for label in known if isinstance(label, Label) and label.ok]
    broken = [fw["fw_id"] for fw in lp.fireworks.find({"fw_id": {"$in": loop_fw_ids(lp, loop)}, "state": "FIZZLED"},
                                                      {"fw_id": 1})]
    stuck = [fw["fw_id"] for fw in lp.fireworks.find({"fw_id": {"$in": loop_fw_ids(lp, loop)}, "state": "WAITING"},
                                                     {"fw_id": 1})]
    for fw_id in broken + stuck:
        lp.defuse_fw(fw_id)
    again = iteration_job(config, iteration, candidates, pool, dft_so_far, known)
    again.name = f"iteration {iteration}"
    set_category(again, "cpu")
    submission = submit_flow(_tagged(Flow([again], output=again.output), config, iteration), lp, loop=loop)
    return {"iteration": iteration, "defused": broken + stuck, "reused_dft_labels": len(known),
            "workflow_id": submission.workflow_id}
