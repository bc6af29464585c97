"""The campaign collections' storage: SQLite (embedded default) or a MongoDB database.

Both backends answer the same pymongo calls the data plane makes (``insert_many``,
``delete_many``, ``find``, ``count_documents``, ``distinct``, ``create_index``) with the same
filters, so the README's queries run against either. The embedded ``SqliteCollection`` keeps
each document as JSON in one SQLite table with real indexes on the indexed fields (montydb,
maggma's embedded store, scans every document per query and checks ids in a list on every
insert: quadratic at campaign scale). It understands the filters the data plane and its users
need: equality and ``$in``, ``$nin``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
``$exists``, ``$regex`` (with ``$options``) on top-level or dotted fields of scalar values and datetimes; anything else is refused
by name. A ``JsonCodec`` turns documents into the JSON text of a row: datetimes are kept as
``{"$date": "YYYY-MM-DDTHH:MM:SS.mmmZ"}`` (UTC, milliseconds, as BSON keeps them), text that
compares and sorts in time order. ``replace_many`` upserts by key fields (one transaction, an
index on the key), which is what ``uq_flows.manager.sqlite_store`` builds a maggma Store on.

Array chunks live beside the rows: a ``chunks`` table of BLOBs (SQLite) or the
``campaign_chunks`` collection (MongoDB), one document per chunk, each under ``MAX_CHUNK_BYTES``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from uq_flows.records import jsonable

MAX_CHUNK_BYTES = 8_000_000  # well under MongoDB's 16 MB per document
_OPERATORS = {"$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
DATE = "$date"  # the one key of a stored datetime


class UnsupportedQuery(ValueError):
    """A filter the embedded store does not evaluate (it would be silently wrong otherwise)."""


def _path(field: str) -> str:
    if not field or any(not part.replace("_", "a").isalnum() for part in field.split(".")):
        raise UnsupportedQuery(f"field name {field!r}: letters, digits, _ and dots only")
    return f"json_extract(doc, '$.{field}')"


def date_text(moment: datetime) -> str:
    """A datetime as BSON keeps it (UTC, milliseconds), as text that sorts in time order."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def encode_date(value: Any) -> dict:
    """``json.dumps`` ``default``: a datetime as ``{"$date": date_text}``; anything else is an error."""
    if isinstance(value, datetime):
        return {DATE: date_text(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decode_date(obj: dict) -> Any:
    """``json.loads`` ``object_hook``: a stored datetime back to a (naive, UTC) datetime."""
    if len(obj) == 1 and isinstance(obj.get(DATE), str):
        return datetime.fromisoformat(obj[DATE].rstrip("Z"))
    return obj


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _regexp(pattern: str, value: Any) -> bool:
    """SQLite's ``regexp(pattern, value)``: whether a text value matches (``re.search``, as MongoDB)."""
    return isinstance(value, str) and _compiled(pattern).search(value) is not None


class JsonCodec:
    """Documents to the JSON text of a row and back: numpy to plain Python, NaN to null, datetimes kept."""

    def dumps(self, value: Any) -> str:
        return json.dumps(jsonable(value), allow_nan=False, default=encode_date)

    def loads(self, text: str) -> Any:
        return json.loads(text, object_hook=decode_date) if '{"$' in text else json.loads(text)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise UnsupportedQuery(f"only scalar values can be compared in the embedded store, got {value!r}")


def _where(query: Mapping[str, Any] | None) -> tuple[str, list]:
    """SQL for a pymongo-style filter (the supported subset); parameters in order."""
    clauses, params = [], []
    for field, condition in (query or {}).items():
        if field.startswith("$"):
            raise UnsupportedQuery(f"operator {field} is not supported by the embedded store")
        _path(field)
        conditions = condition if isinstance(condition, Mapping) and condition \
            and all(str(k).startswith("$") for k in condition) else {"$eq": condition}
        for op, value in conditions.items():
            if op == "$options":
                continue
            if op == "$regex":  # Python's re, with pymongo's i, m, s, x options as inline flags
                options = conditions.get("$options", "")
                if not isinstance(value, str) or set(options) - set("imsx"):
                    raise UnsupportedQuery(f"$regex needs a pattern string and options from 'imsx', got {value!r}, "
                                           f"{options!r}")
                clauses.append(f"regexp(?, {_path(field)})")
                params.append(f"(?{options}){value}" if options else value)
                continue
            if isinstance(value, datetime):  # compare the stored text
                column, value = f"json_extract(doc, '$.{field}.\"{DATE}\"')", date_text(value)
            else:
                column = _path(field)
            if op == "$eq":
                if value is None:
                    clauses.append(f"{column} IS NULL")
                else:
                    clauses.append(f"{column} = ?")
                    params.append(_scalar(value))
            elif op in ("$in", "$nin"):
                values = [_scalar(v) for v in value]
                if not values:
                    clauses.append("0" if op == "$in" else "1")
                    continue
                marks = ", ".join("?" * len(values))
                clauses.append(f"{column} {'NOT IN' if op == '$nin' else 'IN'} ({marks})"
                               + (f" OR {column} IS NULL" if op == "$nin" else ""))
                params += values
            elif op == "$exists":
                clauses.append(f"json_type(doc, '$.{field}') IS {'NOT ' if value else ''}NULL")
            elif op in _OPERATORS:
                if value is None and op == "$ne":
                    clauses.append(f"{column} IS NOT NULL")
                    continue
                clauses.append(f"{column} {_OPERATORS[op]} ?" + (f" OR {column} IS NULL" if op == "$ne" else ""))
                params.append(_scalar(value))
            else:
                raise UnsupportedQuery(f"operator {op} is not supported by the embedded store")
    return (" AND ".join(f"({c})" for c in clauses) or "1"), params


def _order(sort: str | Mapping[str, int] | Sequence[tuple[str, int]] | None) -> str:
    """ORDER BY for a field or (field, 1 or -1) pairs; ties in insertion order."""
    if not sort:
        return " ORDER BY n"
    pairs = [(sort, 1)] if isinstance(sort, str) else list(sort.items() if isinstance(sort, Mapping) else sort)
    return " ORDER BY " + ", ".join(_path(f) + (" DESC" if int(d) < 0 else "") for f, d in pairs) + ", n"


def _without(doc: dict, fields: Iterable[str]) -> dict:
    """``doc`` less the (dotted) ``fields``, copied where it changes."""
    doc = dict(doc)
    for field in fields:
        *parents, last = field.split(".")
        target = doc
        for part in parents:
            if not isinstance(target.get(part), dict):
                break
            target[part] = target = dict(target[part])
        else:
            target.pop(last, None)
    return doc


def _project(doc: dict, projection: Mapping[str, Any] | Sequence[str] | None) -> dict:
    if not projection:
        return doc
    if isinstance(projection, Mapping) and not any(({k: v for k, v in projection.items() if k != "_id"}
                                                    or projection).values()):  # {"field": 0, "_id": 1 or 0}
        return _without(doc, projection)
    fields = [k for k, v in projection.items() if v] if isinstance(projection, Mapping) else list(projection)
    out = {}
    for field in fields:
        value, found = doc, True
        for part in field.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                found = False
                break
        if found:
            target = out
            *parents, last = field.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
    return out


class UpdateResult:
    """What pymongo's ``update_one`` returns, as far as the data plane reads it."""

    def __init__(self, modified_count: int):
        self.modified_count = modified_count


class SqliteCollection:
    """One collection of the embedded campaign database (a table of JSON documents)."""

    def __init__(self, database: SqliteDatabase, name: str):
        self.database, self.name = database, name
        with database.lock:
            database.connection.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (n INTEGER PRIMARY KEY, doc TEXT NOT NULL)')

    def create_index(self, keys: Sequence[tuple[str, int]] | str, unique: bool = False, **_) -> str:
        """An expression index on the fields (``UNIQUE`` if asked), once per database connection."""
        fields = [keys] if isinstance(keys, str) else [k for k, _ in keys]
        index = f"{self.name}_" + "_".join(f.replace(".", "_") for f in fields) + ("_unique" if unique else "")
        if index not in self.database.indexes:
            with self.database.lock:
                self.database.connection.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX IF NOT EXISTS "{index}" '
                                                 f'ON "{self.name}" ({", ".join(_path(f) for f in fields)})')
            self.database.indexes.add(index)
        return index

    def replace_many(self, documents: Iterable[Mapping[str, Any]], key: str | Sequence[str]) -> int:
        """Replace the document with each one's ``key`` values, or insert it: one transaction, indexed lookups."""
        fields = [key] if isinstance(key, str) else list(key)
        self.create_index([(f, 1) for f in fields])
        rows = [(self.database.codec.dumps(dict(d)), *_where({f: d[f] for f in fields})) for d in documents]
        with self.database.write() as connection:
            for doc, where, params in rows:
                replaced = connection.execute(
                    f'UPDATE "{self.name}" SET doc = ? WHERE n = '
                    f'(SELECT n FROM "{self.name}" WHERE {where} ORDER BY n LIMIT 1)', [doc, *params]).rowcount
                if not replaced:
                    connection.execute(f'INSERT INTO "{self.name}" (doc) VALUES (?)', (doc,))
        return len(rows)

    def insert_many(self, documents: Iterable[Mapping[str, Any]]) -> int:
        rows = [(self.database.codec.dumps(dict(d)),) for d in documents]
        with self.database.lock, self.database.connection:
            self.database.connection.executemany(f'INSERT INTO "{self.name}" (doc) VALUES (?)', rows)
        return len(rows)

    def update_one(self, query: Mapping[str, Any], update: Mapping[str, Mapping[str, Any]]) -> UpdateResult:
        """``{"$set": {field: value}}`` on the first match (atomic: a conditional update claims a document)."""
        if set(update) != {"$set"} or not update["$set"]:
            raise UnsupportedQuery("the embedded store updates with {'$set': {...}} only")
        where, params = _where(query)
        assignments, values = [], []
        for field, value in update["$set"].items():
            _path(field)
            assignments.append(f"'$.{field}', json(?)")
            values.append(self.database.codec.dumps(value))
        with self.database.lock, self.database.connection:
            cursor = self.database.connection.execute(
                f'UPDATE "{self.name}" SET doc = json_set(doc, {", ".join(assignments)}) '
                f'WHERE n = (SELECT n FROM "{self.name}" WHERE {where} ORDER BY n LIMIT 1)', values + params)
        return UpdateResult(cursor.rowcount)

    def delete_many(self, query: Mapping[str, Any]) -> int:
        where, params = _where(query)
        with self.database.lock, self.database.connection:
            return self.database.connection.execute(f'DELETE FROM "{self.name}" WHERE {where}', params).rowcount

    def set_each(self, query: Mapping[str, Any], key: str, updates: Mapping[Any, Mapping[str, Any]]) -> None:
        """``$set`` each ``updates[value]`` on the documents matching ``query`` and ``key == value``, in one transaction."""
        where, params = _where(query)
        column = _path(key)
        with self.database.lock, self.database.connection:
            for value, fields in updates.items():
                if not fields:
                    continue
                for field in fields:
                    _path(field)
                assignments = ", ".join(f"'$.{field}', json(?)" for field in fields)
                self.database.connection.execute(
                    f'UPDATE "{self.name}" SET doc = json_set(doc, {assignments}) WHERE {where} AND {column} = ?',
                    [self.database.codec.dumps(v) for v in fields.values()] + params + [_scalar(value)])

    def find(self, query: Mapping[str, Any] | None = None, projection=None, sort=None, skip: int = 0,
             limit: int = 0) -> Iterator[dict]:
        """Matching documents in ``sort`` order (a field or (field, 1 | -1) pairs), after ``skip``, ``limit`` (0: all)."""
        where, params = _where(query)
        sql = f'SELECT doc FROM "{self.name}" WHERE {where}{_order(sort)} LIMIT ? OFFSET ?'
        with self.database.lock:
            rows = self.database.connection.execute(sql, [*params, limit or -1, skip]).fetchall()
        return (_project(self.database.codec.loads(doc), projection) for (doc,) in rows)

    def find_one(self, query: Mapping[str, Any] | None = None, projection=None) -> dict | None:
        return next(iter(self.find(query, projection)), None)

    def count_documents(self, query: Mapping[str, Any] | None = None) -> int:
        where, params = _where(query)
        with self.database.lock:
            return self.database.connection.execute(f'SELECT COUNT(*) FROM "{self.name}" WHERE {where}', params).fetchone()[0]

    def distinct(self, field: str, query: Mapping[str, Any] | None = None) -> list:
        """The field's values as pymongo gives them: arrays count by element, null is a value, missing is not."""
        where, params = _where(query)
        _path(field)
        with self.database.lock:
            rows = self.database.connection.execute(
                f"SELECT DISTINCT doc -> '$.{field}' AS value FROM \"{self.name}\" WHERE ({where}) AND value IS NOT NULL",
                params).fetchall()
        values, seen = [], set()
        for (text,) in rows:
            value = self.database.codec.loads(text)
            for item in value if isinstance(value, list) else [value]:
                if repr(item) not in seen:
                    seen.add(repr(item))
                    values.append(item)
        return values


class SqliteChunks:
    """Array chunks of the embedded database: bytes by chunk id."""

    def __init__(self, database: SqliteDatabase):
        self.database = database
        with database.lock:
            database.connection.execute("CREATE TABLE IF NOT EXISTS chunks (chunk TEXT PRIMARY KEY, loop TEXT, data BLOB)")

    def put(self, chunk: str, loop: str, data: bytes) -> None:
        with self.database.lock, self.database.connection:
            self.database.connection.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?)", (chunk, loop, data))

    def remove_loop(self, loop: str) -> None:
        with self.database.lock, self.database.connection:
            self.database.connection.execute("DELETE FROM chunks WHERE loop = ?", (loop,))

    def get(self, chunk: str) -> bytes:
        with self.database.lock:
            row = self.database.connection.execute("SELECT data FROM chunks WHERE chunk = ?", (chunk,)).fetchone()
        if row is None:
            raise KeyError(f"array chunk {chunk} is not in the campaign database")
        return row[0]


class SqliteDatabase:
    """The embedded campaign database: one SQLite file (WAL, so readers do not block a writer)."""

    def __init__(self, path: Path | str, codec: JsonCodec | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec = codec or JsonCodec()
        self.indexes: set[str] = set()
        self.lock = threading.RLock()
        self.connection = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self.connection.create_function("regexp", 2, _regexp, deterministic=True)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")

    @cached_property
    def chunks(self) -> SqliteChunks:
        return SqliteChunks(self)

    def __getitem__(self, name: str) -> SqliteCollection:
        return SqliteCollection(self, name)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the database's write lock from its start (other processes wait)."""
        with self.lock, self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            yield self.connection

    def describe(self) -> dict:
        return {"type": "sqlite", "path": str(self.path)}

    def close(self) -> None:
        self.connection.close()


class MongoChunks:
    """Array chunks on a MongoDB server: one document per chunk in ``campaign_chunks``."""

    def __init__(self, collection):
        self.collection = collection

    def put(self, chunk: str, loop: str, data: bytes) -> None:
        from bson import Binary

        if len(data) > MAX_CHUNK_BYTES:
            raise ValueError(f"array chunk {chunk} has {len(data)} bytes; chunks must stay under {MAX_CHUNK_BYTES}")
        self.collection.replace_one({"chunk": chunk}, {"chunk": chunk, "loop": loop, "data": Binary(data)}, upsert=True)

    def remove_loop(self, loop: str) -> None:
        self.collection.delete_many({"loop": loop})

    def get(self, chunk: str) -> bytes:
        doc = self.collection.find_one({"chunk": chunk}, {"data": 1})
        if doc is None:
            raise KeyError(f"array chunk {chunk} is not in the campaign database")
        return bytes(doc["data"])


class MongoDatabase:
    """The campaign collections in a MongoDB database (pymongo)."""

    def __init__(self, client, name: str):
        self.client, self.database = client, client[name]
        self.chunks = MongoChunks(self.database["campaign_chunks"])
        self.chunks.collection.create_index("chunk", unique=True)

    def __getitem__(self, name: str):
        return self.database[name]

    def describe(self) -> dict:
        return {"type": "mongodb", "database": self.database.name}

    def close(self) -> None:
        self.client.close()
