"""A campaign's state in the database: small documents per structure, arrays in chunks.

Collections (README, "Campaign collections"):

- ``campaign_structures``: one document per structure per iteration: ``loop``, ``iteration``,
  ``id``, ``stage`` (how far it got: candidate, scored, routed, labelled), ``source``,
  ``n_atoms``, ``formula``, ``chemical_system``, ``shortest`` (its shortest interatomic distance
  in Å, measured once for every screen; 3.0 means 3.0 or more), ``chunk`` (its geometry), and as the iteration
  goes ``U``, ``route``, ``audit``, ``teach`` (the label stage wants a teacher label), ``status``,
  ``reason``, ``label_source``;
- ``campaign_labels``: one document per label (a structure in the audit sample has two):
  ``loop``, ``iteration``, ``id``, ``kind`` (dft, teacher), ``source`` (code or model),
  ``status``, ``reason``, ``energy`` (eV, unaligned for teachers), ``n_atoms``, ``U``,
  ``audit``, ``provenance``, ``chunk`` (its forces and stress);
- ``campaign_pairs``: structures labelled by DFT and the teacher (the energy alignment's data);
- ``campaign_loops``: per loop and iteration the loop-state document (``kind: state``) and the
  pool's small facts (``kind: pool``);
- array chunks (positions, cells, numbers; forces, stresses), each a few MB at most.

Jobs pass a ``StructureSet`` (loop, iteration, chunk ids), never the structures; a fit gets its
training and test sets as ``LabelledSet``s (geometry, energies and forces in chunks).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import BaseModel, Field

from uq_flows.campaign.arrays import pack, unpack
from uq_flows.campaign.collections import MAX_CHUNK_BYTES, MongoDatabase, SqliteCollection, SqliteDatabase
from uq_flows.errors import UqFlowsError
from uq_flows.records import StructureRecord, chemical_system
from uq_flows.screening import shortest_distance_within
from uq_flows.settings import UqFlowsSettings, get_settings

STRUCTURES, LABELS, PAIRS, LOOPS = "campaign_structures", "campaign_labels", "campaign_pairs", "campaign_loops"
EMBEDDED_FILE = "campaign.sqlite"
MAX_CHUNK_ATOMS = 60_000  # atoms per chunk when chunks grow past chunk_size: geometry, forces, stresses ≪ MAX_CHUNK_BYTES
TEACH = "teach"  # campaign_structures field: the label stage wants a teacher label of this structure
POOL_ITERATION, POOL_STAGE = -1, "pool"  # a pool campaign's whole pool: rows of iteration -1, stage pool
INDEXES = {
    STRUCTURES: [("loop", "iteration"), ("loop", "id"), ("loop", "route"), ("loop", "source"), ("loop", "status")],
    LABELS: [("loop", "iteration"), ("loop", "id"), ("loop", "kind", "status")],
    PAIRS: [("loop", "iteration")],
    LOOPS: [("loop", "iteration", "kind")],
}


class CampaignDatabaseError(UqFlowsError):
    """The campaign database cannot be chosen or reached."""


class StructureSet(BaseModel):
    """Structures in the campaign database, by reference: what a job receives instead of them."""

    loop: str
    iteration: int
    chunks: list[str] = Field(description="Array chunk ids, in order.")
    sizes: list[int] = Field(description="Structures per chunk.")

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def split(self) -> list[StructureSet]:
        """One set per chunk (what a per-chunk job gets)."""
        return [self.model_copy(update={"chunks": [c], "sizes": [s]}) for c, s in zip(self.chunks, self.sizes)]


class LabelledSet(BaseModel):
    """Labelled structures (geometry, energy, forces, stress) in the campaign database, by reference:
    what a fit job receives instead of its training or test set."""

    loop: str
    iteration: int
    name: str = Field(description="What the set is for (train, test).")
    chunks: list[str] = Field(description="Array chunk ids, in order.")
    sizes: list[int] = Field(description="Structures per chunk.")

    @property
    def n(self) -> int:
        return sum(self.sizes)


class Campaign:
    """The campaign collections of one database (embedded SQLite or MongoDB), and their chunks."""

    def __init__(self, database: SqliteDatabase | MongoDatabase, chunk_size: int = 1000):
        self.database, self.chunk_size = database, chunk_size

    @classmethod
    def open(cls, settings: UqFlowsSettings | None = None) -> Campaign:
        """The database the settings select: ``campaign_uri`` or ``db_uri``, else ``$UQ_FLOWS_HOME/campaign.sqlite``."""
        settings = settings or get_settings()
        uri = next((u.get_secret_value() for u in (settings.campaign_uri, settings.db_uri)
                    if u is not None and u.get_secret_value()), None)
        if uri is None and (settings.launchpad_file or settings.jobstore_file):
            raise CampaignDatabaseError(
                "the launchpad or JobStore is configured by file, but the campaign collections have no server: set "
                "UQ_FLOWS_CAMPAIGN_URI (or UQ_FLOWS_DB_URI) to the MongoDB every worker reaches")
        if uri is not None:
            import pymongo

            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=settings.db_timeout_ms,
                                         connectTimeoutMS=settings.db_timeout_ms)
            name = pymongo.uri_parser.parse_uri(uri).get("database") or settings.db_name
            database = MongoDatabase(client, name)
        else:
            database = SqliteDatabase(settings.home.expanduser() / EMBEDDED_FILE)
        campaign = cls(database, chunk_size=settings.score_chunk_size)
        campaign.ensure_indexes()
        return campaign

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self.database.close()

    def __getitem__(self, name: str):
        """A collection (pymongo ``Collection`` on a server, ``SqliteCollection`` embedded)."""
        return self.database[name]

    def ensure_indexes(self) -> None:
        for name, indexes in INDEXES.items():
            for fields in indexes:
                self[name].create_index([(f, 1) for f in fields])

    # structures -------------------------------------------------------------------------
    def add_structures(self, loop: str, iteration: int, records: Sequence[StructureRecord],
                       stage: str = "candidate", chunk_size: int | None = None,
                       max_chunks: int | None = None) -> StructureSet:
        """Store ``records`` (geometry in chunks, one row each) for an iteration; their reference.

        Chunks hold ``chunk_size`` structures, more when that would make over ``max_chunks``
        chunks (``chunk_size_for``): jobs per stage then stop growing with the campaign.
        """
        chunks, sizes, rows = [], [], []
        size = chunk_size_for(len(records), sum(r.n_atoms for r in records), chunk_size or self.chunk_size, max_chunks)
        for start, batch in self._batches(records, size):
            chunk = f"{loop}/{iteration}/s/{uuid.uuid4().hex[:12]}"
            data = pack([r.id for r in batch], _geometry(batch))
            self.database.chunks.put(chunk, loop, _checked(data, chunk))
            chunks.append(chunk)
            sizes.append(len(batch))
            rows += [{"loop": loop, "iteration": iteration, "id": r.id, "stage": stage, "source": r.source,
                      "n_atoms": r.n_atoms, "formula": r.formula, "chemical_system": chemical_system(r.numbers),
                      "shortest": shortest_distance_within(r.to_atoms()), "chunk": chunk, "index": start + k}
                     for k, r in enumerate(batch)]
        self[STRUCTURES].insert_many(rows)
        return StructureSet(loop=loop, iteration=iteration, chunks=chunks, sizes=sizes)

    def _batches(self, items: Sequence, size: int | None = None) -> Iterable[tuple[int, Sequence]]:
        size = size or self.chunk_size
        for start in range(0, len(items), size):
            yield start, items[start:start + size]

    def structures(self, reference: StructureSet) -> list[StructureRecord]:
        """The structures of a set, in order, with their sources."""
        sources = {row["id"]: row.get("source") for row in self[STRUCTURES].find(
            {"loop": reference.loop, "iteration": reference.iteration, "chunk": {"$in": reference.chunks}},
            {"id": 1, "source": 1})}
        out = []
        for chunk in reference.chunks:
            out += self.chunk_structures(chunk, sources)
        return out

    def chunk_structures(self, chunk: str, sources: Mapping[str, str | None] | None = None) -> list[StructureRecord]:
        ids, arrays = unpack(self.database.chunks.get(chunk))
        sources = sources or {}
        return [StructureRecord(id=i, numbers=numbers.tolist(), cell=cell.reshape(3, 3).tolist(),
                                positions=positions.reshape(-1, 3).tolist(), pbc=tuple(bool(p) for p in pbc),
                                source=sources.get(i))
                for i, numbers, cell, positions, pbc in zip(ids, arrays["numbers"], arrays["cell"],
                                                            arrays["positions"], arrays["pbc"])]

    def add_labelled_set(self, loop: str, iteration: int, name: str, atoms: Sequence[Atoms]) -> LabelledSet:
        """Store labelled structures (each carrying energy and forces, ``info["uq_id"]``) as one set.

        Every call writes new chunks: a reference always reads what it was made with.
        """
        chunks, sizes = [], []
        for _, batch in self._batches(list(atoms)):
            chunk = f"{loop}/{iteration}/{name}/{uuid.uuid4().hex[:12]}"
            results = [a.calc.results for a in batch]
            data = pack([str(a.info["uq_id"]) for a in batch], {
                **_geometry(batch),
                "energy": [np.asarray([r["energy"]], dtype=float) for r in results],
                "forces": [np.asarray(r["forces"], dtype=float) for r in results],
                "stress": [None if r.get("stress") is None else np.asarray(r["stress"], dtype=float) for r in results],
            })
            self.database.chunks.put(chunk, loop, _checked(data, chunk))
            chunks.append(chunk)
            sizes.append(len(batch))
        return LabelledSet(loop=loop, iteration=iteration, name=name, chunks=chunks, sizes=sizes)

    def labelled_atoms(self, reference: LabelledSet) -> list[Atoms]:
        """The set's structures, in order, each carrying its energy, forces (and stress) and ``info["uq_id"]``."""
        out = []
        for chunk in reference.chunks:
            ids, arrays = unpack(self.database.chunks.get(chunk))
            for k, structure_id in enumerate(ids):
                atoms = Atoms(numbers=arrays["numbers"][k], cell=arrays["cell"][k].reshape(3, 3),
                              positions=arrays["positions"][k].reshape(-1, 3), pbc=arrays["pbc"][k])
                atoms.info["uq_id"] = structure_id
                results = {"energy": float(arrays["energy"][k][0]), "forces": arrays["forces"][k].reshape(-1, 3)}
                if arrays["stress"][k] is not None:
                    results["stress"] = arrays["stress"][k]
                atoms.calc = SinglePointCalculator(atoms, **results)
                out.append(atoms)
        return out

    def add_set_arrays(self, reference: StructureSet, name: str, arrays: Sequence[np.ndarray | None]) -> None:
        """One array per structure of a set (in set order; None for none), stored beside each geometry chunk."""
        if len(arrays) != reference.n:
            raise ValueError(f"{name}: {len(arrays)} arrays for a set of {reference.n} structures")
        ids = [row["id"] for row in self.rows(reference, ("id",))]
        start = 0
        for chunk, size in zip(reference.chunks, reference.sizes):
            data = pack(ids[start:start + size], {name: arrays[start:start + size]})
            self.database.chunks.put(f"{chunk}/{name}", reference.loop, _checked(data, f"{chunk}/{name}"))
            start += size

    def set_arrays(self, reference: StructureSet, name: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The arrays ``add_set_arrays`` stored for these ids of the set (ids without one are left out)."""
        keep = set(ids)
        chunks = {row["chunk"] for row in self._rows_of_ids(
            {"loop": reference.loop, "iteration": reference.iteration, "chunk": {"$in": reference.chunks}}, keep,
            {"chunk": 1})}
        out = {}
        for chunk in chunks:
            chunk_ids, arrays = unpack(self.database.chunks.get(f"{chunk}/{name}"))
            out.update({i: a for i, a in zip(chunk_ids, arrays[name]) if i in keep and a is not None})
        return out

    def rows(self, reference: StructureSet, fields: Sequence[str] = ()) -> list[dict]:
        """The set's rows in set order (``fields`` only, when given)."""
        rows = self[STRUCTURES].find({"loop": reference.loop, "iteration": reference.iteration,
                                      "chunk": {"$in": reference.chunks}},
                                     {f: 1 for f in (*fields, "chunk", "index")} if fields else None)
        order = {c: k for k, c in enumerate(reference.chunks)}
        return sorted(rows, key=lambda r: (order[r["chunk"]], r["index"]))

    def structures_by_id(self, loop: str, ids: Iterable[str]) -> dict[str, StructureRecord]:
        """The newest stored geometry of each id (any iteration of the loop)."""
        newest: dict[str, dict] = {}
        for row in self._rows_of_ids({"loop": loop}, ids, {"id": 1, "chunk": 1, "source": 1, "iteration": 1}):
            if row["id"] not in newest or row["iteration"] >= newest[row["id"]]["iteration"]:
                newest[row["id"]] = row
        chunk_of = {i: (row["chunk"], row.get("source")) for i, row in newest.items()}
        out: dict[str, StructureRecord] = {}
        for chunk in dict.fromkeys(c for c, _ in chunk_of.values()):
            sources = {i: s for i, (c, s) in chunk_of.items() if c == chunk}
            out.update({r.id: r for r in self.chunk_structures(chunk, sources) if r.id in sources})
        return out

    def _rows_of_ids(self, query: Mapping[str, Any], ids: Iterable[str], projection: Mapping[str, int]) -> list[dict]:
        """``campaign_structures`` rows matching ``query`` whose id is one of ``ids``: by the (loop, id)
        index, in batches of ids SQLite can bind."""
        wanted, rows = sorted(set(ids)), []
        for start in range(0, len(wanted), 10_000):
            rows += self[STRUCTURES].find({**query, "id": {"$in": wanted[start:start + 10_000]}}, projection)
        return rows

    def update_structures(self, loop: str, iteration: int, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Set fields (U, route, status, ...) on an iteration's rows, by id (each row updated in place)."""
        rows = self[STRUCTURES]
        if isinstance(rows, SqliteCollection):
            rows.set_each({"loop": loop, "iteration": iteration}, "id", updates)
            return
        from pymongo import UpdateOne

        operations = [UpdateOne({"loop": loop, "iteration": iteration, "id": i}, {"$set": dict(fields)})
                      for i, fields in updates.items() if fields]
        for start in range(0, len(operations), 10_000):
            rows.bulk_write(operations[start:start + 10_000], ordered=False)

    # labels -----------------------------------------------------------------------------
    def add_labels(self, loop: str, iteration: int, rows: Sequence[Mapping[str, Any]],
                   forces: Sequence[np.ndarray | None], stress: Sequence[np.ndarray | None]) -> None:
        """Store an iteration's labels (replacing any it stored before): rows, forces and stresses in chunks."""
        documents = []
        for start, batch in self._batches(list(range(len(rows)))):
            chunk = f"{loop}/{iteration}/l/{uuid.uuid4().hex[:12]}"
            ids = [rows[k]["id"] for k in batch]
            data = pack(ids, {"forces": [forces[k] for k in batch], "stress": [stress[k] for k in batch]})
            self.database.chunks.put(chunk, loop, _checked(data, chunk))
            documents += [{**rows[k], "loop": loop, "iteration": iteration, "chunk": chunk, "index": k - start}
                          for k in batch]
        self._replace(LABELS, {"loop": loop, "iteration": iteration}, documents)

    def _replace(self, name: str, query: Mapping[str, Any], documents: Sequence[Mapping[str, Any]]) -> None:
        """The documents matching ``query`` become ``documents``: the new ones are written before the old go,
        so an interrupted write leaves both (a rerun repairs it), never neither."""
        token = uuid.uuid4().hex
        if documents:
            self[name].insert_many([{**d, "written": token} for d in documents])
        self[name].delete_many({**query, "written": {"$ne": token}})

    def labels(self, query: Mapping[str, Any]) -> list[tuple[dict, np.ndarray | None, np.ndarray | None]]:
        """Label rows matching ``query`` with their forces and stress arrays."""
        rows = [row for row in self[LABELS].find(dict(query))]
        out = []
        by_chunk: dict[str, list[dict]] = {}
        for row in rows:
            by_chunk.setdefault(row["chunk"], []).append(_without_id(row))
        for chunk, chunk_rows in by_chunk.items():
            _, arrays = unpack(self.database.chunks.get(chunk))
            for row in chunk_rows:
                k = row["index"]
                out.append((row, arrays["forces"][k], arrays["stress"][k]))
        return out

    def add_pairs(self, loop: str, iteration: int, pairs: Sequence[Mapping[str, Any]]) -> None:
        self._replace(PAIRS, {"loop": loop, "iteration": iteration},
                      [{**p, "loop": loop, "iteration": iteration} for p in pairs])

    def pairs(self, loop: str, up_to: int) -> list[dict]:
        return [_without_id(p) for p in self[PAIRS].find({"loop": loop, "iteration": {"$lte": up_to}})]

    # loop documents -----------------------------------------------------------------------
    def put_loop_document(self, loop: str, iteration: int, kind: str, document: Mapping[str, Any]) -> None:
        self._replace(LOOPS, {"loop": loop, "iteration": iteration, "kind": kind},
                      [{**document, "loop": loop, "iteration": iteration, "kind": kind}])

    def loop_document(self, loop: str, iteration: int, kind: str) -> dict | None:
        doc = self[LOOPS].find_one({"loop": loop, "iteration": iteration, "kind": kind})
        return None if doc is None else _without_id(doc)

    def claim_next(self, loop: str, iteration: int, by: str) -> bool:
        """Atomically mark the iteration after ``iteration`` as being submitted (by ``by``); False if taken."""
        result = self[LOOPS].update_one({"loop": loop, "iteration": iteration, "kind": "state", "next_status": "pending"},
                                        {"$set": {"next_status": "submitted", "next_claimed_by": by}})
        return result.modified_count == 1

    def release_next(self, loop: str, iteration: int) -> None:
        """Give a claim back (the submission failed): the next advance or resume tries again."""
        self[LOOPS].update_one({"loop": loop, "iteration": iteration, "kind": "state", "next_status": "submitted"},
                               {"$set": {"next_status": "pending"}})

    def loop_documents(self, loop: str, kind: str) -> list[dict]:
        """A loop's documents of one kind, by iteration."""
        docs = [_without_id(d) for d in self[LOOPS].find({"loop": loop, "kind": kind})]
        return sorted(docs, key=lambda d: d["iteration"])

    def remove_loop(self, loop: str) -> None:
        """Delete every row and chunk of a loop (a submission that failed leaves nothing behind)."""
        for name in (STRUCTURES, LABELS, PAIRS, LOOPS):
            self[name].delete_many({"loop": loop})
        self.database.chunks.remove_loop(loop)

    def loops(self) -> list[str]:
        return sorted(self[STRUCTURES].distinct("loop"))


def chunk_size_for(n_structures: int, n_atoms: int, chunk_size: int, max_chunks: int | None) -> int:
    """Structures per chunk: ``chunk_size``, or enough for at most ``max_chunks`` chunks, but never
    more than ``MAX_CHUNK_ATOMS`` atoms per chunk (a chunk's arrays stay under ``MAX_CHUNK_BYTES``)."""
    if not max_chunks or n_structures <= chunk_size * max_chunks:
        return chunk_size
    atoms_per_structure = max(1.0, n_atoms / n_structures)
    return max(chunk_size, min(-(-n_structures // max_chunks), int(MAX_CHUNK_ATOMS / atoms_per_structure)))


def _geometry(structures: Sequence) -> dict[str, list[np.ndarray]]:
    """The chunk arrays of structures' geometry (``StructureRecord``s or ``Atoms``)."""
    return {"numbers": [np.asarray(s.numbers, dtype=np.int16) for s in structures],
            "cell": [np.asarray(s.cell, dtype=float) for s in structures],
            "positions": [np.asarray(s.positions, dtype=float) for s in structures],
            "pbc": [np.asarray(s.pbc, dtype=bool) for s in structures]}


def _checked(data: bytes, chunk: str) -> bytes:
    if len(data) > MAX_CHUNK_BYTES:
        raise ValueError(f"array chunk {chunk} would hold {len(data)} bytes (limit {MAX_CHUNK_BYTES}): "
                         "lower score_chunk_size")
    return data


def _without_id(doc: dict) -> dict:
    doc.pop("_id", None)
    doc.pop("written", None)
    return doc


def records_of(structures: StructureSet | Sequence[StructureRecord], only: Iterable[str] | None = None,
               ) -> list[StructureRecord]:
    """The structures themselves: loaded from the campaign database when given by reference; ``only`` these ids."""
    if isinstance(structures, StructureSet):
        with Campaign.open() as campaign:
            records = campaign.structures(structures)
    else:
        records = list(structures)
    if only is None:
        return records
    wanted = set(only)
    return [r for r in records if r.id in wanted]


def structure_ids(structures: StructureSet | Sequence[StructureRecord]) -> tuple[list[str], list[int]]:
    """Ids and atom counts in order, without loading geometry when given by reference."""
    if not isinstance(structures, StructureSet):
        return [s.id for s in structures], [s.n_atoms for s in structures]
    with Campaign.open() as campaign:
        rows = campaign.rows(structures, ("id", "n_atoms"))
    return [r["id"] for r in rows], [r["n_atoms"] for r in rows]


def stored_shortest(structures: StructureSet | Sequence[StructureRecord]) -> dict[str, float] | None:
    """Each structure's stored shortest interatomic distance (``shortest``), by id; None when given by value."""
    if not isinstance(structures, StructureSet):
        return None
    with Campaign.open() as campaign:
        return {row["id"]: row["shortest"] for row in campaign.rows(structures, ("id", "shortest"))
                if row.get("shortest") is not None}
