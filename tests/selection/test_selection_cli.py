"""uq-flows select: the documented contract, bad inputs (exit 2) and partial failures (exit 1)."""

import json

import numpy as np
from ase.build import bulk
from ase.io import read
from uqf_selection_data import blobs, small_cells

from tests.cli_helpers import run, run_json
from uq_flows.io import write_extxyz
from uq_flows.records import structure_id


def features_file(tmp_path, features, name="features.npy"):
    path = tmp_path / name
    np.save(path, features)
    return path


def test_features_only_selects_one_per_known_cluster(tmp_path):
    features, truth = blobs()
    path = features_file(tmp_path, features)
    out = run_json("select", "--features", path, "--n-clusters", 5, "--k", 1, "--plot", tmp_path / "pca.png")
    assert out["n_candidates"] == 200 and out["n_after_qbc"] == 200 and out["n_clusters"] == 5
    assert out["selected"] == sorted(out["selected"]) and sorted(truth[out["selected"]]) == [0, 1, 2, 3, 4]
    assert 0 < out["coverage"]["score"] <= 1 and out["qbc"] is None
    assert (tmp_path / "pca.png").read_bytes()[:4] == b"\x89PNG"
    again = run_json("select", "--features", path, "--n-clusters", 5, "--k", 1)
    assert again["selected"] == out["selected"]  # deterministic


def test_modes_seed_and_json_report(tmp_path):
    features, _ = blobs()
    path = features_file(tmp_path, features)
    a = run_json("select", "--features", path, "--n-clusters", 5, "--k", 3, "--mode", "random", "--seed", 1)
    b = run_json("select", "--features", path, "--n-clusters", 5, "--k", 3, "--mode", "random", "--seed", 1,
                 "--out", tmp_path / "report.json")
    assert a["selected"] == b["selected"] and len(a["selected"]) == 15
    assert json.loads((tmp_path / "report.json").read_text())["selected"] == b["selected"]
    assert b["direct"]["config"]["mode"] == "random"


def test_k_larger_than_clusters_is_reported_not_fatal(tmp_path):
    features, _ = blobs(sizes=(3, 60), seed=1)
    out = run_json("select", "--features", features_file(tmp_path, features), "--n-clusters", 2, "--k", 10)
    assert len(out["selected"]) == 13
    assert out["direct"]["n_clusters_below_k"] == 1 and any("fewer than k=10" in n for n in out["notes"])


def test_bad_inputs_exit_2_with_clear_messages(tmp_path):
    good, _ = blobs()
    bad_rows = good.copy()
    bad_rows[7, 2] = np.nan
    cases = [
        (["--features", features_file(tmp_path, np.zeros((0, 4)), "empty.npy")], "no candidates"),
        (["--features", features_file(tmp_path, bad_rows, "nan.npy")], "NaN or infinite values in 1 row(s): 7"),
        (["--features", features_file(tmp_path, good, "g.npy"), "--n-clusters", 500], "500 clusters requested"),
        (["--features", tmp_path / "missing.npy"], "no such file"),
        ([], "no candidates"),
        (["--features", features_file(tmp_path, good, "h.npy"), "--mode", "middle"], "--mode must be one of"),
        (["--features", features_file(tmp_path, good, "i.npy"), "--model", "chgnet-0.3.0"], "--features skips QBC"),
        (["--features", features_file(tmp_path, good, "j.npy"), "--out", tmp_path / "x.xyz"], "needs the candidate"),
        (["--features", features_file(tmp_path, good, "k.npy"), "--mode", "smallest"], "number of atoms"),
    ]
    for args, message in cases:
        result = run("select", *args, expect=2)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
        assert result.stdout == ""


def test_mismatched_rows_and_empty_files(tmp_path):
    cells = tmp_path / "cells.extxyz"
    write_extxyz(cells, small_cells(3))
    features = features_file(tmp_path, np.random.default_rng(0).normal(size=(5, 4)))
    result = run("select", cells, "--features", features, expect=2)
    assert "5 rows but there are 3 candidate structures" in " ".join(result.stderr.split())
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert "file is empty" in run("select", empty, "--no-qbc", expect=2).stderr
    result = run("select", cells, expect=2)
    assert "query by committee needs a committee" in " ".join(result.stderr.split())


def test_qbc_and_direct_from_the_cli_with_ace_files(tmp_path, ace_files):
    cells = small_cells(8)
    path = tmp_path / "candidates.extxyz"
    write_extxyz(path, cells)
    out = run_json(
        "select", path, "--model", ace_files["a"], "--model", f"other={ace_files['c']}",
        "--descriptor", f"ace:{ace_files['a']}", "--k", 1, "--out", tmp_path / "selected.extxyz",
        "--plot", tmp_path / "pca.png",
    )
    assert out["n_candidates"] == 8 and out["qbc"]["members"] == [str(ace_files["a"]), "other"]
    assert out["n_after_qbc"] == out["qbc"]["n_selected"] and 1 <= len(out["selected"]) <= out["n_after_qbc"]
    written = read(tmp_path / "selected.extxyz", index=":")
    assert [a.info["candidate_index"] for a in written] == out["selected"]
    assert [a.info["uq_id"] for a in written] == out["ids"] == [structure_id(cells[j]) for j in out["selected"]]
    assert all("qbc_force" in a.info and "cluster" in a.info for a in written)
    # agreeing potentials: nothing to label, not an error
    quiet = run_json("select", path, "--model", ace_files["a"], "--model", ace_files["b"])
    assert quiet["selected"] == [] and quiet["n_after_qbc"] == 0 and quiet["coverage"] is None


def test_failed_candidates_exit_1_unless_allowed(tmp_path, ace_files):
    cells = small_cells(4) + [bulk("Al", "fcc", a=4.05, cubic=True)]  # Al: not in the ACE potentials
    path = tmp_path / "candidates.extxyz"
    write_extxyz(path, cells)
    args = ["select", path, "--model", ace_files["a"], "--model", ace_files["c"],
            "--descriptor", f"ace:{ace_files['a']}"]
    out = run_json(*args, "--out", tmp_path / "s.extxyz", expect=1)
    assert out["failed"][0]["index"] == 4 and out["failed"][0]["stage"] == "qbc" and "error" in out
    assert not (tmp_path / "s.extxyz").exists()
    allowed = run_json(*args, "--allow-failed", "--out", tmp_path / "s.extxyz")
    assert 4 not in allowed["selected"] and (tmp_path / "s.extxyz").exists()
