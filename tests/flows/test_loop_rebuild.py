"""resume rebuilds a loop that cannot continue, and no structure goes to DFT twice."""

import json
from collections import Counter

import pytest

from tests.cli_helpers import run, run_json
from tests.flows.test_loop import write_config


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
