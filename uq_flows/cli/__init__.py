"""The ``uq-flows`` command line: one module of commands per stage, all on one typer app."""

from uq_flows.cli import cago, labelling, scoring  # noqa: F401  (registers the commands)
from uq_flows.cli import ace  # noqa: F401  (registers fit, gamma)
from uq_flows.cli import selection  # noqa: F401  (registers select)
from uq_flows.cli import manager  # noqa: F401  (registers doctor, resume)
from uq_flows.cli.common import app

__all__ = ["app"]
