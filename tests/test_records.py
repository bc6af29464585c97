import numpy as np
from ase.build import bulk

from uq_flows.records import StructureRecord, jsonable, structure_id


def test_id_is_stable_under_noise_below_precision_and_changes_above():
    atoms = bulk("Si", "diamond", a=5.43)
    tiny = atoms.copy()
    tiny.positions += 1e-7
    moved = atoms.copy()
    moved.positions[0, 0] += 1e-3
    assert structure_id(atoms) == structure_id(tiny)
    assert structure_id(atoms) != structure_id(moved)
    assert structure_id(atoms).startswith("uq-") and len(structure_id(atoms)) == 3 + 24


def test_id_depends_on_species_order_cell_and_pbc():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    swapped = atoms.copy()
    swapped.numbers = swapped.numbers[::-1]
    strained = atoms.copy()
    strained.set_cell(atoms.cell * 1.01, scale_atoms=False)
    molecule = atoms.copy()
    molecule.pbc = False
    ids = {structure_id(a) for a in (atoms, swapped, strained, molecule)}
    assert len(ids) == 4


def test_negative_zero_does_not_change_id():
    atoms = bulk("Cu", "fcc", a=3.61)
    flipped = atoms.copy()
    flipped.positions[0] = [-0.0, -0.0, -0.0]
    assert structure_id(atoms) == structure_id(flipped)


def test_record_round_trip_keeps_geometry_and_id():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    record = StructureRecord.from_atoms(atoms, source="x.xyz:3")
    back = StructureRecord.model_validate_json(record.model_dump_json()).to_atoms()
    assert np.allclose(back.positions, atoms.positions) and np.allclose(back.cell, atoms.cell)
    assert structure_id(back) == record.id and back.info["uq_source"] == "x.xyz:3"
    assert record.formula == "Cu4" and record.n_atoms == 4


def test_jsonable_turns_nan_into_null():
    assert jsonable({"a": np.float64("nan"), "b": np.arange(2), "c": np.int64(3)}) == {"a": None, "b": [0, 1], "c": 3}
