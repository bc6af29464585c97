"""Selection Makers as real jobflow flows on a MontyStore JobStore (run_locally)."""

from ase.build import bulk
from jobflow import run_locally
from uqf_selection_data import small_cells

from uq_flows.records import records_from_atoms
from uq_flows.selection.direct import DirectConfig
from uq_flows.selection.jobs import (
    DescriptorMaker,
    DirectMaker,
    QBCDocument,
    QBCMaker,
    SelectionDocument,
    SelectionMaker,
)
from uq_flows.selection.pipeline import select_candidates


def test_flow_shape_and_categories(ace_files):
    maker = SelectionMaker(
        qbc_maker=QBCMaker(committee=[str(ace_files["a"]), "chgnet-0.3.0"], chunk_size=3),
        descriptor_maker=DescriptorMaker(descriptor=f"ace:{ace_files['a']}"),
    )
    flow = maker.make(records_from_atoms(small_cells(8)))
    names = [j.name for j in _all_jobs(flow)]
    assert sum(n.startswith("qbc ") for n in names) == 6  # 2 members × 3 chunks
    categories = {j.name: j.config.manager_config.get("_category") for j in _all_jobs(flow)}
    assert categories[f"qbc {ace_files['a']} 1/3"] == "cpu"  # ACE predictions: selection category
    assert categories["qbc chgnet-0.3.0 1/3"] == "gpu"  # uMLIP predictions: scoring category
    assert categories["qbc"] == categories["descriptors"] == categories["direct"] == "cpu"


def _all_jobs(flow):
    for item in flow.jobs:
        if hasattr(item, "jobs"):
            yield from _all_jobs(item)
        else:
            yield item


def test_selection_flow_matches_the_engine(job_store, ace_files):
    cells = small_cells(8)
    committee = [str(ace_files["a"]), str(ace_files["c"])]
    descriptor = f"ace:{ace_files['a']}"
    maker = SelectionMaker(
        qbc_maker=QBCMaker(committee=committee, chunk_size=3),
        descriptor_maker=DescriptorMaker(descriptor=descriptor),
        direct_maker=DirectMaker(n_clusters=3, k=1),
    )
    records = records_from_atoms(cells)
    flow = maker.make(records)
    responses = run_locally(flow, store=job_store, ensure_success=True)
    document = responses[flow.output.uuid][1].output
    assert isinstance(document, SelectionDocument)
    expected = select_candidates(cells, committee=committee, descriptor=descriptor,
                                 direct_config=DirectConfig(n_clusters=3, k=1), cache=False)
    assert document.selected == expected.selected.tolist() and document.n_clusters == 3
    assert document.selected_ids == [records[j].id for j in document.selected]
    assert document.n_after_qbc == len(expected.after_qbc) and document.qbc["members"] == committee
    assert document.labels == expected.labels.tolist()
    with job_store as store:
        descriptor_doc = store.query_one({"name": "descriptors"})
    assert descriptor_doc["output"]["features"]["store"] == "data"  # the matrix is in the data store


def test_qbc_maker_marks_failed_members_and_direct_skips_them(job_store, ace_files):
    cells = small_cells(4) + [bulk("Al", "fcc", a=4.05, cubic=True)]
    maker = SelectionMaker(
        qbc_maker=QBCMaker(committee=[str(ace_files["a"]), str(ace_files["c"])], chunk_size=5),
        descriptor_maker=DescriptorMaker(descriptor=f"ace:{ace_files['a']}", cache=False),
        direct_maker=DirectMaker(k=1),
    )
    flow = maker.make(records_from_atoms(cells))
    responses = run_locally(flow, store=job_store, ensure_success=True)
    document = responses[flow.output.uuid][1].output
    assert 4 not in document.selected and document.failed[0]["index"] == 4
    qbc_jobs = [j for j in _all_jobs(flow) if j.name == "qbc"]
    qbc_doc = responses[qbc_jobs[0].uuid][1].output
    assert isinstance(qbc_doc, QBCDocument) and qbc_doc.structures[4].status == "error"


def test_without_qbc_every_candidate_is_described(job_store, ace_files):
    cells = small_cells(6)
    maker = SelectionMaker(qbc_maker=None, descriptor_maker=DescriptorMaker(descriptor=f"ace:{ace_files['a']}"),
                           direct_maker=DirectMaker(n_clusters=2, k=2))
    flow = maker.make(records_from_atoms(cells))
    assert [j.name for j in _all_jobs(flow)] == ["descriptors", "direct"]
    responses = run_locally(flow, store=job_store, ensure_success=True)
    document = responses[flow.output.uuid][1].output
    assert document.n_after_qbc == document.n_described == 6 and document.qbc is None
    assert len(document.selected) == 4 and document.n_clusters == 2
