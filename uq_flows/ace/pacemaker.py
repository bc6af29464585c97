"""Nonlinear ACE fitted by the ``pacemaker`` executable of the fit environment (papers 000, 001).

pacemaker needs tensorpotential and TensorFlow, which need numpy < 2.4 and pandas < 3, so it
runs from its own virtual environment (``make fit-env``) as an external program, like
VASP: the command comes from the setting ``pacemaker_command`` (``UQ_FLOWS_PACEMAKER_COMMAND``).
The fit runs in a work folder holding ``input.yaml``, the training pickle, pacemaker's
``log.txt`` and its ``output_potential.yaml``.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from uq_flows.ace.basis import AceFitOptions, potential_section
from uq_flows.ace.data import TrainingSet, write_fit_frame
from uq_flows.errors import UqFlowsError

TRAINING_FILE = "training.pkl.gzip"
OUTPUT_FILE = "output_potential.yaml"
LOG_TAIL_LINES = 25
SETTING_HINT = "set UQ_FLOWS_PACEMAKER_COMMAND (setting pacemaker_command) or build the fit environment with `make fit-env`"


class PacemakerError(UqFlowsError):
    """pacemaker is missing, failed or did not finish."""


def pacemaker_command(command: str | None = None) -> list[str]:
    """The pacemaker command as argv, checked to exist (``command`` defaults to the setting)."""
    from uq_flows.settings import get_settings

    text = command if command is not None else get_settings().pacemaker_command
    argv = shlex.split(text)
    if not argv:
        raise PacemakerError(f"pacemaker_command is empty; {SETTING_HINT}")
    executable = argv[0]
    found = shutil.which(executable) if os.sep not in executable else (executable if os.access(executable, os.X_OK) else None)
    if found is None:
        raise PacemakerError(f"pacemaker executable {executable!r} not found (pacemaker_command={text!r}); {SETTING_HINT}")
    return [found, *argv[1:]]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pacemaker_input(elements: list[str], options: AceFitOptions, seed: int, data_file: str = TRAINING_FILE) -> dict[str, Any]:
    """pacemaker's input.yaml as a dict (paper-001 defaults; ``options.pacemaker_input`` merged on top).

    The training pickle carries ``energy_corrected`` = E − Σ ē, so no ``reference_energy`` is
    given to pacemaker. pacemaker seeds numpy with ``seed`` but starts from zero coefficients,
    so without ``coefs_init: random`` (``options.use_random_init()``) every seed gives the same
    potential; the random start (coefficients with standard deviation 10⁻⁴) makes members differ.
    """
    fit: dict[str, Any] = {
        "loss": {"kappa": options.kappa, "L1_coeffs": options.l1, "L2_coeffs": options.l2},
        "optimizer": options.optimizer,
        "maxiter": options.max_steps,
    }
    if options.repulsion is not None:
        fit["repulsion"] = options.repulsion
    potential = potential_section(elements, options)
    if options.use_random_init():
        # pacemaker starts from zero coefficients by default, and then every seed gives the same fit
        for block in potential["functions"].values():
            if isinstance(block, dict):
                block["coefs_init"] = "random"
    config = {
        "cutoff": options.cutoff,
        "seed": seed,
        "metadata": {"origin": "uq-flows"},
        "potential": potential,
        "data": {"filename": data_file},
        "fit": fit,
        "backend": {"evaluator": "tensorpot", "batch_size": 100, "display_step": 50},
    }
    return deep_merge(config, options.pacemaker_input)


def run_pacemaker(
    workdir: str | Path,
    training: TrainingSet,
    reference: dict[str, float],
    options: AceFitOptions,
    seed: int,
    elements: list[str] | None = None,
    command: str | None = None,
    timeout: float | None = None,
    threads: int | None = None,
) -> Path:
    """Fit in ``workdir`` and return the path of pacemaker's ``output_potential.yaml``."""
    from uq_flows.settings import get_settings

    settings = get_settings()
    argv = pacemaker_command(command)
    timeout = timeout if timeout is not None else settings.pacemaker_timeout
    threads = threads if threads is not None else settings.fit_threads
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_fit_frame(workdir / TRAINING_FILE, training, reference)
    config = pacemaker_input(elements or training.elements, options, seed)
    (workdir / "input.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    output = workdir / OUTPUT_FILE
    output.unlink(missing_ok=True)
    env = _environment(threads, options.gpu)
    stdout_path = workdir / "pacemaker.stdout"
    try:
        with stdout_path.open("w") as stdout:
            completed = subprocess.run(
                [*argv, "input.yaml", "--no-predict"], cwd=workdir, env=env, stdout=stdout,
                stderr=subprocess.STDOUT, timeout=timeout, check=False,
            )
    except subprocess.TimeoutExpired:
        raise PacemakerError(f"pacemaker did not finish within {timeout:g} s (setting pacemaker_timeout); work folder {workdir}") from None
    except OSError as error:
        raise PacemakerError(f"cannot run pacemaker {argv[0]!r}: {error}; {SETTING_HINT}") from error
    if completed.returncode != 0 or not output.exists():
        tail = _tail(stdout_path)
        hint = ""
        if "tensorpotential" in tail or "No module named 'tensorflow'" in tail:
            hint = f" ({argv[0]} lacks tensorpotential/TensorFlow: {SETTING_HINT})"
        raise PacemakerError(
            f"pacemaker failed with exit code {completed.returncode}{hint}; work folder {workdir}; last lines:\n{tail}"
        )
    return output


def reported_metrics(log_path: str | Path) -> dict[str, float] | None:
    """pacemaker's own last train RMSEs from ``log.txt`` (eV/atom, eV/Å), for cross-checking only."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for k in range(len(lines) - 1, 0, -1):
        if lines[k].strip().startswith("RMSE:") and "Energy/at" in lines[k - 1]:
            try:
                values = [float(v) for v in lines[k].split()[1:]]
            except ValueError:
                return None
            if len(values) >= 3:
                return {"energy_rmse_per_atom": values[0] / 1000, "force_rmse": values[2] / 1000}
    return None


def _environment(threads: int, gpu: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg",
    })
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
