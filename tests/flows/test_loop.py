"""The loop from the command line on the embedded default: FireWorks rockets in-process."""

import json

import pytest
import yaml

from tests.cli_helpers import run, run_json

BASE = {
    "name": "cu",
    "elements": ["Cu"],
    "members": ["chgnet-0.3.0", "chgnet-0.2.0"],
    "uc": 0.15,
    # EMT and CHGNet Cu differ by ~85 meV/atom beyond a constant shift per atom (measured): accept it here so
    # teacher labels reach the fit; the default 20 meV/atom limit holds them back (tests/labeling/test_labeling_pool.py)
    "align_max_residual": 0.15,
    "generate": {"n": 4, "max_atoms": 8, "kinds": ["strained", "vacancies", "pairs"]},
    "dft": {"labeller": "calculator"},
    "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 3},
    "explore": {"n_seeds": 2, "md": {"steps": 60, "snapshot_every": 20}, "cago": {"max_steps": 5},
                "n_cago_members": 2, "max_cago_seeds": 3},
    "select": {"max_candidates": 6},
    "convergence": {"max_iterations": 2},
}


def write_config(tmp_path, **changes):
    config = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        config[key] = value
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_run_status_results_with_consistent_counts(tmp_path):
    ran = run("run", write_config(tmp_path), "--json")
    result = json.loads(ran.stdout)
    story = ran.stderr.splitlines()  # what the user sees: short, one line per stage, the log elsewhere
    assert len(story) <= 60 and not [line for line in story if " DEBUG " in line or " INFO " in line]
    assert any(line.endswith(")") and ": score done" in line for line in story)
    assert len([line for line in story if "loop state done" in line]) == 2 and len(set(story)) == len(story)
    assert len([line for line in story if line.endswith("iteration 1: started")]) == 1
    assert any("iteration 0: ace fit " in line for line in story)  # the long stages between score and loop state
    (loop,) = result["loops"]
    log = (tmp_path / "uq-home" / "loops" / loop["id"] / "uq-flows.log").read_text()  # the loop folder's log
    assert "Starting job" in log and "RUNNING fw_id" in log  # jobflow's and FireWorks' lines, in the log file
    assert f"(log: {tmp_path / 'uq-home' / 'loops' / loop['id'] / 'uq-flows.log'})" in story[0]
    assert loop["id"] == result["loop"] and loop["state"] == "completed"
    first, second = loop["iterations"]
    assert (first["iteration"], second["iteration"]) == (0, 1) and second["converged"]
    for it in (first, second):  # every candidate ends in exactly one outcome
        outcomes = ("n_dft_ok", "n_dft_failed", "n_teacher", "n_teacher_failed", "n_deferred", "n_rejected")
        assert sum(it[k] for k in outcomes) == it["n_candidates"]
        assert it["n_high_u"] >= it["n_dft_ok"] - it["n_audit"] and it["train_force_rmse"] > 0
        # the random audit sample: DFT whatever U, the fit's held-out test set, rho and the CAGO calibration
        assert it["n_audit"] == 3 and it["test_force_rmse"] > 0 and it["spearman_audit"] is not None
        assert it["alignment"]["sample"] == "audit" and it["alignment"]["usable"] and it["n_waiting_alignment"] == 0
        assert it["cago"] == "calibrated" and it["calibration"]["z_std"] == pytest.approx(1, abs=0.05)
        assert it["uc"] == 0.15 and it["warnings"] == []
    assert second["n_candidates"] == first["n_next_candidates"]
    assert {"gpu", "cpu"} <= set(loop["jobs"]) and loop["fizzled"] == []
    # one workflow per iteration; finished iterations leave the embedded launchpad for its archive
    home = tmp_path / "uq-home"
    archived = sorted((home / "launchpad-archive" / loop["id"]).glob("*.json"))
    assert len(archived) == 2 and json.loads((home / "launchpad.json").read_text())["uq_flows"]["fireworks"]["documents"] == []
    names = [fw["name"] for path in archived for fw in json.loads(path.read_text())["fireworks"]]
    assert any(name.startswith("qbc ace-1") for name in names)  # job names carry no paths (status shows them)
    assert not [name for name in names if str(tmp_path) in name or "potential." in name]
    from uq_flows.campaign import LOOPS, Campaign

    with Campaign.open() as campaign:
        states = [d for d in campaign[LOOPS].find({"loop": loop["id"], "kind": "state"})]
    assert [(d["iteration"], d.get("next_status")) for d in sorted(states, key=lambda d: d["iteration"])] == \
        [(0, "submitted"), (1, None)]

    assert run_json("status", loop["id"])["loops"][0]["iterations"] == loop["iterations"]
    everything = run_json("results", loop["id"], "--format", "json", "--out", tmp_path / "all.json")
    records = json.loads((tmp_path / "all.json").read_text())
    ids = [r["id"] for r in records]
    # the pool: everything the last fit trained on plus the audit it was tested on
    assert len(ids) == len(set(ids)) == everything["n_structures"] == second["n_training"] + second["n_audit"]
    assert everything["by_source"]["dft"] == first["n_dft_ok"] + second["n_dft_ok"]
    assert {r["iteration"] for r in records} == {0, 1}
    teacher = run_json("results", loop["id"], "--format", "extxyz", "--source", "teacher", "--iteration", "0",
                       "--out", tmp_path / "teacher.extxyz")
    assert teacher["n_structures"] == first["n_teacher"] and (tmp_path / "teacher.extxyz").exists()
    assert all(r["U"] < 0.15 for r in records if r["source"] == "teacher")
    below = [r for r in records if r["source"] == "dft" and r["U"] is not None and r["U"] < 0.15]
    assert len(below) <= first["n_audit"] + second["n_audit"]  # only the audit goes to DFT below U_c

    report = run_json("report", loop["id"], "--out", tmp_path / "report")
    assert report["state"] == "completed" and report["n_iterations"] == 2
    assert report["n_dft_errors"] == first["n_dft_ok"] + second["n_dft_ok"]  # every DFT label against the ensemble
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and loop["id"] in page
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [{k: row[k] for k in it} for row, it in zip(summary["iterations"], loop["iterations"])] == loop["iterations"]
    assert all(row["uc"] == 0.15 for row in summary["iterations"])
    assert "no loop 'loop-that-is-not' in the database" in run("report", "loop-that-is-not", "--out", tmp_path / "r2", expect=2).stderr
    (tmp_path / "file").write_text("")
    assert "not a folder" in run("report", loop["id"], "--out", tmp_path / "file", expect=2).stderr


@pytest.mark.slow
def test_a_permanently_failing_reference_does_not_stop_the_loop(tmp_path):
    config = write_config(tmp_path, dft={"labeller": "calculator", "min_success_fraction": 0.3,
                                         "calculator": "ase:tests.flows.calculators:FailsOnOddCells"}, uc=0.0,
                          # a committee fitted on five cells agrees closely: a lower QBC force threshold, as in the demo
                          select={"max_candidates": 6, "qbc_config": {"force_threshold": 0.02}})
    (loop,) = run_json("run", config)["loops"]
    assert loop["state"] == "completed" and len(loop["iterations"]) == 2
    first = loop["iterations"][0]
    assert first["n_dft_failed"] >= 1 and first["n_dft_ok"] >= 1  # the vacancy cells failed, the rest went on


@pytest.mark.slow
def test_target_force_rmse_chooses_uc_on_the_audit_each_iteration(tmp_path):
    """U_c from the audit sample (paper 001's rule of thumb made measurable): the largest threshold whose
    teacher forces reach the target RMSE on the random audit, which is labelled once and kept."""
    config = write_config(tmp_path, target_force_rmse=0.05, audit={"size": 4}, convergence={"max_iterations": 1},
                          explore={"n_seeds": 1, "md": {"steps": 20, "snapshot_every": 10}, "cago": None})
    (loop,) = run_json("run", config)["loops"]
    (it,) = loop["iterations"]
    assert loop["state"] == "completed" and it["uc_source"].startswith("audit: 4 structures, target force RMSE 0.05")
    assert it["uc"] >= 0 and it["n_audit"] == 4 and it["n_dft_ok"] >= 4
    outcomes = ("n_dft_ok", "n_dft_failed", "n_teacher", "n_teacher_failed", "n_deferred", "n_rejected")
    assert sum(it[k] for k in outcomes) == it["n_candidates"]
    assert it["dft_total"] == it["n_dft_ok"] + it["n_dft_failed"]  # the audit's DFT is not run twice


def test_bad_config_missing_executable_and_unreachable_database_submit_nothing(tmp_path, monkeypatch):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    assert "not valid YAML" in run("run", broken, expect=2).stderr
    assert "members" in run("run", write_config(tmp_path, members=["chgnet-0.3.0"]), expect=2).stderr
    unknown = run("run", write_config(tmp_path, members=["chgnet-0.3.0", "chgnet-9.9"]), "--json", expect=2)
    assert "members[1]: unknown member 'chgnet-9.9'" in json.loads(unknown.stdout)["error"]["message"]
    assert "Traceback" not in unknown.stderr
    teacher = run("run", write_config(tmp_path, teacher={"energy_from": "mace-mp-0"}), expect=2).stderr
    assert "teacher.energy_from: unknown member 'mace-mp-0'" in teacher

    monkeypatch.setenv("UQ_FLOWS_CP2K_COMMAND", "no-such-cp2k")
    cp2k = write_config(tmp_path, dft={"labeller": "cp2k"})
    missing = run("submit", cp2k, expect=2).stderr
    assert "no-such-cp2k" in missing and "unknown executable" not in missing
    monkeypatch.delenv("UQ_FLOWS_CP2K_COMMAND")

    monkeypatch.setenv("UQ_FLOWS_DB_URI", "mongodb://127.0.0.1:9/uq")  # nothing listens on port 9
    monkeypatch.setenv("UQ_FLOWS_DB_TIMEOUT_MS", "500")
    from uq_flows.settings import get_settings

    get_settings.cache_clear()
    message = run("submit", write_config(tmp_path), expect=2).stderr
    assert "cannot reach the launchpad database at mongodb://127.0.0.1:9" in message
    monkeypatch.delenv("UQ_FLOWS_DB_URI")
    get_settings.cache_clear()
    assert run_json("status")["loops"] == []  # the embedded launchpad never saw a workflow
