"""``SqliteStore``: a maggma Store in one table of a SQLite file, with real indexes.

``MontyStore`` (montydb) decodes every document on every query; here each document is a row of
JSON text (``uq_flows.campaign.collections``) and lookups go through SQLite expression indexes:
on the store's ``key``, ``last_updated_field`` and ``searchable_fields`` (made on connect), on the
key fields of every ``update``, and on whatever ``ensure_index`` asks for. The fields queried
together share one index: without statistics SQLite picks among single-field indexes blindly
(given job_uuid and job_index, it took job_index, 1 for almost every blob).
Values keep the types MongoDB would keep: datetimes (UTC, milliseconds), NaN and infinities,
ObjectIds and bytes (MongoDB extended JSON). Several processes may write one file: WAL, a 60 s
busy timeout, and each ``update`` is one transaction that holds the write lock from its start.
Filters are the subset ``SqliteCollection`` understands; anything else raises ``UnsupportedQuery``.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections.abc import Iterator
from typing import Any

from bson import json_util
from maggma.core import Sort, Store, StoreError
from monty.json import jsanitize
from pydash import get, has, set_

from uq_flows.campaign.collections import (
    DATE,
    JsonCodec,
    SqliteCollection,
    SqliteDatabase,
    UnsupportedQuery,
    decode_date,
    encode_date,
)

_EXTENDED_JSON = json_util.RELAXED_JSON_OPTIONS


def _extended(value: Any) -> Any:
    """``json.dumps`` ``default``: datetimes as in the campaign collections, other BSON types as extended JSON."""
    try:
        return encode_date(value)
    except TypeError:
        return json_util.default(value, json_options=_EXTENDED_JSON)


def _spelled_floats(value: Any) -> Any:
    """``value`` with NaN and infinities as ``{"$numberDouble": ...}`` (strict JSON has no word for them)."""
    if isinstance(value, dict):
        return {k: _spelled_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spelled_floats(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"$numberDouble": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    return value


def _decoded(obj: dict) -> Any:
    return decode_date(obj) if DATE in obj else json_util.object_hook(obj, _EXTENDED_JSON)


class BsonJsonCodec(JsonCodec):
    """Documents as MongoDB keeps them, written as JSON (no numpy or NaN clean-up: values round-trip)."""

    def dumps(self, value: Any) -> str:
        try:
            return json.dumps(value, allow_nan=False, default=_extended)
        except ValueError:  # a NaN or an infinity somewhere
            return json.dumps(_spelled_floats(value), allow_nan=False, default=_extended)

    def loads(self, text: str) -> Any:
        return json.loads(text, object_hook=_decoded) if '{"$' in text else json.loads(text)


class SqliteStore(Store):
    """The documents of table ``collection_name`` in the SQLite file ``database_path``."""

    def __init__(self, database_path: str, collection_name: str, key: str = "task_id",
                 searchable_fields: list[str | list[str]] | None = None, **kwargs):
        """Indexes on connect: the field names in ``searchable_fields`` make one, in their order (a JobStore adds
        job_uuid and job_index to its data stores), each list of names another; a query on the first fields of an
        index uses it. ``kwargs`` go to maggma's ``Store`` (``last_updated_field``, ``validator``, ...)."""
        self.database_path = str(database_path)
        self.collection_name = collection_name
        self.searchable_fields = list(searchable_fields or [])
        self.kwargs = kwargs
        self._database: SqliteDatabase | None = None
        self._table: SqliteCollection | None = None
        super().__init__(key=key, **kwargs)

    @property
    def name(self) -> str:
        return f"sqlite://{self.database_path}/{self.collection_name}"

    @property
    def _collection(self) -> SqliteCollection:
        if self._table is None:
            raise StoreError(f"connect {self.name} before using it")
        return self._table

    def connect(self, force_reset: bool = False) -> None:
        if self._table is None or force_reset:
            self.close()
            self._database = SqliteDatabase(self.database_path, BsonJsonCodec())
            self._table = self._database[self.collection_name]
            names = list(dict.fromkeys(f for f in self.searchable_fields if isinstance(f, str)))
            lists = [list(f) for f in self.searchable_fields if not isinstance(f, str)]
            for fields in ([self.key], [self.last_updated_field], names, *lists):
                if fields:
                    self._table.create_index([(f, 1) for f in fields])

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
        self._database = self._table = None

    def count(self, criteria: dict | None = None) -> int:
        return self._collection.count_documents(criteria)

    def query(self, criteria: dict | None = None, properties: dict | list | None = None,
              sort: dict[str, Sort | int] | None = None, skip: int = 0, limit: int = 0) -> Iterator[dict]:
        order = [(field, Sort(direction).value) for field, direction in (sort or {}).items()]
        yield from self._collection.find(criteria, properties, order, skip, limit)

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Replace the documents with the same ``key`` values (default: the store's key) or insert them, atomically."""
        docs = [jsanitize(d, allow_bson=True, recursive_msonable=True) for d in (docs if isinstance(docs, list) else [docs])]
        docs = [d for d in docs if self._valid(d)]
        if docs:
            self._collection.replace_many(docs, key or self.key)

    def _valid(self, doc: dict) -> bool:
        if self.validator is None or self.validator.is_valid(doc):
            return True
        if self.validator.strict:
            raise ValueError(self.validator.validation_errors(doc))
        self.logger.error(self.validator.validation_errors(doc))
        return False

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        try:
            self._collection.create_index(key, unique=bool(unique))
            return True
        except (sqlite3.Error, UnsupportedQuery):  # duplicates under a unique index, a bad field name
            return False

    def groupby(self, keys: list[str] | str, criteria: dict | None = None, properties: dict | list | None = None,
                sort: dict[str, Sort | int] | None = None, skip: int = 0,
                limit: int = 0) -> Iterator[tuple[dict, list[dict]]]:
        """(key values, documents) per distinct value of ``keys``, in key order (``sort`` is not used);
        ``skip`` and ``limit`` count groups. Documents without every key are left out, as maggma's stores do."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        fields = None if properties is None else [*keys, *properties]
        docs = (d for d in self.query(criteria, fields, {k: 1 for k in keys}) if all(has(d, k) for k in keys))
        groups = itertools.groupby(docs, key=lambda d: tuple(repr(get(d, k)) for k in keys))
        for _, group in itertools.islice(groups, skip, skip + limit if limit else None):
            members = list(group)
            values: dict = {}
            for k in keys:
                set_(values, k, get(members[0], k))
            yield values, members

    def remove_docs(self, criteria: dict) -> None:
        self._collection.delete_many(criteria)

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        return self._collection.distinct(field, criteria)

    def __eq__(self, other: object) -> bool:
        fields = ("database_path", "collection_name", "last_updated_field")
        return isinstance(other, SqliteStore) and all(getattr(self, f) == getattr(other, f) for f in fields)

    def __hash__(self) -> int:
        return hash((self.name, self.last_updated_field))
