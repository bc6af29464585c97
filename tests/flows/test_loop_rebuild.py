"""resume rebuilds a loop that cannot continue, and no structure goes to DFT twice."""

import json
from collections import Counter

import pytest

from tests.cli_helpers import run, run_json
from tests.flows.test_loop import write_config
from tests.flows.test_loop_reliability import wire_files, wire_server  # noqa: F401  (fixtures)


@pytest.mark.slow
def test_resume_rebuilds_a_broken_iteration_reusing_its_dft_labels(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("UQ_TEST_CALLS", str(calls))
    monkeypatch.setenv("UQ_TEST_BREAK", "1")
    monkeypatch.setenv("UQ_FLOWS_MAX_RETRIES", "0")  # a failed job stays failed: only a rebuild helps
    from uq_flows.settings import get_settings

    get_settings.cache_clear()
    config = write_config(tmp_path, uc=0.0, dft={"labeller": "calculator", "min_success_fraction": 1.0,
                                                 "calculator": "ase:tests.flows.calculators:BreakableEMT"},
                          convergence={"max_iterations": 1})
    broken = run_json("run", config, expect=3)  # exit 3: the loop failed
    (loop,) = broken["loops"]
    assert loop["state"] == "failed" and loop["iterations"] == []
    assert any(row["name"] == "assemble" for row in loop["fizzled"])
    report = run_json("report", loop["id"], "--out", tmp_path / "report")  # an iteration that did not finish
    assert report["state"] == "failed" and report["n_iterations"] == 1 and report["n_dft_errors"] == 0
    (row,) = json.loads((tmp_path / "report" / "summary.json").read_text())["iterations"]
    assert not row["complete"] and 0 < row["n_high_u"] <= row["n_candidates"] and row["train_force_rmse"] is None
    first = Counter(line.split()[1] for line in calls.read_text().splitlines())
    assert first["failed"] >= 1 and first["ok"] >= 1  # vacancy cells failed, the rest were labelled

    monkeypatch.delenv("UQ_TEST_BREAK")  # the reference code is fixed
    resumed = run_json("resume", loop["id"])
    assert resumed["rebuilt"][loop["id"]]["iteration"] == 0
    assert resumed["rebuilt"][loop["id"]]["reused_dft_labels"] == first["ok"]

    (after,) = run_json("status", loop["id"])["loops"]
    assert after["state"] == "completed" and [it["iteration"] for it in after["iterations"]] == [0]
    per_structure = Counter(line.split()[0] for line in calls.read_text().splitlines() if line.endswith(" ok"))
    assert set(per_structure.values()) == {1}  # every structure got its DFT label exactly once
    records = run_json("results", loop["id"], "--format", "json", "--out", tmp_path / "r.json")
    assert records["by_source"]["dft"] == after["iterations"][0]["n_dft_ok"] == len(per_structure)
    assert "rebuilt" not in run("status", loop["id"]).stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_resumers_at_once_rebuild_a_broken_iteration_once(wire_files, tmp_path, monkeypatch):
    """On the wire server, two resumers both find the loop broken before either acts (forced by a
    barrier); the conditional claim lets one rebuild, and every structure is labelled once."""
    import threading

    import uq_flows.manager.rebuild as rebuild_module
    from uq_flows.manager.launchpad import open_launchpad
    from uq_flows.manager.rebuild import rebuild_loop
    from uq_flows.manager.resume import resume
    from uq_flows.manager.rocket import run_worker
    from uq_flows.settings import get_settings

    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("UQ_TEST_CALLS", str(calls))
    monkeypatch.setenv("UQ_TEST_BREAK", "1")
    monkeypatch.setenv("UQ_FLOWS_MAX_RETRIES", "0")
    get_settings.cache_clear()
    config = write_config(tmp_path, uc=0.0, dft={"labeller": "calculator", "min_success_fraction": 1.0,
                                                 "calculator": "ase:tests.flows.calculators:BreakableEMT"},
                          convergence={"max_iterations": 1})
    loop = run_json("submit", config)["loop"]
    lp = open_launchpad()
    run_worker(lp, None, loop=loop, launch_dir=tmp_path / "first", timeout=300, sleep=0.2)
    assert run_json("status", loop)["loops"][0]["state"] == "failed"
    monkeypatch.delenv("UQ_TEST_BREAK")

    looked = threading.Barrier(2, timeout=120)
    look = rebuild_module.loop_status

    def look_together(*args, **kwargs):
        found = look(*args, **kwargs)
        looked.wait()  # both have seen a broken loop before either claims it
        return found

    monkeypatch.setattr(rebuild_module, "loop_status", look_together)
    rebuilt = []
    resumers = [threading.Thread(target=lambda: rebuilt.append(resume(open_launchpad(), loop, rebuild=rebuild_loop).rebuilt))
                for _ in range(2)]
    for resumer in resumers:
        resumer.start()
    for resumer in resumers:
        resumer.join(timeout=300)
    monkeypatch.setattr(rebuild_module, "loop_status", look)
    assert sorted(bool(r) for r in rebuilt) == [False, True], rebuilt
    assert lp.workflows.count_documents({"metadata.uq_flows_loop": loop, "metadata.iteration": 0}) == 2  # broken + one rebuild

    run_worker(lp, None, loop=loop, launch_dir=tmp_path / "second", timeout=300, sleep=0.2)
    (after,) = run_json("status", loop)["loops"]
    assert after["state"] == "completed", after
    per_structure = Counter(line.split()[0] for line in calls.read_text().splitlines() if line.endswith(" ok"))
    assert per_structure and set(per_structure.values()) == {1}  # every structure got its DFT label exactly once
