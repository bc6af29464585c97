"""The ``uq-flows`` command line: one module of commands per stage, all on one typer app."""

from uq_flows.cli import (  # noqa: F401  (registers the commands)
    ace,  # noqa: F401  (registers fit, gamma)
    cago,
    labelling,
    loop,  # noqa: F401  (registers run, submit, status, results)
    manager,  # noqa: F401  (registers doctor, resume)
    scoring,
    selection,  # noqa: F401  (registers select)
)
from uq_flows.cli.common import app

__all__ = ["app"]
