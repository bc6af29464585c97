"""Run the CLI in-process and parse its one JSON object."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from uq_flows.cli import app


def run(*args, expect: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
    return result


def run_json(*args, expect: int = 0) -> dict:
    return json.loads(run(*args, "--json", expect=expect).stdout)
