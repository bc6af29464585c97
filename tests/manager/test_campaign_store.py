"""The campaign collections on the embedded SQLite default and on a MongoDB wire-protocol server."""

import numpy as np
import pytest
from ase.build import bulk

from uq_flows.campaign import LABELS, LOOPS, STRUCTURES, Campaign, StructureSet, records_of
from uq_flows.campaign.collections import SqliteDatabase, UnsupportedQuery
from uq_flows.campaign.store import chunk_size_for
from uq_flows.records import StructureRecord
from uq_flows.screening import min_interatomic_distance
from uq_flows.settings import get_settings


@pytest.fixture(params=["embedded", "server"])
def campaign(request, monkeypatch):
    if request.param == "server":
        request.getfixturevalue("wire_db")  # UQ_FLOWS_DB_URI names a fresh database on the wire server
    else:
        monkeypatch.delenv("UQ_FLOWS_DB_URI", raising=False)
        get_settings.cache_clear()
    monkeypatch.setenv("UQ_FLOWS_SCORE_CHUNK_SIZE", "40")
    get_settings.cache_clear()
    with Campaign.open() as opened:
        yield opened


def structures(n: int, seed: int = 0) -> list[StructureRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", 3.6, cubic=True) if k % 3 else bulk("Ni", "fcc", 3.5)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        out.append(StructureRecord.from_atoms(atoms, source="generator:rattled" if k % 2 else "md"))
    return out


def test_structures_are_stored_in_chunks_and_passed_by_reference(campaign):
    records = structures(100)
    stored = campaign.add_structures("loop-a", 0, records)
    assert stored.sizes == [40, 40, 20] and stored.n == 100
    assert len(stored.model_dump_json()) < 1000  # what a job input carries, whatever the campaign size
    assert records_of(stored) == records  # geometry, ids and sources come back exactly, in order
    assert records_of(stored.split()[1]) == records[40:80]
    assert records_of(stored, only=[records[5].id, records[77].id]) == [records[5], records[77]]
    rows = campaign[STRUCTURES].find({"loop": "loop-a", "iteration": 0})
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in records)
    assert campaign[STRUCTURES].count_documents({"loop": "loop-a", "chemical_system": "Ni"}) == 34
    assert campaign[STRUCTURES].count_documents({"loop": "loop-a", "source": "md"}) == 50
    shortest = {row["id"]: row["shortest"] for row in campaign[STRUCTURES].find({"loop": "loop-a"})}  # once, for every screen
    assert all(shortest[r.id] == pytest.approx(min_interatomic_distance(r.to_atoms())) for r in records)


def test_chunks_grow_past_max_chunks_so_jobs_per_stage_stay_bounded(campaign):
    """chunk_size 40, at most 2 chunks: 100 structures in 2 chunks of 50; within the limit, chunk_size holds."""
    records = structures(100)
    assert campaign.add_structures("loop-a", 0, records, max_chunks=2).sizes == [50, 50]
    assert campaign.add_structures("loop-a", 1, records[:80], max_chunks=2).sizes == [40, 40]
    assert campaign.add_structures("loop-a", 2, records, chunk_size=30, max_chunks=None).sizes == [30, 30, 30, 10]
    # 10^5 candidates of 16 atoms at the loop's defaults: 64 chunks; of 2,000 atoms: the atoms per chunk cap them
    assert chunk_size_for(100_000, 1_600_000, 500, 64) == 1563
    assert chunk_size_for(100_000, 2_000 * 100_000, 500, 64) == 500
    assert chunk_size_for(10_000, 160_000, 500, 64) == 500


def test_a_fit_set_is_stored_once_and_read_back_exactly(campaign):
    """A LabelledSet (what a fit job gets) keeps geometry, energy, forces and stress; a rerun does not change it."""
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for k, record in enumerate(structures(90)):
        atoms = record.to_atoms()
        stress = np.arange(6.0) * k if k % 4 == 0 else None
        atoms.calc = SinglePointCalculator(atoms, energy=-3.5 * k, forces=np.full((len(atoms), 3), 0.1 * k),
                                           **({"stress": stress} if stress is not None else {}))
        labelled.append(atoms)
    stored = campaign.add_labelled_set("loop-a", 2, "train", labelled)
    assert stored.sizes == [40, 40, 10] and len(stored.model_dump_json()) < 1000
    again = campaign.add_labelled_set("loop-a", 2, "train", labelled[:50])  # a rerun of the same draw
    assert again.sizes == [40, 10] and not set(again.chunks) & set(stored.chunks)
    back = campaign.labelled_atoms(stored)
    assert [a.info["uq_id"] for a in back] == [a.info["uq_id"] for a in labelled]
    for original, copy in zip(labelled, back):
        assert (copy.numbers == original.numbers).all() and np.array_equal(copy.positions, original.positions)
        assert np.array_equal(copy.cell.array, original.cell.array) and (copy.pbc == original.pbc).all()
        assert copy.get_potential_energy() == original.get_potential_energy()
        assert np.array_equal(copy.get_forces(), original.get_forces())
        assert ("stress" in copy.calc.results) == ("stress" in original.calc.results)
    assert np.array_equal(back[8].calc.results["stress"], np.arange(6.0) * 8)
    assert campaign.labelled_atoms(campaign.add_labelled_set("loop-a", 3, "test", [])) == []


def test_per_structure_arrays_are_stored_beside_a_set_and_read_by_id(campaign):
    records = structures(100)
    stored = campaign.add_structures("loop-a", 0, records)
    arrays = [None if k % 7 == 0 else np.full((len(r.numbers), 3), float(k)) for k, r in enumerate(records)]
    campaign.add_set_arrays(stored, "mean_forces", arrays)
    wanted = [records[k].id for k in (0, 1, 41, 99)]
    got = campaign.set_arrays(stored.split()[1], "mean_forces", wanted)  # a one-chunk reference sees its chunk only
    assert set(got) == {records[41].id} and np.array_equal(got[records[41].id].reshape(-1, 3), arrays[41])
    got = campaign.set_arrays(stored, "mean_forces", wanted)
    assert set(got) == {records[k].id for k in (1, 41, 99)}  # structure 0 has none
    assert all(np.array_equal(got[records[k].id].reshape(-1, 3), arrays[k]) for k in (1, 41, 99))
    with pytest.raises(ValueError, match="99 arrays for a set of 100"):
        campaign.add_set_arrays(stored, "mean_forces", arrays[:99])


def test_the_readme_queries(campaign):
    """The three pymongo queries of the README, on either backend."""
    records = structures(9)
    campaign.add_structures("loop-b", 0, records)
    campaign.add_structures("loop-b", 1, records[:3])
    u = {r.id: 0.05 * k for k, r in enumerate(records)}
    campaign.update_structures("loop-b", 0, {
        r.id: {"U": u[r.id], "route": "dft" if u[r.id] > 0.2 else "teacher",
               "status": "failed" if k == 8 else "ok", "reason": "SCF did not converge" if k == 8 else None}
        for k, r in enumerate(records)})
    rows, forces, stress = [], [], []
    for k, r in enumerate(records):
        dft = u[r.id] > 0.2
        failed = k == 8
        rows.append({"id": r.id, "kind": "dft" if dft else "teacher", "source": "cp2k" if dft else "chgnet-0.3.0",
                     "status": "failed" if failed else "ok", "reason": "SCF did not converge" if failed else None,
                     "energy": None if failed else -3.5 * r.n_atoms, "n_atoms": r.n_atoms, "U": u[r.id],
                     "audit": False, "provenance": {"code": "cp2k"} if dft else {}})
        forces.append(None if failed else np.full((r.n_atoms, 3), 0.01 * k))
        stress.append(None)
    campaign.add_labels("loop-b", 0, rows, forces, stress)

    dft = list(campaign[LABELS].find({"loop": "loop-b", "kind": "dft", "status": "ok"}, {"id": 1, "energy": 1}))
    assert len(dft) == 3 and all(d["energy"] < 0 for d in dft)  # k = 5, 6, 7 (8 failed)
    spread = [d["U"] for d in campaign[STRUCTURES].find({"loop": "loop-b", "iteration": 0, "U": {"$ne": None}},
                                                        {"U": 1})]
    assert sorted(spread) == pytest.approx(sorted(u.values()))
    failed = list(campaign[STRUCTURES].find({"loop": "loop-b", "route": "dft", "status": "failed"},
                                            {"id": 1, "reason": 1}))
    assert [(d["id"], d["reason"]) for d in failed] == [(records[8].id, "SCF did not converge")]
    # the arrays come back with their rows
    (row, array, no_stress), = campaign.labels({"loop": "loop-b", "id": records[7].id})
    assert row["energy"] == -3.5 * records[7].n_atoms and np.allclose(array, 0.07) and no_stress is None
    (_, nothing, _), = campaign.labels({"loop": "loop-b", "status": "failed"})
    assert nothing is None


def test_loop_documents_and_removing_a_loop(campaign):
    campaign.add_structures("loop-c", 0, structures(3))
    campaign.put_loop_document("loop-c", 0, "state", {"converged": False})
    campaign.put_loop_document("loop-c", 0, "state", {"converged": True})  # replaced, not duplicated
    assert [d["converged"] for d in campaign.loop_documents("loop-c", "state")] == [True]
    kept = campaign.add_structures("loop-d", 0, structures(2))
    campaign.remove_loop("loop-c")
    assert campaign[STRUCTURES].count_documents({"loop": "loop-c"}) == 0
    assert campaign[LOOPS].count_documents({"loop": "loop-c"}) == 0
    assert campaign.loops() == ["loop-d"] and len(records_of(kept)) == 2


def test_embedded_queries_use_the_indexes_and_refuse_what_they_cannot_evaluate(tmp_path):
    database = SqliteDatabase(tmp_path / "campaign.sqlite")
    campaign = Campaign(database)
    campaign.ensure_indexes()
    campaign.add_structures("loop-e", 0, structures(5))
    plan = database.connection.execute(
        "EXPLAIN QUERY PLAN SELECT doc FROM campaign_structures WHERE json_extract(doc, '$.loop') = 'x' "
        "AND json_extract(doc, '$.iteration') = 0").fetchall()
    assert any("USING INDEX" in str(step) for step in plan)
    rows = campaign[STRUCTURES]
    assert rows.count_documents({"loop": "loop-e", "iteration": {"$gte": 0, "$lt": 1}}) == 5
    assert rows.count_documents({"loop": {"$in": ["loop-e", "other"]}, "U": {"$exists": False}}) == 5
    assert sorted(rows.distinct("chemical_system", {"loop": "loop-e"})) == ["Cu", "Ni"]
    assert rows.count_documents({"loop": {"$regex": "^LOOP-", "$options": "i"}, "chemical_system": "Ni"}) == 2
    assert rows.count_documents({"formula": {"$regex": "Ni"}, "loop": {"$regex": "e$"}}) == 2
    for query in ({"$or": [{"loop": "a"}]}, {"loop": {"$regex": "a", "$options": "u"}}, {"numbers": [29]}):
        with pytest.raises(UnsupportedQuery):
            list(rows.find(query))
    campaign.close()


def test_a_reference_survives_json_like_a_job_input():
    reference = StructureSet(loop="l", iteration=2, chunks=["l/2/s/abc"], sizes=[7])
    assert StructureSet.model_validate_json(reference.model_dump_json()) == reference
