"""A loop replayed on existing data: stored member predictions, a teacher named by member, and
DFT labels replayed from a labelled dataset (the embedded default, rockets in-process)."""

import json

import numpy as np
import pytest

from tests.cli_helpers import run, run_json
from tests.conftest import emt_dataset, write_replay
from uq_flows.campaign import Campaign
from uq_flows.io import with_labels, write_extxyz


@pytest.mark.slow
def test_a_loop_over_stored_predictions_and_a_dataset_labeller(tmp_path):
    pool = emt_dataset(12)  # EMT labels: the "DFT" dataset; noise grows along the pool, so U does
    write_extxyz(tmp_path / "dft.extxyz", pool[:-1])  # the last structure was never labelled
    config = write_replay(tmp_path, pool, per_atom=True, energy_shift=0.5 * len(pool[0]), align_max_residual=0.2,
                          dft={"labeller": "dataset", "dataset": "dft.extxyz"})
    (loop,) = run_json("run", config)["loops"]
    (it,) = loop["iterations"]
    assert loop["state"] == "completed" and it["n_candidates"] == 12
    outcomes = ("n_dft_ok", "n_dft_failed", "n_teacher", "n_teacher_failed", "n_deferred", "n_rejected")
    assert sum(it[k] for k in outcomes) == 12 and it["n_dft_failed"] == 1 and it["n_teacher"] > 0
    assert it["dft_total"] == it["n_dft_ok"] + it["n_dft_failed"]  # replayed labels count in the DFT budget
    with Campaign.open() as campaign:
        rows = [row for row, _, _ in campaign.labels({"loop": loop["id"], "kind": "dft"})]
    failed = [row for row in rows if row["status"] != "ok"]
    assert len(failed) == 1 and "no stored prediction in dft.extxyz" in failed[0]["reason"]
    assert all(row["provenance"]["replayed_from"] == str(tmp_path / "dft.extxyz") for row in rows)
    teacher = json.loads(run("results", loop["id"], "--source", "teacher", "--format", "extxyz",
                             "--out", tmp_path / "teacher.extxyz", "--json").stdout)
    assert teacher["n_structures"] == it["n_teacher"]


@pytest.mark.slow
def test_a_pool_campaign_takes_batches_until_the_pool_is_used_up(tmp_path):
    write_extxyz(tmp_path / "test.extxyz", emt_dataset(4, seed=9))
    config = write_replay(
        tmp_path, emt_dataset(12), name="pool", structures=[], pool={"structures": ["pool.extxyz"], "batch": 4},
        test=["test.extxyz"],
        # the members share the dataset's energy zero: no alignment, so no audit, and every label trains
        align_energies="off", audit={"enabled": "off"}, explore={"n_cago_members": 2},
        select={"formation_energy_prefilter": False,
                "qbc_config": {"force_threshold": 1e-9, "energy_threshold": 1e-9, "stress_threshold": 1e-9,
                               "max_pressure": float("inf")}},  # an ACE fit on 4 cells: wild stresses
        convergence={"max_iterations": 6})
    (loop,) = run_json("run", config)["loops"]
    iterations = loop["iterations"]
    assert loop["state"] == "completed" and [it["n_candidates"] for it in iterations] == [4, 4, 4]
    assert [it["pool_left"] for it in iterations] == [8, 4, 0] and iterations[-1]["reason"] == "the pool is used up"
    for it in iterations:
        assert it["fixed_test"]["n_structures"] == 4 and it["fixed_test"]["force_rmse"] > 0
    per_iteration = [it["dft_atoms"] for it in iterations]
    assert per_iteration[0] > 0 and [it["dft_atoms_total"] for it in iterations] == list(np.cumsum(per_iteration))
    table = run("status", loop["id"]).stderr
    assert "fixed test: the config's test set (4 structures)" in table
    with Campaign.open() as campaign:
        taken = [row["id"] for row in campaign["campaign_structures"].find(
            {"loop": loop["id"], "iteration": {"$gte": 0}}, {"id": 1, "stage": 1}) if row["stage"] != "explored"]
    assert len(taken) == len(set(taken)) == 12  # every pool structure taken once


def test_an_ambiguous_dataset_stops_the_loop_before_anything_is_stored(tmp_path):
    pool = emt_dataset(4)
    clash = [*pool, with_labels(pool[0].copy(), pool[0].get_potential_energy() + 1.0, pool[0].get_forces())]
    write_extxyz(tmp_path / "dft.extxyz", clash)
    config = write_replay(tmp_path, pool, name="clash", dft={"labeller": "dataset", "dataset": "dft.extxyz"})
    result = run("run", config, "--json", expect=2)
    assert "structures 0 and 4 have the same" in json.loads(result.stdout)["error"]["message"]
    with Campaign.open() as campaign:
        assert campaign.loops() == []  # nothing stored, nothing submitted


@pytest.mark.slow
def test_a_pool_no_larger_than_a_batch_is_one_iteration(tmp_path):
    config = write_replay(tmp_path, emt_dataset(3), name="small", structures=[],
                          pool={"structures": ["pool.extxyz"], "batch": 4}, align_energies="off",
                          audit={"enabled": "off"}, convergence={"max_iterations": 3})
    (loop,) = run_json("run", config)["loops"]
    (it,) = loop["iterations"]
    assert it["n_candidates"] == 3 and it["pool_left"] == 0 and it["reason"] == "the pool is used up"
