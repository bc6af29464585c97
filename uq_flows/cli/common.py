"""Shared pieces of the ``uq-flows`` command line: the app, options, output and errors.

Every command takes ``--json`` and then prints exactly one JSON object to stdout; tables,
progress bars and messages go to stderr. Exit codes: 0 success, 1 some structures could not
be processed (their statuses are reported), 2 bad input or configuration (nothing written).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from uq_flows.errors import UqFlowsError

app = typer.Typer(
    name="uq-flows",
    help="Uncertainty-driven labelling and distillation of machine-learning interatomic potentials.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# messages stay on one line for scripts; tables get room when stderr is not a terminal
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")]
VariantOption = Annotated[int, typer.Option("--variant", min=0, max=2, help="U variant: 0 equal weights, 1 the paper's U, 2 weighted mean.")]
WeightsOption = Annotated[
    str,
    typer.Option("--weights", help="auto (paper table if every member is in it, else equal), paper, equal, or an RMSE file."),
]


@contextlib.contextmanager
def quiet_stdout():
    """FireWorks and jobflow log to stdout; keep stdout for the one JSON object."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def emit(payload: dict[str, Any]) -> None:
    from uq_flows.records import jsonable

    sys.stdout.write(json.dumps(jsonable(payload), indent=1) + "\n")


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def pairs(values: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE pairs of a repeatable option, names unique."""
    pairs: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            fail(f"{option} takes NAME=VALUE, got {text!r}")
        if name in pairs:
            fail(f"{option} {name} given twice")
        pairs[name] = value
    return pairs


def rmse_pairs(values: list[str]) -> dict[str, float]:
    rmse = {}
    for name, value in pairs(values, "--rmse").items():
        try:
            rmse[name] = float(value)
        except ValueError:
            fail(f"--rmse {name}={value}: not a number")
        if not (math.isfinite(rmse[name]) and rmse[name] > 0):
            fail(f"--rmse {name}={value}: an RMSE must be a positive number")
    return rmse


def check_out(out: Path | None, suffixes: tuple[str, ...]) -> None:
    if out is None:
        return
    if not out.name.lower().endswith(suffixes):
        fail(f"--out {out}: must end in one of {', '.join(suffixes)}")
    if not out.parent.exists():
        fail(f"--out {out}: folder {out.parent} does not exist")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    )


@app.callback()
def main() -> None:
    """Run ``uq-flows COMMAND --help`` for a command's options."""


def guard(function):
    """Turn the package's errors into a clear message and exit code 2."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UqFlowsError as error:
            fail(str(error))

    return wrapper


ReferenceOption = Annotated[Path, typer.Option("--reference", help="Reference (DFT) labels: extxyz or pacemaker pickle.")]
PredictionOption = Annotated[list[str], typer.Option("--prediction", help="NAME=FILE of one member's labels on the same configurations (repeat).")]
RmseOption = Annotated[list[str] | None, typer.Option("--rmse", help="NAME=VALUE force RMSE (eV/Å) of a member (repeat).")]
TopNOption = Annotated[int | None, typer.Option("--top-n", min=1, help="Keep the N members with the lowest RMSE.")]
EnergyOption = Annotated[str, typer.Option(help="total or per-atom.")]


def energy_convention(value: str, option: str) -> str:
    if value not in ("total", "per-atom"):
        fail(f"{option} must be total or per-atom, got {value!r}")
    return value
