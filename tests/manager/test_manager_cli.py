"""``uq-flows doctor`` and ``uq-flows resume``: one JSON object, clear errors before any work."""

from __future__ import annotations

import json
import time

import pytest

from tests.cli_helpers import run, run_json
from tests.manager.conftest import closed_port
from tests.manager.toy_jobs import chain, read_effects
from uq_flows.manager.config import ManagerError
from uq_flows.manager.doctor import preflight, require_executables
from uq_flows.manager.launchpad import close_launchpad, open_launchpad
from uq_flows.manager.submit import submit_flow
from uq_flows.settings import get_settings


def _submit(flow, loop):
    lp = open_launchpad()
    submission = submit_flow(flow, lp, loop=loop)
    close_launchpad(lp)
    return submission


def _unreachable(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("UQ_FLOWS_DB_URI", f"mongodb://dave:t0ps3cret@127.0.0.1:{port}/x")
    monkeypatch.setenv("UQ_FLOWS_DB_TIMEOUT_MS", "500")
    get_settings.cache_clear()
    return port


def test_doctor_reports_every_check():
    result = run_json("doctor")
    names = [row["check"] for row in result["checks"]]
    for name in ("settings", "python", "workflow packages", "member chgnet-0.3.0", "member sevennet-l3i5",
                 "executable cp2k", "executable vasp", "executable pacemaker", "launchpad", "jobstore"):
        assert name in names
    assert result["ok"] and result["counts"]["fail"] == 0
    assert all(row["status"] in ("ok", "warn") for row in result["checks"])


def test_doctor_missing_required_executable(monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_CP2K_COMMAND", "/nonexistent/cp2k.psmp")
    get_settings.cache_clear()
    result = run_json("doctor", "--no-database", "--require", "cp2k", expect=1)
    row = next(r for r in result["checks"] if r["check"] == "executable cp2k")
    assert row["status"] == "fail" and "/nonexistent/cp2k.psmp" in row["detail"] and "apt-get install cp2k" in row["hint"]
    with pytest.raises(ManagerError, match="missing executables: cp2k"):
        require_executables(["cp2k"])


def test_preflight_stops_on_missing_executable_before_the_database(monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_PACEMAKER_COMMAND", "no-such-pacemaker")
    _unreachable(monkeypatch)
    start = time.monotonic()
    with pytest.raises(ManagerError, match="missing executables: pacemaker"):
        preflight(executables=["pacemaker"])
    assert time.monotonic() - start < 0.5  # the database was not even tried


def test_unreachable_database_stops_doctor_and_resume(monkeypatch):
    port = _unreachable(monkeypatch)
    result = run_json("doctor", expect=1)
    failed = {row["check"]: row["detail"] for row in result["checks"] if row["status"] == "fail"}
    assert set(failed) == {"launchpad", "jobstore", "campaign"} and str(port) in failed["launchpad"]
    start = time.monotonic()
    out = run("resume", "--json", expect=2)
    assert time.monotonic() - start < 5
    assert json.loads(out.stdout)["error"]["kind"] == "bad_input"
    assert "cannot reach the launchpad database" in out.stderr and "t0ps3cret" not in out.stdout
    assert "t0ps3cret" not in out.stderr + json.dumps(result)


def test_corrupt_settings_file_is_a_clear_error(tmp_path):
    home = tmp_path / "uq-home"
    home.mkdir(parents=True)
    (home / "config.yaml").write_text("torch_threads: [1, 2\n")
    result = run_json("doctor", expect=1)
    assert result["checks"][0]["check"] == "settings" and "not valid YAML" in result["checks"][0]["detail"]
    out = run("resume", "--json", expect=2)
    error = json.loads(out.stdout)["error"]  # with --json, the error is the one JSON object
    assert error["kind"] == "bad_input" and f"settings file {home / 'config.yaml'} is not valid YAML" in error["message"]
    assert "is not valid YAML" in out.stderr


def test_resume_runs_ready_jobs_locally_on_the_embedded_launchpad(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_TEST_EFFECTS", str(tmp_path / "effects.jsonl"))
    monkeypatch.chdir(tmp_path)
    _submit(chain(["a", "b", "c"]), "local")
    result = run_json("resume", "local")
    assert result["launched_here"] == 3 and result["passes"] == 1
    assert result["launchpad"]["kind"] == "embedded"
    assert result["status"]["loops"][0]["states"] == {"COMPLETED": 3}
    assert sorted(e["tag"] for e in read_effects(str(tmp_path / "effects.jsonl"))) == ["a", "b", "c"]
    again = run_json("resume", "local")
    assert again["launched_here"] == 0 and again["rerun"] == 0


def test_resume_watch_retries_then_gives_up(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_TEST_EFFECTS", str(tmp_path / "effects.jsonl"))
    monkeypatch.chdir(tmp_path)
    submission = _submit(chain(["bad"], bad={"fail": True}), "flaky")
    result = run_json("resume", "flaky", "--watch", "0.1", "--iterations", "3", "--max-retries", "1", "--backoff", "0", expect=3)
    assert result["passes"] == 3 and result["rerun"] == 1 and result["launched_here"] == 2
    (row,) = result["exhausted"]
    assert row["fw_id"] == next(iter(submission.fw_ids.values())) and "toy failure in bad" in row["reason"]
    assert result["status"]["loops"][0]["fizzled"][0]["retries"] == 1


def test_resume_unknown_loop():
    out = run("resume", "nope", expect=2)
    assert "no loop 'nope'" in out.stderr


def test_every_loop_command_takes_the_launchpad_and_jobstore_files(wire_server, tmp_path, monkeypatch):
    """submit --launchpad F --jobstore J to a server; status, results and resume read the same files."""
    import uuid

    import yaml

    from tests.flows.test_loop import write_config

    database = f"t{uuid.uuid4().hex[:12]}"
    where = {"host": wire_server.host, "port": wire_server.port}
    lp_file, store_file = tmp_path / "my_launchpad.yaml", tmp_path / "jobflow.yaml"
    lp_file.write_text(yaml.safe_dump({**where, "name": database}))
    store_file.write_text(yaml.safe_dump({"JOB_STORE": {
        "docs_store": {"type": "MongoStore", "collection_name": "outputs", "database": database, **where},
        "additional_stores": {"data": {"type": "GridFSStore", "collection_name": "outputs_data", "database": database,
                                       **where}}}}))
    monkeypatch.setenv("UQ_FLOWS_CAMPAIGN_URI", wire_server.uri(database))
    for variable in ("UQ_FLOWS_LAUNCHPAD_FILE", "UQ_FLOWS_JOBSTORE_FILE"):  # restored after the test
        monkeypatch.setenv(variable, "unset")
        monkeypatch.delenv(variable)
    files = ("--launchpad", lp_file, "--jobstore", store_file)
    loop = run_json("submit", write_config(tmp_path), *files)["loop"]
    (entry,) = run_json("status", *files)["loops"]
    assert entry["id"] == loop and entry["state"] == "running"
    assert run_json("resume", loop, "--no-run-local", *files)["rerun"] == 0
    assert "no labelled structures" in run("results", loop, "--format", "json", "--out", tmp_path / "r.json", *files,
                                           expect=2).stderr
    assert "--launchpad nope.yaml: no such file" in run("status", "--launchpad", "nope.yaml", expect=2).stderr


def test_worker_runs_its_category_until_max_jobs_or_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_TEST_EFFECTS", str(tmp_path / "effects.jsonl"))
    monkeypatch.chdir(tmp_path)
    _submit(chain(["a", "b", "c"], category="cpu"), "pilot")
    start = time.monotonic()
    gpu = run_json("worker", "--category", "gpu", "--idle-timeout", 1)  # nothing of its category: leaves
    assert gpu["launched"] == 0 and gpu["stopped"] == "idle" and time.monotonic() - start < 10
    first = run_json("worker", "--category", "cpu", "--max-jobs", 2, "--loop", "pilot")
    assert first["launched"] == 2 and first["stopped"] == "max_jobs"
    rest = run("worker", "--category", "cpu", "--idle-timeout", 1)
    assert "ran 1 jobs; stopped: nothing to run for 1 s" in rest.stderr
    assert sorted(e["tag"] for e in read_effects(str(tmp_path / "effects.jsonl"))) == ["a", "b", "c"]
    assert "no loop 'other'" in run("worker", "--loop", "other", expect=2).stderr
