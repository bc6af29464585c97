"""Fixtures of the manager tests: a mongoeco wire server, per-test databases, bounded subprocesses.

The wire server is mongoeco (MongoDB wire protocol on SQLite, Python >= 3.13) from the
repository's ``.venv-mongo``; it is not MongoDB. Without that environment the tests that need
it are skipped with the commands that build it.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from uq_flows.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
MONGO_PYTHON = Path(os.environ.get("UQ_TEST_MONGO_PYTHON", REPO / ".venv-mongo" / "bin" / "python"))
WIRE_SCRIPT = Path(__file__).with_name("wire_server.py")
MAKE_HINT = (
    "make mongo-env, i.e. python3.13 -m venv .venv-mongo && .venv-mongo/bin/pip install 'mongoeco[wire]==4.11.0' "
    "(python3.13: e.g. ~/.pyenv/versions/3.13.0/bin/python3.13)"
)


@dataclass
class WireServer:
    host: str
    port: int
    process: subprocess.Popen

    def uri(self, database: str) -> str:
        return f"mongodb://{self.host}:{self.port}/{database}?directConnection=true"


@pytest.fixture(scope="session")
def wire_server(tmp_path_factory):
    """A mongoeco wire server on a free 127.0.0.1 port for the whole session."""
    if not MONGO_PYTHON.exists():
        pytest.skip(f"{MONGO_PYTHON} is missing; build it with: {MAKE_HINT}")
    folder = tmp_path_factory.mktemp("wire")
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [str(MONGO_PYTHON), str(WIRE_SCRIPT), "--db", str(folder / "wire.sqlite"),
         "--parent-pid", str(os.getpid()), "--max-seconds", "1200"],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
    )
    port = None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline and process.poll() is None:
        if selector.select(timeout=1.0):
            line = process.stdout.readline()
            if line.startswith("PORT "):
                port = int(line.split()[1])
    selector.close()
    if port is None:
        stop_process(process)
        log.close()
        pytest.fail(f"the mongoeco wire server did not start; see {folder / 'server.log'}")
    try:
        yield WireServer("127.0.0.1", port, process)
    finally:
        stop_process(process)
        log.close()


@pytest.fixture
def wire_db(wire_server, monkeypatch):
    """A fresh database on the wire server, selected through UQ_FLOWS_DB_URI; returns its URI."""
    uri = wire_server.uri(f"t{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("UQ_FLOWS_DB_URI", uri)
    monkeypatch.setenv("UQ_TEST_EFFECTS", uri)
    get_settings.cache_clear()
    return uri


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``timeout``; always reaps."""
    if process.poll() is None:
        with_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with_group(process, signal.SIGKILL)
            process.wait(timeout=timeout)
    for stream in (process.stdout, process.stderr):
        if stream and not stream.closed:
            stream.close()


def with_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def worker_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a worker subprocess, with the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
