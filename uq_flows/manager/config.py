"""Errors, settings loading, YAML files with ``${VAR}`` placeholders, and redaction.

Credentials live in config files or the environment. Files may say ``password: ${DB_PASSWORD}``
and the value is read from the environment when the file is loaded; nothing here ever puts a
password or a URI's user part into a message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from uq_flows.errors import UqFlowsError
from uq_flows.settings import DEFAULT_HOME, UqFlowsSettings, get_settings


class ManagerError(UqFlowsError):
    """A workflow-manager problem the user can fix (configuration, database, executables)."""


class ConfigFileError(ManagerError):
    """A settings, launchpad or JobStore file is missing, unreadable or malformed."""


class DatabaseUnreachable(ManagerError):
    """The launchpad or JobStore database does not answer within the timeout."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URI_USER = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"(?P<key>password|pwd|secret|token)=[^&\s]*", re.IGNORECASE)


def settings_file_in_use() -> Path:
    """The settings file the environment selects (``UQ_FLOWS_CONFIG_FILE``, else ``$UQ_FLOWS_HOME/config.yaml``)."""
    named = os.environ.get("UQ_FLOWS_CONFIG_FILE")
    home = os.environ.get("UQ_FLOWS_HOME") or str(DEFAULT_HOME)
    return Path(named or Path(home) / "config.yaml").expanduser()


def load_settings() -> UqFlowsSettings:
    """The process settings; a broken settings file or variable becomes a ``ConfigFileError`` naming it."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except yaml.YAMLError as error:
        raise ConfigFileError(f"settings file {settings_file_in_use()} is not valid YAML: {_yaml_where(error)}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors())
        raise ConfigFileError(f"invalid uq-flows settings ({problems}) in {settings_file_in_use()} or the UQ_FLOWS_* "
                              "variables") from None
    except (ValueError, TypeError) as error:
        raise ConfigFileError(f"invalid uq-flows settings: {error}") from None


def _yaml_where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def expand_env(value: Any, source: str) -> Any:
    """Replace ``${VAR}`` in every string of ``value`` by the environment variable's value."""
    if isinstance(value, dict):
        return {k: expand_env(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, source) for v in value]
    if isinstance(value, str):

        def lookup(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigFileError(f"{source} refers to ${{{name}}}, but the environment variable {name} is not set")
            return os.environ[name]

        expanded = _VAR.sub(lookup, value)
        if expanded != value and _VAR.fullmatch(value) and expanded.isdigit():
            return int(expanded)  # port: ${DB_PORT}
        return expanded
    return value


def read_yaml(path: Path | str, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path`` with ``${VAR}`` expanded; clear errors for every failure."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigFileError(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{what} {path} is not valid YAML: {_yaml_where(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{what} {path} cannot be read: {error.__class__.__name__}") from None
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{what} {path} must hold a mapping, not {type(loaded).__name__}")
    return expand_env(loaded, f"{what} {path}")


def redact(text: str) -> str:
    """``text`` with URI user info and ``password=`` parameters masked."""
    text = _URI_USER.sub(lambda m: m.group("scheme") + "***@", str(text))
    return _SECRET_PARAM.sub(lambda m: m.group("key") + "=***", text)


def redacted(mapping: dict[str, Any]) -> dict[str, Any]:
    """A copy of a connection mapping safe to print: secrets masked, URIs redacted."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out[key] = redacted(value)
        elif key.lower() in ("password", "username") and value:
            out[key] = "***"
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def mongo_timeouts(timeout_ms: int, kwargs: dict | None = None) -> dict[str, Any]:
    """pymongo client kwargs with short server-selection and connect timeouts (user values win)."""
    merged = {"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms}
    merged.update(kwargs or {})
    return merged


def database_error(what: str, where: str, timeout_ms: int, error: BaseException) -> DatabaseUnreachable:
    """A ``DatabaseUnreachable`` naming the database (redacted) and the first line of the cause."""
    cause = redact(str(error)).splitlines()[0] if str(error) else type(error).__name__
    for noise in (" (configured timeouts", ", Timeout:", ", full error:"):  # pymongo's long tails
        cause = cause.split(noise, 1)[0]
    cause = cause[:240]
    return DatabaseUnreachable(
        f"cannot reach the {what} at {redact(where)} (timeout {timeout_ms / 1000:g} s): {cause}. "
        "Check that the server runs and the address and credentials in your config are right "
        "(`uq-flows doctor` checks them)."
    )
