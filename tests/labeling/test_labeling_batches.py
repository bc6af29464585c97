"""The label stage on structures given by reference: teacher jobs per stored chunk, DFT jobs in batches."""

import math

import numpy as np
from ase.build import bulk
from jobflow import run_locally

from tests.conftest import flow_output
from uq_flows.campaign import STRUCTURES, TEACH, Campaign
from uq_flows.labeling.jobs import (
    AssembleMaker,
    CalculatorLabelMaker,
    LabelStageMaker,
    RoutingDocument,
    TeacherLabelMaker,
)
from uq_flows.labeling.routing import Route, count_routes
from uq_flows.records import StructureRecord
from uq_flows.settings import get_settings
from uq_flows.stages import CHUNK_KEY, DFT_LABEL, MEMBER_KEY, MEMBER_PREDICTION, STAGE_KEY, TEACHER_LABEL

EMT = "emt=ase:ase.calculators.emt:EMT"


def cells(n: int) -> list[StructureRecord]:
    rng = np.random.default_rng(4)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", 3.6, cubic=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        out.append(StructureRecord.from_atoms(atoms, source="generator:rattled"))
    return out


def label(job_store, tmp_path, records, dft_ids, batch_size, deferred=frozenset()):
    stored = Campaign.open().add_structures(f"batch-{batch_size}", 0, records)
    routes = [Route(id=r.id, U=1.0 if r.id in dft_ids | deferred else 0.1, reason="test",
                    route="dft" if r.id in dft_ids else "deferred" if r.id in deferred else "teacher") for r in records]
    routing = RoutingDocument(uc=0.5, uc_source="given", routes=routes, counts=count_routes(routes))
    stage = LabelStageMaker(dft_maker=CalculatorLabelMaker(calculator=EMT), teacher_maker=TeacherLabelMaker(energy_from=EMT),
                            assemble_maker=AssembleMaker(align_energies=False), dft_batch_size=batch_size)
    flow = stage.make(stored, routing)
    run_locally(flow, store=job_store, root_dir=tmp_path / f"run-{batch_size}", log=False, ensure_success=True)
    dataset = flow_output(job_store, flow)
    with job_store:
        jobs = {stage_name: job_store.count({f"metadata.{STAGE_KEY}": stage_name, "index": 1})
                for stage_name in (DFT_LABEL, TEACHER_LABEL)}
    return dataset, jobs


def test_dft_batches_and_teacher_chunks_label_every_structure_once(job_store, tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_SCORE_CHUNK_SIZE", "8")  # 20 structures: 3 stored chunks
    get_settings.cache_clear()
    records = cells(20)
    dft_ids = {r.id for r in records[::2]}  # 10 to DFT, 10 to the teacher
    deferred = {records[1].id, records[9].id}  # over the DFT budget: no label of any kind
    single, single_jobs = label(job_store, tmp_path, records, dft_ids, batch_size=1, deferred=deferred)
    batched, batched_jobs = label(job_store, tmp_path, records, dft_ids, batch_size=4, deferred=deferred)

    batched_jobs = {k: batched_jobs[k] - single_jobs[k] for k in batched_jobs}  # one JobStore for both runs
    assert single_jobs[DFT_LABEL] == 10 and batched_jobs[DFT_LABEL] == math.ceil(10 / 4)
    assert batched_jobs[TEACHER_LABEL] == 3  # one teacher job per stored chunk holding teacher routes
    for dataset in (single, batched):
        by_id = {x.id: x for x in dataset.labels}
        assert set(by_id) == {r.id for r in records} - deferred and all(x.ok for x in dataset.labels)
        assert {i for i, x in by_id.items() if x.kind == "dft"} == dft_ids
    same = {x.id: x.energy for x in single.labels}
    assert all(abs(x.energy - same[x.id]) < 1e-9 for x in batched.labels)  # batching changes nothing but jobs
    assert all(x.U == 1.0 for x in batched.labels if x.kind == "dft")  # each label keeps the U it was routed with
    # teacher jobs find their structures by the stage's marks in the campaign rows, not by id lists in their inputs
    rows = Campaign.open()[STRUCTURES].find({"loop": "batch-4"}, {"id": 1, TEACH: 1})
    assert {r["id"] for r in rows if r[TEACH]} == {r.id for r in records} - deferred


def test_a_teacher_that_is_a_member_reuses_the_scoring_predictions(job_store, tmp_path, monkeypatch):
    """Teacher labels from the scoring stage's predictions equal a second model pass, without one."""
    from ase.calculators.emt import EMT as EmtCalculator
    from jobflow import Flow

    from uq_flows.ensemble.jobs import EnsembleScoreMaker

    monkeypatch.setenv("UQ_FLOWS_SCORE_CHUNK_SIZE", "8")
    get_settings.cache_clear()
    records = cells(20)
    dft_ids, deferred = {records[0].id}, {records[3].id}
    rerun, _ = label(job_store, tmp_path, records, dft_ids, batch_size=1, deferred=deferred)

    stored = Campaign.open().add_structures("reuse", 0, records)
    members = ["stretched=ase:tests.flows.slow_calculators:StretchedEMT", EMT]
    score = EnsembleScoreMaker(members=members).make(stored)
    routes = [Route(id=r.id, U=1.0 if r.id in dft_ids | deferred else 0.1, reason="test",
                    route="dft" if r.id in dft_ids else "deferred" if r.id in deferred else "teacher") for r in records]
    routing = RoutingDocument(uc=0.5, uc_source="given", routes=routes, counts=count_routes(routes))
    stage = LabelStageMaker(dft_maker=CalculatorLabelMaker(calculator=EMT), teacher_maker=TeacherLabelMaker(energy_from=EMT),
                            assemble_maker=AssembleMaker(align_energies=False)).make(stored, routing, members)
    run_locally(Flow([score]), store=job_store, root_dir=tmp_path / "score", log=False, ensure_success=True)
    calls = []
    original = EmtCalculator.calculate
    monkeypatch.setattr(EmtCalculator, "calculate", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    run_locally(stage, store=job_store, root_dir=tmp_path / "reuse", log=False, ensure_success=True)
    reused = flow_output(job_store, stage)
    assert len(calls) == 1  # the one DFT (reference) label; no teacher pass
    teacher = {x.id: x for x in reused.labels if x.kind == "teacher"}
    expected = {x.id: x for x in rerun.labels if x.kind == "teacher"}
    assert set(teacher) == set(expected) == {r.id for r in records} - deferred - dft_ids
    for structure_id, x in teacher.items():
        assert x.energy == expected[structure_id].energy and x.forces == expected[structure_id].forces
        assert x.provenance == expected[structure_id].provenance and x.source == expected[structure_id].source
    # a scoring chunk that left no output: that chunk's teacher runs the model, with the same labels
    with job_store:
        (second,) = job_store.query({f"metadata.{STAGE_KEY}": MEMBER_PREDICTION, f"metadata.{MEMBER_KEY}": EMT,
                                     f"metadata.{CHUNK_KEY}": stored.chunks[1]}, properties=["uuid"])
        job_store.remove_docs({"uuid": second["uuid"]})
    fallback = LabelStageMaker(dft_maker=CalculatorLabelMaker(calculator=EMT), teacher_maker=TeacherLabelMaker(energy_from=EMT),
                               assemble_maker=AssembleMaker(align_energies=False)).make(stored, routing, members)
    calls.clear()
    run_locally(fallback, store=job_store, root_dir=tmp_path / "fallback", log=False, ensure_success=True)
    assert len(calls) == 1 + 8  # the DFT label and the second chunk's 8 structures
    assert {x.id: x.energy for x in flow_output(job_store, fallback).labels} == {x.id: x.energy for x in reused.labels}


def test_many_chunks_are_made_in_groups_with_the_same_results(job_store, tmp_path, monkeypatch):
    """Beyond FAN_OUT chunks, scoring and teacher jobs are made by (nested) group jobs at run time,
    each making at most FAN_OUT jobs; U, mean forces and labels do not change."""
    from jobflow import Flow

    import uq_flows.campaign.jobs as chunked
    from uq_flows.ensemble.jobs import EnsembleScoreMaker

    monkeypatch.setenv("UQ_FLOWS_SCORE_CHUNK_SIZE", "4")
    get_settings.cache_clear()
    records = cells(20)  # 5 chunks
    stored = Campaign.open().add_structures("groups", 0, records)
    members = [EMT, "stretched=ase:tests.flows.slow_calculators:StretchedEMT"]
    direct = EnsembleScoreMaker(members=members).make(stored)
    assert len(direct.jobs) == 2 * 5 + 1
    monkeypatch.setattr(chunked, "FAN_OUT", 2)
    grouped = EnsembleScoreMaker(members=members).make(stored)
    assert len(grouped.jobs) == 2 * 2 + 1  # per member, groups of 4 and 1 chunks; the first makes 2 groups itself
    routes = [Route(id=r.id, U=0.1, reason="test", route="teacher") for r in records]
    routing = RoutingDocument(uc=0.5, uc_source="given", routes=routes, counts=count_routes(routes))
    stage = LabelStageMaker(dft_maker=CalculatorLabelMaker(calculator=EMT), teacher_maker=TeacherLabelMaker(energy_from=EMT),
                            assemble_maker=AssembleMaker(align_energies=False)).make(stored, routing, members)
    by_value = EnsembleScoreMaker(members=members).make(records)
    for flow, folder in ((direct, "direct"), (grouped, "grouped"), (stage, "label"), (by_value, "value")):
        run_locally(Flow([flow]), store=job_store, root_dir=tmp_path / folder, log=False, ensure_success=True)
    by_direct = {s.id: s.U for s in flow_output(job_store, direct).structures}
    scored = flow_output(job_store, grouped)
    by_group = {s.id: s.U for s in scored.structures}
    assert by_group == by_direct and len(by_group) == 20 and all(u is not None for u in by_group.values())
    # mean forces of a stored set live beside its geometry, not in the output
    value = flow_output(job_store, by_value)
    assert all(s.mean_forces is None for s in scored.structures) and scored.mean_forces_in == stored
    means = scored.mean_forces([r.id for r in records])
    assert {s.id: np.asarray(s.mean_forces).tolist() for s in value.structures} == {i: m.tolist() for i, m in means.items()}
    labels = flow_output(job_store, stage).labels
    assert sorted(x.id for x in labels) == sorted(r.id for r in records) and all(x.ok for x in labels)


def test_ungroup_gives_one_output_per_chunk_from_nested_groups(monkeypatch):
    import uq_flows.campaign.jobs as chunked

    monkeypatch.setattr(chunked, "FAN_OUT", 2)
    # 5 chunks: shares of 4 and 1; the share of 4 makes shares of 2 and 2 when it runs
    assert chunked._shares(5) == [(0, 4), (4, 5)] and chunked._shares(4) == [(0, 2), (2, 4)]
    assert chunked._shares(2) == [(0, 1), (1, 2)]
    assert chunked.ungroup([[["a", "b"], ["c", "d"]], ["e"]], 5) == list("abcde")
    assert chunked.ungroup([[None, ["c", "d"]], None], 5) == [None, None, "c", "d", None]  # groups that did not run
    assert chunked.ungroup(list("abcde"), 5) == list("abcde")  # one job per chunk (by value)
