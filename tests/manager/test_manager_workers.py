"""Real rockets in separate processes: two concurrent workers, and a worker killed with SIGKILL.

Counts are checked everywhere: jobs submitted, effects recorded (each exactly once), outputs
in the JobStore (one per job), and the worker category of every launch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import yaml

from tests.manager.conftest import (
    REPO,
    python_cmd,
    stop_process,
    wait_for,
    with_group,
    worker_env,
)
from tests.manager.toy_jobs import chain, diamond, read_effects
from uq_flows.manager.launchpad import open_launchpad
from uq_flows.manager.resume import resume
from uq_flows.manager.rocket import run_worker
from uq_flows.manager.status import loop_status
from uq_flows.manager.stores import open_jobstore
from uq_flows.manager.submit import loop_fw_ids, submit_flow
from uq_flows.settings import get_settings

RLAUNCH = REPO / ".venv" / "bin" / "rlaunch"
FWORKERS = REPO / "workflows" / "fireworks"


def _states(lp, loop):
    return Counter(doc["state"] for doc in lp.fireworks.find({"fw_id": {"$in": loop_fw_ids(lp, loop)}}, {"state": 1}))


def _outputs_per_uuid(uuids):
    store = open_jobstore()
    store.connect()
    try:
        return Counter(doc["uuid"] for doc in store.query({"uuid": {"$in": list(uuids)}}, properties=["uuid"]))
    finally:
        store.close()


def test_gpu_and_cpu_rlaunch_run_every_job_once(wire_db, wire_server, tmp_path):
    lp = open_launchpad()
    flow = diamond()
    submission = submit_flow(flow, lp, loop="loop-two-workers")
    assert submission.categories == {"cpu": 3, "gpu": 3}
    database = wire_db.split("/")[3].split("?")[0]
    lp_file = tmp_path / "my_launchpad.yaml"
    lp_file.write_text(yaml.safe_dump({"host": wire_server.host, "port": wire_server.port, "name": database,
                                       "strm_lvl": "WARNING"}))
    workers = []
    try:
        for category in ("gpu", "cpu"):
            folder = tmp_path / category
            folder.mkdir()
            cmd = [str(RLAUNCH), "-l", str(lp_file), "-w", str(FWORKERS / f"fworker_{category}.yaml"),
                   "--loglvl", "WARNING", "rapidfire", "--nlaunches", "infinite", "--sleep", "1", "--timeout", "150"]
            workers.append(subprocess.Popen(cmd, cwd=folder, env=worker_env(UQ_TEST_WORKER=category),
                                            stdout=subprocess.DEVNULL, stderr=open(folder / "rlaunch.log", "w"),
                                            start_new_session=True))
        wait_for(lambda: _states(lp, "loop-two-workers") == Counter(COMPLETED=6)
                 or any(w.poll() is not None for w in workers) or "FIZZLED" in _states(lp, "loop-two-workers"),
                 timeout=120, what="both workers to finish the workflow")
    finally:
        for worker in workers:
            stop_process(worker)
    assert _states(lp, "loop-two-workers") == Counter(COMPLETED=6), [
        (tmp_path / c / "rlaunch.log").read_text()[-2000:] for c in ("gpu", "cpu")]

    effects = read_effects(wire_db)
    assert sorted(e["tag"] for e in effects) == ["a", "b", "c", "d", "e", "f"]  # each exactly once
    category = {"a": "cpu", "b": "gpu", "c": "gpu", "d": "cpu", "e": "gpu", "f": "cpu"}
    assert {e["tag"]: e["worker"] for e in effects} == category
    assert {e["worker"] for e in effects} == {"gpu", "cpu"}

    launches = list(lp.launches.find({}, {"fw_id": 1, "fworker": 1, "state": 1}))
    assert len(launches) == 6 and Counter(l["fw_id"] for l in launches) == Counter(submission.fw_ids.values())
    spec_category = {d["fw_id"]: d["spec"]["_category"] for d in lp.fireworks.find({}, {"fw_id": 1, "spec._category": 1})}
    # the gpu worker selects by category, the cpu worker by query (it also takes uncategorised jobs)
    assert all(l["fworker"]["name"].endswith(spec_category[l["fw_id"]]) for l in launches)
    assert _outputs_per_uuid(submission.fw_ids) == Counter({u: 1 for u in submission.fw_ids})

    status = loop_status(lp, "loop-two-workers")["loops"][0]
    assert status["state"] == "COMPLETED" and status["categories"] == {"cpu": {"COMPLETED": 3}, "gpu": {"COMPLETED": 3}}


def test_sigkill_mid_job_then_resume_completes_each_job_once(wire_db, tmp_path):
    lp = open_launchpad()
    started = tmp_path / "b.started"
    flow = chain(["a", "b", "c"], b={"first_sleep": 60, "started": str(started)})
    submission = submit_flow(flow, lp, loop="loop-kill")
    worker = subprocess.Popen(
        python_cmd("-m", "uq_flows.manager.rocket", "--category", "cpu", "--timeout", "90", "--launch-dir", str(tmp_path / "w1")),
        env=worker_env(UQ_TEST_WORKER="cpu"), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "w1.log", "w"),
        start_new_session=True,
    )
    try:
        wait_for(lambda: started.exists() or worker.poll() is not None, timeout=60, what="job b to start")
        assert worker.poll() is None, (tmp_path / "w1.log").read_text()[-2000:]
        with_group(worker, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        stop_process(worker)
    assert _states(lp, "loop-kill") == Counter(COMPLETED=1, RUNNING=1, WAITING=1)
    assert sorted(e["tag"] for e in read_effects(wire_db)) == ["a"]

    time.sleep(1.0)  # the dead worker's last ping must be older than lost_after
    report = resume(lp, "loop-kill", lost_after=0.5, max_retries=2, backoff=0)
    b_id = submission.fw_ids[flow.jobs[1].uuid]
    assert report.lost == [b_id] and [r["fw_id"] for r in report.rerun] == [b_id]
    assert run_worker(lp, "cpu", loop="loop-kill", launch_dir=tmp_path / "w2", timeout=60, sleep=0.2) == 2

    assert _states(lp, "loop-kill") == Counter(COMPLETED=3)
    assert sorted(e["tag"] for e in read_effects(wire_db)) == ["a", "b", "c"]  # nothing done twice
    assert _outputs_per_uuid(submission.fw_ids) == Counter({u: 1 for u in submission.fw_ids})
    again = resume(lp, "loop-kill", lost_after=0.5)
    assert not again.changed and not again.lost


def test_embedded_sigkill_then_resume_in_a_new_process(tmp_path):
    home, effects = tmp_path / "home", tmp_path / "effects.jsonl"
    started = tmp_path / "b.started"
    env = worker_env(UQ_FLOWS_HOME=str(home), UQ_TEST_EFFECTS=str(effects))
    for key in ("UQ_FLOWS_DB_URI", "UQ_FLOWS_LAUNCHPAD_FILE", "UQ_FLOWS_JOBSTORE_FILE"):
        env.pop(key, None)
    first = textwrap.dedent(f"""
        from tests.manager.toy_jobs import chain
        from uq_flows.manager.launchpad import open_launchpad
        from uq_flows.manager.rocket import run_worker
        from uq_flows.manager.submit import submit_flow
        lp = open_launchpad()
        flow = chain(["a", "b", "c"], b={{"first_sleep": 60, "started": {str(started)!r}}})
        submit_flow(flow, lp, loop="emb")
        run_worker(lp, launch_dir={str(tmp_path / "w1")!r}, timeout=90)
    """)
    process = subprocess.Popen(python_cmd("-c", first), env=env, stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "first.log", "w"), start_new_session=True)
    try:
        wait_for(lambda: started.exists() or process.poll() is not None, timeout=60, what="embedded job b to start")
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        with_group(process, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop_process(process)
    assert [json.loads(line)["tag"] for line in effects.read_text().splitlines()] == ["a"]

    second = textwrap.dedent(f"""
        import json, sys
        from uq_flows.manager.launchpad import open_launchpad
        from uq_flows.manager.resume import resume
        from uq_flows.manager.rocket import run_worker
        from uq_flows.manager.status import loop_status
        lp = open_launchpad()
        report = resume(lp, "emb")
        ran = run_worker(lp, launch_dir={str(tmp_path / "w2")!r}, timeout=60, sleep=0.2)
        sys.stderr.write("RESULT " + json.dumps({{"ran": ran, "report": report.as_dict(),
                                                  "status": loop_status(lp, "emb")}}) + "\\n")
    """)
    done = subprocess.run(python_cmd("-c", second), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stderr.split("RESULT ", 1)[1].splitlines()[0])
    # the last save was after job a: b is READY again (its checkout died with the process)
    assert result["ran"] == 2 and result["status"]["loops"][0]["states"] == {"COMPLETED": 3}
    assert sorted(json.loads(line)["tag"] for line in effects.read_text().splitlines()) == ["a", "b", "c"]


def test_a_killed_pilot_is_found_by_its_missed_heartbeats_and_a_live_one_never(wire_db, tmp_path, monkeypatch):
    """uq-flows worker pings every 0.5 s here; a job is lost after 4 missed heartbeats (2 s)
    without any --lost-after: a live long job is left alone, a killed pilot's is rerun once."""
    monkeypatch.setenv("UQ_FLOWS_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("UQ_FLOWS_LOST_AFTER_PINGS", "4")
    get_settings.cache_clear()
    lp = open_launchpad()
    started = tmp_path / "b.started"
    flow = chain(["a", "b", "c"], b={"first_sleep": 60, "started": str(started)})
    submission = submit_flow(flow, lp, loop="loop-pilot")
    uq_flows = str(Path(sys.executable).parent / "uq-flows")
    pilot = subprocess.Popen([uq_flows, "worker", "--category", "cpu", "--idle-timeout", "60"],
                             env=worker_env(), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "p1.log", "w"),
                             start_new_session=True, cwd=tmp_path)
    b_id = submission.fw_ids[flow.jobs[1].uuid]
    try:
        wait_for(lambda: started.exists() or pilot.poll() is not None, timeout=60, what="job b to start")
        time.sleep(3.0)  # longer than 4 heartbeats: a live pilot keeps pinging
        alive = resume(lp, "loop-pilot", max_retries=2, backoff=0)
        assert not alive.lost and _states(lp, "loop-pilot") == Counter(COMPLETED=1, RUNNING=1, WAITING=1)
        assert loop_status(lp, "loop-pilot")["loops"][0]["silent"] == []
        with_group(pilot, signal.SIGKILL)
        pilot.wait(timeout=10)
    finally:
        stop_process(pilot)
    time.sleep(3.0)
    (silent,) = loop_status(lp, "loop-pilot")["loops"][0]["silent"]
    assert silent["fw_id"] == b_id and silent["lost_after_s"] == 2.0 and silent["silent_s"] > 2.0
    report = resume(lp, "loop-pilot", max_retries=2, backoff=0)
    assert report.lost == [b_id] and [r["fw_id"] for r in report.rerun] == [b_id]
    second = subprocess.run([uq_flows, "worker", "--category", "cpu", "--idle-timeout", "2", "--json"],
                            env=worker_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert json.loads(second.stdout)["launched"] == 2, second.stderr[-2000:]
    assert _states(lp, "loop-pilot") == Counter(COMPLETED=3)
    assert sorted(e["tag"] for e in read_effects(wire_db)) == ["a", "b", "c"]  # nothing done twice
