"""Real CP2K single points on a 2-atom Si cell, and every way they can fail."""

import numpy as np
import pytest
from ase.build import bulk

from tests.labeling.cp2k_support import FAST, ensure_cp2k
from uq_flows.labeling.cp2k import Cp2kLabeller


@pytest.fixture
def si2():
    atoms = bulk("Si", "diamond", a=5.35)
    atoms.positions[1] += [0.06, 0.0, 0.03]
    return atoms


@pytest.mark.slow
def test_cp2k_label_is_physical(si2, tmp_path):
    ensure_cp2k()
    labeller = Cp2kLabeller(FAST, threads=2)
    label = labeller.label(si2, "uq-si2", tmp_path, U=1.5)
    assert label.status == "ok" and label.kind == "dft" and label.source == "cp2k" and label.U == 1.5
    forces = np.array(label.forces)
    assert np.abs(forces.sum(axis=0)).max() < 1e-3  # Newton's third law
    assert forces[1] @ np.array([0.06, 0, 0.03]) < 0  # the displaced atom is pulled back
    # stress in ASE's sign: σ_xx = (1/V) dE/dε_xx by central differences
    energies = []
    for eps in (-0.003, 0.003):
        strained = si2.copy()
        strained.set_cell(si2.cell.array @ np.diag([1 + eps, 1, 1]), scale_atoms=True)
        energies.append(labeller.label(strained, f"uq-{eps}", tmp_path).energy)
    assert label.stress[0] == pytest.approx((energies[1] - energies[0]) / 0.006 / si2.get_volume(), rel=2e-3)
    assert (tmp_path / "cp2k-uq-si2" / "uq.out").exists()


@pytest.mark.slow
def test_a_perfect_crystal_has_no_forces_on_an_even_mesh(tmp_path):
    """Γ-centred meshes keep the crystal's symmetry; a Monkhorst-Pack 2×2×2 mesh (shifted off Γ,
    no k-point symmetry) gave 0.03 eV/Å on perfect Si."""
    ensure_cp2k()
    even = FAST.model_copy(update={"kpoints": (2, 2, 2)})
    label = Cp2kLabeller(even, threads=2).label(bulk("Si", "diamond", a=5.43), "uq-perfect", tmp_path)
    assert label.status == "ok" and np.abs(np.array(label.forces)).max() < 1e-4


@pytest.mark.slow
def test_unconverged_scf_is_a_failed_label(si2, tmp_path):
    ensure_cp2k()
    label = Cp2kLabeller(FAST.model_copy(update={"max_scf": 2}), threads=2).label(si2, "uq-x", tmp_path)
    assert label.status == "failed" and label.energy is None
    assert label.reason.startswith("SCF not converged within MAX_SCF = 2 steps")


def test_missing_executable_and_timeout_are_failed_labels(si2, tmp_path):
    missing = Cp2kLabeller(FAST, command="no-such-cp2k").label(si2, "uq-x", tmp_path)
    assert missing.status == "failed" and "'no-such-cp2k' not found" in missing.reason
    sleeper = tmp_path / "slow-cp2k"
    sleeper.write_text("#!/bin/sh\nsleep 30\n")
    sleeper.chmod(0o755)
    timed_out = Cp2kLabeller(FAST, command=str(sleeper), timeout=1).label(si2, "uq-y", tmp_path)
    assert timed_out.status == "failed" and timed_out.reason == "CP2K did not finish within 1 s"
    crashing = tmp_path / "crash-cp2k"
    crashing.write_text("#!/bin/sh\necho 'segmentation fault' >&2\nexit 139\n")
    crashing.chmod(0o755)
    crashed = Cp2kLabeller(FAST, command=str(crashing)).label(si2, "uq-z", tmp_path)
    assert crashed.status == "failed" and "wrote no output (exit code 139): segmentation fault" in crashed.reason
