"""Member force RMSEs: the inputs of the inverse-RMSE weights w_k (paper 001, eq. 2).

Three sources: the paper's OMat24 table shipped with the package, a user's file, or a
measurement against reference labels (``measure_force_rmse``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from uq_flows.ensemble.predict import MemberPredictions
from uq_flows.errors import InputError
from uq_flows.io import atomic_path
from uq_flows.records import jsonable

_DATA_FILE = "umlip_force_rmse.json"


def paper_force_rmse() -> dict[str, float]:
    """Force RMSE (eV/Å) on OMat24 test per uMLIP, paper 001 Table S1 / Fig. 2a."""
    text = resources.files("uq_flows").joinpath("data", _DATA_FILE).read_text(encoding="utf-8")
    return _validated(json.loads(text)["rmse"], f"packaged {_DATA_FILE}")


def read_rmse_file(path: str | os.PathLike) -> dict[str, float]:
    """Name → force RMSE (eV/Å) from JSON or YAML (a mapping, or ``{"rmse": mapping}``) or CSV (``member,rmse``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"RMSE file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read RMSE file {path}: {exc}") from exc
    if suffix == ".csv":
        return _validated(_read_csv(text, path), str(path))
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"RMSE file {path} is not valid JSON: {exc}") from exc
    elif suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"RMSE file {path} is not valid YAML: {exc}") from exc
    else:
        raise InputError(f"RMSE file {path}: use .json, .yaml, .yml or .csv")
    if isinstance(data, Mapping) and isinstance(data.get("rmse"), Mapping):
        data = data["rmse"]
    if not isinstance(data, Mapping):
        raise InputError(f"RMSE file {path} must hold a mapping member name → RMSE (eV/Å)")
    return _validated(data, str(path))


def _read_csv(text: str, path: Path) -> dict[str, Any]:
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"RMSE file {path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    if "member" not in header or "rmse" not in header:
        raise InputError(f"RMSE file {path}: the first line must be the header 'member,rmse'")
    i_name, i_value = header.index("member"), header.index("rmse")
    values: dict[str, Any] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(i_name, i_value):
            raise InputError(f"RMSE file {path}, line {line}: expected columns member,rmse")
        name, value = row[i_name].strip(), row[i_value].strip()
        if name in values:
            raise InputError(f"RMSE file {path}, line {line}: {name} given twice")
        try:
            values[name] = float(value)
        except ValueError:
            raise InputError(f"RMSE file {path}, line {line}: RMSE {value!r} of {name} is not a number") from None
    return values


def _validated(data: Mapping[str, Any], where: str) -> dict[str, float]:
    if not data:
        raise InputError(f"no member RMSEs in {where}")
    rmse = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where}: member name {name!r} is not a non-empty string")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: RMSE of {name} is {value!r}, not a number (eV/Å)")
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{where}: RMSE of {name} is {value}; an RMSE must be a positive number")
        rmse[name.strip()] = float(value)
    return rmse


def write_rmse_file(path: str | os.PathLike, rmse: Mapping[str, float], meta: Mapping[str, Any] | None = None) -> None:
    """Write ``{"rmse": ..., "meta": ...}`` as JSON, atomically (temporary file + rename)."""
    path = Path(path)
    values = _validated(dict(rmse), "RMSEs to write")
    payload = json.dumps({"rmse": values, "meta": jsonable(dict(meta or {}))}, indent=2, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(payload + "\n", encoding="utf-8")


def measure_force_rmse(predictions: MemberPredictions, reference_forces: np.ndarray) -> tuple[float, int]:
    """Force RMSE (eV/Å, over all components) against reference forces, and structures used.

    Uses the structures the member predicted ("ok") whose reference forces are all finite
    (a missing reference label, NaN, leaves that structure out).
    """
    reference = np.asarray(reference_forces, dtype=float)
    if reference.shape != predictions.forces.shape:
        raise InputError(
            f"reference forces of shape {reference.shape} but {predictions.member} predicted "
            f"{predictions.forces.shape} (same structures, same atom order needed)"
        )
    offsets = predictions.offsets
    squared, components, used = 0.0, 0, 0
    for i, state in enumerate(predictions.status):
        if state != "ok":
            continue
        ref = reference[offsets[i] : offsets[i + 1]]
        if not np.isfinite(ref).all():
            continue
        diff = predictions.forces[offsets[i] : offsets[i + 1]] - ref
        squared += float(np.sum(diff**2))
        components += diff.size
        used += 1
    if used == 0:
        raise InputError(f"no structure predicted by {predictions.member} has finite reference forces")
    if components == 0:
        raise InputError(f"the structures predicted by {predictions.member} have no atoms")
    return math.sqrt(squared / components), used
