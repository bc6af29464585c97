"""Stored predictions as members (NAME=precomputed:PATH, NAME=precomputed-per-atom:PATH)."""

import json

import numpy as np
import pytest
from ase import Atoms

from tests.cli_helpers import run
from tests.conftest import emt_dataset, perturbed
from uq_flows.ensemble.members import parse_member
from uq_flows.ensemble.predict import predict_member
from uq_flows.errors import MemberError
from uq_flows.io import read_labels, read_structures, with_labels, write_extxyz
from uq_flows.records import structure_id
from uq_flows.uncertainty import force_uncertainty


def stored_labels(folder, name):
    """The labels as the member file holds them (written at extxyz precision), energies total."""
    return read_labels(read_structures(folder / f"{name}.extxyz"), "per-atom" if name == "b" else "total")


def unlabelled(structures):
    return [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in structures]


@pytest.fixture
def stored(tmp_path):
    """Six EMT-labelled Cu cells, two members' stored predictions of them, and a seventh cell
    that no member stored. Member a stores uq_ids (its positions are rounded differently, so
    only the uq_id finds them); member b stores per-atom energies and no ids."""
    reference = emt_dataset(6)
    a, b = perturbed(reference, 0.01, 1), perturbed(reference, 0.03, 2)
    shifted = []
    for atoms in a:
        moved = with_labels(atoms.copy(), atoms.get_potential_energy(), atoms.get_forces())
        moved.positions += 1e-3
        moved.info["uq_id"] = structure_id(atoms)
        shifted.append(moved)
    write_extxyz(tmp_path / "a.extxyz", shifted)
    write_extxyz(tmp_path / "b.extxyz", [with_labels(x.copy(), x.get_potential_energy() / len(x), x.get_forces())
                                         for x in b])
    write_extxyz(tmp_path / "reference.extxyz", reference)
    extra = emt_dataset(7, seed=5)[6]
    candidates = unlabelled(reference) + unlabelled([extra])
    write_extxyz(tmp_path / "candidates.extxyz", candidates)
    return {"reference": reference, "a": a, "b": b, "candidates": candidates}


def test_a_stored_member_answers_by_uq_id_or_content_id_and_reports_what_it_lacks(stored, tmp_path):
    candidates = stored["candidates"]
    for atoms in candidates:
        atoms.info["uq_id"] = structure_id(atoms)
    a = predict_member(parse_member(f"a=precomputed:{tmp_path / 'a.extxyz'}"), candidates)
    b = predict_member(parse_member(f"b=precomputed-per-atom:{tmp_path / 'b.extxyz'}"), candidates)
    for predicted, name in ((a, "a"), (b, "b")):
        assert predicted.status == ["ok"] * 6 + ["missing_prediction"]
        assert "no stored prediction" in predicted.reasons[6] and np.isnan(predicted.energies[6])
        labels = stored_labels(tmp_path, name)  # totals, whatever the file stored
        np.testing.assert_allclose(predicted.energies[:6], labels.energies, rtol=1e-12)
        np.testing.assert_array_equal(predicted.forces[: len(labels.forces)], labels.forces)
        np.testing.assert_allclose(labels.energies, read_labels(stored[name]).energies, rtol=1e-6)
    assert a.version.startswith("precomputed a.extxyz (sha256 ")


def test_stored_member_forms_are_checked(tmp_path):
    with pytest.raises(MemberError, match="do not exist"):
        parse_member(f"x=precomputed:{tmp_path / 'missing.extxyz'}")
    spec = parse_member(f"precomputed-per-atom:{tmp_path}")  # a folder is a structure source too
    assert spec.kind == "precomputed" and spec.kwargs_dict() == {"energy": "per-atom"} and spec.name == tmp_path.name
    twice = emt_dataset(2)
    twice[1] = twice[0]  # stored twice with one answer: fine
    write_extxyz(tmp_path / "twice.extxyz", twice)
    same = predict_member(parse_member(f"t=precomputed:{tmp_path / 'twice.extxyz'}"), unlabelled(twice[:1]))
    assert same.status == ["ok"] and same.energies[0] == pytest.approx(twice[0].get_potential_energy())
    twice[1] = with_labels(twice[0].copy(), twice[0].get_potential_energy() + 1.0, twice[0].get_forces())
    write_extxyz(tmp_path / "ambiguous.extxyz", twice)
    with pytest.raises(MemberError, match="same content id .* but different labels"):
        predict_member(parse_member(f"u=precomputed:{tmp_path / 'ambiguous.extxyz'}"), unlabelled(twice[:1]))


def test_score_and_measure_rmse_with_stored_members(stored, tmp_path):
    members = ["--model", f"a=precomputed:{tmp_path / 'a.extxyz'}",
               "--model", f"b=precomputed-per-atom:{tmp_path / 'b.extxyz'}"]
    partial = run("score", tmp_path / "candidates.extxyz", *members, "--variant", 0, "--json", expect=1)
    rows = json.loads(partial.stdout)["structures"]
    assert [row["status"] for row in rows].count("ok") == 6 and rows[6]["U"] is None
    assert "missing_prediction" in json.dumps(rows[6])
    forces = np.stack([stored_labels(tmp_path, k).forces for k in ("a", "b")])
    n_atoms = [len(x) for x in stored["reference"]]
    expected = force_uncertainty(forces, n_atoms, variant=0)
    np.testing.assert_allclose([row["U"] for row in rows[:6]], expected, rtol=1e-9)

    rmse = json.loads(run("measure-rmse", tmp_path / "reference.extxyz", *members, "--out", tmp_path / "rmse.json",
                          "--json").stdout)["rmse"]
    truth = read_labels(read_structures(tmp_path / "reference.extxyz")).forces
    for name in ("a", "b"):
        error = stored_labels(tmp_path, name).forces - truth
        assert rmse[name] == pytest.approx(float(np.sqrt(np.mean(error**2))), rel=1e-9)
