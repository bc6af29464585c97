"""Launchpads: embedded mongomock-persistence file across processes, files, servers, clear errors."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time

import pytest

from tests.manager.conftest import (
    closed_port,
    python_cmd,
    stop_process,
    wait_for,
    worker_env,
)
from tests.manager.toy_jobs import chain
from uq_flows.manager.config import ConfigFileError, DatabaseUnreachable, ManagerError
from uq_flows.manager.launchpad import (
    close_launchpad,
    describe_launchpad,
    launchpad_mode,
    open_launchpad,
)
from uq_flows.manager.submit import list_loops, loop_fw_ids, submit_flow
from uq_flows.settings import get_settings


def _env(home, **extra):
    env = worker_env(UQ_FLOWS_HOME=str(home), **extra)
    for key in ("UQ_FLOWS_DB_URI", "UQ_FLOWS_LAUNCHPAD_FILE", "MONGOMOCK_SERVERSTORE_FILE"):
        env.pop(key, None)
    return env


def _python(code: str, env, timeout=120):
    done = subprocess.run(python_cmd("-c", textwrap.dedent(code)), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 or "KILLED" in code, done.stderr[-3000:]
    return done


READ = """
    import json
    from uq_flows.manager.launchpad import open_launchpad
    from uq_flows.manager.submit import list_loops, loop_fw_ids
    lp = open_launchpad()
    print(json.dumps({loop: loop_fw_ids(lp, loop) for loop in list_loops(lp)}))
"""


def test_embedded_launchpad_persists_on_clean_exit(tmp_path):
    home = tmp_path / "home"
    _python("""
        from tests.manager.toy_jobs import chain
        from uq_flows.manager.launchpad import open_launchpad
        lp = open_launchpad()
        lp.add_wf(__import__("uq_flows.manager.submit", fromlist=["to_workflow"]).to_workflow(chain(["a", "b"]), loop="kept"))
        # no explicit save: written at clean exit
    """, _env(home))
    assert (home / "launchpad.json").exists()
    out = _python(READ, _env(home))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"kept": [1, 2]}


def test_embedded_state_after_sigkill_is_the_last_save(tmp_path):
    home = tmp_path / "home"
    _python("""
        import os, signal
        from tests.manager.toy_jobs import chain
        from uq_flows.manager.launchpad import open_launchpad
        from uq_flows.manager.submit import submit_flow, to_workflow
        lp = open_launchpad()
        submit_flow(chain(["a"]), lp, loop="saved")  # submit_flow saves
        lp.add_wf(to_workflow(chain(["b"]), loop="unsaved"))
        os.kill(os.getpid(), signal.SIGKILL)  # KILLED
    """, _env(home))
    out = _python(READ, _env(home))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"saved": [1]}


def test_embedded_launchpad_is_single_process(tmp_path, monkeypatch):
    home = tmp_path / "home"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        python_cmd("-c", textwrap.dedent(f"""
            import pathlib, time
            from uq_flows.manager.launchpad import open_launchpad
            open_launchpad()
            pathlib.Path({str(ready)!r}).write_text("x")
            time.sleep(60)
        """)),
        env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, timeout=60, what="the holder to open the launchpad")
        monkeypatch.setenv("UQ_FLOWS_HOME", str(home))
        get_settings.cache_clear()
        with pytest.raises(ManagerError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            open_launchpad()
    finally:
        stop_process(holder)
    lp = open_launchpad()  # the lock dies with its process
    assert describe_launchpad(lp)["kind"] == "embedded"
    close_launchpad(lp)


def test_in_process_embedded_launchpad_then_another_process(tmp_path, monkeypatch):
    home = tmp_path / "uq-home"  # the autouse fixture's UQ_FLOWS_HOME
    lp = open_launchpad()
    assert launchpad_mode() == "embedded"
    submission = submit_flow(chain(["a", "b", "c"]), lp, loop="mine")
    assert sorted(submission.fw_ids.values()) == loop_fw_ids(lp, "mine") and list_loops(lp) == ["mine"]
    close_launchpad(lp)
    out = _python(READ, _env(home))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"mine": [1, 2, 3]}


def test_corrupt_embedded_file(tmp_path):
    home = tmp_path / "uq-home"
    home.mkdir(parents=True)
    (home / "launchpad.json").write_text('{"uq_flows": {"fireworks": ')
    with pytest.raises(ConfigFileError, match="launchpad.json is corrupt"):
        open_launchpad()


def test_conflicting_mongomock_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MONGOMOCK_SERVERSTORE_FILE", str(tmp_path / "other.json"))
    with pytest.raises(ConfigFileError, match="MONGOMOCK_SERVERSTORE_FILE"):
        open_launchpad()


def test_launchpad_file_with_placeholders(wire_server, tmp_path, monkeypatch):
    path = tmp_path / "my_launchpad.yaml"
    path.write_text("host: ${TEST_LP_HOST}\nport: ${TEST_LP_PORT}\nname: lpfile\nusername: null\npassword: null\n")
    monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(path))
    get_settings.cache_clear()
    with pytest.raises(ConfigFileError, match="TEST_LP_HOST"):
        open_launchpad()
    monkeypatch.setenv("TEST_LP_HOST", wire_server.host)
    monkeypatch.setenv("TEST_LP_PORT", str(wire_server.port))
    lp = open_launchpad()
    assert launchpad_mode() == "file"
    assert describe_launchpad(lp) == {"kind": "mongodb", "database": "lpfile", "host": wire_server.host, "port": wire_server.port}
    submit_flow(chain(["a"]), lp, loop="from-file")
    assert list_loops(lp) == ["from-file"]


@pytest.mark.parametrize(
    "text, message",
    [("host: [127.0.0.1\nport: 1\n", "not valid YAML.*line"), ("port: 27017\n", "no 'host'"), ("just text", "must hold a mapping")],
)
def test_broken_launchpad_files(tmp_path, monkeypatch, text, message):
    path = tmp_path / "my_launchpad.yaml"
    path.write_text(text)
    monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(path))
    get_settings.cache_clear()
    with pytest.raises(ConfigFileError, match=message):
        open_launchpad()


def test_missing_launchpad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(tmp_path / "nope.yaml"))
    get_settings.cache_clear()
    with pytest.raises(ConfigFileError, match="does not exist"):
        open_launchpad()


@pytest.mark.parametrize("via", ["uri", "file"])
def test_unreachable_launchpad_fails_fast_and_redacted(tmp_path, monkeypatch, via):
    port = closed_port()
    if via == "uri":
        monkeypatch.setenv("UQ_FLOWS_DB_URI", f"mongodb://carol:pa55word@127.0.0.1:{port}/x")
    else:
        path = tmp_path / "lp.yaml"
        path.write_text(f"host: 127.0.0.1\nport: {port}\nname: x\nusername: carol\npassword: pa55word\n")
        monkeypatch.setenv("UQ_FLOWS_LAUNCHPAD_FILE", str(path))
    monkeypatch.setenv("UQ_FLOWS_DB_TIMEOUT_MS", "500")
    get_settings.cache_clear()
    start = time.monotonic()
    with pytest.raises(DatabaseUnreachable) as error:
        open_launchpad()
    assert time.monotonic() - start < 5
    assert str(port) in str(error.value) and "pa55word" not in str(error.value) and "carol" not in str(error.value)
