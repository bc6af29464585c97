"""Shared pieces of the ``uq-flows`` command line: the app, options, output and errors.

Every command takes ``--json`` and then prints exactly one JSON object to stdout, errors
included (``{"error": {"kind": ..., "message": ...}}``); tables, progress bars and messages go
to stderr. Exit codes (README, "Exit codes"): 0 success; 1 partial (some structures failed,
reported); 2 bad input or configuration, nothing written; 3 a loop that failed or stopped on
errors; 4 an internal error (one line naming the log file; the traceback with ``-v``).
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
    TimeRemainingColumn,
)
from typer.core import TyperGroup
from typer.exceptions import TyperException

from uq_flows.errors import UqFlowsError, install_hint

EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2
EXIT_LOOP_FAILED = 3
EXIT_INTERNAL = 4
ERROR_KINDS = {EXIT_PARTIAL: "partial", EXIT_BAD_INPUT: "bad_input", EXIT_LOOP_FAILED: "loop_failed",
               EXIT_INTERNAL: "internal"}


# Earlier spellings of options, per command, still accepted (and not shown in --help): a model
# is a --model everywhere, a count of fitted members is --n-members.
OLD_SPELLINGS = {
    "score": {"--member": "--model"},
    "measure-rmse": {"--member": "--model"},
    "label": {"--labeller": "--model"},
    "select": {"--committee": "--model"},
    "calibrate": {"--committee": "--model"},
    "cago": {"--committee": "--model"},
    "explore": {"--calculator": "--model"},
    "gamma": {"--potential": "--model"},
    "fit": {"--ensemble": "--n-members"},
}


def with_current_spellings(args: list[str], commands: Any) -> list[str]:
    """``args`` with the command's earlier option spellings (OLD_SPELLINGS) replaced by the current ones."""
    command = next((arg for arg in args if arg in commands), None)
    renames = OLD_SPELLINGS.get(command or "", {})
    current, after_command = [], False
    for arg in args:
        if arg == "--":
            renames = {}
        name, equals, value = arg.partition("=")
        if after_command and name in renames:
            arg = renames[name] + equals + value
        after_command = after_command or arg == command
        current.append(arg)
    return current


class _CommandGroup(TyperGroup):
    """The command group: with ``--json`` anywhere, a usage error (unknown option, a value out of
    range) prints its JSON error object too, before click's message and exit 2."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["uq_flows_json"] = "--json" in args
        return super().parse_args(ctx, with_current_spellings(args, self.commands))

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TyperException as error:  # typer's own click: a usage error is the one with exit code 2
            if getattr(error, "exit_code", None) == EXIT_BAD_INPUT and ctx.meta.get("uq_flows_json"):
                sys.stdout.write(json.dumps({"error": {"kind": ERROR_KINDS[EXIT_BAD_INPUT],
                                                       "message": error.format_message()}}, indent=1) + "\n")
            raise


app = typer.Typer(
    cls=_CommandGroup,
    name="uq-flows",
    help="Uncertainty-driven labelling and distillation of machine-learning interatomic potentials.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# messages stay on one line for scripts; tables get room when stderr is not a terminal
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

# this invocation: --json given, a JSON object already printed, -v, the log file, the command's stdout
_RUN: dict[str, Any] = {"json": False, "emitted": False, "verbose": False, "log_file": None, "stdout": None}

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="torch device of the models (default from settings).")]
LaunchpadOption = Annotated[Path | None, typer.Option(
    "--launchpad", help="FireWorks launchpad YAML (as UQ_FLOWS_LAUNCHPAD_FILE; default: the settings').")]
JobstoreOption = Annotated[Path | None, typer.Option(
    "--jobstore", help="jobflow JobStore YAML (as UQ_FLOWS_JOBSTORE_FILE; default: the settings').")]
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


def fail(message: str, code: int = EXIT_BAD_INPUT, **details: Any) -> NoReturn:
    """Print the error (and with ``--json`` its JSON object, unless the command printed one) and exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    if _RUN["json"] and not _RUN["emitted"]:
        emit({"error": {"kind": ERROR_KINDS.get(code, "error"), "message": message, **details}})
    raise typer.Exit(code)


def emit(payload: dict[str, Any]) -> None:
    from uq_flows.records import jsonable

    stdout = _RUN.get("stdout") or sys.stdout  # the command's stdout, even inside quiet_stdout
    stdout.write(json.dumps(jsonable(payload), indent=1) + "\n")
    stdout.flush()
    _RUN["emitted"] = True


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def need(*modules: str) -> None:
    """Exit 2 naming the extra to install when a module this command needs is missing, before any work."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            fail(f"this command needs {module}, which is not installed: {install_hint(module)}")


def validated(model, options: dict[str, str] | None = None, **values):
    """``model(**values)`` (pydantic settings), or exit 2 naming each bad option (``options``:
    field name → option, default ``--field-name``) and the position of a bad list item."""
    from pydantic import ValidationError

    options = options or {}
    try:
        return model(**values)
    except ValidationError as error:
        problems = []
        for e in error.errors():
            field, *where = e["loc"]
            option = options.get(str(field), "--" + str(field).replace("_", "-"))
            position = f" (value {where[0] + 1})" if where and isinstance(where[0], int) else ""
            problems.append(f"{option}{position}: {e['msg']}")
        fail("; ".join(problems))


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
    if out.is_dir():
        fail(f"--out {out} is a folder: name the output file")


def progress_bar() -> Progress:
    """Bars on stderr with counts, elapsed time and ETA (on a terminal; nothing when piped)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
    )


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"uq-flows {version('uq-flows')}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Tracebacks of internal errors, INFO log lines on the terminal.")] = False,
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Full log (FireWorks, jobflow, pyace); default: the loop folder's for run, else $UQ_FLOWS_HOME/logs/uq-flows.log.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="Level of the log file: DEBUG, INFO, WARNING.")] = "INFO",
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Run ``uq-flows COMMAND --help`` for a command's options."""
    from uq_flows.cli.logs import configure_logging

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level {log_level}: use DEBUG, INFO, WARNING or ERROR")
    _RUN.update(json=False, emitted=False, verbose=verbose, stdout=None, log_given=log_file is not None,
                log_level=log_level.upper())
    _RUN["log_file"] = configure_logging(log_file, log_level.upper(), verbose)


def use_databases(launchpad: Path | None, jobstore: Path | None) -> None:
    """``--launchpad``/``--jobstore``: this command, and workers it starts, use these files, as the
    settings variables would (the campaign collections then need ``UQ_FLOWS_CAMPAIGN_URI``)."""
    import os

    from uq_flows.settings import get_settings

    for option, path, variable in (("--launchpad", launchpad, "UQ_FLOWS_LAUNCHPAD_FILE"),
                                   ("--jobstore", jobstore, "UQ_FLOWS_JOBSTORE_FILE")):
        if path is None:
            continue
        if not path.is_file():
            fail(f"{option} {path}: no such file")
        os.environ[variable] = str(path.resolve())
    get_settings.cache_clear()


def log_file_path() -> Path | None:
    """This invocation's log file (``--log-file``, else ``$UQ_FLOWS_HOME/logs/uq-flows.log``)."""
    return _RUN["log_file"]


def log_to_folder(folder: Path) -> Path | None:
    """Send the rest of this invocation's log to ``folder/uq-flows.log`` (a loop's folder), unless
    ``--log-file`` named one; returns the log file in use."""
    from uq_flows.cli.logs import LOG_NAME, configure_logging

    if not _RUN.get("log_given"):
        _RUN["log_file"] = configure_logging(folder / LOG_NAME, _RUN.get("log_level", "INFO"), _RUN["verbose"])
    return _RUN["log_file"]


def guard(function=None, *, check_settings: bool = True):
    """The exit-code contract: the package's errors → a clear message and exit 2; anything
    unexpected → one line naming the log file (the traceback there, and on the terminal with
    ``-v``) and exit 4; with ``--json`` each as one JSON object on stdout. The settings are
    checked first (``check_settings``): a broken settings file stops a command before any work."""
    if function is None:
        return lambda f: guard(f, check_settings=check_settings)
    import functools
    import logging

    from uq_flows.cli.logs import FILE_ONLY

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        _RUN.update(json=any(kwargs.get(k) for k in ("as_json", "json_out")), emitted=False, stdout=sys.stdout)
        try:
            if check_settings:
                from uq_flows.manager.config import load_settings

                load_settings()
            return function(*args, **kwargs)
        except UqFlowsError as error:
            fail(str(error))
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except ModuleNotFoundError as error:  # an optional part of the package that is not installed
            hint = install_hint(error.name)
            if hint is None:
                raise
            fail(f"this command needs {error.name.split('.')[0]}, which is not installed: {hint}")
        except Exception as error:  # a bug, or something the package does not expect: exit 4, nothing hidden
            logging.getLogger("uq_flows.cli").exception("internal error in %s", function.__name__,
                                                        extra={FILE_ONLY: True})
            where = _RUN["log_file"]
            if _RUN["verbose"]:
                err.print_exception()
            hint = f"; traceback in {where}" if where else ""
            fail(f"internal error: {type(error).__name__}: {error}{hint} (rerun with -v to print it; please report it)",
                 EXIT_INTERNAL, log_file=str(where) if where else None)

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
