"""Real CP2K single points on a 2-atom Si cell, every way they can fail, the reruns that fix an
unconverged SCF or a timeout, and what must never reach CP2K."""

import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read, write

from tests.cli_helpers import run, run_json
from tests.labeling.cp2k_support import FAST, ensure_cp2k
from uq_flows.errors import InputError
from uq_flows.labeling.cp2k import (
    MIN_MIXING_ALPHA,
    SCF_NOT_CONVERGED,
    TIMED_OUT,
    Cp2kLabeller,
    Cp2kSettings,
    describe_mesh,
    next_attempt,
    parse_output,
    restart_file_name,
    saved_wavefunction,
    write_input,
)
from uq_flows.labeling.kpoints import (
    PAPER_KPOINT_SPACING,
    gamma_centred_points,
    time_reversal_reduced_points,
)


@pytest.fixture
def si2():
    atoms = bulk("Si", "diamond", a=5.35)
    atoms.positions[1] += [0.06, 0.0, 0.03]
    return atoms


def too_close_pair(gap: float = 0.1) -> Atoms:
    """Two Si atoms ``gap`` Å apart through the periodic boundary (0.05 Å from each face)."""
    return Atoms("Si2", positions=[[gap / 2, 1, 1], [6.0 - gap / 2, 1, 1]], cell=[6.0, 6.0, 6.0], pbc=True)


@pytest.mark.slow
def test_cp2k_label_is_physical(si2, tmp_path):
    ensure_cp2k()
    labeller = Cp2kLabeller(FAST)
    label = labeller.label(si2, "uq-si2", tmp_path, U=1.5)
    assert label.status == "ok" and label.kind == "dft" and label.source == "cp2k" and label.U == 1.5
    # the mesh is recorded: 3×3×3 = 27 points, 14 after merging k with −k (Γ is its own partner)
    assert label.provenance["kpoints"] == [3, 3, 3] and label.provenance["n_kpoints"] == 14
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
def test_merging_k_and_minus_k_changes_nothing_cp2k_computes(tmp_path):
    """Time reversal on a cell without any symmetry: 14 listed points give what all 27 give."""
    ensure_cp2k()
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[1] += [0.06, 0.0, 0.03]
    atoms.set_cell(atoms.cell.array @ np.array([[1.01, 0.01, 0], [0, 0.99, 0], [0, 0.02, 1.0]]), scale_atoms=True)
    reduced, full = (Cp2kLabeller(FAST.model_copy(update={"time_reversal": tr})).label(atoms, f"uq-{tr}", tmp_path)
                     for tr in (True, False))
    assert (reduced.provenance["n_kpoints"], full.provenance["n_kpoints"]) == (14, 27)
    assert reduced.status == full.status == "ok" and abs(np.array(reduced.forces)).max() > 0.1
    assert reduced.energy == pytest.approx(full.energy, abs=1e-7)
    assert np.allclose(reduced.forces, full.forces, atol=1e-6) and np.allclose(reduced.stress, full.stress, atol=1e-8)


@pytest.mark.slow
def test_a_perfect_crystal_has_no_forces_on_an_even_mesh(tmp_path):
    """Γ-centred meshes keep the crystal's symmetry; a Monkhorst-Pack 2×2×2 mesh (shifted off Γ,
    no k-point symmetry) gave 0.03 eV/Å on perfect Si."""
    ensure_cp2k()
    even = FAST.model_copy(update={"kpoints": (2, 2, 2)})
    label = Cp2kLabeller(even).label(bulk("Si", "diamond", a=5.43), "uq-perfect", tmp_path)
    assert label.status == "ok" and np.abs(np.array(label.forces)).max() < 1e-4


@pytest.fixture(scope="module")
def si2_reference(tmp_path_factory):
    """The FAST label of ``si2`` from a normal run (the SCF converges in 9 steps)."""
    ensure_cp2k()
    atoms = bulk("Si", "diamond", a=5.35)
    atoms.positions[1] += [0.06, 0.0, 0.03]
    label = Cp2kLabeller(FAST, threads=1).label(atoms, "uq-reference", tmp_path_factory.mktemp("reference"))
    assert label.status == "ok" and not label.provenance.get("reruns")
    return label


def assert_same_answer(label, reference):
    """Equal within what EPS_SCF = 1e-6 allows: the energy is variational (error second order in the
    density error, ≪ 1e-6 eV), forces and stress first order (≈ 1e-6 Ha/Bohr ≈ 5e-5 eV/Å);
    reruns here differ by ≤ 1e-9 eV and 5e-6 eV/Å."""
    assert label.energy == pytest.approx(reference.energy, abs=1e-6)
    np.testing.assert_allclose(label.forces, reference.forces, atol=1e-4)
    np.testing.assert_allclose(label.stress, reference.stress, atol=1e-6)  # eV/Å³ (0.16 MPa)


@pytest.mark.slow
def test_an_unconverged_scf_is_rerun_from_its_wavefunction(si2, si2_reference, tmp_path):
    """MAX_SCF 4 cannot converge (a normal run needs 9 steps); the rerun starts from the saved
    wavefunction with MAX_SCF 8, α 0.2 and gives the normal run's answer."""
    label = Cp2kLabeller(FAST.model_copy(update={"max_scf": 4}), threads=1).label(si2, "uq-scf", tmp_path)
    assert label.status == "ok"
    assert label.provenance["reruns"] == [{
        "reason": "SCF not converged within MAX_SCF = 4 steps (EPS_SCF 1e-06)",
        "changes": {"max_scf": [4, 8], "mixing_alpha": [0.4, 0.2], "wfn_restart_file": "uq-RESTART.kp"},
    }]
    assert label.provenance["settings"]["max_scf"] == 8 and label.provenance["settings"]["mixing_alpha"] == 0.2
    output = (tmp_path / "cp2k-uq-scf" / "uq.out").read_text()
    assert output.count("PROGRAM STARTED AT") == 1  # the rerun's output alone, never the failed run's
    assert "Density guess:                                   RESTART" in output and "does not exist" not in output
    assert label.provenance["scf_steps"] < si2_reference.provenance["scf_steps"]  # it continued, at half the α
    assert_same_answer(label, si2_reference)


@pytest.mark.slow
def test_without_reruns_an_unconverged_scf_is_a_failed_label(si2, si2_reference, tmp_path):
    """And what CP2K leaves for a rerun: the wavefunction after every SCF step, converged or not
    (``.kp`` with k-points), and one backup, which a rerun uses when a kill cut the newest one short."""
    label = Cp2kLabeller(FAST.model_copy(update={"max_scf": 2}), threads=1, max_reruns=0).label(si2, "uq-x", tmp_path)
    assert label.status == "failed" and label.energy is None and "reruns" not in label.provenance
    assert label.reason == "SCF not converged within MAX_SCF = 2 steps (EPS_SCF 1e-06) after 0 reruns"
    folder = tmp_path / "cp2k-uq-x"
    latest, backup = folder / "uq-RESTART.kp", folder / "uq-RESTART.kp.bak-1"
    assert sorted(p.name for p in folder.glob("uq-RESTART*")) == [latest.name, backup.name]
    assert latest.stat().st_size == backup.stat().st_size > 0
    assert saved_wavefunction(folder, restart_file_name((3, 3, 3))) == latest.name
    latest.write_bytes(latest.read_bytes()[:1000])  # what SIGKILL mid-write leaves (CP2K would crash reading it)
    chosen = saved_wavefunction(folder, "uq-RESTART.kp")
    assert chosen == backup.name
    (folder / "uq.inp").write_text(write_input(si2, FAST, chosen))
    (folder / "uq.out").unlink()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CP2K_DATA_DIR": "/usr/share/cp2k"}
    subprocess.run(["cp2k.psmp", "-i", "uq.inp", "-o", "uq.out"], cwd=folder, env=environment, check=True,
                   capture_output=True, timeout=300)
    text = (folder / "uq.out").read_text()
    assert "Density guess:                                   RESTART" in text and "does not exist" not in text
    continued = parse_output(text, len(si2))
    assert continued.scf_converged
    assert continued.energy == pytest.approx(si2_reference.energy, abs=1e-6)
    np.testing.assert_allclose(continued.forces, si2_reference.forces, atol=1e-4)


@pytest.mark.slow
def test_an_earlier_labels_wavefunction_never_seeds_a_rerun(tmp_path):
    """Γ only: CP2K writes ``uq-RESTART.wfn``; a stale one in the folder is removed before the
    first attempt, so the rerun starts from this label's own file."""
    ensure_cp2k()
    atoms = bulk("Si", "diamond", a=5.43)
    folder = tmp_path / "cp2k-uq-gamma"
    folder.mkdir()
    (folder / "uq-RESTART.wfn").write_bytes(b"an earlier structure's wavefunction")
    (folder / "uq-RESTART.kp").write_bytes(b"an earlier mesh's density matrices")
    gamma = FAST.model_copy(update={"kpoints": (1, 1, 1), "max_scf": 1})
    label = Cp2kLabeller(gamma, threads=1, max_reruns=1).label(atoms, "uq-gamma", tmp_path)
    assert label.status == "failed"  # 1 + 2 SCF steps are too few even from a restart
    assert label.reason == "SCF not converged within MAX_SCF = 2 steps (EPS_SCF 1e-06) after 1 rerun"
    assert label.provenance["reruns"][0]["changes"]["wfn_restart_file"] == "uq-RESTART.wfn"
    assert not (folder / "uq-RESTART.kp").exists()
    latest, backup = folder / "uq-RESTART.wfn", folder / "uq-RESTART.wfn.bak-1"
    assert latest.stat().st_size == backup.stat().st_size > 1000  # both this label's, no stale backup
    output = (folder / "uq.out").read_text()
    assert "Density guess:                                   RESTART" in output and "does not exist" not in output


@pytest.mark.slow
def test_an_mpi_start_up_failure_is_run_again(si2, tmp_path):
    """OpenMPI's singleton start-up can fail on a busy node before CP2K computes anything: the
    labeller runs CP2K again (the second attempt here is the real CP2K)."""
    ensure_cp2k()
    real = shutil.which("cp2k.psmp")
    flaky = tmp_path / "flaky-cp2k"
    flaky.write_text(f"#!/bin/sh\nif [ ! -e {tmp_path}/started ]; then touch {tmp_path}/started\n"
                     "echo '*** and potentially your MPI job)' >&2\n"
                     "echo '[vm:1] Local abort before MPI_INIT completed completed successfully' >&2\nexit 1\nfi\n"
                     f'exec {real} "$@"\n')
    flaky.chmod(0o755)
    label = Cp2kLabeller(FAST, command=str(flaky)).label(si2, "uq-mpi", tmp_path)
    assert label.status == "ok" and label.provenance["mpi_start_retries"] == 1


@pytest.mark.slow
def test_cp2k_behind_mpirun_uses_the_ranks_and_gives_the_same_label(si2, tmp_path):
    """The CP2K command may be a launcher line (srun or mpirun with the allocation's ranks)."""
    ensure_cp2k()
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun here")
    alone = Cp2kLabeller(FAST, threads=1).label(si2, "uq-one", tmp_path)
    ranks = Cp2kLabeller(FAST, command="mpirun --allow-run-as-root --oversubscribe -np 2 cp2k.psmp",
                         threads=1).label(si2, "uq-two", tmp_path)
    assert alone.status == ranks.status == "ok" and ranks.provenance["command"].startswith("mpirun")
    assert "Total number of message passing processes" in (tmp_path / "cp2k-uq-two" / "uq.out").read_text()
    assert ranks.energy == pytest.approx(alone.energy, abs=1e-6)
    np.testing.assert_allclose(ranks.forces, alone.forces, atol=1e-5)
    missing = Cp2kLabeller(FAST, command="mpirun -np 2 no-such-cp2k").label(si2, "uq-x", tmp_path)
    assert missing.status == "failed" and "'mpirun -np 2 no-such-cp2k' not found" in missing.reason


def test_missing_executable_and_timeout_are_failed_labels(si2, tmp_path):
    missing = Cp2kLabeller(FAST, command="no-such-cp2k").label(si2, "uq-x", tmp_path)
    assert missing.status == "failed" and "'no-such-cp2k' not found" in missing.reason
    sleeper = tmp_path / "slow-cp2k"
    sleeper.write_text("#!/bin/sh\nsleep 30\n")
    sleeper.chmod(0o755)
    timed_out = Cp2kLabeller(FAST, command=str(sleeper), timeout=1, max_reruns=1).label(si2, "uq-y", tmp_path)
    assert timed_out.status == "failed" and timed_out.reason == "CP2K did not finish within 1 s after 1 rerun"
    # nothing saved to continue from: the rerun starts from scratch with the same settings
    assert timed_out.provenance["reruns"] == [{"reason": "CP2K did not finish within 1 s",
                                               "changes": {"wfn_restart_file": None}}]
    crashing = tmp_path / "crash-cp2k"
    crashing.write_text("#!/bin/sh\necho 'segmentation fault' >&2\nexit 139\n")
    crashing.chmod(0o755)
    crashed = Cp2kLabeller(FAST, command=str(crashing)).label(si2, "uq-z", tmp_path)
    assert crashed.status == "failed" and "wrote no output (exit code 139): segmentation fault" in crashed.reason
    assert crashed.reason.endswith("segmentation fault") and "reruns" not in crashed.provenance  # not rerun


def test_which_failure_gets_which_rerun():
    settings = Cp2kSettings(max_scf=50, mixing_alpha=0.4)
    first = next_attempt(SCF_NOT_CONVERGED, settings, 1, 2)
    assert (first.max_scf, first.mixing_alpha) == (100, 0.2)
    second = next_attempt(SCF_NOT_CONVERGED, first, 2, 2)
    assert (second.max_scf, second.mixing_alpha) == (200, 0.1)
    assert next_attempt(SCF_NOT_CONVERGED, second, 3, 2) is None  # the bound
    assert next_attempt(SCF_NOT_CONVERGED, settings, 1, 0) is None
    unchanged = {k: v for k, v in second.model_dump().items() if k not in ("max_scf", "mixing_alpha")}
    assert unchanged == {k: v for k, v in settings.model_dump().items() if k not in ("max_scf", "mixing_alpha")}
    assert next_attempt(TIMED_OUT, first, 2, 2) == first and next_attempt(TIMED_OUT, first, 3, 2) is None
    for other in (None, "crash"):
        assert next_attempt(other, settings, 1, 2) is None


def test_reruns_halve_the_mixing_down_to_a_floor_never_up_to_it():
    assert next_attempt(SCF_NOT_CONVERGED, Cp2kSettings(mixing_alpha=0.08), 1, 5).mixing_alpha == MIN_MIXING_ALPHA
    assert next_attempt(SCF_NOT_CONVERGED, Cp2kSettings(mixing_alpha=MIN_MIXING_ALPHA), 1, 5).mixing_alpha == MIN_MIXING_ALPHA
    assert next_attempt(SCF_NOT_CONVERGED, Cp2kSettings(mixing_alpha=0.01), 1, 5).mixing_alpha == 0.01


def test_the_rerun_input_restarts_from_the_wavefunction_file():
    atoms = bulk("Si", "diamond", a=5.43)
    fresh = write_input(atoms, FAST)
    assert "SCF_GUESS" not in fresh and "WFN_RESTART_FILE_NAME" not in fresh
    assert "QS_SCF 1" in fresh and "BACKUP_COPIES 1" in fresh  # saved after every SCF step
    rerun = write_input(atoms, FAST, "uq-RESTART.kp.bak-1")
    assert "SCF_GUESS RESTART" in rerun and "WFN_RESTART_FILE_NAME uq-RESTART.kp.bak-1" in rerun
    assert (restart_file_name((1, 1, 1)), restart_file_name((3, 3, 3))) == ("uq-RESTART.wfn", "uq-RESTART.kp")


def test_a_wavefunction_cut_short_is_passed_over_for_its_backup(tmp_path):
    assert saved_wavefunction(tmp_path, "uq-RESTART.wfn") is None
    (tmp_path / "uq-RESTART.wfn").write_bytes(b"x" * 100)
    assert saved_wavefunction(tmp_path, "uq-RESTART.wfn") == "uq-RESTART.wfn"
    (tmp_path / "uq-RESTART.wfn.bak-1").write_bytes(b"y" * 100)
    assert saved_wavefunction(tmp_path, "uq-RESTART.wfn") == "uq-RESTART.wfn"
    (tmp_path / "uq-RESTART.wfn").write_bytes(b"x" * 40)
    assert saved_wavefunction(tmp_path, "uq-RESTART.wfn") == "uq-RESTART.wfn.bak-1"
    (tmp_path / "uq-RESTART.wfn").unlink()  # killed between CP2K's rename to .bak-1 and its write
    assert saved_wavefunction(tmp_path, "uq-RESTART.wfn") == "uq-RESTART.wfn.bak-1"


def test_the_rerun_bound_is_a_setting(monkeypatch):
    monkeypatch.setenv("UQ_FLOWS_CP2K_MAX_RERUNS", "0")
    assert Cp2kLabeller.from_settings(FAST).max_reruns == 0
    monkeypatch.delenv("UQ_FLOWS_CP2K_MAX_RERUNS")
    from uq_flows.settings import get_settings

    get_settings.cache_clear()
    assert Cp2kLabeller.from_settings(FAST).max_reruns == 2
    with pytest.raises(InputError, match="reruns must be a whole number ≥ 0, got -1"):
        Cp2kLabeller(FAST, max_reruns=-1)


def test_time_reversal_keeps_one_of_each_k_minus_k_pair():
    for mesh, expected in [((3, 3, 3), 14), ((4, 3, 3), 19), ((2, 2, 2), 8), ((5, 1, 1), 3), ((1, 1, 1), 1)]:
        points, weights = time_reversal_reduced_points(mesh)
        assert len(points) == expected and weights.sum() == math.prod(mesh)
        assert np.allclose(points[0], 0) and weights[0] == 1  # Γ first, its own partner
        # every point of the full mesh is a kept point or the negative of one, counted by the weights
        full = {tuple(np.round(k % 1.0, 9) % 1.0) for k in gamma_centred_points(mesh)}
        covered = {}
        for k, w in zip(points, weights):
            images = {tuple(np.round(k % 1.0, 9) % 1.0), tuple(np.round(-k % 1.0, 9) % 1.0)}
            assert len(images) == w
            covered.update(dict.fromkeys(images))
        assert set(covered) == full


def test_input_lists_the_reduced_points_with_weights():
    text = write_input(bulk("Si", "diamond", a=5.43), Cp2kSettings(kpoints=(3, 3, 3)))
    lines = [line.split() for line in text.splitlines() if line.strip().startswith("KPOINT ")]
    assert len(lines) == 14 and sum(float(line[4]) for line in lines) == 27
    assert lines[0][1:] == ["0.000000000000"] * 3 + ["1.0"]
    assert "SCHEME GENERAL" in text and "SYMMETRY OFF" in text
    assert "&KPOINTS" not in write_input(bulk("Si", "diamond", a=5.43), Cp2kSettings(kpoints=(1, 1, 1)))


def test_default_mesh_is_the_papers_with_half_the_points_listed():
    """2-atom Si: |b| = 2π·√3/5.43 Å⁻¹ = 2π × 0.319 Å⁻¹, so 2π × 0.03 Å⁻¹ gives 11×11×11 = 1331
    points; merging k with −k leaves (1331 + 1)/2 = 666, and provenance says so."""
    provenance = Cp2kLabeller().provenance(bulk("Si", "diamond", a=5.43))
    assert provenance["kpoints"] == [11, 11, 11] and provenance["n_kpoints"] == 666
    assert describe_mesh(provenance) == "11×11×11 (666 pts)"  # the k-mesh column of uq-flows label
    assert Cp2kSettings().kpoint_spacing == PAPER_KPOINT_SPACING


@pytest.mark.parametrize(
    "values, message",
    [
        ({"kpoints": (0, 0, 0)}, "kpoints: k-points must be at least 1 in each direction, got 0 0 0 (give e.g. 3 3 3"),
        ({"kpoints": (3, -1, 3)}, "got 3 -1 3"),
        ({"cutoff": 0}, "cutoff: Input should be greater than 0"),
        ({"cutoff": float("inf")}, "cutoff: Input should be a finite number"),
        ({"kpoint_spacing": -0.2}, "kpoint_spacing: Input should be greater than 0"),
        ({"max_scf": 0}, "max_scf: Input should be greater than or equal to 1"),
        ({"mixing_alpha": 1.5}, "mixing_alpha: Input should be less than or equal to 1"),
        ({"smearing_kelvin": -300}, "smearing_kelvin: Input should be greater than 0"),
        ({"kpiont": (2, 2, 2)}, "kpiont: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_input_errors(values, message):
    with pytest.raises(InputError, match="invalid CP2K settings") as error:
        Cp2kSettings.checked(values)
    assert message in str(error.value)


def test_the_labeller_checks_settings_that_skipped_validation(tmp_path):
    unchecked = FAST.model_copy(update={"kpoints": (2, 0, 2)})  # model_copy does not validate
    with pytest.raises(InputError, match="at least 1 in each direction"):
        Cp2kLabeller(unchecked)
    with pytest.raises(InputError, match="threads must be at least 1"):
        Cp2kLabeller(FAST, threads=0)
    assert not any(tmp_path.iterdir())


@pytest.fixture
def recording_cp2k(tmp_path):
    """A stand-in executable that leaves a file behind whenever it is run."""
    marker = tmp_path / "cp2k-was-run"
    script = tmp_path / "recording-cp2k"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    return str(script), marker


@pytest.mark.parametrize(
    "atoms, reason",
    [
        (too_close_pair(0.1), "atoms 0.100 Å apart (periodic images included), below the hard minimum 0.5 Å: CP2K not run"),
        (Atoms("Si", cell=[0.4, 6, 6], pbc=True), "atoms 0.400 Å apart"),  # the atom and its own image
        (Atoms("Si2", positions=[[0, 0, 0], [np.nan, 1, 1]], cell=[6, 6, 6], pbc=True), "non-finite positions on atoms [1]: CP2K not run"),
        (Atoms("Si2", positions=[[0, 0, 0], [2, 2, 2]], cell=[6, np.inf, 6], pbc=True), "a non-finite cell: CP2K not run"),
        (Atoms("Si2", positions=[[0, 0, 0], [2, 2, 2]], cell=[[6, 0, 0], [6, 0, 0], [0, 0, 6]], pbc=True), "zero volume"),
    ],
)
def test_unphysical_structures_are_rejected_without_running_cp2k(atoms, reason, recording_cp2k, tmp_path):
    command, marker = recording_cp2k
    label = Cp2kLabeller(FAST, command=command).label(atoms, "uq-bad", tmp_path / "runs", U=2.0)
    assert label.status == "rejected" and label.kind == "dft" and label.source == "cp2k" and label.U == 2.0
    assert reason in label.reason and label.energy is None and label.forces is None
    assert not marker.exists() and not (tmp_path / "runs").exists()  # CP2K not started, no folder
    # the same labeller does start its executable for a sound structure (0.6 Å is above the minimum)
    ran = Cp2kLabeller(FAST, command=command).label(too_close_pair(0.6), "uq-ok", tmp_path / "runs")
    assert ran.status == "failed" and marker.exists()


def test_cli_rejects_bad_kpoints_before_any_work(tmp_path):
    write(tmp_path / "in.extxyz", bulk("Si", "diamond", a=5.43))
    out, runs = tmp_path / "out.extxyz", tmp_path / "runs"
    result = run("label", tmp_path / "in.extxyz", "--model", "cp2k", "--kpoints", "0", "0", "0",
                 "--out", out, "--workdir", runs, expect=2)
    assert "--kpoints must be at least 1 in each direction, got 0 0 0: give e.g. --kpoints 3 3 3" in result.stderr
    assert not out.exists() and not runs.exists()


def test_cli_shows_the_mesh_column_and_rejects_close_atoms(tmp_path, recording_cp2k, monkeypatch):
    command, marker = recording_cp2k
    monkeypatch.setenv("UQ_FLOWS_CP2K_COMMAND", command)
    write(tmp_path / "close.extxyz", too_close_pair(0.1))
    result = run("label", tmp_path / "close.extxyz", "--model", "cp2k", "--workdir", tmp_path / "runs", expect=1)
    assert "k-mesh" in result.stderr and "rejected" in result.stderr and "0.100 Å apart" in result.stderr
    assert "1 of 1 structures could not be labelled" in result.stderr
    assert not marker.exists() and not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_cli_labels_with_the_mesh_it_reports(tmp_path, monkeypatch):
    ensure_cp2k()
    monkeypatch.setenv("UQ_FLOWS_CP2K_THREADS", "1")  # more threads beside other work slow CP2K down
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.03, seed=2)
    write(tmp_path / "in.extxyz", [atoms, too_close_pair(0.1)])
    result = run_json("label", tmp_path / "in.extxyz", "--model", "cp2k", "--kpoints", "2", "2", "2",
                      "--workdir", tmp_path / "runs", "--out", tmp_path / "out.extxyz", "--allow-failed")
    ok, rejected = result["labels"]
    assert ok["status"] == "ok" and ok["kpoints"] == [2, 2, 2] and ok["n_kpoints"] == 8
    assert rejected["status"] == "rejected" and "0.100 Å apart" in rejected["reason"] and rejected["energy"] is None
    assert result["n_failed"] == 1 and len(read(tmp_path / "out.extxyz", ":")) == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"cp2k-{ok['id']}"]  # only the sound one ran
