"""The ACE Makers as real jobflow flows on the embedded JobStore, fed by the labelling stage's dataset."""

import numpy as np
import pytest
from ase.build import bulk
from jobflow import run_locally
from monty.json import MontyDecoder

from tests.ace.ace_data import cu_bulk, out_of_distribution
from tests.conftest import flow_output
from uq_flows.ace import AceFitOptions, extrapolation_grades
from uq_flows.ace.jobs import AceFitDocument, AceFitMaker, AceUncertaintyDocument, AceUncertaintyMaker
from uq_flows.labeling.assembly import assemble_dataset
from uq_flows.labeling.labels import Label
from uq_flows.labeling.routing import route_by_uncertainty
from uq_flows.records import records_from_atoms


def distilled(structures, seed_offset=0, drop_one_dft=False):
    """A DistilledDataset as the labelling stage assembles it: EMT 'DFT' above U_c, EMT teacher below."""
    records = records_from_atoms(structures)
    ids = [r.id for r in records]
    u = [0.2 + 0.1 * ((j + seed_offset) % 3) for j in range(len(ids))]
    routes = route_by_uncertainty(ids, u, uc=0.35)
    dft, teacher = [], []
    for route, atoms in zip(routes, structures):
        label = Label.from_results(route.id, route.route, "emt", atoms.get_potential_energy(), atoms.get_forces())
        (dft if route.route == "dft" else teacher).append(label)
    if drop_one_dft:
        dft[0] = None  # a DFT job that produced nothing: assembly records a failed label
    dataset = assemble_dataset({r.id: r.to_atoms() for r in records}, routes, dft, teacher, align_energies=False,
                               min_success_fraction=0.5)
    return records, dataset


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from uq_flows.manager.stores import embedded_jobstore

    store = embedded_jobstore(tmp_path_factory.mktemp("store"))
    records, dataset = distilled(cu_bulk(24, seed=0))
    test_records, test_dataset = distilled(cu_bulk(6, seed=1), seed_offset=1, drop_one_dft=True)
    maker = AceFitMaker(options=AceFitOptions(backend="linear", n_functions=20, ensemble_size=3, outlier_filter="none"))
    flow = maker.make(records, dataset, test_records, test_dataset)
    run_locally(flow, store=store, ensure_success=True)
    return store, flow, MontyDecoder().process_decoded(flow_output(store, flow))


def test_fit_flow_has_one_job_per_member_with_categories():
    records, dataset = distilled(cu_bulk(4, seed=0))
    flow = AceFitMaker(options=AceFitOptions(backend="pacemaker", ensemble_size=2)).make(records, dataset)
    members = [j for j in flow.jobs if "member" in j.name]
    assert [j.name for j in members] == ["ace fit member 1/2", "ace fit member 2/2"]
    assert {j.config.manager_config["_category"] for j in members} == {"cpu"}
    (collect,) = [j for j in flow.jobs if j.name == "ace fit collect"]
    assert collect.config.manager_config["_category"] == "cpu"


def test_fit_document_from_the_labelling_stage_dataset(fitted):
    _, _, document = fitted
    assert isinstance(document, AceFitDocument)
    assert document.n_train == 24 and document.n_test == 5  # the missing DFT label is left out
    assert document.metrics_of == "ensemble mean" and len(document.members) == 3
    assert document.metrics.train_force_rmse < 0.02 and document.metrics.test_force_rmse < 0.02
    assert document.committee_thresholds.force_config > 0
    assert [m.seed for m in document.members] == [42, 43, 44]


def test_files_live_in_the_data_store_and_write_back(fitted, tmp_path):
    store, _, document = fitted
    with store:
        docs = list(store.docs_store.query({"name": "ace fit collect"}))
    assert len(docs) == 1
    member = docs[0]["output"]["members"][0]
    for key in ("potential_yaml", "potential_yace", "active_set"):
        assert member[key]["store"] == "data" and "blob_uuid" in member[key]
    paths = document.write(tmp_path)
    assert [p.parent.name for p in paths] == ["member-0", "member-1", "member-2"]
    assert all(p.with_suffix(".asi").exists() and p.with_suffix(".yace").exists() for p in paths)
    grades = extrapolation_grades(paths[0], out_of_distribution(), paths[0].with_suffix(".asi"))
    assert min(g.max() for g in grades) > 10


def test_uncertainty_maker_gives_gamma_and_committee_per_structure(fitted, tmp_path):
    store, fit_flow, _ = fitted
    gold = bulk("Au", "fcc", a=4.08)
    structures = records_from_atoms([*cu_bulk(2, seed=9), *out_of_distribution(), gold])
    job = AceUncertaintyMaker().make(fit_flow.output, structures)
    run_locally(job, store=store, ensure_success=True, allow_external_references=True)
    with store:
        document = MontyDecoder().process_decoded(store.get_output(job.uuid, load=True))
    assert isinstance(document, AceUncertaintyDocument) and document.n_members == 3
    rows = document.structures
    assert [r.id for r in rows] == [s.id for s in structures]
    assert [r.status for r in rows] == ["ok"] * 5 + ["unsupported_element"]
    assert "Au not in the potential" in rows[5].reason and rows[5].gamma is None
    assert all(r.gamma < 2 for r in rows[:2]) and all(r.gamma > 10 and r.extrapolative for r in rows[2:5])
    assert all(r.novel for r in rows[2:5])
    assert document.gamma_atoms[0] is not None and len(document.gamma_atoms[3]) == 2
    assert np.max(document.force_uncertainty_atoms[2]) == pytest.approx(rows[2].force_uncertainty)
