"""The loop on real FireWorks workers: two rlaunch workers on the wire server, kill -9 of a
pilot (``uq-flows worker``) + resume, and the size of every document of a 5,000-structure iteration.

The wire server is mongoeco (MongoDB wire protocol on SQLite) from ``.venv-mongo``, started by
the ``wire_server`` fixture of tests/manager/conftest.py; without ``.venv-mongo`` the wire tests
are skipped with the command that builds it. Launchpad and JobStore are configured the way a
cluster is: ``UQ_FLOWS_LAUNCHPAD_FILE`` and ``UQ_FLOWS_JOBSTORE_FILE`` (MongoStore documents,
GridFS data) written in tmp_path; the workers inherit that environment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import bson
import pytest
import yaml

from benchmarks.workflow_overhead import distillation_flow, rattled_cells
from tests.cli_helpers import run_json
from tests.flows.test_loop import write_config
from tests.manager.conftest import (  # noqa: F401  (wire_server is a fixture)
    REPO,
    stop_process,
    wait_for,
    wire_server,
    with_group,
    worker_env,
)
from uq_flows.settings import get_settings
from uq_flows.stages import DFT_LABEL, THRESHOLD, RECORD

RLAUNCH = REPO / ".venv" / "bin" / "rlaunch"
FWORKERS = REPO / "workflows" / "fireworks"
SLOW_EMT = "ase:tests.flows.slow_calculators:SlowEMT"


@pytest.fixture
def wire_files(wire_server, tmp_path, monkeypatch):  # noqa: F811
    """A fresh database on the wire server, selected through launchpad and JobStore files (and the campaign URI)."""
    database = f"t{uuid.uuid4().hex[:12]}"
    lp_file = tmp_path / "my_launchpad.yaml"
    lp_file.write_text(yaml.safe_dump({"host": wire_server.host, "port": wire_server.port, "name": database,
                                       "strm_lvl": "WARNING"}))
    where = {"host": wire_server.host, "port": wire_server.port, "database": database}
    store_file = tmp_path / "jobflow.yaml"
    store_file.write_text(yaml.safe_dump({"JOB_STORE": {
        "docs_store": {"type": "MongoStore", "collection_name": "outputs", **where},
        "additional_stores": {"data": {"type": "GridFSStore", "collection_name": "outputs_data", **where}},
    }}))
    monkeypatch.delenv("UQ_FLOWS_DB_URI", raising=False)
    monkeypatch.setenv("UQ_FLOWS_CAMPAIGN_URI", wire_server.uri(database))  # the campaign collections beside them
    monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(lp_file))
    monkeypatch.setenv("UQ_FLOWS_JOBSTORE_FILE", str(store_file))
    get_settings.cache_clear()
    return lp_file


def _launchpad():
    from uq_flows.manager.launchpad import open_launchpad

    return open_launchpad()


def _start_worker(lp_file: Path, category: str, folder: Path, timeout: int = 400) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(RLAUNCH), "-l", str(lp_file), "-w", str(FWORKERS / f"fworker_{category}.yaml"), "--loglvl", "WARNING",
           "rapidfire", "--nlaunches", "infinite", "--sleep", "1", "--timeout", str(timeout)]
    return subprocess.Popen(cmd, cwd=folder, env=worker_env(), stdout=subprocess.DEVNULL,
                            stderr=open(folder / "rlaunch.log", "a"), start_new_session=True)


def _start_pilot(category: str, folder: Path, idle_timeout: int = 400, resume_every: float = 60) -> subprocess.Popen:
    """``uq-flows worker`` (a pilot: heartbeats every ``UQ_FLOWS_HEARTBEAT_SECONDS``, a resume pass
    every ``resume_every`` s while idle) named as rlaunch's fworkers."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(REPO / ".venv" / "bin" / "uq-flows"), "worker", "--category", category, "--name", f"uq-flows-{category}",
           "--idle-timeout", str(idle_timeout), "--resume-every", str(resume_every), "--launch-dir", str(folder)]
    return subprocess.Popen(cmd, cwd=folder, env=worker_env(), stdout=subprocess.DEVNULL,
                            stderr=open(folder / "rlaunch.log", "a"), start_new_session=True)


def _fireworks(lp, loop: str) -> list[dict]:
    from uq_flows.manager.submit import loop_fw_ids

    fields = {"fw_id": 1, "name": 1, "state": 1, "spec._category": 1, "spec._uq_retry": 1, "launches": 1,
              "archived_launches": 1}
    return list(lp.fireworks.find({"fw_id": {"$in": loop_fw_ids(lp, loop)}}, fields))


def _loop_done(lp, loop: str, workers, retried: bool = False) -> bool:
    """Every firework of the loop finished (or one failed, or a worker died) and the last state converged.

    ``retried``: the workers resume (pilots), so a failed firework with retries left is not the end
    (it is also FIZZLED for a moment while a lost run is rerun)."""
    docs = _fireworks(lp, loop)
    states = Counter(d["state"] for d in docs)
    limit = get_settings().max_retries
    failed = [d for d in docs if d["state"] == "FIZZLED"
              and (not retried or ((d.get("spec") or {}).get("_uq_retry") or {}).get("count", 0) >= limit)]
    if failed or any(w.poll() is not None for w in workers):
        return True
    if set(states) != {"COMPLETED"}:
        return False
    return any(d["name"] == "loop state" for d in docs) and run_json("status", loop)["loops"][0]["state"] == "completed"


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.rglob("rlaunch.log")))


def _docs(loop: str, stage: str) -> list[dict]:
    """The loop's job documents of one stage (found by their metadata, as status and results do)."""
    from monty.json import MontyDecoder

    from uq_flows.manager.stores import open_jobstore
    from uq_flows.stages import LOOP_KEY, STAGE_KEY

    store = open_jobstore()
    with store:
        docs = list(store.query({f"metadata.{STAGE_KEY}": stage, f"metadata.{LOOP_KEY}": loop},
                                properties=["uuid", "name", "output", "metadata"], load=True))
    for doc in docs:
        doc["output"] = MontyDecoder().process_decoded(doc["output"])
    return docs


def _check_results(loop: str, tmp_path: Path) -> tuple[dict, list[dict]]:
    """The loop's status and results from the CLI, with the counts that must hold for any loop."""
    (status,) = run_json("status", loop)["loops"]
    assert status["state"] == "completed" and status["fizzled"] == [], status
    exported = run_json("results", loop, "--format", "json", "--out", tmp_path / "results.json")
    records = json.loads((tmp_path / "results.json").read_text())
    ids = [r["id"] for r in records]
    last = status["iterations"][-1]  # the pool: what the last fit trained on and the audit it was tested on
    assert len(ids) == len(set(ids)) == exported["n_structures"] == last["n_training"] + last["n_audit"]
    assert exported["by_source"]["dft"] == sum(it["n_dft_ok"] for it in status["iterations"])

    routings = sorted((d for d in _docs(loop, THRESHOLD) if d["output"] is not None),
                      key=lambda d: d["metadata"]["iteration"])
    assert [d["metadata"]["iteration"] for d in routings] == [it["iteration"] for it in status["iterations"]]
    for routing, it in zip(routings, status["iterations"]):  # structures in = structures routed, once each
        routed = [r.id for r in routing["output"].routes]
        assert len(routed) == len(set(routed)) == it["n_candidates"] == sum(routing["output"].counts.values())
        outcomes = ("n_dft_ok", "n_dft_failed", "n_teacher", "n_teacher_failed", "n_deferred", "n_rejected")
        assert sum(it[k] for k in outcomes) == it["n_candidates"]
    return status, records


def _category_of_launches(lp, docs) -> dict[str, str]:
    """fw_id -> name of the worker that launched it; the worker must match the firework's category."""
    worker_of = {}
    for doc in docs:
        for launch in lp.launches.find({"fw_id": doc["fw_id"]}, {"fworker": 1}):
            worker = launch["fworker"]["name"]
            category = (doc.get("spec") or {}).get("_category")
            expected = "uq-flows-gpu" if category == "gpu" else "uq-flows-cpu"  # cpu takes uncategorised jobs
            assert worker == expected, (doc["name"], category, worker)
            worker_of[doc["fw_id"]] = worker
    return worker_of


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_loop_with_a_gpu_and_a_cpu_rlaunch_worker(wire_files, tmp_path):
    submitted = run_json("submit", write_config(tmp_path))
    loop = submitted["loop"]
    lp = _launchpad()
    workers = [_start_worker(wire_files, c, tmp_path / c) for c in ("gpu", "cpu")]
    try:
        wait_for(lambda: _loop_done(lp, loop, workers), timeout=420, interval=2, what="the loop to finish")
    finally:
        for worker in workers:
            stop_process(worker)
    docs = _fireworks(lp, loop)
    assert Counter(d["state"] for d in docs) == Counter(COMPLETED=len(docs)), _logs(tmp_path)

    status, records = _check_results(loop, tmp_path)
    assert [it["iteration"] for it in status["iterations"]] == [0, 1] and status["iterations"][-1]["converged"]
    assert {r["iteration"] for r in records} <= {0, 1}
    # every firework ran exactly once, on a worker of its category, and both workers worked
    assert all(len(d.get("launches") or []) == 1 and not d.get("archived_launches") for d in docs)
    launches = Counter(l["fw_id"] for l in lp.launches.find({"fw_id": {"$in": [d["fw_id"] for d in docs]}}, {"fw_id": 1}))
    assert launches == Counter({d["fw_id"]: 1 for d in docs})
    assert set(_category_of_launches(lp, docs).values()) == {"uq-flows-gpu", "uq-flows-cpu"}
    # one output document per job that ran
    per_iteration = Counter(d["metadata"]["iteration"] for d in _docs(loop, RECORD))
    assert per_iteration == Counter({0: 1, 1: 1})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_of_a_pilot_during_a_reference_label_then_resume(wire_files, tmp_path, monkeypatch):
    """Pilots ping every 0.5 s; a job is lost after 4 missed pings (2 s) with no --lost-after:
    a live label running longer than that is left alone; the killed pilot's label is found lost
    and rerun once by the pilots themselves (a resume pass each second while idle), no resume
    command needed."""
    effects = tmp_path / "labels.jsonl"
    monkeypatch.setenv("UQ_TEST_SLOW_SECONDS", "6")
    monkeypatch.setenv("UQ_TEST_LABEL_EFFECTS", str(effects))
    monkeypatch.setenv("UQ_FLOWS_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("UQ_FLOWS_LOST_AFTER_PINGS", "4")
    monkeypatch.setenv("UQ_FLOWS_RETRY_BACKOFF", "0")
    get_settings.cache_clear()
    config = write_config(tmp_path, uc=0.0, dft={"labeller": "calculator", "calculator": SLOW_EMT},
                          convergence={"max_iterations": 1})  # one iteration: every candidate goes to the slow labeller
    loop = run_json("submit", config)["loop"]
    lp = _launchpad()
    gpu = _start_pilot("gpu", tmp_path / "gpu", resume_every=1)
    cpu = _start_pilot("cpu", tmp_path / "cpu-1", resume_every=1)
    killed = None
    try:
        def labelling():
            if cpu.poll() is not None or gpu.poll() is not None:
                return "dead"
            running = [d for d in _fireworks(lp, loop) if d["state"] == "RUNNING" and d["name"].startswith("reference label")]
            lines = [json.loads(x) for x in effects.read_text().splitlines()] if effects.exists() else []
            started = Counter(x["event"] for x in lines)
            return running[0] if running and started["start"] > started["done"] else None

        killed = wait_for(labelling, timeout=300, interval=0.3, what="a reference label to be running")
        assert killed != "dead", _logs(tmp_path)
        time.sleep(2.5)  # the live label has run longer than 4 heartbeats
        (live,) = run_json("resume", loop)["reports"]
        assert live["lost"] == [] and live["rerun"] == [] and live["exhausted"] == [], live
        with_group(cpu, signal.SIGKILL)
        cpu.wait(timeout=10)
        cpu = _start_pilot("cpu", tmp_path / "cpu-2", resume_every=1)
        if gpu.poll() is not None:
            gpu = _start_pilot("gpu", tmp_path / "gpu-2", resume_every=1)
        wait_for(lambda: _loop_done(lp, loop, [gpu, cpu], retried=True), timeout=400, interval=2,
                 what="the resumed loop to finish")
    finally:
        stop_process(cpu)
        stop_process(gpu)
    docs = _fireworks(lp, loop)
    assert Counter(d["state"] for d in docs) == Counter(COMPLETED=len(docs)), _logs(tmp_path)
    status, records = _check_results(loop, tmp_path)
    (iteration,) = status["iterations"]
    assert iteration["n_dft_ok"] >= 1 and iteration["n_teacher"] == 0

    # the killed firework was found lost and launched twice, every other once
    runs = {d["fw_id"]: len(d.get("launches") or []) + len(d.get("archived_launches") or []) for d in docs}
    assert runs.pop(killed["fw_id"]) == 2 and set(runs.values()) == {1}
    history = lp.fireworks.find_one({"fw_id": killed["fw_id"]})["spec"]["_uq_retry"]["history"]
    assert [h["kind"] for h in history] == ["lost"] and "no heartbeat for more than 2 s" in history[0]["reason"]
    _category_of_launches(lp, docs)
    # its effect is recorded once: one output document, one label in the results
    label_docs = [d for d in _docs(loop, DFT_LABEL) if d["name"] == killed["name"]]
    assert len(label_docs) == 1 and label_docs[0]["output"].ok
    assert Counter(r["id"] for r in records)[label_docs[0]["output"].id] == 1
    # the slow labeller started that structure twice and finished it once; every other structure once
    lines = [json.loads(x) for x in effects.read_text().splitlines()]
    started = Counter(x["key"] for x in lines if x["event"] == "start")
    done = Counter(x["key"] for x in lines if x["event"] == "done")
    twice = [key for key, n in started.items() if n == 2]
    assert len(twice) == 1 and set(started.values()) == {1, 2} and set(done.values()) == {1}, lines
    assert len({x["pid"] for x in lines if x["key"] == twice[0]}) == 2  # the killed worker, then the new one
    assert set(done) == set(started) and len(done) == iteration["n_dft_ok"] + iteration["n_dft_failed"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_5000_structure_iteration_keeps_every_jobstore_document_under_100_kb(tmp_path):
    from jobflow import run_locally

    from uq_flows.manager.stores import MAX_DOCUMENT_BYTES, open_jobstore
    from uq_flows.records import records_from_atoms

    records = records_from_atoms(rattled_cells(5000))
    flow = distillation_flow(records)
    store = open_jobstore()  # the embedded MontyStore under this test's UQ_FLOWS_HOME
    responses = run_locally(flow, store=store, root_dir=tmp_path / "run", log=False, ensure_success=True)
    from tests.conftest import flow_output

    dataset = flow_output(store, flow)
    with store:
        sizes = {(d["name"], d["uuid"]): len(bson.encode(d)) for d in store.docs_store.query({})}
    assert sizes and max(sizes.values()) <= MAX_DOCUMENT_BYTES, sorted(sizes.items(), key=lambda x: -x[1])[:5]
    summary = dataset.summary
    routed = Counter(label.kind for label in dataset.labels)
    assert summary.n_deferred > 0 and summary.n_dft > 0 and summary.n_teacher > 0, summary
    ok_ids = [label.id for label in dataset.ok_labels()]
    assert len(ok_ids) == len(set(ok_ids)) == len(records) - summary.n_deferred - summary.n_rejected, (summary, routed)
    assert len(responses) >= 5
