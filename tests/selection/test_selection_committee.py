"""Committees of ACE potentials and ASE/uMLIP members through the ensemble's predict_member."""

import numpy as np
import pytest
from ase.build import bulk
from uqf_selection_data import small_cells

from uq_flows.errors import InputError, MemberError
from uq_flows.selection.committee import (
    ACE_FACTORY,
    committee_predictions,
    member_version,
    parse_committee,
    parse_committee_member,
)
from uq_flows.selection.direct import DirectConfig
from uq_flows.selection.pipeline import select_candidates
from uq_flows.selection.qbc import QBCConfig, select_from_predictions


def test_committee_forms(ace_files, tmp_path):
    spec = parse_committee_member(str(ace_files["a"]))
    assert spec.kind == "ase" and spec.model == ACE_FACTORY and spec.name == str(ace_files["a"])
    assert spec.kwargs_dict() == {"path": str(ace_files["a"].resolve())}
    named = parse_committee_member(f"first={ace_files['a']}")
    assert named.name == "first"
    assert parse_committee_member("chgnet-0.3.0").kind == "chgnet"
    assert "python-ace" in member_version(spec) and "sha256" in member_version(spec)
    with pytest.raises(MemberError, match="does not exist"):
        parse_committee_member(str(tmp_path / "missing.yaml"))
    with pytest.raises(MemberError, match="unknown member"):
        parse_committee_member("not-a-model")
    with pytest.raises(InputError, match="at least two"):
        parse_committee([str(ace_files["a"])])
    with pytest.raises(InputError, match="more than once"):
        parse_committee([str(ace_files["a"]), str(ace_files["a"])])


def test_ace_committee_agrees_where_potentials_agree(ace_files):
    cells = small_cells(6)
    close = committee_predictions(cells, parse_committee([str(ace_files["a"]), str(ace_files["b"])]))
    far = committee_predictions(cells, parse_committee([str(ace_files["a"]), str(ace_files["c"])]))
    numbers = [a.numbers for a in cells]
    assert all(p.status == ["ok"] * 6 for p in close + far)
    assert not select_from_predictions(close, numbers).selected.any()
    assert select_from_predictions(far, numbers).selected.all()
    # tighter thresholds select the more disagreeing, larger-rattle cells of the close pair
    tight = select_from_predictions(close, numbers, QBCConfig(energy_threshold=1, stress_threshold=1, force_threshold=0.004))
    assert tight.selected.any() and not tight.selected.all()
    assert tight.selected[-1] and not tight.selected[0]


def test_member_failures_become_statuses(ace_files):
    cells = small_cells(2) + [bulk("Al", "fcc", a=4.05, cubic=True)]  # Al is not in the ACE basis
    committee = parse_committee([str(ace_files["a"]), "emt=ase:ase.calculators.emt:EMT"])
    result = select_from_predictions(committee_predictions(cells, committee), [a.numbers for a in cells])
    assert result.status[2] == "error" and "Al" in result.reasons[2]
    assert not result.selected[2]


def test_pipeline_with_ace_committee_and_ace_descriptor(ace_files):
    cells = small_cells(8)
    result = select_candidates(
        cells, committee=[str(ace_files["a"]), str(ace_files["c"])], descriptor=f"ace:{ace_files['a']}",
        cache=False,
    )
    assert len(result.after_qbc) == 8 and result.direct is not None
    assert list(result.selected) == sorted(result.selected) and len(result.selected) >= 1
    summary = result.summary()
    assert summary["n_after_qbc"] == 8 and summary["n_clusters"] == result.direct.n_clusters
    assert summary["descriptor"]["n_features"] > 10


def test_pipeline_without_disagreement_selects_nothing(ace_files):
    result = select_candidates(small_cells(4), committee=[str(ace_files["a"]), str(ace_files["b"])], cache=False)
    assert result.selected.tolist() == [] and result.direct is None
    assert "QBC selected no candidate" in result.notes[0]


def test_more_clusters_than_candidates_is_refused_before_qbc_and_capped_after(ace_files, monkeypatch):
    import uq_flows.selection.pipeline as pipeline

    committee = [str(ace_files["a"]), str(ace_files["c"])]
    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "committee_predictions", lambda *a, **k: pytest.fail("the committee ran"))
        with pytest.raises(InputError, match="9 clusters requested for only 8 candidates"):
            select_candidates(small_cells(8), committee=committee, direct_config=DirectConfig(n_clusters=9))
    rows = np.repeat(np.random.default_rng(0).normal(size=(3, 4)), 2, axis=0)  # 6 candidates, 3 distinct
    result = select_candidates(None, features=rows, direct_config=DirectConfig(n_clusters=5))
    assert len(result.selected) == 3 and len({tuple(rows[j]) for j in result.selected}) == 3
    assert "6 of 6 candidates left after QBC and the descriptor (3 distinct)" in result.notes[0]


def test_features_and_structures_must_align():
    with pytest.raises(InputError, match="5 rows but there are 3 candidate structures"):
        select_candidates(small_cells(3), features=np.zeros((5, 2)))
    with pytest.raises(InputError, match="no candidates"):
        select_candidates(None, features=np.zeros((0, 2)))
    with pytest.raises(InputError, match="no candidates"):
        select_candidates()


@pytest.mark.slow
def test_two_chgnet_versions_as_committee():
    cells = small_cells(6)
    result = select_candidates(
        cells, committee=["chgnet-0.2.0", "chgnet-0.3.0"], qbc_config=QBCConfig(force_threshold=0.02),
        descriptor="chgnet-0.3.0", cache=False,
    )
    qbc = result.qbc
    assert qbc.status == ["ok"] * 6 and np.isfinite(qbc.metrics).all()
    assert (qbc.metrics[:, 1] > 0).all()  # two CHGNet versions never agree exactly
    # the most rattled cells are where the versions disagree most on forces
    assert qbc.metrics[4, 1] > qbc.metrics[0, 1] and qbc.metrics[5, 1] > qbc.metrics[1, 1]
    assert set(result.selected.tolist()) <= set(result.after_qbc.tolist())
