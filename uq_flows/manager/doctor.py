"""``uq-flows doctor`` checks and the preflight run before anything is submitted.

Each check is a row ``{"check", "status": ok|warn|fail, "detail", "hint"}``: settings,
Python environments, the offline uMLIP members (package and weights present), executables
(CP2K, VASP, pacemaker) and the launchpad and JobStore databases (credentials redacted).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uq_flows.errors import install_hint
from uq_flows.programs import find_program
from uq_flows.manager.config import ManagerError, load_settings, settings_file_in_use
from uq_flows.settings import UqFlowsSettings

OK, WARN, FAIL = "ok", "warn", "fail"
EXECUTABLES = ("cp2k", "vasp", "pacemaker")
_HINTS = {
    "cp2k": "apt-get install cp2k cp2k-data, or set UQ_FLOWS_CP2K_COMMAND",
    "vasp": "set atomate2's VASP_CMD (ATOMATE2_VASP_CMD) to your VASP executable",
    "pacemaker": "make fit-env (builds .venv-fit), or set UQ_FLOWS_PACEMAKER_COMMAND",
}


@dataclass
class Check:
    check: str
    status: str
    detail: str
    hint: str | None = None


def executable_command(name: str, settings: UqFlowsSettings | None = None) -> str:
    """The configured command line of ``cp2k``, ``vasp`` or ``pacemaker``."""
    settings = settings or load_settings()
    if name == "cp2k":
        return settings.cp2k_command
    if name == "pacemaker":
        return settings.pacemaker_command
    if name == "vasp":
        from atomate2 import SETTINGS

        return str(SETTINGS.VASP_CMD)
    raise ManagerError(f"unknown executable {name!r}; known: {', '.join(EXECUTABLES)}")


def require_executables(names: Iterable[str], settings: UqFlowsSettings | None = None) -> dict[str, str]:
    """Paths of the named executables; a ``ManagerError`` listing every missing one and its fix."""
    settings = settings or load_settings()
    found, missing = {}, []
    for name in names:
        command = executable_command(name, settings)
        path = find_program(command)
        if path:
            found[name] = path
        else:
            missing.append(f"{name} ({command!r} not found; {_HINTS[name]})")
    if missing:
        raise ManagerError("missing executables: " + "; ".join(missing))
    return found


def preflight(*, executables: Iterable[str] = (), database: bool = True):
    """Settings, executables and databases checked before a submit: ``(settings, launchpad, jobstore)``.

    Raises a ``UqFlowsError`` with a clear message (corrupt config, missing executable,
    unreachable database) so nothing is submitted.
    """
    from uq_flows.manager.launchpad import open_launchpad
    from uq_flows.manager.stores import open_jobstore

    settings = load_settings()
    require_executables(executables, settings)
    if not database:
        return settings, None, None
    lp = open_launchpad(settings, check=True)
    store = open_jobstore(settings, check=True)
    open_campaign(settings).close()
    return settings, lp, store


def run_doctor(
    *, database: bool = True, require: Iterable[str] = (), load_models: bool = False
) -> dict[str, Any]:
    """Every check as a row; ``ok`` is False when one failed. ``require`` turns missing executables into failures."""
    rows: list[Check] = []
    try:
        settings = load_settings()
    except ManagerError as error:
        rows.append(Check("settings", FAIL, str(error), f"fix or move the settings file {settings_file_in_use()}"))
        return _result(rows)
    source = settings.config_file or Path(settings.home).expanduser() / "config.yaml"
    rows.append(Check("settings", OK, f"home {Path(settings.home).expanduser()}; config {source}"
                      f"{'' if Path(source).expanduser().exists() else ' (absent: defaults)'}"))
    rows += _environments()
    rows.append(_device(settings.device))
    rows += _members(load_models)
    required = set(require)
    unknown = required - set(EXECUTABLES)
    if unknown:
        rows.append(Check("executables", FAIL, f"unknown names {sorted(unknown)}", f"choose from {', '.join(EXECUTABLES)}"))
    for name in EXECUTABLES:
        try:
            command = executable_command(name, settings)
        except Exception as error:  # atomate2 settings can be broken too
            rows.append(Check(f"executable {name}", FAIL, f"cannot read its command: {error}", _HINTS[name]))
            continue
        path = find_program(command)
        if path:
            rows.append(Check(f"executable {name}", OK, f"{command!r} -> {path}"))
        else:
            status = FAIL if name in required else WARN
            rows.append(Check(f"executable {name}", status, f"{command!r} not found", _HINTS[name]))
    if database:
        rows += _databases(settings)
    return _result(rows)


def _device(device: str) -> Check:
    """The torch device of the settings can be used here (a CPU-only torch cannot use cuda)."""
    try:
        import torch
    except ImportError:
        return Check("device", WARN, f"{device}: torch is not installed", "pip install 'uq-flows[umlip]'")
    if device.startswith("cuda"):
        if torch.version.cuda is None:
            return Check("device", FAIL, f"{device}: this torch {torch.__version__} is a CPU-only build",
                         "install a CUDA torch (make setup TORCH_INDEX=https://download.pytorch.org/whl/cu124) "
                         "or set UQ_FLOWS_DEVICE=cpu")
        if not torch.cuda.is_available():
            return Check("device", FAIL, f"{device}: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU",
                         "run on a GPU node, or set UQ_FLOWS_DEVICE=cpu")
        return Check("device", OK, f"{device}: {torch.cuda.get_device_name(0)}")
    if device != "cpu":
        try:
            torch.empty(1, device=device)
        except Exception as error:
            return Check("device", FAIL, f"{device}: {error}", "set UQ_FLOWS_DEVICE=cpu or cuda")
    return Check("device", OK, f"{device} (torch {torch.__version__})")


def _result(rows: list[Check]) -> dict[str, Any]:
    counts = {status: sum(r.status == status for r in rows) for status in (OK, WARN, FAIL)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [asdict(r) for r in rows]}


def _environments() -> list[Check]:
    from importlib import metadata

    rows = []
    version = ".".join(map(str, sys.version_info[:3]))
    rows.append(Check("python", OK if sys.version_info[:2] == (3, 11) else WARN, f"{version} at {sys.executable}",
                      None if sys.version_info[:2] == (3, 11) else "uq-flows is built and tested on Python 3.11"))
    versions, missing = [], []
    for dist in ("jobflow", "fireworks", "maggma", "pymongo", "atomate2", "montydb", "mongomock-persistence"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            missing.append(dist)
    rows.append(Check("workflow packages", FAIL if missing else OK,
                      "; ".join(versions) + (f"; missing: {', '.join(missing)}" if missing else ""),
                      "pip install 'uq-flows[workflow,vasp]'" if missing else None))
    return rows


def _members(load_models: bool) -> list[Check]:
    from uq_flows.ensemble.members import BUILTIN_MEMBERS

    rows = []
    for spec in BUILTIN_MEMBERS.values():
        package = "chgnet" if spec.kind == "chgnet" else "sevenn"
        try:
            found = importlib.util.find_spec(package)
        except ImportError:  # a parent package that cannot be imported
            found = None
        if found is None or not found.submodule_search_locations:
            rows.append(Check(f"member {spec.name}", FAIL, f"package {package} is not installed", install_hint(package)))
            continue
        root = Path(next(iter(found.submodule_search_locations)))
        weights = _weights(root, spec.kind, spec.model)
        if not weights:
            rows.append(Check(f"member {spec.name}", FAIL, f"no weights for {spec.model} under {root}",
                              f"reinstall {package} (its wheel ships the weights)"))
            continue
        detail = f"{spec.version}: {weights.name}"
        if load_models:
            try:
                from uq_flows.ensemble.members import load_calculator

                load_calculator(spec, "cpu")
                detail += " (loaded)"
            except Exception as error:
                rows.append(Check(f"member {spec.name}", FAIL, f"cannot be loaded: {error}", "see `uq-flows score --help`"))
                continue
        rows.append(Check(f"member {spec.name}", OK, detail))
    return rows


def _weights(root: Path, kind: str, model: str) -> Path | None:
    if kind == "chgnet":
        files = sorted((root / "pretrained" / model).glob("*.pth.tar"))
    else:  # sevenn: 7net-0_11July2024 -> SevenNet_0__11Jul2024, 7net-l3i5 -> SevenNet_l3i5
        key = model.lower().replace("7net-", "").replace("_", "").replace("-", "").replace("july", "jul")
        files = [p for p in sorted((root / "pretrained_potentials").glob("*/*.pth"))
                 if p.parent.name.lower().replace("sevennet_", "").replace("_", "") == key]
    return files[0] if files else None


def _databases(settings: UqFlowsSettings) -> list[Check]:
    from uq_flows.manager.launchpad import (
        EMBEDDED_FILE,
        describe_launchpad,
        launchpad_mode,
        open_launchpad,
    )
    from uq_flows.manager.stores import EMBEDDED_FILE as EMBEDDED_JOBSTORE, describe_jobstore, jobstore_mode, open_jobstore

    rows = []
    mode = launchpad_mode(settings)
    try:
        if mode == "embedded":  # do not take the single-process lock just to look
            path = Path(settings.home).expanduser() / EMBEDDED_FILE
            from bson import json_util

            detail = f"embedded {path}"
            if path.exists() and path.read_text().strip():
                json_util.loads(path.read_text())
            else:
                detail += " (created on first use)"
            rows.append(Check("launchpad", OK, detail))
        else:
            lp = open_launchpad(settings, check=True)
            info = describe_launchpad(lp)
            rows.append(Check("launchpad", OK, f"{mode}: " + ", ".join(f"{k} {v}" for k, v in info.items())))
    except Exception as error:
        rows.append(Check("launchpad", FAIL, _short(error), "check launchpad_file / db_uri and that the server runs"))
    try:
        path = Path(settings.home).expanduser() / EMBEDDED_JOBSTORE
        if jobstore_mode(settings) == "embedded" and not path.exists():
            rows.append(Check("jobstore", OK, f"embedded SQLite {path} (created on first use)"))
        else:
            store = open_jobstore(settings, check=True)
            rows.append(Check("jobstore", OK, f"{jobstore_mode(settings)}: {format_jobstore(describe_jobstore(store))}"))
            store.close()
    except Exception as error:
        rows.append(Check("jobstore", FAIL, _short(error), "check jobstore_file / db_uri and that the server runs"))
    try:
        with open_campaign(settings) as campaign:
            info = campaign.database.describe()
        rows.append(Check("campaign", OK, ", ".join(f"{k} {v}" for k, v in info.items())))
    except Exception as error:
        rows.append(Check("campaign", FAIL, _short(error), "set campaign_uri or db_uri to a server every worker reaches"))
    return rows


def open_campaign(settings: UqFlowsSettings):
    """The campaign database, reachable (a server is pinged): ``CampaignDatabaseError`` otherwise."""
    from uq_flows.campaign import Campaign
    from uq_flows.campaign.store import CampaignDatabaseError

    try:
        return Campaign.open(settings)
    except CampaignDatabaseError:
        raise
    except Exception as error:
        raise CampaignDatabaseError(f"cannot reach the campaign database: {_short(error)}") from None


def format_jobstore(info: dict[str, Any]) -> str:
    """One line per store of ``describe_jobstore``: ``docs MongoStore host:port/db/coll; data ...``."""
    parts = []
    for name, store in info.items():
        where = store.get("uri") or store.get("path") or f"{store.get('host')}:{store.get('port')}"
        parts.append(f"{name} {store['type']} {where} {store.get('database', '')}/{store.get('collection', '')}")
    return "; ".join(parts)


def _short(error: BaseException) -> str:
    from uq_flows.manager.config import redact

    return redact(str(error)).splitlines()[0] if str(error) else type(error).__name__
