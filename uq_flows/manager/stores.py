"""jobflow JobStores: the embedded SQLite default and MongoDB (documents + GridFS data).

Selection (``open_jobstore``), first match wins:

1. ``jobstore_file`` (``UQ_FLOWS_JOBSTORE_FILE``): a jobflow-style YAML, either a jobflow
   config file with ``JOB_STORE:`` or the ``docs_store``/``additional_stores`` mapping itself;
   ``${VAR}`` placeholders are read from the environment;
2. ``db_uri`` (``UQ_FLOWS_DB_URI``): a ``MongoStore`` (collection ``outputs``) and a
   ``GridFSStore`` data store (bucket ``outputs_data``) in the URI's database (or ``db_name``);
3. the embedded default: two ``SqliteStore`` tables (``outputs`` and ``data``) of one SQLite file,
   ``$UQ_FLOWS_HOME/jobstore.sqlite``, indexed on the job uuid, the blob uuid and the job
   metadata the data plane queries by: stage and loop, stage and chunk
   (``uq_flows.manager.sqlite_store``; MontyStore scanned every document).

Every store is a ``ConfiguredJobStore``: it has a ``data`` additional store (the ``@job(data=...)``
arrays of every stage go there), keeps each document of the documents store under
``MAX_DOCUMENT_BYTES`` by moving the largest output fields to the data store, and serialises
as a *reference*: a workflow never carries a URI or password, and each worker rebuilds the
store from its own settings when it runs a job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bson
from jobflow import JobStore
from maggma.core import Store
from maggma.stores import GridFSStore, MongoStore, MontyStore
from monty.json import jsanitize

from uq_flows.manager.config import (
    ConfigFileError,
    ManagerError,
    database_error,
    load_settings,
    mongo_timeouts,
    read_yaml,
    redact,
)
from uq_flows.manager.sqlite_store import SqliteStore
from uq_flows.settings import UqFlowsSettings
from uq_flows.stages import CHUNK_KEY, LOOP_KEY, STAGE_KEY

DATA_STORE = "data"
MAX_DOCUMENT_BYTES = 100_000  # campaign scale: no JobStore document over 100 kB (issue 14)
_TARGET_BYTES = int(0.9 * MAX_DOCUMENT_BYTES)
_BLOB_REFERENCE_BYTES = 150  # what a moved field leaves behind (class, module, blob_uuid, store)
DOCS_COLLECTION = "outputs"
EMBEDDED_FILE = "jobstore.sqlite"
_WORKER_STORES: dict[tuple, ConfiguredJobStore] = {}
DATA_BUCKET = "outputs_data"


def jobstore_mode(settings: UqFlowsSettings | None = None) -> str:
    """``"file"``, ``"uri"`` or ``"embedded"``: which JobStore ``open_jobstore`` builds."""
    settings = settings or load_settings()
    if settings.jobstore_file:
        return "file"
    if settings.db_uri is not None and settings.db_uri.get_secret_value():
        return "uri"
    return "embedded"


def open_jobstore(settings: UqFlowsSettings | None = None, *, check: bool = False) -> ConfiguredJobStore:
    """The JobStore the settings select (see the module docstring); ``check`` pings it."""
    settings = settings or load_settings()
    mode = jobstore_mode(settings)
    timeout = settings.db_timeout_ms
    if mode == "file":
        store = jobstore_from_file(settings.jobstore_file, timeout)
    elif mode == "uri":
        store = jobstore_from_uri(settings.db_uri.get_secret_value(), settings.db_name, timeout)
    else:
        store = embedded_jobstore(settings.home)
    if check:
        check_jobstore(store, timeout)
    return store


def embedded_jobstore(home: Path | str) -> ConfiguredJobStore:
    """Documents and data: two tables of ``home/jobstore.sqlite``, the documents indexed by the metadata queried."""
    path = Path(home).expanduser() / EMBEDDED_FILE
    stage, loop, chunk = (f"metadata.{key}" for key in (STAGE_KEY, LOOP_KEY, CHUNK_KEY))
    docs = SqliteStore(path, DOCS_COLLECTION, key="uuid", searchable_fields=[[stage, loop], [stage, chunk]])
    return ConfiguredJobStore(docs, additional_stores={DATA_STORE: SqliteStore(path, DATA_STORE, key="blob_uuid")})


def jobstore_from_uri(uri: str, database: str = "uq_flows", timeout_ms: int = 5000) -> ConfiguredJobStore:
    """A MongoStore for documents and a GridFSStore for data, both on ``uri``."""
    if not re.match(r"^mongodb(\+srv)?://", uri or ""):
        raise ConfigFileError(f"db_uri must start with mongodb:// or mongodb+srv://, got {redact(uri)!r}")
    database = _uri_database(uri) or database
    kwargs = mongo_timeouts(timeout_ms)
    docs = MongoStore(database, DOCS_COLLECTION, uri=uri, mongoclient_kwargs=dict(kwargs))
    data = GridFSStore(database, DATA_BUCKET, uri=uri, mongoclient_kwargs=dict(kwargs))
    return ConfiguredJobStore(docs, additional_stores={DATA_STORE: data})


def jobstore_from_file(path: Path | str, timeout_ms: int = 5000) -> ConfiguredJobStore:
    """The JobStore of a jobflow-style YAML file (``JOB_STORE:`` or ``docs_store:`` at the top)."""
    spec = read_yaml(path, "JobStore file")
    spec = spec.get("JOB_STORE", spec)
    hint = "give docs_store and additional_stores.data as in workflows/fireworks/README.md"
    if not isinstance(spec, dict) or not isinstance(spec.get("docs_store"), dict):
        raise ConfigFileError(f"JobStore file {path} has no docs_store mapping: {hint}")
    additional = spec.get("additional_stores") or {}
    if not isinstance(additional, dict) or not isinstance(additional.get(DATA_STORE), dict):
        raise ConfigFileError(f"JobStore file {path} has no additional_stores.{DATA_STORE} (arrays go there): {hint}")
    for store_spec in (spec["docs_store"], *additional.values()):
        if not isinstance(store_spec, dict) or not isinstance(store_spec.get("type"), str):
            raise ConfigFileError(f"JobStore file {path}: every store needs a 'type' (e.g. MongoStore, GridFSStore)")
    try:
        base = JobStore.from_dict_spec(spec)
    except Exception as error:  # unknown store type, bad argument names, ...
        raise ConfigFileError(f"JobStore file {path} cannot be used: {redact(str(error)).splitlines()[0]}") from None
    for store in (base.docs_store, *base.additional_stores.values()):
        if isinstance(getattr(store, "mongoclient_kwargs", None), dict) and not isinstance(store, MontyStore):
            store.mongoclient_kwargs = mongo_timeouts(timeout_ms, store.mongoclient_kwargs)
    return ConfiguredJobStore(base.docs_store, base.additional_stores, save=base.save, load=base.load)


def _uri_database(uri: str) -> str | None:
    match = re.match(r"^mongodb(?:\+srv)?://[^/]*/([^?]+)", uri)
    return match.group(1) if match else None


def describe_store(store: Store) -> dict[str, Any]:
    """Type and location of one maggma store, credentials removed."""
    info: dict[str, Any] = {"type": type(store).__name__}
    if isinstance(store, SqliteStore):
        info.update(path=store.database_path, collection=store.collection_name)
        return info
    if isinstance(store, MontyStore):
        info.update(path=store.database_path, database=store.database_name, collection=store.collection_name)
        return info
    if getattr(store, "uri", None):
        info["uri"] = redact(store.uri)
    elif hasattr(store, "host"):
        info.update(host=store.host, port=getattr(store, "port", None))
        if getattr(store, "username", ""):
            info["username"] = "***"
    for attr, key in (("database", "database"), ("collection_name", "collection")):
        if getattr(store, attr, None):
            info[key] = getattr(store, attr)
    return info


def describe_jobstore(store: JobStore) -> dict[str, Any]:
    """Documents and additional stores of ``store`` as printable mappings (no secrets)."""
    return {
        "docs": describe_store(store.docs_store),
        **{name: describe_store(s) for name, s in store.additional_stores.items()},
    }


def check_jobstore(store: JobStore, timeout_ms: int = 5000) -> None:
    """Connect to every store of ``store`` and query it; ``DatabaseUnreachable`` if one fails."""
    for name, part in (("documents", store.docs_store), *store.additional_stores.items()):
        where = describe_store(part)
        location = where.get("uri") or where.get("path") or f"{where.get('host')}:{where.get('port')}"
        try:
            part.connect()
            part.count({"_uq_flows_ping": 1})
        except Exception as error:
            raise database_error(f"JobStore {name} store ({where['type']})", str(location), timeout_ms, error) from None


class _StoreReference:
    """What a workflow carries instead of a JobStore: 'use the worker's configured store'."""

    def as_dict(self) -> dict[str, Any]:
        return ConfiguredJobStore.reference_dict()


class ConfiguredJobStore(JobStore):
    """A JobStore that serialises as a reference and keeps documents under 100 kB.

    ``as_dict`` gives only ``{"@module", "@class"}``; ``from_dict`` (run by FireWorks on the
    worker) returns ``open_jobstore()`` of the worker's settings. Documents larger than
    ``MAX_DOCUMENT_BYTES`` have their largest output fields moved to the ``data`` store, where
    jobflow resolves them transparently when outputs are loaded.
    """

    @staticmethod
    def reference_dict() -> dict[str, Any]:
        return {"@module": __name__, "@class": "ConfiguredJobStore", "@version": None}

    @classmethod
    def reference(cls) -> _StoreReference:
        """The object to pass as ``store`` to jobflow's ``flow_to_workflow``."""
        return _StoreReference()

    def as_dict(self) -> dict[str, Any]:
        return self.reference_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfiguredJobStore:
        """The worker's store, one per process and configuration (a worker runs many jobs)."""
        settings = load_settings()
        key = (
            jobstore_mode(settings), str(settings.jobstore_file), str(Path(settings.home).expanduser()),
            hash(settings.db_uri.get_secret_value()) if settings.db_uri is not None else None, settings.db_name,
        )
        if key not in _WORKER_STORES:
            _WORKER_STORES[key] = open_jobstore(settings)
        return _WORKER_STORES[key]

    def update(self, docs, key=None, save=None):
        """jobflow's update, with oversize outputs redirected to the data store."""
        if save in (None, True):
            save = self.save
        for doc in docs if isinstance(docs, list) else [docs]:
            super().update(doc, key=key, save=self._fit_save(doc, save))

    def _fit_save(self, doc, save):
        plain = jsanitize(doc, strict=True, allow_bson=True)
        size = _bson_size(plain)
        if size <= _TARGET_BYTES:
            return save
        output = plain.get("output")
        rest = size - _bson_size({"output": output})
        if rest > _TARGET_BYTES:
            raise ManagerError(f"job {plain.get('name')!r}: its document without output is {rest} bytes, "
                               f"over {MAX_DOCUMENT_BYTES}")
        if DATA_STORE not in self.additional_stores:
            raise ManagerError(f"job {plain.get('name')!r}: output of {size} bytes needs a '{DATA_STORE}' store")
        moves: list[list[str]] = []
        if isinstance(output, dict):
            remaining = size
            fields = sorted(
                ((_bson_size({k: v}), k) for k, v in output.items() if not k.startswith("@")), reverse=True
            )
            for field_size, name in fields:
                if remaining <= _TARGET_BYTES:
                    break
                moves.append(["output", name])
                remaining -= field_size - _BLOB_REFERENCE_BYTES
            if remaining > _TARGET_BYTES:
                moves = [["output"]]
        else:
            moves = [["output"]]
        merged = {name: _as_locations(keys) for name, keys in (save or {}).items()}
        merged.setdefault(DATA_STORE, []).extend(moves)
        return merged


def _as_locations(keys) -> list:
    if keys is True:
        return ["output"]
    if keys is False or keys is None:
        return []
    return list(keys) if isinstance(keys, (list, tuple)) else [keys]


def _bson_size(document: dict) -> int:
    try:
        return len(bson.encode(document))
    except Exception:  # keys or values BSON cannot hold: estimate from their text
        return len(str(document).encode())
