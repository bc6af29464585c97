"""JobStores: embedded MontyStore, MongoDB (wire server) with GridFS data, files, references, the 100 kB guard."""

from __future__ import annotations

import json
import subprocess
import time

import bson
import pytest
from jobflow import run_locally

from tests.manager.conftest import closed_port, python_cmd, worker_env
from tests.manager.toy_jobs import big, mark
from uq_flows.manager.config import ConfigFileError, DatabaseUnreachable
from uq_flows.manager.stores import (
    MAX_DOCUMENT_BYTES,
    ConfiguredJobStore,
    describe_jobstore,
    jobstore_mode,
    open_jobstore,
)
from uq_flows.manager.submit import to_workflow
from uq_flows.settings import get_settings


def _run(job_, store):
    run_locally(job_, store=store, log=False, ensure_success=True)
    with store:
        return store.get_output(job_.uuid, load=True)


def test_embedded_jobstore_round_trip_persists_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_TEST_EFFECTS", str(tmp_path / "effects.jsonl"))
    store = open_jobstore(check=True)
    assert jobstore_mode() == "embedded"
    assert describe_jobstore(store)["docs"]["type"] == "SqliteStore"
    job_ = mark("x")
    assert _run(job_, store)["tag"] == "x"
    script = (
        "from uq_flows.manager.stores import open_jobstore\n"
        "s = open_jobstore(); s.connect()\n"
        f"print(s.get_output({job_.uuid!r}, load=True)['tag'])\n"
    )
    out = subprocess.run(python_cmd("-c", script), env=worker_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "x"


def test_large_outputs_move_to_the_data_store(tmp_path):
    store = open_jobstore()
    job_ = big(250_000)  # ~2.3 MB of floats
    output = _run(job_, store)
    assert output["ids"] == ["a", "b"] and len(output["values"]) == 250_000
    with store:
        doc = store.docs_store.query_one({"uuid": job_.uuid})
        assert len(bson.encode(doc)) < MAX_DOCUMENT_BYTES
        assert doc["output"]["ids"] == ["a", "b"]  # small fields stay queryable
        assert "blob_uuid" in doc["output"]["values"]
        assert store.additional_stores["data"].count({"job_uuid": job_.uuid}) == 1


def test_wire_server_jobstore_with_gridfs_data(wire_db):
    store = open_jobstore(check=True)
    assert jobstore_mode() == "uri"
    info = describe_jobstore(store)
    assert (info["docs"]["type"], info["data"]["type"]) == ("MongoStore", "GridFSStore")
    job_ = big(200_000)
    output = _run(job_, store)
    assert len(output["values"]) == 200_000
    with store:
        doc = store.docs_store.query_one({"uuid": job_.uuid})
        assert len(bson.encode(doc)) < MAX_DOCUMENT_BYTES


def test_workflows_carry_a_reference_not_the_store(wire_server, monkeypatch):
    secret = "s3cr3t-pw"
    monkeypatch.setenv("UQ_FLOWS_DB_URI", f"mongodb://alice:{secret}@{wire_server.host}:{wire_server.port}/refdb")
    get_settings.cache_clear()
    wf = to_workflow(mark("y"), loop="L")
    text = json.dumps(wf.to_dict(), default=str)
    assert secret not in text and "alice" not in text
    task = wf.to_dict()["fws"][0]["spec"]["_tasks"][0]
    assert task["store"] == ConfiguredJobStore.reference_dict()
    described = json.dumps(describe_jobstore(open_jobstore()))
    assert secret not in described and "***@" in described


def test_jobstore_file_with_environment_placeholders(wire_server, tmp_path, monkeypatch):
    path = tmp_path / "jobflow.yaml"
    path.write_text(
        "JOB_STORE:\n"
        "  docs_store: {type: MongoStore, host: '${TEST_DB_HOST}', port: '${TEST_DB_PORT}', database: filedb, collection_name: outputs}\n"
        "  additional_stores:\n"
        "    data: {type: GridFSStore, host: '${TEST_DB_HOST}', port: '${TEST_DB_PORT}', database: filedb, collection_name: outputs_data}\n"
    )
    monkeypatch.setenv("UQ_FLOWS_JOBSTORE_FILE", str(path))
    get_settings.cache_clear()
    with pytest.raises(ConfigFileError, match=r"\$\{TEST_DB_HOST\}.*not set"):
        open_jobstore()
    monkeypatch.setenv("TEST_DB_HOST", wire_server.host)
    monkeypatch.setenv("TEST_DB_PORT", str(wire_server.port))
    store = open_jobstore(check=True)
    assert jobstore_mode() == "file" and store.docs_store.port == wire_server.port


@pytest.mark.parametrize(
    "text, message",
    [
        ("JOB_STORE: {docs_store: [unclosed", "not valid YAML.*line"),
        ("- a list", "must hold a mapping"),
        ("JOB_STORE: {docs_store: {type: MongoStore, database: d, collection_name: c}}", "additional_stores.data"),
        ("docs_store: {type: NoSuchStore}\nadditional_stores: {data: {type: NoSuchStore}}", "cannot be used"),
    ],
)
def test_broken_jobstore_files_give_clear_errors(tmp_path, monkeypatch, text, message):
    path = tmp_path / "jobflow.yaml"
    path.write_text(text)
    monkeypatch.setenv("UQ_FLOWS_JOBSTORE_FILE", str(path))
    get_settings.cache_clear()
    with pytest.raises(ConfigFileError, match=message):
        open_jobstore()


def test_unreachable_jobstore_fails_fast_without_credentials(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("UQ_FLOWS_DB_URI", f"mongodb://bob:hunter22@127.0.0.1:{port}/x")
    monkeypatch.setenv("UQ_FLOWS_DB_TIMEOUT_MS", "500")
    get_settings.cache_clear()
    start = time.monotonic()
    with pytest.raises(DatabaseUnreachable) as error:
        open_jobstore(check=True)
    assert time.monotonic() - start < 5
    assert str(port) in str(error.value) and "hunter22" not in str(error.value)
