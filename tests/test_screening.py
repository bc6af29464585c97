"""The hard screens before any model: non-finite arrays, atoms closer than HARD_MIN_DISTANCE;
teacher labels of such structures are never ok."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from uq_flows.ensemble import parse_member
from uq_flows.errors import InputError, MemberError
from uq_flows.labeling.labels import REJECTED
from uq_flows.screening import (
    DEFAULT_MIN_DISTANCE,
    HARD_MIN_DISTANCE,
    STORED_DISTANCE_CAP,
    check_min_distance,
    min_interatomic_distance,
    shortest_distance_within,
    structure_problem,
    non_finite_problem,
)
from uq_flows.labeling.teacher import teacher_labels

EMT = parse_member("emt=ase:ase.calculators.emt:EMT")
MISSING = parse_member("missing=ase:uqf_no_such_module:Calculator")  # loading it raises MemberError


def structures():
    good = bulk("Cu", "fcc", a=3.61, cubic=True)
    good.rattle(0.05, seed=1)
    too_close = Atoms("Cu2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[6, 6, 6], pbc=True)
    nan_position = good.copy()
    nan_position.positions[3] = [0.0, np.inf, np.nan]
    return [good, too_close, nan_position]


def test_non_finite_problem_names_atoms_and_cell():
    good, _, nan_position = structures()
    assert non_finite_problem(good) is None
    assert non_finite_problem(nan_position) == "non-finite positions on atoms [3]"
    many = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 1, 1))
    many.positions[:] = np.nan
    many.cell[2, 2] = -np.inf
    assert non_finite_problem(many) == "non-finite positions on atoms [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] ... and a non-finite cell"


def test_the_hard_minimum_sits_below_the_cago_screen_and_is_checked():
    assert HARD_MIN_DISTANCE == 0.5 and DEFAULT_MIN_DISTANCE == 0.75
    assert check_min_distance(0) == 0.0 and check_min_distance(np.float32(0.5)) == 0.5
    for bad in (math.nan, math.inf, -1e-9, "1", None, False):
        with pytest.raises(InputError, match="finite number ≥ 0"):
            check_min_distance(bad)


def test_teacher_labels_of_broken_structures_are_rejected_with_the_reason():
    labels = teacher_labels(structures(), ["good", "close", "nan"], EMT)
    assert [x.status for x in labels] == ["ok", REJECTED, REJECTED]
    assert labels[1].reason == "rejected: atoms 0.100 Å apart, closer than the minimum distance 0.5 Å"
    assert labels[2].reason == "invalid: structure has non-finite positions on atoms [3]"
    assert labels[1].energy is None and labels[1].forces is None and labels[2].forces is None
    assert labels[1].provenance["energy_from"] == "emt"


def test_teacher_labels_of_only_broken_structures_load_no_model():
    _, too_close, nan_position = structures()
    labels = teacher_labels([too_close, nan_position], ["close", "nan"], MISSING, forces_from=MISSING)
    assert [x.status for x in labels] == [REJECTED, REJECTED]
    # with the screen relaxed, the 0.1 Å pair reaches the model, which cannot load
    with pytest.raises(MemberError, match="cannot import uqf_no_such_module"):
        teacher_labels([too_close], ["close"], MISSING, min_distance=0.05)


def test_min_distance_of_small_cells_agrees_with_the_ase_neighbour_list():
    """The array path (cells up to 64 atoms) against ASE on skewed cells, partial periodicity,
    atoms outside the cell and cutoffs larger than the cell."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        n = int(rng.integers(1, 17))
        cell = rng.normal(size=(3, 3)) * 0.6 + np.diag(rng.uniform(2, 6, 3))
        atoms = Atoms(f"Cu{n}", positions=rng.uniform(-3, 9, (n, 3)), cell=cell, pbc=rng.random(3) < 0.7)
        cutoff = float(rng.uniform(0.5, 4.0))
        distances = neighbor_list("d", atoms, cutoff)
        expected = float(distances.min()) if distances.size and (n > 1 or atoms.pbc.any()) else math.inf
        assert min_interatomic_distance(atoms, cutoff) == pytest.approx(expected, rel=1e-9), (atoms, cutoff)
    large = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 2))  # 72 atoms: the neighbour list
    assert min_interatomic_distance(large) == pytest.approx(3.61 / math.sqrt(2))


def test_a_stored_shortest_distance_decides_screens_below_its_cap():
    """The campaign measures each structure's shortest distance once (capped at 3 Å); every screen
    below the cap uses it, a screen above measures again."""
    _, too_close, _ = structures()
    roomy = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 3.4]], cell=[8, 8, 8], pbc=True)
    assert shortest_distance_within(too_close) == pytest.approx(0.1)
    assert shortest_distance_within(roomy) == STORED_DISTANCE_CAP  # 3.4 Å: stored as "3 Å or more"
    assert structure_problem(roomy, 0.75, shortest=0.2) == (
        "atoms 0.200 Å apart, closer than the minimum distance 0.75 Å")  # the stored value is used
    assert structure_problem(roomy, 3.5, shortest=STORED_DISTANCE_CAP) == (
        "atoms 3.400 Å apart, closer than the minimum distance 3.5 Å")  # above the cap: measured
    assert structure_problem(roomy, 3.0, shortest=STORED_DISTANCE_CAP) is None
