"""Resume on the wire server: retry limit, exponential backoff, failures already consumed, watch."""

from __future__ import annotations

import datetime as dt
import time

from tests.manager.toy_jobs import chain, read_effects, tolerant
from uq_flows.manager.launchpad import open_launchpad
from uq_flows.manager.resume import resume, watch
from uq_flows.manager.rocket import run_with_retries, run_worker
from uq_flows.manager.stores import open_jobstore
from uq_flows.manager.status import loop_status
from uq_flows.manager.submit import submit_flow
from uq_flows.stages import tolerate_failed_parents


def _work(lp, loop, tmp_path):
    return run_worker(lp, None, loop=loop, launch_dir=tmp_path / "launches", timeout=60, sleep=0.1)


def test_fizzled_job_is_retried_up_to_the_limit_then_left_fizzled(wire_db, tmp_path):
    lp = open_launchpad()
    flow = chain(["bad", "after"], bad={"fail": True})
    submission = submit_flow(flow, lp, loop="retry")
    bad = submission.fw_ids[flow.jobs[0].uuid]
    launched, reruns = [], []
    for attempt in range(4):
        launched.append(_work(lp, "retry", tmp_path))  # only the failing job ever runs
        report = resume(lp, "retry", max_retries=2, backoff=0)
        reruns.append([row["retry"] for row in report.rerun])
    assert launched == [1, 1, 1, 0] and reruns == [[1], [2], [], []]
    assert [row["fw_id"] for row in report.exhausted] == [bad]
    assert "RuntimeError: toy failure in bad" in report.exhausted[0]["reason"]

    doc = lp.fireworks.find_one({"fw_id": bad})
    assert doc["state"] == "FIZZLED" and len(doc["launches"]) + len(doc["archived_launches"]) == 3
    assert [h["kind"] for h in doc["spec"]["_uq_retry"]["history"]] == ["fizzled", "fizzled"]
    status = loop_status(lp, "retry")["loops"][0]
    assert status["state"] == "FIZZLED" and status["states"] == {"FIZZLED": 1, "WAITING": 1}
    assert status["fizzled"] == [{"fw_id": bad, "name": "bad", "category": "cpu", "retries": 2,
                                  "reason": report.exhausted[0]["reason"]}]
    assert read_effects(wire_db) == []


def test_backoff_doubles_with_each_retry(wire_db, tmp_path):
    lp = open_launchpad()
    flow = chain(["bad"], bad={"fail": True})
    submission = submit_flow(flow, lp, loop="backoff")
    bad = submission.fw_ids[flow.jobs[0].uuid]
    _work(lp, "backoff", tmp_path)
    now = dt.datetime.now(dt.UTC)
    early = resume(lp, "backoff", max_retries=3, backoff=100, now=now)
    assert not early.rerun and early.waiting[0]["fw_id"] == bad and 90 < early.waiting[0]["due_in"] <= 100
    assert [r["retry"] for r in resume(lp, "backoff", max_retries=3, backoff=100, now=now + dt.timedelta(seconds=101)).rerun] == [1]
    _work(lp, "backoff", tmp_path)
    now = dt.datetime.now(dt.UTC)
    second = resume(lp, "backoff", max_retries=3, backoff=100, now=now + dt.timedelta(seconds=150))
    assert not second.rerun and 40 < second.waiting[0]["due_in"] <= 50  # 200 s after the second failure


def test_failure_consumed_by_a_tolerant_child_is_not_rerun(wire_db, tmp_path):
    lp = open_launchpad()
    flow = chain(["dft", "assemble"], dft={"fail": True})
    tolerant(flow.jobs[1])
    submission = submit_flow(flow, lp, loop="goes-on")
    assert _work(lp, "goes-on", tmp_path) == 2  # the loop goes on past the failed job
    assert [e["tag"] for e in read_effects(wire_db)] == ["assemble"]
    report = resume(lp, "goes-on", max_retries=2, backoff=0)
    assert not report.rerun and [row["fw_id"] for row in report.blocked] == [submission.fw_ids[flow.jobs[0].uuid]]
    assert [e["tag"] for e in read_effects(wire_db)] == ["assemble"]  # nothing done twice


def _output(job):
    with open_jobstore() as store:
        return store.get_output(job.uuid)


def _waiting_assembly(tmp_path, loop, **dft):
    lp = open_launchpad()
    flow = chain(["dft", "assemble"], dft=dft)
    tolerate_failed_parents(flow.jobs[1])  # as the loop's assembly, combine and QBC jobs
    submission = submit_flow(flow, lp, loop=loop)
    return lp, flow, [submission.fw_ids[j.uuid] for j in flow.jobs]


def test_a_job_tolerating_failed_parents_waits_for_their_retries(wire_db, tmp_path):
    lp, flow, (dft, assemble) = _waiting_assembly(tmp_path, "waits", fail_once=str(tmp_path / "failed-once"))
    assert _work(lp, "waits", tmp_path) == 1  # the failed job alone: its failure is not consumed
    assert lp.fireworks.find_one({"fw_id": assemble})["state"] == "WAITING"
    report = resume(lp, "waits", max_retries=2, backoff=0)
    assert [row["fw_id"] for row in report.rerun] == [dft] and report.released == [] and report.blocked == []
    assert _work(lp, "waits", tmp_path) == 2
    assert sorted(e["tag"] for e in read_effects(wire_db)) == ["assemble", "dft"]  # each once
    assert [u["tag"] for u in _output(flow.jobs[1])["upstream"]] == ["dft"]  # it got the retry's output


def test_a_waiting_job_is_released_once_its_failed_parent_is_out_of_retries(wire_db, tmp_path):
    lp, flow, (dft, assemble) = _waiting_assembly(tmp_path, "released", fail=True)
    assert _work(lp, "released", tmp_path) == 1
    assert [row["retry"] for row in resume(lp, "released", max_retries=1, backoff=0).rerun] == [1]
    assert _work(lp, "released", tmp_path) == 1
    report = resume(lp, "released", max_retries=1, backoff=0)
    assert [row["fw_id"] for row in report.exhausted] == [dft] and report.released == [assemble]
    assert _work(lp, "released", tmp_path) == 1
    assert [e["tag"] for e in read_effects(wire_db)] == ["assemble"]
    assert _output(flow.jobs[1])["upstream"] == []  # the failed parent's output arrived as None
    assert resume(lp, "released", max_retries=1, backoff=0).released == []  # once


def test_run_with_retries_waits_out_the_backoff_and_finishes(wire_db, tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_RETRY_BACKOFF", "3")
    lp, flow, _ = _waiting_assembly(tmp_path, "in-process", fail_once=str(tmp_path / "failed-once"))
    lines, naps = [], []
    launched = run_with_retries(lp, "in-process", launch_dir=tmp_path / "launches", idle_checks=1, sleep=0.1,
                                wait=lambda s: naps.append(s) or time.sleep(s), progress=lines.append)
    assert launched == 3 and sorted(e["tag"] for e in read_effects(wire_db)) == ["assemble", "dft"]
    assert len(naps) == 1 and 0 < naps[0] <= 3
    assert any("next retry in" in line for line in lines) and any("retry 1 (fizzled)" in line for line in lines)


def test_resume_is_scoped_to_its_loop_and_watch_is_bounded(wire_db, tmp_path):
    lp = open_launchpad()
    submit_flow(chain(["x"], x={"fail": True}), lp, loop="one")
    submit_flow(chain(["y"], y={"fail": True}), lp, loop="two")
    _work(lp, None, tmp_path)
    sleeps = []
    reports = watch(lp, "one", interval=7, iterations=3, sleep=sleeps.append, max_retries=1, backoff=0,
                    after_pass=lambda lp_, report: _work(lp_, "one", tmp_path))
    assert [len(r.rerun) for r in reports] == [1, 0, 0] and [len(r.exhausted) for r in reports] == [0, 1, 1]
    assert sleeps == [7, 7]
    two = loop_status(lp, "two")["loops"][0]
    assert two["fizzled"][0]["retries"] == 0  # the other loop was not touched


def test_resume_without_a_loop_leaves_other_tools_workflows_alone(wire_db, tmp_path):
    lp = open_launchpad()
    theirs = chain(["foreign"], foreign={"fail": True})
    foreign = submit_flow(theirs, lp).fw_ids[theirs.jobs[0].uuid]  # not a uq-flows loop (an atomate2 user's)
    ours = chain(["bad"], bad={"fail": True})
    bad = submit_flow(ours, lp, loop="ours").fw_ids[ours.jobs[0].uuid]
    assert _work(lp, None, tmp_path) == 2
    report = resume(lp, max_retries=2, backoff=0)
    assert [row["fw_id"] for row in report.rerun] == [bad]
    assert lp.fireworks.find_one({"fw_id": foreign})["state"] == "FIZZLED"
    everything = resume(lp, max_retries=2, backoff=0, all_workflows=True)
    assert [row["fw_id"] for row in everything.rerun] == [foreign]
