"""SqliteStore: maggma's Store contract (checked against MemoryStore), its indexes, jobflow on it, two writers."""

from __future__ import annotations

import math
import multiprocessing
import pickle
from datetime import datetime, timedelta, timezone

import pytest
from jobflow import Flow, job, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder

from uq_flows.campaign.collections import UnsupportedQuery
from uq_flows.manager.sqlite_store import SqliteStore
from uq_flows.manager.stores import EMBEDDED_FILE, describe_jobstore, embedded_jobstore
from uq_flows.stages import CHUNK_KEY, LOOP_KEY, MEMBER_KEY, STAGE_KEY

START = datetime(2024, 5, 1, 12, 0, 0)


def documents(n: int = 30) -> list[dict]:
    return [{"k": i, "group": i % 3, "name": f"n{i % 5}", "tags": [f"t{i % 2}", "all"],
             "metadata": {"loop": "A" if i % 2 else "B", "stage": ["score", "label", "fit"][i % 3]},
             "score": None if i % 7 == 0 else round(0.37 * ((i * 11) % 13), 3),
             "when": START + timedelta(minutes=i, milliseconds=7 * i)} | ({"extra": i} if i % 4 == 0 else {})
            for i in range(n)]


@pytest.fixture
def stores(tmp_path):
    """The same documents (and one upsert) in a SqliteStore and in maggma's MemoryStore."""
    sqlite, memory = SqliteStore(tmp_path / "s.sqlite", "docs", key="k"), MemoryStore("docs", key="k")
    for store in (sqlite, memory):
        store.connect()
        store.update(documents())
        store.update({**documents()[4], "name": "changed", "score": 99.0})  # by the store key: replaces k=4
    yield sqlite, memory
    sqlite.close()


def plain(docs) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


@pytest.mark.parametrize("criteria, properties, sort, skip, limit", [
    (None, None, None, 0, 0),
    ({"group": 1}, ["k", "name"], {"k": -1}, 0, 0),
    ({"metadata.loop": "A", "metadata.stage": "label"}, {"k": 1, "metadata.stage": 1}, None, 0, 0),
    ({"k": {"$in": [1, 5, 9, 40]}, "name": {"$ne": "n1"}}, None, {"k": 1}, 0, 0),
    ({"score": {"$ne": None}}, ["k", "score"], {"score": -1, "k": 1}, 2, 5),
    ({"score": None}, ["k"], None, 0, 0),
    ({"extra": {"$exists": True}, "k": {"$gt": 3, "$lte": 20}}, ["k", "extra"], {"group": 1, "name": -1}, 0, 0),
    ({"name": {"$nin": ["n0", "n2"]}}, {"tags": 0, "metadata": 0, "when": 0}, {"name": 1}, 3, 4),
    ({"when": {"$gte": START + timedelta(minutes=10)}}, ["k", "when"], {"when": -1}, 0, 3),
])
def test_query_and_count_agree_with_memory_store(stores, criteria, properties, sort, skip, limit):
    sqlite, memory = stores
    got = plain(sqlite.query(criteria, properties, sort, skip=skip, limit=limit))
    assert got == plain(memory.query(criteria, properties, sort, skip=skip, limit=limit)) and got
    assert sqlite.count(criteria) == memory.count(criteria)
    assert plain([sqlite.query_one(criteria, properties, sort)]) == plain([memory.query_one(criteria, properties, sort)])


def test_upsert_distinct_groupby_and_remove_agree_with_memory_store(stores):
    sqlite, memory = stores
    assert sqlite.count() == memory.count() == 30
    assert sqlite.query_one({"k": 4})["name"] == "changed"
    for field, criteria in (("name", None), ("tags", None), ("score", {"group": 0}), ("metadata.loop", None)):
        got = sqlite.distinct(field, criteria)
        assert sorted(map(repr, got)) == sorted(map(repr, memory.distinct(field, criteria))) and got
    for keys, properties in (("group", ["k"]), (["metadata.loop", "group"], ["k", "name"])):
        got = [(key, plain(docs)) for key, docs in sqlite.groupby(keys, {"k": {"$lt": 25}}, properties)]
        assert got == [(key, plain(docs)) for key, docs in memory.groupby(keys, {"k": {"$lt": 25}}, properties)]
        assert len(got) > 1
    for store in stores:
        store.remove_docs({"metadata.loop": "A", "group": {"$in": [0, 2]}})
    assert plain(sqlite.query(sort={"k": 1})) == plain(memory.query(sort={"k": 1}))
    assert sqlite.count() == 20


def test_compound_key_upserts_keep_one_document_per_key(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite", "outputs", key="uuid")
    store.connect()
    store.update([{"uuid": u, "index": i, "output": f"{u}{i}"} for u in "ab" for i in (1, 2)], key=["uuid", "index"])
    store.update([{"uuid": "a", "index": 2, "output": "new"}, {"uuid": "a", "index": 3, "output": "a3"}],
                 key=["uuid", "index"])
    assert store.count() == 5 and store.count({"uuid": "a"}) == 3
    assert store.query_one({"uuid": "a"}, ["output"], sort={"index": -1}) == {"output": "a3"}
    assert store.query_one({"uuid": "a", "index": 2})["output"] == "new"
    assert store.query_one({"uuid": "b"}, ["index"], sort={"index": -1}) == {"index": 2}


def test_values_round_trip_as_mongodb_keeps_them(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite", "docs", key="k")
    store.connect()
    moment = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    store.update({"k": 1, "last_updated": datetime(2024, 1, 1, 0, 0, 0, 999999), "at": moment,
                  "nested": {"list": [moment, 1.5, float("nan"), float("-inf")]}, "raw": b"\x00\x01",
                  "none": None, "msonable": {"@module": "m", "@class": "C", "x": 1}})
    doc = store.query_one({"k": 1})
    assert doc["last_updated"] == datetime(2024, 1, 1, 0, 0, 0, 999000)  # BSON keeps milliseconds
    assert doc["at"] == datetime(2024, 5, 1, 10, 0, 0, 123000) == doc["nested"]["list"][0]  # UTC, naive
    assert doc["nested"]["list"][1] == 1.5 and math.isnan(doc["nested"]["list"][2])
    assert doc["nested"]["list"][3] == float("-inf") and doc["raw"] == b"\x00\x01"
    assert doc["none"] is None and doc["msonable"] == {"@module": "m", "@class": "C", "x": 1}
    assert store.last_updated == datetime(2024, 1, 1, 0, 0, 0, 999000)
    assert store.count({"at": {"$gt": datetime(2024, 5, 1, 11, 59, tzinfo=timezone(timedelta(hours=2)))}}) == 1
    assert store.count({"at": {"$gt": datetime(2024, 5, 1, 10, 1)}}) == 0
    with pytest.raises(UnsupportedQuery):
        store.count({"$or": [{"k": 1}]})


def test_serialises_and_rebuilds(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite", "docs", key="uuid", searchable_fields=["metadata.loop"],
                        last_updated_field="updated")
    store.connect()
    store.update({"uuid": "x", "value": 3})
    described = store.as_dict()
    for rebuilt in (SqliteStore.from_dict(described), MontyDecoder().process_decoded(described),
                    pickle.loads(pickle.dumps(store))):
        assert isinstance(rebuilt, SqliteStore) and rebuilt == store
        assert (rebuilt.key, rebuilt.searchable_fields, rebuilt.last_updated_field) == ("uuid", ["metadata.loop"], "updated")
        rebuilt.connect()
        assert rebuilt.query_one({"uuid": "x"}, ["value"]) == {"value": 3}
        rebuilt.close()
    assert store != SqliteStore(tmp_path / "s.sqlite", "other", key="uuid")


def plan_of(store: SqliteStore, run) -> str:
    """SQLite's query plan of the SELECT that ``run`` makes on ``store``."""
    statements: list[str] = []
    connection = store._collection.database.connection
    connection.set_trace_callback(statements.append)
    run()
    connection.set_trace_callback(None)
    select = [s for s in statements if s.lstrip().upper().startswith("SELECT")][-1]
    return " | ".join(row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + select))


def test_jobstore_lookups_use_indexes(tmp_path):
    jobstore = embedded_jobstore(tmp_path)
    with jobstore:
        docs, data = jobstore.docs_store, jobstore.additional_stores["data"]
        docs.update([{"uuid": f"u{i}", "index": 1, "output": i,
                      "metadata": {LOOP_KEY: f"L{i % 3}", STAGE_KEY: "x", MEMBER_KEY: f"m{i % 2}", CHUNK_KEY: f"c{i}"}}
                     for i in range(200)], key=["uuid", "index"])
        data.update([{"blob_uuid": f"b{i}", "job_uuid": f"u{i}", "job_index": 1, "data": [i]} for i in range(200)])
        plans = {  # the index each lookup should go through
            "outputs_uuid": plan_of(docs, lambda: docs.query_one({"uuid": "u7"}, ["index"], sort={"index": -1})),
            "data_blob_uuid": plan_of(data, lambda: list(data.query({"blob_uuid": {"$in": ["b1", "b2"]}}, ["data"]))),
            f"outputs_metadata_{STAGE_KEY}_metadata_{LOOP_KEY}": plan_of(docs, lambda: list(docs.query(
                {f"metadata.{STAGE_KEY}": "x", f"metadata.{LOOP_KEY}": "L1", "output": {"$ne": None}}, ["output"]))),
            f"outputs_metadata_{STAGE_KEY}_metadata_{CHUNK_KEY}": plan_of(docs, lambda: docs.query_one(
                {f"metadata.{STAGE_KEY}": "x", f"metadata.{MEMBER_KEY}": "m1", f"metadata.{CHUNK_KEY}": "c7",
                 "output": {"$ne": None}}, ["output"])),
            "data_job_uuid": plan_of(data, lambda: data.count({"job_uuid": "u3", "job_index": 1})),
        }
        assert "SCAN" in plan_of(docs, lambda: docs.count({"output": 3}))  # no index on output: a full scan
    for index, plan in plans.items():
        assert f"USING INDEX {index}" in plan and "SCAN" not in plan, plan
    assert describe_jobstore(jobstore)["docs"] == {"type": "SqliteStore", "path": str(tmp_path / EMBEDDED_FILE),
                                                   "collection": "outputs"}


@job(data="values")
def make_values(n: int) -> dict:
    return {"n": n, "values": [0.5 * i for i in range(n)]}


@job
def total(made: dict) -> float:
    return made["n"] + sum(made["values"])


def test_jobflow_runs_on_it_with_outputs_in_the_data_store(tmp_path):
    store = embedded_jobstore(tmp_path)
    made = make_values(1000)
    summed = total(made.output)
    run_locally(Flow([made, summed]), store=store, log=False, ensure_success=True)
    with store:
        doc = store.docs_store.query_one({"uuid": made.uuid})
        assert doc["output"]["n"] == 1000 and "blob_uuid" in doc["output"]["values"]
        assert store.additional_stores["data"].count({"job_uuid": made.uuid}) == 1
        assert store.get_output(made.uuid, load=True)["values"] == [0.5 * i for i in range(1000)]
        assert store.get_output(summed.uuid) == 1000 + 0.5 * 999 * 1000 / 2
        store.remove_docs({"uuid": made.uuid})
        assert store.count({"uuid": made.uuid}) == 0 and store.additional_stores["data"].count() == 0


def _write(path: str, writer: int, rounds: int, start) -> None:
    store = SqliteStore(path, "docs", key="k")
    store.connect()
    for i in range(rounds):
        store.update({"k": f"{writer}-{i}", "writer": writer})
        start.wait()  # both writers upsert the same new key at the same time
        store.update([{"k": f"shared-{i}", "writer": writer}, {"k": f"shared-{i}", "writer": writer, "again": True}])
    store.close()


def test_two_processes_writing_one_file_lose_nothing(tmp_path):
    path, rounds = str(tmp_path / "shared.sqlite"), 200
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2, timeout=5)  # a writer that died breaks it: the other stops too
    writers = [context.Process(target=_write, args=(path, w, rounds, start)) for w in (1, 2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        process.kill()
    assert [p.exitcode for p in writers] == [0, 0]
    store = SqliteStore(path, "docs", key="k")
    store.connect()
    assert store.count() == 3 * rounds  # each writer's own keys, and one document per shared key
    assert sorted(store.distinct("k")) == sorted([f"{w}-{i}" for w in (1, 2) for i in range(rounds)]
                                                 + [f"shared-{i}" for i in range(rounds)])
    assert store.count({"again": True}) == rounds
