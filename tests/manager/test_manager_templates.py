"""The shipped FireWorks templates in workflows/fireworks load, render and work on a wire server."""

from __future__ import annotations

import json

from fireworks import FWorker
from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

from tests.manager.conftest import REPO
from tests.manager.toy_jobs import chain, read_effects
from uq_flows.manager.launchpad import (
    describe_launchpad,
    launchpad_from_file,
    open_launchpad,
)
from uq_flows.manager.rocket import run_worker
from uq_flows.manager.stores import describe_jobstore, jobstore_from_file, open_jobstore
from uq_flows.manager.submit import submit_flow
from uq_flows.settings import get_settings

TEMPLATES = REPO / "workflows" / "fireworks"


def test_qadapters_and_fworkers():
    scripts = {}
    for category in ("gpu", "cpu"):
        adapter = CommonAdapter.from_file(str(TEMPLATES / f"qadapter_{category}.yaml"))
        assert type(adapter).__name__ == "CommonAdapter" and adapter.q_type == "SLURM"
        scripts[category] = adapter.get_script_str("/scratch/launch")
        assert f"fworker_{category}.yaml" in scripts[category] and "rlaunch" in scripts[category]
        worker = FWorker.from_file(str(TEMPLATES / f"fworker_{category}.yaml"))
        if category == "gpu":
            assert worker.category == "gpu"
        else:  # cpu also takes jobflow's uncategorised bookkeeping fireworks
            assert worker._query["$or"] == [{"spec._category": "cpu"}, {"spec._category": {"$exists": False}}]
    assert "#SBATCH --gres=gpu:1" in scripts["gpu"] and "--gres" not in scripts["cpu"]


def test_launchpad_and_jobflow_templates_on_the_wire_server(wire_server, tmp_path, monkeypatch):
    for key, value in {"UQ_DB_HOST": wire_server.host, "UQ_DB_PORT": str(wire_server.port),
                       "UQ_DB_NAME": "templates", "UQ_DB_USER": "", "UQ_DB_PASSWORD": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(TEMPLATES / "my_launchpad.yaml"))
    monkeypatch.setenv("UQ_FLOWS_JOBSTORE_FILE", str(TEMPLATES / "jobflow.yaml"))
    monkeypatch.setenv("UQ_TEST_EFFECTS", wire_server.uri("templates"))
    get_settings.cache_clear()
    lp = open_launchpad()
    store = open_jobstore(check=True)
    assert describe_jobstore(store)["data"]["type"] == "GridFSStore"
    flow = chain(["a", "b"])
    submit_flow(flow, lp, loop="tpl")
    assert run_worker(lp, "cpu", loop="tpl", launch_dir=tmp_path, timeout=60, sleep=0.1) == 2
    assert sorted(e["tag"] for e in read_effects(wire_server.uri("templates"))) == ["a", "b"]
    with store:
        assert store.get_output(flow.jobs[1].uuid)["tag"] == "b"


def test_templates_never_show_the_password(monkeypatch):
    for key, value in {"UQ_DB_HOST": "db.example.org", "UQ_DB_PORT": "27017", "UQ_DB_NAME": "uq",
                       "UQ_DB_USER": "erin", "UQ_DB_PASSWORD": "correct-horse"}.items():
        monkeypatch.setenv(key, value)
    lp = launchpad_from_file(TEMPLATES / "my_launchpad.yaml")  # no connection is made here
    store = jobstore_from_file(TEMPLATES / "jobflow.yaml")
    shown = json.dumps([describe_launchpad(lp), describe_jobstore(store)])
    assert "correct-horse" not in shown and "erin" not in shown and "db.example.org" in shown
