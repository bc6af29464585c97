"""predict_member with ASE calculators (fast) and the MemberPredictions document."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from uq_flows.ensemble import MemberPredictions, MemberSpec, parse_member, predict_member
from uq_flows.errors import InputError

EMT_SPEC = parse_member("emt=ase:ase.calculators.emt:EMT")


@pytest.fixture
def al_rattled():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)  # EMT covers Al, Cu, Ni, ...; not Si
    atoms.rattle(0.05, seed=5)
    return atoms


def helper(name: str) -> MemberSpec:
    return parse_member(f"{name.lower()}=ase:uqf_ensemble_calculators:{name}")


def test_ase_member_matches_direct_emt(cu_rattled):
    p = predict_member(EMT_SPEC, [cu_rattled])
    reference = cu_rattled.copy()
    reference.calc = EMT()
    assert p.member == "emt" and p.status == ["ok"] and p.reasons == [None]
    assert p.n_atoms.tolist() == [4]
    assert p.energies[0] == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(p.forces, reference.get_forces(), atol=1e-12)
    np.testing.assert_allclose(p.stresses[0], reference.get_stress(voigt=True), atol=1e-12)
    assert np.abs(p.forces).max() > 1e-3  # rattled: the comparison is not trivially 0 == 0
    assert p.version.startswith("ase ")


def test_forces_are_concatenated_in_structure_order(cu_rattled):
    small = cu_rattled[:2]  # 2 atoms, same element
    big = cu_rattled.repeat((2, 1, 1))  # 8 atoms
    p = predict_member(EMT_SPEC, [big, small, cu_rattled])
    assert p.n_atoms.tolist() == [8, 2, 4]
    assert p.forces.shape == (14, 3)
    for i, atoms in enumerate([big, small, cu_rattled]):
        atoms = atoms.copy()
        atoms.calc = EMT()
        np.testing.assert_allclose(p.structure_forces(i), atoms.get_forces(), atol=1e-12)
    np.testing.assert_array_equal(p.structure_forces(-1), p.structure_forces(2))
    with pytest.raises(IndexError):
        p.structure_forces(3)


def test_user_atoms_are_left_alone(cu_rattled):
    cu_rattled.set_constraint(FixAtoms([0]))
    before = cu_rattled.positions.copy()
    p = predict_member(EMT_SPEC, [cu_rattled])
    assert cu_rattled.calc is None
    np.testing.assert_array_equal(cu_rattled.positions, before)
    assert len(cu_rattled.constraints) == 1
    # raw model forces: the constraint does not zero atom 0
    assert np.abs(p.structure_forces(0)[0]).max() > 1e-3


def test_non_finite_forces_are_flagged_with_atom_indices(cu_rattled):
    p = predict_member(helper("NaNForces"), [cu_rattled, cu_rattled[:1]])
    assert p.status == ["non_finite", "ok"]
    assert p.reasons[0] == "non-finite forces on atoms [1, 3]"
    assert np.isnan(p.energies[0]) and np.isnan(p.structure_forces(0)).all()
    assert p.energies[1] == -1.0 and np.isfinite(p.structure_forces(1)).all()


def test_non_finite_energy_is_flagged(cu_rattled):
    p = predict_member(helper("NaNEnergy"), [cu_rattled])
    assert p.status == ["non_finite"]
    assert "non-finite energy" in p.reasons[0]
    assert np.isnan(p.forces).all()


def test_exceptions_become_error_status_and_batch_continues(cu_rattled, al_rattled):
    calls = []
    p = predict_member(helper("FailsOnCopper"), [al_rattled, cu_rattled, al_rattled], progress=calls.append)
    assert p.status == ["ok", "error", "ok"]
    assert p.reasons[1] == "RuntimeError: boom: copper is not allowed here"
    assert np.isnan(p.structure_forces(1)).all() and np.isnan(p.stresses[1]).all()
    assert np.isfinite(p.structure_forces(0)).all() and np.isfinite(p.structure_forces(2)).all()
    np.testing.assert_allclose(p.structure_forces(0), p.structure_forces(2))
    assert calls == [1, 2, 3]


def test_wrong_force_shape_is_an_error(cu_rattled):
    p = predict_member(helper("WrongShape"), [cu_rattled])
    assert p.status == ["error"] and "shape" in p.reasons[0]


def test_member_without_stress_gives_nan_stress_only(cu_rattled):
    p = predict_member(helper("NoStress"), [cu_rattled])
    assert p.status == ["ok"]
    assert np.isnan(p.stresses).all()
    assert np.isfinite(p.forces).all()


def test_stress_only_for_3d_periodic_cells(cu_rattled):
    slab = cu_rattled.copy()
    slab.pbc = [True, True, False]
    cluster = cu_rattled.copy()
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    p = predict_member(EMT_SPEC, [cu_rattled, slab, cluster])
    assert p.status == ["ok", "ok", "ok"]
    assert np.isfinite(p.stresses[0]).all()
    assert np.isnan(p.stresses[1:]).all()
    # the cluster has no neighbours across the boundary: different energy from the bulk
    assert abs(p.energies[2] - p.energies[0]) > 0.5


def test_empty_and_bad_inputs(cu_rattled):
    with pytest.raises(InputError):
        predict_member(EMT_SPEC, [])
    with pytest.raises(InputError, match="structure 1"):
        predict_member(EMT_SPEC, [cu_rattled, "POSCAR"])
    p = predict_member(EMT_SPEC, [Atoms(), cu_rattled])
    assert p.status == ["error", "ok"] and p.n_atoms.tolist() == [0, 4]


def test_calculator_argument_is_used(cu_rattled):
    p = predict_member(MemberSpec("x", "ase", "uqf_ensemble_calculators:NaNForces", None), [cu_rattled], calculator=EMT())
    assert p.status == ["ok"]


def test_as_dict_round_trip_is_strict_json(cu_rattled, al_rattled):
    p = predict_member(helper("FailsOnCopper"), [al_rattled, cu_rattled])
    assert p.status == ["ok", "error"]
    text = json.dumps(p.as_dict(), allow_nan=False)  # NaN written as null
    q = MemberPredictions.from_dict(json.loads(text))
    assert q.member == p.member and q.version == p.version
    assert q.status == p.status and q.reasons == p.reasons
    for field in ("n_atoms", "energies", "forces", "stresses"):
        np.testing.assert_array_equal(getattr(q, field), getattr(p, field))
    assert q.n_atoms.dtype.kind == "i"


def test_as_dict_round_trip_with_values(al_rattled):
    p = predict_member(EMT_SPEC, [al_rattled])
    q = MemberPredictions.from_dict(json.loads(json.dumps(p.as_dict(), allow_nan=False)))
    np.testing.assert_array_equal(q.forces, p.forces)
    assert q.energies[0] == p.energies[0] and np.isfinite(q.energies[0])


def test_inconsistent_documents_are_rejected():
    good = dict(
        member="m",
        n_atoms=[2],
        energies=[1.0],
        forces=[[0, 0, 0], [0, 0, 0]],
        stresses=[[0] * 6],
        status=["ok"],
        reasons=[None],
    )
    MemberPredictions.from_dict(good)
    for key, value in [
        ("forces", [[0, 0, 0]]),
        ("energies", [1.0, 2.0]),
        ("status", ["fine"]),
        ("stresses", [[0] * 5]),
        ("reasons", []),
    ]:
        with pytest.raises(InputError):
            MemberPredictions.from_dict({**good, key: value})
    with pytest.raises(InputError):
        MemberPredictions.from_dict({k: v for k, v in good.items() if k != "forces"})


def test_failed_predictions_for_a_lost_chunk():
    p = MemberPredictions.failed("m", [2, 3], "error", "job lost")
    assert p.status == ["error", "error"] and p.reasons == ["job lost", "job lost"]
    assert p.forces.shape == (5, 3) and np.isnan(p.forces).all() and np.isnan(p.energies).all()
    assert not p.ok.any()
    with pytest.raises(InputError):
        MemberPredictions.failed("m", [2], "ok")
