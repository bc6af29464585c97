"""Trivial jobflow jobs for the manager tests; importable by worker processes (PYTHONPATH=repo).

Each ``mark`` job records its effect once it has finished its work: a document in the
``effects`` collection of ``$UQ_TEST_EFFECTS`` (a MongoDB URI) or a line in that file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobflow import Flow, OnMissing, job


def record(tag: str, uuid: str | None = None) -> None:
    target = os.environ["UQ_TEST_EFFECTS"]
    row = {"tag": tag, "uuid": uuid, "worker": os.environ.get("UQ_TEST_WORKER"), "pid": os.getpid()}
    if target.startswith("mongodb://"):
        from pymongo import MongoClient

        client = MongoClient(target, serverSelectionTimeoutMS=5000)
        try:
            client.get_default_database()["effects"].insert_one(row)
        finally:
            client.close()
    else:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def read_effects(target: str) -> list[dict]:
    if target.startswith("mongodb://"):
        from pymongo import MongoClient

        client = MongoClient(target, serverSelectionTimeoutMS=5000)
        try:
            return list(client.get_default_database()["effects"].find({}, {"_id": 0}))
        finally:
            client.close()
    path = Path(target)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@job
def mark(tag: str, *upstream, sleep: float = 0.0, first_sleep: float = 0.0, started: str | None = None, fail: bool = False,
         fail_once: str | None = None):
    """Wait, maybe fail, then record ``tag``. ``first_sleep`` applies only before ``started`` exists;
    ``fail_once``: fail only while that file does not exist (the failure creates it)."""
    if started and not Path(started).exists():
        Path(started).write_text(str(os.getpid()))
        time.sleep(first_sleep)
    time.sleep(sleep)
    if fail_once and not Path(fail_once).exists():
        Path(fail_once).write_text(str(os.getpid()))
        raise RuntimeError(f"toy failure in {tag} (first attempt)")
    if fail:
        raise RuntimeError(f"toy failure in {tag}")
    record(tag)
    return {"tag": tag, "worker": os.environ.get("UQ_TEST_WORKER"), "upstream": [u for u in upstream if u]}


@job
def big(n_floats: int):
    """An output of about 9 bytes per float: small ids plus a large array."""
    return {"ids": ["a", "b"], "values": [float(i) for i in range(n_floats)]}


def chain(tags: list[str], category: str = "cpu", **kwargs_by_tag) -> Flow:
    """tags[0] -> tags[1] -> ...; kwargs_by_tag maps a tag to mark() keyword arguments."""
    jobs = []
    for tag in tags:
        upstream = [jobs[-1].output] if jobs else []
        new = mark(tag, *upstream, **kwargs_by_tag.get(tag, {}))
        new.name = tag
        new.update_config({"manager_config": {"_category": category}})
        jobs.append(new)
    return Flow(jobs, name="chain")


def diamond() -> Flow:
    """Six jobs over two categories: a(cpu) -> b(gpu), c(gpu), d(cpu); b,c -> e(gpu); d,e -> f(cpu)."""
    spec = {"a": ("cpu", []), "b": ("gpu", ["a"]), "c": ("gpu", ["a"]), "d": ("cpu", ["a"]),
            "e": ("gpu", ["b", "c"]), "f": ("cpu", ["d", "e"])}
    jobs = {}
    for tag, (category, parents) in spec.items():
        new = mark(tag, *[jobs[p].output for p in parents], sleep=0.3)
        new.name = tag
        new.update_config({"manager_config": {"_category": category}})
        jobs[tag] = new
    return Flow(list(jobs.values()), name="diamond")


def tolerant(job_):
    """Let ``job_`` run when its parents failed (jobflow OnMissing.NONE -> _allow_fizzled_parents)."""
    job_.config.on_missing_references = OnMissing.NONE
    return job_
