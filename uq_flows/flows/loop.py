"""The active-learning loop (DESIGN.md; papers 001, 003, 004).

One iteration: candidates → score (uMLIP ensemble, U) → threshold → label (DFT above U_c,
teacher below) → training pool → ACE ensemble fit → MD with the fit → CAGO → QBC + DIRECT
→ the next candidates. Each iteration is a job that replaces itself with that flow once its
inputs exist (jobflow ``Response(replace=...)``); a loop-state job at the end of every
iteration records progress and names the next iteration while no convergence criterion is
met (each iteration is a workflow of its own: ``uq_flows.manager.advance`` submits the next
one). Every job carries ``metadata = {uq_flows_loop, iteration}`` and the jobs status,
results and resume look for also their stage (``uq_flows_stage``, see ``uq_flows.stages``).

The loop's state lives in the campaign database (``uq_flows.campaign``), not in job inputs:
candidates are stored when they are made and jobs get a ``StructureSet`` (a reference); each
iteration's record job writes scores, routes and labels there; the fit's training set is
drawn from there. Jobs created at run time get references to earlier outputs, never the
values, so no job input grows with the campaign.

ACE potential files are written into the loop's work folder, which workers must share (the
usual HPC setup); their contents also stay in the JobStore's data store.
"""

from __future__ import annotations

from pathlib import Path

from ase.data import atomic_numbers
from jobflow import CURRENT_JOB, Flow, OnMissing, Response, job
from monty.json import MontyDecoder
from pydantic import BaseModel, Field

from uq_flows.ace.data import labelled_structures
from uq_flows.ace.jobs import AceFitDocument, AceFitMaker, fixed_test_errors
from uq_flows.cago.jobs import CagoMaker, CalibrationDocument, CalibrationMaker
from uq_flows.campaign import (
    LABELS,
    POOL_ITERATION,
    POOL_STAGE,
    STRUCTURES,
    Campaign,
    LabelledSet,
    StructureSet,
    records_of,
)
from uq_flows.ensemble.jobs import (
    CombineUncertaintyMaker,
    EnsembleScoreMaker,
    UncertaintyDocument,
)
from uq_flows.explore.jobs import MDExploreMaker
from uq_flows.flows.campaign_pool import load_pool, store_iteration
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
from uq_flows.labeling.labels import DFT, Label
from uq_flows.labeling.pool import AUDIT_KEY, TrainingPool, TrainingSplit
from uq_flows.labeling.stored import stored_labels
from uq_flows.loop_state import IterationCounts, spread_evenly, unique_by_id
from uq_flows.stages import (
    DFT_LABEL,
    ITERATION,
    LOOP_KEY,
    LOOP_STATE,
    STAGE_KEY,
    RECORD,
    set_category,
    tag_stage,
)
from uq_flows.records import StructureRecord
from uq_flows.selection.jobs import (
    DescriptorMaker,
    DirectMaker,
    ElementalReferenceDocument,
    ElementalReferenceMaker,
    QBCMaker,
    SelectionMaker,
)
from uq_flows.selection.references import shifted_references
from uq_flows.screening import HARD_MIN_DISTANCE
from uq_flows.settings import get_settings
from uq_flows.uncertainty import ReferenceErrors



class IterationSummary(IterationCounts):
    """The loop-state document of one iteration (what ``uq-flows status`` shows): counts, fit, checks, decision."""

    loop: str
    iteration: int
    n_training: int
    train_energy_rmse_per_atom: float | None = None
    train_force_rmse: float | None = None
    test_energy_rmse_per_atom: float | None = None
    test_force_rmse: float | None = None
    spearman_dft: float | None = Field(
        None, description="ρ(U, ensemble-mean force error) on the DFT-routed labels (U ≥ U_c: range-restricted).")
    spearman_audit: float | None = Field(
        None, description="ρ(U, ensemble-mean force error) on the random audit sample (unbiased).")
    n_audit: int = Field(0, description="Audit structures with DFT labels (the held-out test set of this fit).")
    uc: float | None = Field(None, description="The U_c used (eV/Å), and how it was chosen in uc_source.")
    uc_source: str | None = None
    alignment: dict | None = Field(None, description="The loop's energy alignment after this iteration: shifts "
                                                     "(eV/atom), residual, pairs by sample, warning.")
    n_waiting_alignment: int = Field(0, description="Teacher labels held out of the fit until they can be aligned.")
    calibration: dict | None = Field(None, description="CAGO's σ_cal = a·σ̂^b: a, b, z-score std before/after, atoms.")
    cago: str | None = Field(None, description="calibrated, uncalibrated (config), or why CAGO did not run.")
    warnings: list[str] = Field(default_factory=list)
    fixed_test: dict | None = Field(None, description="The fit on the config's fixed test set: n_structures, "
                                                       "energy_rmse_per_atom (eV/atom), force_rmse (eV/Å).")
    pool_left: int | None = Field(None, description="A pool campaign's structures not yet taken.")
    dft_atoms: int = Field(0, description="Atoms of the structures sent to DFT (or its replay) in this iteration.")
    dft_atoms_total: int = Field(0, description="The same over the loop so far: the DFT cost a learning curve is "
                                                "plotted against.")
    n_next_candidates: int
    converged: bool
    reason: str
    continuation: dict | None = Field(None, description="What rebuild_loop needs: config, next candidates (a "
                                                        "StructureSet).")


class IterationRecord(IterationCounts):
    """What an iteration's record job wrote, in brief: counts and ρ(U, error) on both samples."""

    spearman_dft: float | None = None
    spearman_audit: float | None = None
    n_audit: int = 0
    n_audit_atoms: int = Field(0, description="Atoms of the ok DFT audit labels: the fit's held-out test set.")
    uc: float | None = None
    uc_source: str | None = None
    labelled_ids: list[str] = Field(default_factory=list, description="Up to n_seeds ok-labelled ids (MD seeds).")


class DrawnTrainingSet(BaseModel):
    """One fit's training and test sets (stored in the campaign database) and the pool's facts."""

    train: LabelledSet = Field(description="The aligned ok labels of every iteration so far, but this audit.")
    test: LabelledSet = Field(description="This iteration's ok DFT audit labels, held out.")
    facts: dict = Field(default_factory=dict, description="n_training, waiting teacher labels, alignment summary.")
    qbc_references: dict[str, float] | None = None
    prefilter_note: str | None = None


def dft_maker(config: LoopConfig):
    if config.dft.labeller == "cp2k":
        return Cp2kLabelMaker(settings=config.dft.cp2k)
    if config.dft.labeller == "vasp":
        return VaspLabelMaker(static_maker=VaspStaticMaker(incar_overrides=config.dft.incar_overrides))
    if config.dft.labeller == "dataset":
        return CalculatorLabelMaker(name="dataset label", calculator=config.dft.reference_model())
    return CalculatorLabelMaker(calculator=config.dft.calculator)


def teacher_maker(config: LoopConfig) -> TeacherLabelMaker:
    return TeacherLabelMaker(energy_from=config.teacher.energy_from, forces_from=config.teacher.forces_from)


def teacher_reuses_scores(config: LoopConfig) -> bool:
    """A teacher that is an ensemble member takes its labels from the scoring predictions when
    scoring screened at least as strictly as the teacher does (so it saw no structure the teacher would refuse)."""
    return config.screens.candidates.min_distance >= HARD_MIN_DISTANCE


def threshold_maker(config: LoopConfig, iteration: int, n_candidates: int, budget: int | None) -> ThresholdMaker:
    """U_c fixed or from the audit (``target_force_rmse``); the audit sample changes every iteration."""
    audit_size = config.audit.size_for(n_candidates) if config.audits else 0
    seed = config.audit.seed + iteration
    if config.target_force_rmse is not None:
        return ThresholdMaker(uc=config.uc, dft_budget=budget, target_force_rmse=config.target_force_rmse,
                              audit_size=max(audit_size, 1), seed=seed, audit_dft_maker=dft_maker(config),
                              audit_teacher_maker=teacher_maker(config))
    return ThresholdMaker(uc=config.uc, dft_budget=budget, audit_size=audit_size, audit_with_fixed_uc=audit_size > 0,
                          seed=seed)


@job
def record_iteration(config: LoopConfig, iteration: int, candidates: StructureSet, uncertainty: UncertaintyDocument,
                     routing: RoutingDocument, dataset: DistilledDataset, dft_so_far: int,
                     teacher_references: ElementalReferenceDocument | None = None) -> IterationRecord:
    """Write the iteration's scores, routes and labels into the campaign database; return the counts."""
    references = teacher_references.elemental_references if teacher_references is not None else None
    with Campaign.open() as campaign:
        store_iteration(campaign, config.name, iteration, uncertainty, routing, dataset, references,
                        config.aligns_energies, config.align_max_residual)
    counts = IterationCounts.of(len(uncertainty.structures), routing.routes, dataset.labels,
                                dataset.summary.n_deferred, dft_so_far)
    audit = force_errors(uncertainty, [x for x in dataset.labels if x.provenance.get(AUDIT_KEY)], iteration)
    labelled = [x.id for x in dataset.ok_labels()][: config.explore.n_seeds]
    atoms = {s.id: s.n_atoms for s in uncertainty.structures}
    audit_atoms = sum(atoms[x.id] for x in dataset.ok_labels() if x.kind == DFT and x.provenance.get(AUDIT_KEY))
    return IterationRecord(**counts.model_dump(), spearman_dft=dft_force_errors(uncertainty, dataset, iteration).spearman(),
                           spearman_audit=audit.spearman(), n_audit=len(audit), n_audit_atoms=audit_atoms, uc=routing.uc,
                           uc_source=routing.uc_source, labelled_ids=labelled)


@job
def draw_training_set(config: LoopConfig, iteration: int, record: IterationRecord) -> DrawnTrainingSet:
    """The fit's training set (aligned) and test set (this iteration's audit), drawn from the campaign
    database and stored there as two ``LabelledSet``s."""
    with Campaign.open() as campaign:
        pool = load_pool(campaign, config.name, iteration)
        split = pool.training_split(held_out_iteration=iteration)
        train, test = (campaign.add_labelled_set(config.name, iteration, name,
                                                 labelled_structures(records, labels) if labels else [])
                       for name, records, labels in (("train", split.train_structures, split.train_labels),
                                                     ("test", split.test_structures, split.test_labels)))
    references, note = qbc_references(config, pool)
    facts = {**pool_summary(pool, split),  # MD seeds when none of this iteration's candidates got a label
             "fallback_seed_ids": [s.id for s in split.train_structures[-config.explore.n_seeds:]]}
    return DrawnTrainingSet(train=train, test=test, facts=facts, qbc_references=references, prefilter_note=note)


@job
def iteration_job(config: LoopConfig, iteration: int, candidates: StructureSet, dft_so_far: int,
                  reuse_dft: bool = False) -> Response:
    """Replace itself with score → threshold → label → record → draw → fit → after-fit.

    ``reuse_dft``: DFT labels an earlier, broken attempt at this iteration produced are used
    instead of running DFT again (see ``rebuild_loop``). Given a pool campaign's pool, it first
    takes the pool's first batch (``first_pool_batch``).
    """
    if candidates.iteration == POOL_ITERATION:
        batch = first_pool_batch(config, candidates, dft_so_far, reuse_dft)
        batch.name = "first pool batch"
        return Response(replace=set_category(batch, "cpu"))
    budget = config.convergence.dft_budget(dft_so_far)
    score = EnsembleScoreMaker(members=config.members, chunk_size=config.chunk_size,
                               min_distance=config.screens.candidates.min_distance,
                               combine_maker=CombineUncertaintyMaker(weights=config.weights)).make(candidates)
    threshold = threshold_maker(config, iteration, candidates.n, budget).make(candidates, score.output)
    stages = [score, threshold]
    routing = threshold.output
    if reuse_dft:
        reuse = reuse_labels(threshold.output, config.name)
        reuse.name = "reuse labels"
        reuse.config.expose_store = True  # it reads the loop's DFT labels from the JobStore
        stages.append(set_category(reuse, "cpu"))
        routing = reuse.output
    label = LabelStageMaker(
        dft_maker=dft_maker(config),
        teacher_maker=teacher_maker(config),
        assemble_maker=AssembleMaker(min_success_fraction=config.dft.min_success_fraction, iteration=iteration,
                                     loop=config.name, align_energies=False, max_residual=config.align_max_residual),
        screens=config.screens,
        dft_batch_size=config.dft.batch_size,
    ).make(candidates, routing, config.members if teacher_reuses_scores(config) else None)
    references = None
    if config.select.formation_energy_prefilter and "elemental_references" not in config.select.qbc_config \
            and iteration == 0:
        references = ElementalReferenceMaker(teacher=config.teacher.energy_from).make(config.elements)
        stages.append(references)
    record = record_iteration(config, iteration, candidates, score.output, routing, label.output, dft_so_far,
                              references.output if references else None)
    record.name = "record iteration"
    tag_stage(record, RECORD)
    drawn = draw_training_set(config, iteration, record.output)
    drawn.name = "training set"
    fit = AceFitMaker(options=config.fit).make(drawn.output.train, test_structures=drawn.output.test)
    after = after_fit_job(config, iteration, candidates, record.output, fit.output, drawn.output.facts,
                          drawn.output.qbc_references, drawn.output.prefilter_note)
    after.name = f"after fit {iteration}"
    for light in (record, drawn, after):
        set_category(light, "cpu")
    flow = Flow([*stages, label, record, drawn, fit, after], output=after.output, name=f"iteration {iteration}")
    return Response(replace=_tagged(flow, config, iteration))


@job
def reuse_labels(routing: RoutingDocument, loop: str) -> RoutingDocument:
    """DFT labels the loop already made (read from the JobStore) count as done: none is computed twice."""
    known = CURRENT_JOB.store.query({f"metadata.{STAGE_KEY}": DFT_LABEL, f"metadata.{LOOP_KEY}": loop},
                                    properties=["output"], load=True)
    dft_ids = {r.id for r in routing.routes if r.route == "dft"}
    have = {x.id for x in routing.audit_labels}
    reused = {}
    for doc in known:
        output = MontyDecoder().process_decoded(doc.get("output"))
        for label in output if isinstance(output, list) else [output]:
            if isinstance(label, Label) and label.ok and label.id in dft_ids and label.id not in have:
                reused[label.id] = label
    return routing.model_copy(update={"audit_labels": [*routing.audit_labels, *reused.values()]})


@job
def after_fit_job(config: LoopConfig, iteration: int, candidates: StructureSet, record: IterationRecord,
                  fit: AceFitDocument, pool_facts: dict, qbc_references: dict[str, float] | None,
                  prefilter_note: str | None) -> Response:
    """Write the potentials where workers find them, then MD → calibrate → CAGO → QBC + DIRECT → loop state.

    CAGO runs with a calibration σ_cal = a·σ̂^b (paper 004, eq. 4; a and b by the NLL of eq. 5)
    fitted on the held-out audit labels with the whole ACE committee (calibrate with many
    members, run with 3–4, as the paper does); without
    enough held-out atoms it waits for a later iteration, and runs uncalibrated only when the
    config says so. The held-out audit set is read from the campaign database by the
    calibration's own job, never passed by value.
    """
    folder = loop_folder(config) / f"iteration-{iteration}" / "ace"
    potentials = [str(p) for p in fit.write(folder)]
    jobs, light, pools = [], [], []
    calibration, cago_note, fixed_test, left = None, None, None, None
    if config.test:
        fixed = fixed_test_errors(potentials, [str(p) for p in config.test])
        fixed.name = "fixed test set"
        jobs.append(set_category(fixed, get_settings().fit_category))
        fixed_test = fixed.output
    explores = config.pool is None or config.pool.explore
    if config.pool is not None:
        left = pool_remaining(config, iteration)
        left.name = "pool remaining"
        jobs.append(left)
        light.append(left)
    if explores:
        seeds = records_of(candidates, record.labelled_ids)
        if not seeds:
            with Campaign.open() as campaign:
                seeds = list(campaign.structures_by_id(config.name, pool_facts.get("fallback_seed_ids", [])).values())
        md = MDExploreMaker(calculator=potentials[0], settings=config.explore.md).make(seeds)
        jobs.append(md)
        pools.append(md.output.snapshots)
    if explores and config.explore.cago is not None:
        held_out_atoms = record.n_audit_atoms
        if not config.explore.calibrate:
            cago_note = "uncalibrated (explore.calibrate: false): expect true errors ≈ 2δ (paper 004)"
        elif held_out_atoms >= config.explore.min_calibration_atoms:
            held_out = held_out_set(config.name, iteration)
            held_out.name = "held-out audit set"
            calibrate = CalibrationMaker().make(held_out.output.test_structures, held_out.output.test_labels,
                                                potentials)
            jobs += [held_out, calibrate]
            light.append(held_out)
            calibration, cago_note = calibrate.output, "calibrated"
        else:
            cago_note = (f"skipped: {held_out_atoms} held-out audit atoms, {config.explore.min_calibration_atoms} "
                         "needed to calibrate (raise audit.size, or set explore.calibrate: false)")
        if calibration is not None or not config.explore.calibrate:
            cago_seeds = first_records(md.output.snapshots, config.explore.max_cago_seeds)
            cago_seeds.name = "cago seeds"
            cago_screen = config.screens.cago
            cago = CagoMaker(settings=config.explore.cago, min_distance=cago_screen.min_distance).make(
                cago_seeds.output, potentials[: config.explore.n_cago_members], calibration)
            jobs += [cago_seeds, cago]
            light.append(cago_seeds)
            pools.append(cago.output.structures)
    if config.pool is not None and not pools:  # the pool's untaken structures, all of them
        explored = left
    else:  # what MD and CAGO made (and in a pool campaign with explore, the untaken pool too)
        explored = gather_candidates(pools + ([left.output] if left else []), config.select.max_candidates * 4,
                                     config.name, iteration, (config.chunk_size, config.max_chunks))
        explored.name = "gather candidates"
        jobs.append(explored)
        light.append(explored)
    select = select_job(config, potentials, explored.output, qbc_references)
    select.name = "select"
    state = loop_state_job(config, iteration, record, fit.metrics, select.output, pool_facts, prefilter_note,
                           calibration, cago_note, fixed_test, left.output if left else None)
    state.name = "loop state"
    tag_stage(state, LOOP_STATE)
    for job_ in (select, state, *light):
        set_category(job_, "cpu")
    flow = Flow([*jobs, select, state], output=state.output, name=f"explore and select {iteration}")
    return Response(replace=_tagged(flow, config, iteration))


@job
def held_out_set(loop: str, iteration: int) -> TrainingSplit:
    """This iteration's ok DFT audit labels and their structures (the fit's test set), from the campaign database."""
    with Campaign.open() as campaign:
        labels = stored_labels(campaign, {"loop": loop, "iteration": iteration, "kind": DFT, "status": "ok",
                                          "audit": True})
        structures = campaign.structures_by_id(loop, [x.id for x in labels])
    return TrainingSplit(train_structures=[], train_labels=[], test_structures=[structures[x.id] for x in labels],
                         test_labels=labels)


def qbc_references(config: LoopConfig, pool: TrainingPool) -> tuple[dict[str, float] | None, str | None]:
    """Elemental references on the ACE committee's energy scale for QBC's formation-energy pre-filter, or why none.

    The committee is fitted on DFT-scale energies, so the teacher's references get the loop's
    per-element shifts μ_el; while that alignment cannot place an element the pre-filter is off
    for the iteration, and the loop-state document says so.
    """
    if not config.select.formation_energy_prefilter or pool.teacher_references is None:
        return None, None
    if not pool.align_energies:
        return dict(pool.teacher_references), None
    alignment = pool.alignment
    problems = [alignment.problem([atomic_numbers[el]]) for el in pool.teacher_references] if alignment else []
    if alignment is None or any(problems):
        why = "no energy alignment yet" if alignment is None else next(p for p in problems if p)
        return None, f"QBC's formation-energy pre-filter is off this iteration: {why}"
    return shifted_references(pool.teacher_references, alignment.shifts), None


def pool_summary(pool: TrainingPool, split: TrainingSplit) -> dict:
    """The small part of the pool the loop-state document records."""
    alignment = pool.alignment
    return {
        "n_training": len(split.train_labels),
        "n_waiting_alignment": split.n_waiting,
        "waiting_reason": split.waiting_reason,
        "alignment": None if alignment is None else {
            "shifts": alignment.shifts, "residual_rmse_per_atom": alignment.residual_rmse_per_atom,
            "n_structures": alignment.n_structures, "sample": alignment.sample, "usable": alignment.usable,
            "warning": alignment.warning,
        },
    }


@job
def gather_candidates(pools: list[list[StructureRecord]], limit: int, loop: str, iteration: int,
                      chunking: tuple[int, int | None] = (500, None)) -> StructureSet:
    """Candidates from every explorer, without duplicate ids, at most ``limit`` (evenly spread),
    stored in the campaign database (rows of ``stage: explored`` in this iteration, ``chunking``:
    chunk size and maximum number of chunks); their reference."""
    explored = spread_evenly(unique_by_id(records_of(p) if isinstance(p, StructureSet) else p for p in pools), limit)
    with Campaign.open() as campaign:
        return campaign.add_structures(loop, iteration, explored, stage="explored", chunk_size=chunking[0],
                                       max_chunks=chunking[1])


@job
def select_job(config: LoopConfig, potentials: list[str], candidates: StructureSet,
               references: dict[str, float] | None = None) -> Response:
    """QBC with the ACE committee, then DIRECT on ACE descriptors (MP-ALOE's recipe).

    ``references``: elemental energies (eV/atom) on the committee's scale for QBC's
    formation-energy pre-filter (paper 003); the config's own references win.
    """
    if candidates.n == 0:
        return Response(output=[])
    qbc_config = dict(config.select.qbc_config)
    if references is not None:
        qbc_config.setdefault("elemental_references", references)
    selection = SelectionMaker(
        # members named ace-1, ace-2, ...: job names and QBC documents carry no paths
        qbc_maker=QBCMaker(committee=[f"ace-{k + 1}={path}" for k, path in enumerate(potentials)],
                           config=qbc_config) if config.select.qbc else None,
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
def pick_selected(candidates: StructureSet, selection, limit: int) -> list[StructureRecord]:
    """The selected candidates, evenly thinned to ``limit``; none if selection produced nothing."""
    indices = list(selection.selected) if selection is not None else []
    if not indices:
        return []
    records = records_of(candidates)
    return [records[i] for i in spread_evenly(indices, limit)]


@job
def loop_state_job(config: LoopConfig, iteration: int, record: IterationRecord, metrics,
                   next_candidates: list[StructureRecord] | None, pool_info: dict | None = None,
                   prefilter_note: str | None = None, calibration: CalibrationDocument | None = None,
                   cago_note: str | None = None, fixed_test: dict | None = None,
                   pool_left: StructureSet | None = None) -> Response:
    """Record the iteration and decide: stop (a criterion is met) or store the next candidates.

    The loop-state document (``campaign_loops``, kind ``state``) then names the next iteration
    (``next``, ``next_status: pending``); the iteration's advance firework submits it as a new
    workflow (``uq_flows.manager.advance``), so no workflow grows with the campaign.
    """
    next_candidates = next_candidates or []
    pool_info = pool_info or {}
    counts = IterationCounts(**record.model_dump(include=set(IterationCounts.model_fields)))
    energy = metrics.test_energy_rmse_per_atom if metrics.test_energy_rmse_per_atom is not None \
        else metrics.train_energy_rmse_per_atom
    force = metrics.test_force_rmse if metrics.test_force_rmse is not None else metrics.train_force_rmse
    left = None if pool_left is None else pool_left.n
    reason = config.convergence.stop_reason(iteration, counts, energy, force, len(next_candidates), left)
    warnings = [w for w in ((pool_info.get("alignment") or {}).get("warning"),) if w]
    if pool_info.get("n_waiting_alignment"):
        why = pool_info["waiting_reason"]
        warnings.append(f"{pool_info['n_waiting_alignment']} teacher labels wait for an energy alignment"
                        + ("" if warnings and why == warnings[0] else f": {why}"))
    if cago_note and not cago_note.startswith("calibrated"):
        warnings.append(f"CAGO {cago_note}")
    if prefilter_note:
        warnings.append(prefilter_note)
    with Campaign.open() as campaign:
        dft_rows = campaign[LABELS].find({"loop": config.name, "kind": DFT, "iteration": {"$lte": iteration}},
                                         {"n_atoms": 1, "iteration": 1})
        atoms_by_iteration = [(row["iteration"], row.get("n_atoms") or 0) for row in dft_rows]
    following = None
    if reason is None:
        with Campaign.open() as campaign:
            following = campaign.add_structures(config.name, iteration + 1, next_candidates,
                                                chunk_size=config.chunk_size, max_chunks=config.max_chunks)
    state = IterationSummary(
        loop=config.name, iteration=iteration, **counts.model_dump(), n_training=pool_info.get("n_training", 0),
        train_energy_rmse_per_atom=metrics.train_energy_rmse_per_atom, train_force_rmse=metrics.train_force_rmse,
        test_energy_rmse_per_atom=metrics.test_energy_rmse_per_atom, test_force_rmse=metrics.test_force_rmse,
        spearman_dft=record.spearman_dft, spearman_audit=record.spearman_audit, n_audit=record.n_audit,
        uc=record.uc, uc_source=record.uc_source,
        alignment=pool_info.get("alignment"), n_waiting_alignment=pool_info.get("n_waiting_alignment", 0),
        calibration=calibration_summary(calibration), cago=cago_note, warnings=warnings,
        fixed_test=fixed_test, pool_left=left, n_next_candidates=len(next_candidates),
        dft_atoms=sum(n for k, n in atoms_by_iteration if k == iteration),
        dft_atoms_total=sum(n for _, n in atoms_by_iteration), converged=reason is not None, reason=reason or "continuing",
        continuation=None if following is None else {"config": config, "next_candidates": following},
    )
    document = state.model_dump(mode="json", exclude={"continuation"})
    if following is not None:
        document.update(next={"iteration": iteration + 1, "candidates": following.model_dump(),
                              "dft_so_far": counts.dft_total, "config": config.model_dump(mode="json")},
                        next_status="pending")
    with Campaign.open() as campaign:
        campaign.put_loop_document(config.name, iteration, "state", document)
    return Response(output=state)


def calibration_summary(document: CalibrationDocument | None) -> dict | None:
    """a, b and the z-score spread before and after calibrating (1 when calibrated; paper 002)."""
    if document is None:
        return None
    fitted = document.calibration.fitted
    return {"a": document.calibration.a, "b": document.calibration.b, "n_members": document.calibration.n_members,
            "n_atoms": fitted.n_atoms if fitted else None, "z_std": fitted.z_std if fitted else None,
            "z_std_uncalibrated": document.uncalibrated_z_std}


def iteration_counts(uncertainty: UncertaintyDocument, routing: RoutingDocument | None,
                     dataset: DistilledDataset | None, dft_so_far: int) -> dict[str, int]:
    """Candidates, high-U, and labels by outcome of one iteration (as far as it got)."""
    counts = IterationCounts.of(len(uncertainty.structures), routing.routes if routing else None,
                                dataset.labels if dataset else None, dataset.summary.n_deferred if dataset else 0,
                                dft_so_far)
    return counts.model_dump(exclude_unset=dataset is None)


def dft_force_errors(uncertainty: UncertaintyDocument, dataset: DistilledDataset, iteration: int) -> ReferenceErrors:
    """U against the ensemble-mean force error on the iteration's DFT labels (paper 001, eq. 5)."""
    return force_errors(uncertainty, dataset.ok_labels(), iteration)


def force_errors(uncertainty: UncertaintyDocument, labels: list[Label], iteration: int) -> ReferenceErrors:
    """U against the ensemble-mean force error (paper 001, eq. 5) on these labels' DFT forces."""
    rows = {s.id: s for s in uncertainty.structures}
    used = [x for x in labels if x.ok and x.kind == DFT and x.id in rows and rows[x.id].U is not None]
    means = uncertainty.mean_forces([x.id for x in used])
    pairs = [(rows[x.id].U, x.forces, means[x.id]) for x in used if x.id in means]
    return ReferenceErrors.from_forces(*zip(*pairs), iteration=iteration) if pairs else ReferenceErrors.concatenate([])


@job
def first_records(records: list | None, n: int) -> list:
    return list(records or [])[:n]


def _tagged(flow: Flow, config: LoopConfig, iteration: int) -> Flow:
    # every job the iteration creates, at run time too (the next iteration is a workflow of its own)
    flow.update_metadata({LOOP_KEY: config.name, "iteration": iteration}, dynamic=True)
    return flow


def loop_folder(config: LoopConfig) -> Path:
    """The loop's own folder (ACE files, launches, its log): under ``workdir`` when the config
    names one, so a config submitted twice gives two folders."""
    return Path(config.workdir or get_settings().home.expanduser() / "loops") / config.name


def store_candidates(config: LoopConfig, candidates: list[StructureRecord]) -> StructureSet:
    """Store a new loop's initial candidates (iteration 0), or a pool campaign's whole pool
    (``POOL_ITERATION``), in the campaign database; their reference."""
    if not candidates:
        raise ValueError("the loop needs initial candidates")
    with Campaign.open() as campaign:
        if campaign[STRUCTURES].count_documents({"loop": config.name}):
            raise ValueError(f"loop {config.name!r} is already in the campaign database: choose another name")
        if config.pool is not None:
            return campaign.add_structures(config.name, POOL_ITERATION, unique_by_id([candidates]), stage=POOL_STAGE,
                                           chunk_size=config.chunk_size, max_chunks=config.max_chunks)
        return campaign.add_structures(config.name, 0, candidates, chunk_size=config.chunk_size,
                                       max_chunks=config.max_chunks)


@job
def first_pool_batch(config: LoopConfig, pool: StructureSet, dft_so_far: int, reuse_dft: bool) -> Response:
    """A pool campaign's first batch: DIRECT over the whole pool on ``pool.descriptor`` (there is no
    ACE committee yet), stored as iteration 0's candidates; then iteration 0 itself."""
    if pool.n <= config.pool.batch:  # the whole (small) pool is iteration 0's candidates
        return Response(replace=iteration_job(config, 0, _stored(config, 0, records_of(pool)), dft_so_far, reuse_dft))
    selection = SelectionMaker(qbc_maker=None, descriptor_maker=DescriptorMaker(descriptor=config.pool.descriptor),
                               direct_maker=DirectMaker(n_clusters=config.pool.batch, k=1)).make(pool)
    pick = pick_selected(pool, selection.output, config.pool.batch)
    pick.name = "first pool batch"
    store = store_batch(config, 0, pick.output)
    first = iteration_job(config, 0, store.output, dft_so_far, reuse_dft)
    first.name = "iteration 0 (first pool batch)"
    for light in (pick, store, first):
        set_category(light, "cpu")
    return Response(replace=Flow([selection, pick, store, first], output=first.output))


def _stored(config: LoopConfig, iteration: int, records: list[StructureRecord]) -> StructureSet:
    """``records`` stored as the candidates of ``iteration``; their reference."""
    with Campaign.open() as campaign:
        return campaign.add_structures(config.name, iteration, records, chunk_size=config.chunk_size,
                                       max_chunks=config.max_chunks)


@job
def store_batch(config: LoopConfig, iteration: int, records: list[StructureRecord]) -> StructureSet:
    """The first pool batch, stored as iteration ``iteration``'s candidates."""
    return _stored(config, iteration, records)


@job
def pool_remaining(config: LoopConfig, iteration: int) -> StructureSet:
    """The pool's structures no iteration up to ``iteration`` has taken as candidates, stored as
    this iteration's explored set (what QBC + DIRECT choose the next batch from)."""
    with Campaign.open() as campaign:
        rows = campaign[STRUCTURES]
        taken = {row["id"] for row in rows.find({"loop": config.name, "iteration": {"$gte": 0, "$lte": iteration}},
                                                {"id": 1, "stage": 1})
                 if row["stage"] != "explored"}  # candidates, whatever stage their labelling reached
        pool_chunks = [row["chunk"] for row in rows.find({"loop": config.name, "iteration": POOL_ITERATION},
                                                         {"chunk": 1})]
        left = [record for chunk in dict.fromkeys(pool_chunks) for record in campaign.chunk_structures(chunk)
                if record.id not in taken]
        return campaign.add_structures(config.name, iteration, left, stage="explored", chunk_size=config.chunk_size,
                                       max_chunks=config.max_chunks)


def new_iteration(config: LoopConfig, iteration: int, candidates: StructureSet, dft_so_far: int,
                  reuse_dft: bool = False):
    """The job that becomes iteration ``iteration`` (tagged with its stage; category ``cpu``)."""
    new_job = iteration_job(config, iteration, candidates, dft_so_far, reuse_dft)
    new_job.name = f"iteration {iteration}"
    return set_category(tag_stage(new_job, ITERATION), "cpu")
