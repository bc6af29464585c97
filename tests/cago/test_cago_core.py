"""CAGO pieces on analytic committees (Lennard-Jones members with perturbed parameters)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones

from uq_flows.cago.adversarial import adversarial_structures
from uq_flows.cago.calibration import PowerLawCalibration, committee_force_sigma
from uq_flows.cago.filters import prelabel_problem
from uq_flows.cago.optimizer import CagoSettings, CalculatorCommittee, cago
from uq_flows.errors import InputError


def lj_committee(m=4, seed=0):
    rng = np.random.default_rng(seed)
    return CalculatorCommittee([
        LennardJones(sigma=2.3 * (1 + 0.01 * rng.normal()), epsilon=0.4 * (1 + 0.05 * rng.normal()), rc=5.0, smooth=True)
        for _ in range(m)
    ])


def seed_cell(rattle=0.05, seed=1):
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_committee_sigma_by_hand():
    # 3 members, 1 atom: x components 0, 1, 2 (sample var 1), y 0, 0, 3 (sample var 3), z equal
    forces = np.array([[[0, 0, 5]], [[1, 0, 5]], [[2, 3, 5.0]]])
    assert committee_force_sigma(forces) == pytest.approx([2.0])
    with pytest.raises(InputError):
        committee_force_sigma(forces[:1])


def test_power_law_calibration_recovers_parameters_and_fixes_z_scores():
    rng = np.random.default_rng(0)
    sigma_hat = rng.uniform(0.01, 0.5, 5000)
    errors = rng.normal(size=(5000, 3)) * (2.0 * sigma_hat**0.8 / np.sqrt(3))[:, None]
    calibration = PowerLawCalibration.fit(sigma_hat, errors, n_members=10)
    assert calibration.a == pytest.approx(2.0, rel=0.05) and calibration.b == pytest.approx(0.8, rel=0.05)
    assert calibration.fitted.z_mean == pytest.approx(0, abs=0.05) and calibration.fitted.z_std == pytest.approx(1, abs=0.03)
    raw = PowerLawCalibration.identity().diagnostics(sigma_hat, errors)
    assert raw.z_std > 2 and raw.ence > 10 * calibration.fitted.ence
    with pytest.raises(InputError, match="NaN"):
        PowerLawCalibration.fit([0.1, np.nan, 0.2], np.zeros((3, 3)))


def test_cago_reaches_the_target_with_a_batched_finite_difference_per_step():
    committee = lj_committee()
    atoms = seed_cell()
    result = cago(atoms, committee, PowerLawCalibration.identity(), CagoSettings(target=0.1, max_steps=30))
    assert result.converged and np.mean(result.sigma_cal) == pytest.approx(0.1, rel=0.05)
    assert result.trace[0].fitness > 100 * result.trace[-1].fitness
    per_gradient = (3 * len(atoms) + 6 + 1) * committee.n_members
    assert result.trace[0].evaluations == per_gradient
    assert all(step.evaluations % per_gradient == 0 for step in result.trace)
    assert not np.allclose(result.atoms.cell.array, atoms.cell.array)  # the cell moved too


def test_one_by_one_and_batched_give_the_same_path():
    settings = CagoSettings(target=0.1, max_steps=3, tolerance=1e-6)
    batched = cago(seed_cell(), lj_committee(), PowerLawCalibration.identity(), settings)
    single = cago(seed_cell(), lj_committee(), PowerLawCalibration.identity(), settings.model_copy(update={"batched": False}))
    assert [s.fitness for s in batched.trace] == pytest.approx([s.fitness for s in single.trace])


def test_calibration_changes_where_cago_stops():
    committee = lj_committee()
    stretched = PowerLawCalibration(a=2.0, b=1.0)  # σ_cal = 2 σ̂: reaching δ needs half the committee spread
    plain = cago(seed_cell(), committee, PowerLawCalibration.identity(), CagoSettings(max_steps=30))
    calibrated = cago(seed_cell(), committee, stretched, CagoSettings(max_steps=30))
    spread = lambda r: np.mean(committee_force_sigma(committee.forces([r.atoms])[:, 0]))  # noqa: E731
    assert spread(calibrated) == pytest.approx(spread(plain) / 2, rel=0.15)


def test_bias_term_keeps_forces_small():
    committee = lj_committee()
    free = cago(seed_cell(), committee, PowerLawCalibration.identity(), CagoSettings(target=0.3, max_steps=20))
    biased = cago(seed_cell(), committee, PowerLawCalibration.identity(), CagoSettings(target=0.3, bias=1.0, max_steps=20))
    assert biased.trace[-1].max_force < free.trace[-1].max_force


def test_prelabel_filters_and_adversarial_batch():
    close = Atoms("Cu2", positions=[[0, 0, 0], [0.6, 0, 0]], cell=[9, 9, 9], pbc=True)
    assert "closer than the minimum distance" in prelabel_problem(close, np.zeros((2, 2, 3)))
    strong = np.zeros((2, 2, 3))
    strong[:, 0, 0] = 50
    assert "committee-mean largest force 50" in prelabel_problem(bulk("Cu"), strong[:, :1])
    results = adversarial_structures([seed_cell(seed=1), seed_cell(seed=2)], lj_committee(), PowerLawCalibration.identity(),
                                     CagoSettings(max_steps=15))
    assert [r.seed_index for r in results] == [0, 1] and all(r.kept for r in results)
    tagged = results[0].tagged_atoms(0.1)
    assert tagged.info["cago_target"] == 0.1 and tagged.info["cago_steps"] >= 1
