"""The built-in uMLIP members on small cells: real weights, loaded once per module."""

import itertools

import numpy as np
import pytest
from ase.build import bulk

from uq_flows.ensemble import BUILTIN_MEMBERS, load_calculator, predict_member, supported_numbers

pytestmark = pytest.mark.slow

NAMES = list(BUILTIN_MEMBERS)
PBE = [name for name in NAMES if BUILTIN_MEMBERS[name].functional == "PBE"]


@pytest.fixture(scope="module")
def calculators():
    return {name: load_calculator(BUILTIN_MEMBERS[name], "cpu") for name in NAMES}


@pytest.fixture(scope="module")
def rattled_si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=7)
    return atoms


@pytest.fixture(scope="module")
def rattled_predictions(calculators, rattled_si):
    return {
        name: predict_member(BUILTIN_MEMBERS[name], [rattled_si], calculator=calc)
        for name, calc in calculators.items()
    }


@pytest.mark.parametrize("name", NAMES)
def test_member_gives_finite_results_of_the_right_shapes(name, rattled_predictions):
    p = rattled_predictions[name]
    assert p.member == name and p.status == ["ok"] and p.reasons == [None]
    assert p.energies.shape == (1,) and p.forces.shape == (8, 3) and p.stresses.shape == (1, 6)
    assert np.isfinite(p.energies).all() and np.isfinite(p.forces).all() and np.isfinite(p.stresses).all()
    assert np.abs(p.forces).max() > 0.05  # rattled by 0.1 Å: real forces
    # Newton's third law: the forces on a periodic cell sum to zero
    np.testing.assert_allclose(p.forces.sum(axis=0), 0, atol=1e-3)
    if name in PBE:  # PBE cohesive scale of Si: total energy ≈ -5.4 eV/atom, so totals not per-atom
        assert -5.8 < p.energies[0] / 8 < -5.0


def test_members_are_heterogeneous_but_agree_on_the_physics(rattled_predictions):
    for a, b in itertools.combinations(NAMES, 2):
        fa, fb = rattled_predictions[a].forces, rattled_predictions[b].forces
        assert np.abs(fa - fb).max() > 0.05, f"{a} and {b} give nearly the same forces"
        cosine = np.sum(fa * fb) / np.linalg.norm(fa) / np.linalg.norm(fb)
        assert cosine > 0.9, f"{a} and {b} disagree on the force directions ({cosine:.2f})"


@pytest.mark.parametrize("name", NAMES)
def test_perfect_diamond_has_zero_forces(name, calculators):
    perfect = bulk("Si", "diamond", a=5.43, cubic=True)
    p = predict_member(BUILTIN_MEMBERS[name], [perfect], calculator=calculators[name])
    assert p.status == ["ok"]
    assert np.abs(p.forces).max() < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_forces_and_stress_are_energy_derivatives(name, calculators, rattled_si):
    """F = -dE/dx and σ = (1/V) dE/dε in ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
    spec, calc = BUILTIN_MEMBERS[name], calculators[name]
    base = predict_member(spec, [rattled_si], calculator=calc)
    h, eps = 1e-2, 2e-3
    moved = []
    for sign in (1, -1):
        atoms = rattled_si.copy()
        atoms.positions[3, 1] += sign * h
        moved.append(atoms)
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for i, j in voigt:
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * eps / (1 if i == j else 2)
            strain[j, i] = strain[i, j]
            atoms = rattled_si.copy()
            atoms.set_cell(rattled_si.cell.array @ strain, scale_atoms=True)
            moved.append(atoms)
    energies = predict_member(spec, moved, calculator=calc).energies
    force = -(energies[0] - energies[1]) / (2 * h)
    assert base.forces[3, 1] == pytest.approx(force, abs=0.02)
    volume = rattled_si.get_volume()
    numeric = (energies[2::2] - energies[3::2]) / (2 * eps) / volume
    np.testing.assert_allclose(base.stresses[0], numeric, atol=5e-4)
    assert np.abs(base.stresses[0]).max() > 5e-3  # the check is not 0 == 0


@pytest.mark.parametrize("name", NAMES)
def test_compression_gives_negative_stress(name, calculators):
    squeezed = bulk("Si", "diamond", a=5.2, cubic=True)
    p = predict_member(BUILTIN_MEMBERS[name], [squeezed], calculator=calculators[name])
    assert (p.stresses[0, :3] < -0.01).all()  # ASE sign: compressed cells push outwards
    np.testing.assert_allclose(p.stresses[0, 3:], 0, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_element_is_reported_and_batch_continues(name, calculators, rattled_si):
    with_og = rattled_si.copy()
    with_og.numbers[2] = 118
    copper = bulk("Cu", "fcc", a=3.61, cubic=True)
    p = predict_member(BUILTIN_MEMBERS[name], [rattled_si, with_og, copper], calculator=calculators[name])
    assert p.status == ["ok", "unsupported_element", "ok"]
    assert p.reasons[1] == f"{name} does not cover Og (Z=118)"
    assert np.isnan(p.structure_forces(1)).all() and np.isnan(p.energies[1])
    assert np.isfinite(p.structure_forces(0)).all() and np.isfinite(p.structure_forces(2)).all()
    assert with_og.numbers[2] == 118 and with_og.calc is None


def test_element_coverage(calculators):
    coverage = {name: supported_numbers(BUILTIN_MEMBERS[name], calc) for name, calc in calculators.items()}
    for name in ("chgnet-0.2.0", "chgnet-0.3.0", "chgnet-r2scan"):
        assert coverage[name] == frozenset(range(1, 95))
    for name in ("sevennet-0-11jul2024", "sevennet-0-22may2024", "sevennet-l3i5"):
        # SevenNet-0 and l3i5 were trained on MPtrj: 89 elements, not Po..Ra (Z = 84-88)
        assert len(coverage[name]) == 89
        assert coverage[name] == frozenset(range(1, 95)) - set(range(84, 89))
        assert frozenset(calculators[name].type_map) == coverage[name]


def test_sevennet_reports_uncovered_polonium(calculators):
    polonium = bulk("Po", "sc", a=3.35)
    spec = BUILTIN_MEMBERS["sevennet-0-11jul2024"]
    p = predict_member(spec, [polonium], calculator=calculators[spec.name])
    assert p.status == ["unsupported_element"] and "Po (Z=84)" in p.reasons[0]


def test_chgnet_molecule_without_cell(calculators):
    """CHGNet needs a lattice; a cluster with a zero cell gets one without changing the result."""
    from ase.build import molecule

    methane = molecule("CH4")
    methane.rattle(0.05, seed=2)
    boxed = methane.copy()
    boxed.cell = np.eye(3) * 20
    boxed.positions += 10
    spec = BUILTIN_MEMBERS["chgnet-0.3.0"]
    p = predict_member(spec, [methane, boxed], calculator=calculators[spec.name])
    assert p.status == ["ok", "ok"]
    assert p.energies[0] == pytest.approx(p.energies[1], abs=1e-4)
    np.testing.assert_allclose(p.structure_forces(0), p.structure_forces(1), atol=1e-3)
    assert np.isnan(p.stresses).all()
    assert methane.cell.rank == 0


def test_loading_is_cached(calculators):
    spec = BUILTIN_MEMBERS["chgnet-0.3.0"]
    first = load_calculator(spec, "cpu")
    assert load_calculator(spec, "cpu") is first
    assert load_calculator(BUILTIN_MEMBERS["chgnet-0.2.0"], "cpu") is not first
