"""FireWorks launchpads: the embedded mongomock-persistence file and MongoDB servers.

Selection (``open_launchpad``), first match wins:

1. ``launchpad_file`` (``UQ_FLOWS_LAUNCHPAD_FILE``): a FireWorks ``my_launchpad.yaml``;
   ``${VAR}`` placeholders are read from the environment;
2. ``db_uri`` (``UQ_FLOWS_DB_URI``): FireWorks collections in the URI's database (or ``db_name``);
3. the embedded default: ``$UQ_FLOWS_HOME/launchpad.json`` through mongomock-persistence.

The embedded launchpad is single-process. FireWorks' own switch (``MONGOMOCK_SERVERSTORE_FILE``
read once when fireworks is imported) turns *every* MongoClient of the process into mongomock
and makes any other mongomock client (maggma's ``MemoryStore``) load and overwrite the same
file at exit. So it is not used: the embedded LaunchPad gets an explicit mongomock-persistence
client for its file whatever the import order, the environment variable is left alone (a
conflicting value is an error), a lock file keeps a second process out, and the state is
written atomically by ``save_launchpad`` (after every rocket) and at clean exit, instead of
by mongomock-persistence's non-atomic finaliser.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uq_flows.manager.config import (
    ConfigFileError,
    ManagerError,
    database_error,
    load_settings,
    mongo_timeouts,
    read_yaml,
    redact,
)
from uq_flows.settings import UqFlowsSettings

if TYPE_CHECKING:
    from fireworks import LaunchPad

EMBEDDED_FILE = "launchpad.json"
LOCK_FILE = "launchpad.lock"
_EMBEDDED: dict[str, LaunchPad] = {}
_LOCKS: dict[str, int] = {}
_CONSTRUCT = threading.Lock()


def launchpad_mode(settings: UqFlowsSettings | None = None) -> str:
    """``"file"``, ``"uri"`` or ``"embedded"``: which launchpad ``open_launchpad`` builds."""
    settings = settings or load_settings()
    if settings.launchpad_file:
        return "file"
    if settings.db_uri is not None and settings.db_uri.get_secret_value():
        return "uri"
    return "embedded"


def open_launchpad(
    settings: UqFlowsSettings | None = None, *, check: bool = True, log_level: str = "WARNING"
) -> LaunchPad:
    """The launchpad the settings select; ``check`` queries it (``DatabaseUnreachable`` fast)."""
    settings = settings or load_settings()
    mode = launchpad_mode(settings)
    if mode == "embedded":
        return embedded_launchpad(settings.home, log_level=log_level)
    if os.environ.get("MONGOMOCK_SERVERSTORE_FILE"):
        raise ConfigFileError(
            "MONGOMOCK_SERVERSTORE_FILE is set: FireWorks would silently use that mongomock file instead "
            "of the database server; unset it"
        )
    if mode == "file":
        lp = launchpad_from_file(settings.launchpad_file, settings.db_timeout_ms, log_level)
    else:
        lp = launchpad_from_uri(settings.db_uri.get_secret_value(), settings.db_name, settings.db_timeout_ms, log_level)
    if check:
        check_launchpad(lp, settings.db_timeout_ms)
        initialise(lp)
    return lp


def initialise(lp: LaunchPad) -> bool:
    """Reset a launchpad whose database is brand new (no fw id counter, no fireworks, no workflows).

    FireWorks needs its id counter before the first ``add_wf``; a database holding anything
    is never touched. True if it was initialised.
    """
    if lp.fw_id_assigner.count_documents({}) or lp.fireworks.count_documents({}) or lp.workflows.count_documents({}):
        return False
    lp.reset("", require_password=False)
    save_launchpad(lp)
    return True


def launchpad_from_file(path: Path | str, timeout_ms: int = 5000, log_level: str = "WARNING") -> LaunchPad:
    """A LaunchPad from a FireWorks launchpad YAML (``${VAR}`` expanded), with short timeouts."""
    spec = read_yaml(path, "launchpad file")
    if not spec.get("host"):
        raise ConfigFileError(f"launchpad file {path} has no 'host' (a host name, or a URI with uri_mode: true)")
    port = spec.get("port")
    if isinstance(port, str):
        if not port.isdigit():
            raise ConfigFileError(f"launchpad file {path}: port must be a number")
        spec["port"] = int(port)
    spec.setdefault("strm_lvl", log_level)
    spec["mongoclient_kwargs"] = mongo_timeouts(timeout_ms, spec.get("mongoclient_kwargs"))
    return _build(lambda lp_cls: lp_cls.from_dict(spec), f"launchpad file {path}")


def launchpad_from_uri(uri: str, database: str = "uq_flows", timeout_ms: int = 5000, log_level: str = "WARNING") -> LaunchPad:
    """A LaunchPad on a MongoDB URI (database from the URI's path, else ``database``)."""
    from uq_flows.manager.stores import _uri_database

    if not str(uri).startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigFileError(f"db_uri must start with mongodb:// or mongodb+srv://, got {redact(uri)!r}")
    name = _uri_database(uri) or database
    return _build(
        lambda lp_cls: lp_cls(host=uri, name=name, uri_mode=True, strm_lvl=log_level, mongoclient_kwargs=mongo_timeouts(timeout_ms)),
        "db_uri",
    )


def _build(factory, source: str) -> LaunchPad:
    from fireworks import LaunchPad

    try:
        return factory(LaunchPad)
    except ManagerError:
        raise
    except Exception as error:  # pymongo ConfigurationError, InvalidURI, TypeError...
        raise ConfigFileError(f"{source}: cannot configure the launchpad: {redact(str(error)).splitlines()[0]}") from None


def check_launchpad(lp: LaunchPad, timeout_ms: int = 5000) -> None:
    """Query the launchpad's database (needs a reachable server and working credentials)."""
    if is_embedded(lp):
        return
    try:
        lp.fireworks.find_one({}, {"_id": 1})
    except Exception as error:
        where = lp.host if lp.uri_mode else f"{lp.host}:{lp.port}/{lp.name}"
        raise database_error("launchpad database", where, timeout_ms, error) from None


def describe_launchpad(lp: LaunchPad) -> dict[str, Any]:
    """Kind and address of ``lp`` with credentials removed."""
    if is_embedded(lp):
        return {"kind": "embedded", "file": str(embedded_file_of(lp))}
    info: dict[str, Any] = {"kind": "mongodb", "database": lp.name}
    if lp.uri_mode:
        info["uri"] = redact(lp.host)
    else:
        info.update(host=lp.host, port=lp.port)
        if lp.username:
            info["username"] = "***"
    return info


# --------------------------------------------------------------------------- embedded


def embedded_launchpad(home: Path | str, log_level: str = "WARNING") -> LaunchPad:
    """The process's LaunchPad on ``home/launchpad.json`` (created with ``{}`` if missing)."""
    home = Path(home).expanduser().resolve()
    path = home / EMBEDDED_FILE
    key = str(path)
    if key in _EMBEDDED:
        return _EMBEDDED[key]
    env = os.environ.get("MONGOMOCK_SERVERSTORE_FILE")
    if env and Path(env).expanduser().resolve() != path:
        raise ConfigFileError(
            f"MONGOMOCK_SERVERSTORE_FILE={env} but the embedded launchpad of UQ_FLOWS_HOME is {path}; "
            "unset the variable or point UQ_FLOWS_HOME at its folder"
        )
    home.mkdir(parents=True, exist_ok=True)
    _acquire_lock(home)
    try:
        if not path.exists() or not path.read_text().strip():
            path.write_text("{}")
        client = _persistent_client(path)
        lp = _launchpad_on_client(client, log_level)
    except BaseException:
        _release_lock(home)
        raise
    lp.ping_launch = _quiet_ping(lp.ping_launch)
    _EMBEDDED[key] = lp
    atexit.register(_save_at_exit, lp)
    initialise(lp)
    return lp


def _quiet_ping(ping):
    """FireWorks' ping thread pings once more after a rocket finishes; on the embedded launchpad
    (mongomock, not thread-safe) that ping can miss the launch while the rocket completes it, and
    its traceback would reach the user's terminal. A launch that is not there is not pinged."""

    def ping_launch(launch_id, *args, **kwargs):
        try:
            return ping(launch_id, *args, **kwargs)
        except ValueError as error:
            if "No Launch exists" not in str(error):
                raise
            return None

    return ping_launch


def _persistent_client(path: Path):
    from bson import json_util

    try:
        json_util.loads(path.read_text())
    except Exception as error:
        raise ConfigFileError(
            f"embedded launchpad file {path} is corrupt ({type(error).__name__}); move it away to start "
            "an empty launchpad (its workflows are then lost)"
        ) from None
    import mongomock
    import mongomock_persistence  # noqa: F401  (patches mongomock's stores so they load and dump files)
    from mongomock.gridfs import enable_gridfs_integration
    from mongomock.store import ServerStore

    enable_gridfs_integration()  # FireWorks' GridFS fallback for documents over 16 MB
    store = ServerStore(str(path))
    store._finalizer.detach()  # written by save_launchpad (atomic) instead
    return mongomock.MongoClient(_store=store)


def _launchpad_on_client(client, log_level: str) -> LaunchPad:
    """A LaunchPad whose connection is ``client`` (FireWorks builds its own in ``__init__``)."""
    import fireworks.core.launchpad as fw_launchpad

    with _CONSTRUCT:
        original = fw_launchpad.MongoClient
        fw_launchpad.MongoClient = lambda *args, **kwargs: client
        try:
            return fw_launchpad.LaunchPad(name="uq_flows", strm_lvl=log_level)
        finally:
            fw_launchpad.MongoClient = original


def is_embedded(lp: LaunchPad) -> bool:
    return any(lp is other for other in _EMBEDDED.values())


def embedded_file_of(lp: LaunchPad) -> Path:
    return Path(lp.connection._store._filename)


def save_launchpad(lp: LaunchPad) -> None:
    """Write an embedded launchpad's state to its file now (atomically); no-op for servers."""
    if not is_embedded(lp):
        return
    from bson import json_util

    store = lp.connection._store
    for attempt in range(3):  # a FireWorks ping thread may touch a collection meanwhile
        try:
            text = json_util.dumps(store.to_dict())
            break
        except RuntimeError:
            if attempt == 2:
                raise
    path = embedded_file_of(lp)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


ARCHIVE_FOLDER = "launchpad-archive"
ARCHIVED = "uq_archived_workflows"  # collection of the embedded launchpad: one summary per archived workflow


def archive_completed_workflows(lp: LaunchPad) -> int:
    """Move an embedded launchpad's completed loop workflows to files; the number moved.

    A loop is one workflow per iteration, so a finished iteration's workflow has nothing left
    to run. Its workflow, firework and launch documents go to
    ``home/launchpad-archive/LOOP/FW_ID.json`` (written atomically first), and a small summary
    (states and categories, what ``status`` counts) stays in the launchpad. The launchpad then
    holds about one iteration, and saving it after every rocket does not grow with the campaign.
    Servers keep everything (no-op).
    """
    if not is_embedded(lp):
        return 0
    from bson import json_util

    from uq_flows.stages import LOOP_KEY

    moved = 0
    folder = embedded_file_of(lp).parent / ARCHIVE_FOLDER
    for wf in list(lp.workflows.find({"state": "COMPLETED", f"metadata.{LOOP_KEY}": {"$exists": True}})):
        loop, nodes = wf["metadata"][LOOP_KEY], list(wf["nodes"])
        fireworks = list(lp.fireworks.find({"fw_id": {"$in": nodes}}))
        launches = list(lp.launches.find({"fw_id": {"$in": nodes}}))
        path = folder / loop / f"{min(nodes)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json_util.dumps({"workflow": wf, "fireworks": fireworks, "launches": launches}))
        os.replace(tmp, path)
        categories: dict[str, dict[str, int]] = {}
        for fw in fireworks:
            counts = categories.setdefault((fw.get("spec") or {}).get("_category") or "(none)", {})
            counts[fw["state"]] = counts.get(fw["state"], 0) + 1
        lp.db[ARCHIVED].insert_one({"loop": loop, "fw_id": min(nodes), "name": wf.get("name"), "state": wf["state"],
                                    "n_fireworks": len(fireworks), "categories": categories, "path": str(path)})
        lp.launches.delete_many({"fw_id": {"$in": nodes}})
        lp.fireworks.delete_many({"fw_id": {"$in": nodes}})
        lp.workflows.delete_one({"_id": wf["_id"]})
        moved += 1
    return moved


def archived_workflows(lp: LaunchPad, loop: str | None = None) -> list[dict]:
    """Summaries of the workflows ``archive_completed_workflows`` moved to files (embedded only)."""
    if not is_embedded(lp):
        return []
    return list(lp.db[ARCHIVED].find({} if loop is None else {"loop": loop}, {"_id": 0}))


def close_launchpad(lp: LaunchPad) -> None:
    """Save and release an embedded launchpad (another process may then open it)."""
    if not is_embedded(lp):
        lp.connection.close()
        return
    save_launchpad(lp)
    path = embedded_file_of(lp)
    _EMBEDDED.pop(str(path), None)
    _release_lock(path.parent)


def _save_at_exit(lp: LaunchPad) -> None:
    if is_embedded(lp):
        try:
            save_launchpad(lp)
        except Exception:  # never mask the real exit status
            pass


def _acquire_lock(home: Path) -> None:
    key = str(home)
    if key in _LOCKS:
        return
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ManagerError(
            f"the embedded launchpad in {home} is in use by another process (pid {holder}); it is "
            "single-process: wait for that process, or use a MongoDB server (workflows/fireworks/README.md)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[key] = fd


def _release_lock(home: Path) -> None:
    fd = _LOCKS.pop(str(Path(home)), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
