"""Broken structures never reach a member: non-finite positions/cell → ``invalid``, atoms
closer than the hard minimum distance → ``rejected``; U is None for them, never a number."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from jobflow import run_locally

from uq_flows.ensemble import MemberPredictions, parse_member, predict_member
from uq_flows.ensemble.jobs import EnsembleScoreMaker
from uq_flows.ensemble.scoring import combine_predictions, resolve_weights, score_structures
from uq_flows.errors import InputError
from uq_flows.screening import HARD_MIN_DISTANCE
from uq_flows.records import records_from_atoms

EMT_SPEC = parse_member("emt=ase:ase.calculators.emt:EMT")
# loading this member raises: a structure that reaches it would fail with status "error"
BROKEN = [parse_member(f"broken{k}=ase:uqf_ensemble_calculators:BrokenInit") for k in (1, 2)]


class RecordingEMT(EMT):
    """EMT that remembers the positions of every structure it computed."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        self.seen.append(atoms.positions.copy())
        super().calculate(atoms, properties, system_changes)


@pytest.fixture
def good(cu_rattled):
    return cu_rattled


@pytest.fixture
def too_close():
    """Two Cu atoms 0.1 Å apart in a 6 Å cell (the user's report: U = 9e13 eV/Å)."""
    return Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.1]], cell=[6, 6, 6], pbc=True)


@pytest.fixture
def nan_position(good):
    atoms = good.copy()
    atoms.positions[1, 0] = np.nan
    return atoms


def test_screened_structures_get_statuses_and_nan_without_the_model_running(good, too_close, nan_position):
    infinite_cell = good.copy()
    infinite_cell.cell[0, 0] = np.inf
    calculator = RecordingEMT()
    p = predict_member(EMT_SPEC, [too_close, good, nan_position, infinite_cell], calculator=calculator)
    assert p.status == ["rejected", "ok", "invalid", "invalid"]
    assert p.reasons[0] == "atoms 0.100 Å apart, closer than the minimum distance 0.5 Å"
    assert p.reasons[2] == "structure has non-finite positions on atoms [1]"
    assert p.reasons[3] == "structure has a non-finite cell"
    assert len(calculator.seen) >= 1 and all(np.array_equal(x, good.positions) for x in calculator.seen)
    for j in (0, 2, 3):
        assert np.isnan(p.energies[j]) and np.isnan(p.structure_forces(j)).all() and np.isnan(p.stresses[j]).all()
    assert np.isfinite(p.structure_forces(1)).all()


def test_an_all_screened_batch_never_loads_the_member(too_close, nan_position):
    p = predict_member(BROKEN[0], [too_close, nan_position])  # loading would raise MemberError
    assert p.status == ["rejected", "invalid"] and p.version == BROKEN[0].version
    back = MemberPredictions.from_dict(p.as_dict())
    assert back.status == p.status and back.reasons == p.reasons


def test_periodic_images_count_and_the_minimum_is_configurable(good, too_close):
    # one atom per cell, its image 0.3 Å away along a
    chain = Atoms("Cu", positions=[[0, 0, 0]], cell=[0.3, 6, 6], pbc=True)
    p = predict_member(EMT_SPEC, [chain], calculator=RecordingEMT())
    assert p.status == ["rejected"] and "0.300 Å apart" in p.reasons[0]

    calculator = RecordingEMT()
    p = predict_member(EMT_SPEC, [too_close, good], calculator=calculator, min_distance=0.05)
    assert p.status[1] == "ok" and p.status[0] != "rejected"  # 0.1 Å is allowed now: the model saw it
    assert any(np.array_equal(x, too_close.positions) for x in calculator.seen)
    p = predict_member(EMT_SPEC, [good], min_distance=2.6)  # Cu–Cu in fcc Cu is 2.55 Å
    assert p.status == ["rejected"] and "minimum distance 2.6 Å" in p.reasons[0]
    assert predict_member(EMT_SPEC, [too_close], min_distance=0).status != ["rejected"]
    assert HARD_MIN_DISTANCE == 0.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.1, "0.5", None, True])
def test_bad_minimum_distances_are_input_errors(good, bad):
    with pytest.raises(InputError, match="minimum distance must be a finite number"):
        predict_member(EMT_SPEC, [good], min_distance=bad)
    with pytest.raises(InputError, match="minimum distance"):
        score_structures([good], [EMT_SPEC, BROKEN[0]], min_distance=bad)
    with pytest.raises(InputError, match="minimum distance"):
        EnsembleScoreMaker(members=["emt=ase:ase.calculators.emt:EMT", "chgnet-0.3.0"], min_distance=bad).make(
            records_from_atoms([good])
        )


def test_score_structures_of_only_broken_structures_loads_no_member(too_close, nan_position):
    scores, predictions = score_structures([too_close, nan_position], BROKEN, "equal")
    assert scores.status == ["rejected", "invalid"]
    assert np.isnan(scores.u).all() and np.isnan(scores.mean_energy).all()
    rows = scores.rows()
    assert [r["U"] for r in rows] == [None, None]
    # a structure's own fault: one reason, no member name, not repeated per member
    assert rows[0]["reason"] == "atoms 0.100 Å apart, closer than the minimum distance 0.5 Å"
    assert rows[1]["reason"] == "structure has non-finite positions on atoms [1]"
    assert all(p.status == ["rejected", "invalid"] for p in predictions)


def test_a_structure_status_wins_over_a_member_failure(good, too_close):
    """A lost chunk of one member says "error"; the other member screened the structure out."""
    screened = predict_member(EMT_SPEC, [good, too_close])
    lost = MemberPredictions.failed("lost", screened.n_atoms, "error", "job lost")
    scores = combine_predictions([screened, lost], resolve_weights(["emt", "lost"], "equal"))
    assert scores.status == ["error", "rejected"]
    assert scores.reasons == ["lost: job lost", screened.reasons[1]]
    assert np.isnan(scores.u).all()


def test_the_scoring_flow_screens_in_memory_records(job_store, good, too_close, nan_position):
    """The loop path: records built in memory (no file read) with NaN positions → invalid."""
    members = ["emt=ase:ase.calculators.emt:EMT", "emt2=ase:uqf_ensemble_calculators:ScaledEMT"]
    records = records_from_atoms([good, too_close, nan_position])
    flow = EnsembleScoreMaker(members=members, chunk_size=2).make(records)
    document = run_locally(flow, store=job_store, ensure_success=True)[flow.output.uuid][1].output
    assert [s.status for s in document.structures] == ["ok", "rejected", "invalid"]
    assert [s.U is None for s in document.structures] == [False, True, True]
    assert "0.100 Å apart" in document.structures[1].reason
    assert "non-finite positions on atoms [1]" in document.structures[2].reason
    assert document.n_ok == 1 and document.n_failed == 2
    assert document.structures[1].mean_forces is None

    # a member that cannot even load: its all-screened chunk completes without loading it
    members = ["emt=ase:ase.calculators.emt:EMT", "broken=ase:uqf_ensemble_calculators:BrokenInit"]
    flow = EnsembleScoreMaker(members=members, chunk_size=1, min_distance=0.05).make(records[1:])
    document = run_locally(flow, store=job_store)[flow.output.uuid][1].output
    statuses = [s.status for s in document.structures]
    assert statuses == ["error", "invalid"]  # 0.1 Å passes a 0.05 Å screen: the broken member fails on it


def test_a_weights_file_with_other_names_says_so(tmp_path):
    from uq_flows.ensemble.rmse import write_rmse_file
    from uq_flows.errors import InputError

    path = tmp_path / "rmse.json"
    write_rmse_file(path, {"chgnet": 0.1, "sevennet": 0.2})
    with pytest.raises(InputError, match=r"no force RMSE for chgnet-0.3.0 in .*rmse.json weights: the file names "
                                         r"chgnet, sevennet; use the members' names \(chgnet-0.3.0, sevennet\)"):
        resolve_weights(["chgnet-0.3.0", "sevennet"], path)
    with pytest.raises(InputError, match="give an RMSE file"):
        resolve_weights(["chgnet-0.3.0", "emt"], "paper")
