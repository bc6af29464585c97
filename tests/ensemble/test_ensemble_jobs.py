"""The scoring Makers as a real jobflow flow on a MontyStore JobStore (run_locally)."""

import numpy as np
import pytest
from ase.build import bulk
from jobflow import run_locally

from uq_flows.ensemble.jobs import EnsembleScoreMaker, UncertaintyDocument
from uq_flows.ensemble.members import parse_member
from uq_flows.ensemble.scoring import score_structures
from uq_flows.records import records_from_atoms
from uq_flows.stages import MEMBER_PREDICTION, STAGE_KEY


def structures():
    out = []
    for k, amplitude in enumerate([0.02, 0.1, 0.2]):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(amplitude, seed=k)
        out.append(atoms)
    return out


def test_flow_fans_out_members_by_chunks_with_categories():
    maker = EnsembleScoreMaker(members=["emt=ase:ase.calculators.emt:EMT", "chgnet-0.3.0"], chunk_size=2)
    flow = maker.make(records_from_atoms(structures()))
    predict_jobs = [j for j in flow.jobs if j.name.startswith("member predictions")]
    assert len(predict_jobs) == 4  # 2 members x 2 chunks
    assert {j.config.manager_config["_category"] for j in predict_jobs} == {"gpu"}
    (combine,) = [j for j in flow.jobs if j.name == "ensemble uncertainty"]
    assert combine.config.manager_config["_category"] == "cpu"


@pytest.mark.slow
def test_flow_matches_direct_scoring_and_keeps_arrays_out_of_the_index(job_store):
    members = ["chgnet-0.3.0", "sevennet-0-11jul2024", "emt=ase:ase.calculators.emt:EMT"]
    atoms = structures()
    flow = EnsembleScoreMaker(members=members, chunk_size=2).make(records_from_atoms(atoms))
    responses = run_locally(flow, store=job_store, ensure_success=True)
    document = responses[flow.output.uuid][1].output
    assert isinstance(document, UncertaintyDocument)
    assert document.n_ok == 3 and document.members == ["chgnet-0.3.0", "sevennet-0-11jul2024", "emt"]

    direct, _ = score_structures(atoms, [parse_member(m) for m in members], "equal")
    assert np.allclose([s.U for s in document.structures], direct.u, rtol=1e-5)
    assert [s.id for s in document.structures] == [r.id for r in records_from_atoms(atoms)]

    with job_store as store:
        index_docs = list(store.docs_store.query({f"metadata.{STAGE_KEY}": MEMBER_PREDICTION}))
        data_docs = list(store.additional_stores["data"].query({}))
    assert len(index_docs) == 6 and len(data_docs) >= 6
    for doc in index_docs:  # arrays live in the data store, the index keeps a blob reference
        for key in ("energies", "forces", "stresses"):
            assert doc["output"][key]["store"] == "data" and "blob_uuid" in doc["output"][key]


def test_failed_member_job_marks_its_structures(job_store):
    members = ["emt=ase:ase.calculators.emt:EMT", "broken=ase:uqf_ensemble_calculators:BrokenInit"]
    flow = EnsembleScoreMaker(members=members, chunk_size=2).make(records_from_atoms(structures()))
    responses = run_locally(flow, store=job_store)
    document = responses[flow.output.uuid][1].output
    assert document.n_failed == 3
    assert {s.status for s in document.structures} == {"error"}
    assert all("broken: prediction job for chunk" in s.reason for s in document.structures)
