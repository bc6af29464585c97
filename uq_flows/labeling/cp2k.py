"""CP2K single points as DFT labels (METHODS §9; the free alternative to VASP).

PBE with GTH pseudopotentials and MOLOPT basis sets, the papers' Γ-centred k-point mesh
(2π × 0.03 Å⁻¹; coarser meshes miss 1 meV/atom or 0.01 eV/Å on Si, see the README's convergence
table) listed with k and −k merged (time reversal: half the points, same results) and
analytical stress. Settings are checked when the labeller is made
(``InputError``); structures with atoms closer than ``HARD_MIN_DISTANCE`` or non-finite
coordinates are rejected without running CP2K. Each structure runs in its own folder; the output
is parsed for energy, forces, stress, SCF convergence and errors. Every failure (missing
executable, crash, timeout, unconverged SCF, incomplete output) becomes a failed ``Label`` with
its reason, never an exception that stops a batch.

Like custodian's CP2K handlers, an unconverged SCF or a timeout is first rerun in the same
folder, up to ``max_reruns`` times (``next_attempt`` decides, without CP2K): from the
wavefunction CP2K saved after every SCF step (``uq-RESTART.wfn`` at Γ, ``uq-RESTART.kp`` with
k-points; from scratch if there is none), an unconverged SCF with twice MAX_SCF and half the
mixing α. Nothing that changes the converged answer is touched. The label's provenance lists
the reruns and the settings of the final run.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import Bohr, GPa, Hartree
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from uq_flows.errors import InputError, UqFlowsError
from uq_flows.labeling.kpoints import (
    PAPER_KPOINT_SPACING,
    gamma_centred_points,
    kpoint_mesh,
    time_reversal_reduced_points,
)
from uq_flows.labeling.labels import DFT, REJECTED, Label
from uq_flows.programs import command_words
from uq_flows.screening import (
    HARD_MIN_DISTANCE,
    min_interatomic_distance,
    non_finite_problem,
)

INPUT_NAME, OUTPUT_NAME = "uq.inp", "uq.out"
PROJECT = "uq"  # CP2K names its files after it: uq-RESTART.wfn (Γ only) or uq-RESTART.kp (k-points)


class Cp2kSettings(BaseModel):
    """Quickstep input choices; defaults are PBE production settings for solids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    xc: str = Field("PBE", min_length=1)
    basis_set: str = Field("DZVP-MOLOPT-SR-GTH", min_length=1)
    potential: str = Field("GTH-PBE", min_length=1)
    basis_set_file: str = Field("BASIS_MOLOPT", min_length=1)
    potential_file: str = Field("GTH_POTENTIALS", min_length=1)
    cutoff: float = Field(400.0, gt=0, allow_inf_nan=False, description="Ry, finest grid.")
    rel_cutoff: float = Field(50.0, gt=0, allow_inf_nan=False, description="Ry.")
    eps_scf: float = Field(1e-6, gt=0, allow_inf_nan=False, description="Hartree.")
    max_scf: int = Field(100, ge=1)
    smearing_kelvin: float | None = Field(
        300.0, gt=0, allow_inf_nan=False, description="Fermi–Dirac; None: no smearing (insulators)."
    )
    added_mos: int = Field(20, ge=0)
    mixing_alpha: float = Field(0.4, gt=0, le=1, allow_inf_nan=False)
    kpoint_spacing: float | None = Field(
        PAPER_KPOINT_SPACING, gt=0, allow_inf_nan=False,
        description="Å⁻¹ including 2π (the papers' 2π × 0.03; README: coarser misses 1 meV/atom on Si); None: Γ only.",
    )
    kpoints: tuple[int, int, int] | None = Field(None, description="Explicit mesh, wins over the spacing.")
    time_reversal: bool = Field(True, description="List one of each k, −k pair with weight 2.")
    spin_polarized: bool = False
    hard_min_distance: float = Field(
        HARD_MIN_DISTANCE, ge=0, allow_inf_nan=False, description="Å: closer atoms are rejected, CP2K not run."
    )

    @field_validator("kpoints")
    @classmethod
    def _at_least_one_point_per_direction(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(
                f"k-points must be at least 1 in each direction, got {' '.join(map(str, value))} "
                "(give e.g. 3 3 3; 1 1 1 is Γ only)"
            )
        return value

    @classmethod
    def checked(cls, values: dict) -> Cp2kSettings:
        """Settings from ``values``, or an ``InputError`` saying which values are wrong."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            )
            raise InputError(f"invalid CP2K settings: {problems}") from None

    def mesh(self, atoms: Atoms) -> tuple[int, int, int]:
        if self.kpoints is not None:
            return tuple(int(n) for n in self.kpoints)
        if self.kpoint_spacing is None:
            return (1, 1, 1)
        return kpoint_mesh(atoms.cell.array, self.kpoint_spacing)

    def kpoint_list(self, mesh: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The points CP2K is given for ``mesh`` and their weights (summing to the mesh size)."""
        if self.time_reversal:
            return time_reversal_reduced_points(mesh)
        points = gamma_centred_points(mesh)
        return points, np.ones(len(points), dtype=int)


def structure_rejection(atoms: Atoms, hard_min_distance: float = HARD_MIN_DISTANCE) -> str | None:
    """Why CP2K must not run on ``atoms`` (non-finite or flat cell, atoms too close), or None."""
    if problem := non_finite_problem(atoms):
        return f"{problem}: CP2K not run"
    if atoms.pbc.all() and abs(np.linalg.det(atoms.cell.array)) < 1e-6:
        return "the cell has zero volume: CP2K not run"
    if hard_min_distance > 0 and len(atoms) > 0:
        shortest = min_interatomic_distance(atoms, cutoff=max(3.0, 2 * hard_min_distance))
        if shortest < hard_min_distance:
            return (f"atoms {shortest:.3f} Å apart (periodic images included), below the hard minimum "
                    f"{hard_min_distance:g} Å: CP2K not run")
    return None


def restart_file_name(mesh: tuple[int, int, int]) -> str:
    """The wavefunction file CP2K writes: MOs at Γ (``.wfn``), real-space density matrices with k-points (``.kp``)."""
    return f"{PROJECT}-RESTART.{'wfn' if tuple(mesh) == (1, 1, 1) else 'kp'}"


def write_input(atoms: Atoms, settings: Cp2kSettings, wavefunction: str | None = None) -> str:
    """The CP2K input file for an energy, force and stress evaluation of ``atoms``.

    CP2K saves its wavefunction after every SCF step (one backup copy); with ``wavefunction`` (a
    file in the run's folder) the SCF starts from that file instead of atomic densities."""
    if not all(atoms.pbc):
        raise UqFlowsError("the CP2K labeller handles 3D-periodic cells only")
    mesh = settings.mesh(atoms)
    smear = (
        f"""      &SMEAR ON
        METHOD FERMI_DIRAC
        ELECTRONIC_TEMPERATURE [K] {settings.smearing_kelvin}
      &END SMEAR
"""
        if settings.smearing_kelvin
        else ""
    )
    kpoints = _kpoints_section(*settings.kpoint_list(mesh)) if mesh != (1, 1, 1) else ""
    cell = "\n".join(f"      {axis} {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for axis, v in zip("ABC", atoms.cell.array))
    coords = "\n".join(f"      {s} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}" for s, p in zip(atoms.get_chemical_symbols(), atoms.positions))
    restart_file = f"    WFN_RESTART_FILE_NAME {wavefunction}\n" if wavefunction else ""
    guess = "      SCF_GUESS RESTART\n" if wavefunction else ""
    kinds = "".join(
        f"""    &KIND {symbol}
      BASIS_SET {settings.basis_set}
      POTENTIAL {settings.potential}
    &END KIND
"""
        for symbol in sorted(set(atoms.get_chemical_symbols()))
    )
    return f"""&GLOBAL
  PROJECT {PROJECT}
  RUN_TYPE ENERGY_FORCE
  PRINT_LEVEL LOW
&END GLOBAL
&FORCE_EVAL
  METHOD Quickstep
  STRESS_TENSOR ANALYTICAL
  &DFT
    BASIS_SET_FILE_NAME {settings.basis_set_file}
    POTENTIAL_FILE_NAME {settings.potential_file}
{restart_file}    UKS {"T" if settings.spin_polarized else "F"}
    &MGRID
      CUTOFF {settings.cutoff}
      REL_CUTOFF {settings.rel_cutoff}
    &END MGRID
    &SCF
      EPS_SCF {settings.eps_scf:.3E}
      MAX_SCF {settings.max_scf}
      ADDED_MOS {settings.added_mos}
{guess}      &PRINT
        &RESTART ON
          BACKUP_COPIES 1
          &EACH
            QS_SCF 1
          &END EACH
        &END RESTART
      &END PRINT
{smear}      &DIAGONALIZATION
      &END DIAGONALIZATION
      &MIXING
        METHOD BROYDEN_MIXING
        ALPHA {settings.mixing_alpha}
      &END MIXING
    &END SCF
    &XC
      &XC_FUNCTIONAL {settings.xc}
      &END XC_FUNCTIONAL
    &END XC
{kpoints}  &END DFT
  &SUBSYS
    &CELL
{cell}
      PERIODIC XYZ
    &END CELL
    &COORD
{coords}
    &END COORD
{kinds}  &END SUBSYS
  &PRINT
    &FORCES ON
    &END FORCES
    &STRESS_TENSOR ON
    &END STRESS_TENSOR
  &END PRINT
&END FORCE_EVAL
"""


def _kpoints_section(points: np.ndarray, weights: np.ndarray) -> str:
    """Listed explicitly: CP2K's MONKHORST-PACK scheme shifts even meshes off Γ (spurious forces on
    perfect crystals); the weights are CP2K's to normalise."""
    listed = "".join(f"      KPOINT {k[0]:.12f} {k[1]:.12f} {k[2]:.12f} {w:.1f}\n" for k, w in zip(points, weights))
    return ("    &KPOINTS\n      SCHEME GENERAL\n      UNITS B_VECTOR\n      SYMMETRY OFF\n      FULL_GRID ON\n"
            + listed + "    &END KPOINTS\n")


@dataclass
class Cp2kOutput:
    """What a CP2K output file says, in eV, eV/Å and eV/Å³ (ASE stress sign)."""

    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    scf_converged: bool | None = None
    scf_steps: int | None = None
    version: str | None = None
    errors: list[str] = field(default_factory=list)
    completed: bool = False


_FLOAT = r"[-+]?\d+\.\d*(?:[EeDd][-+]?\d+)?"


def parse_output(text: str, n_atoms: int) -> Cp2kOutput:
    """Energy, forces, analytical stress, SCF convergence and error messages of a run."""
    out = Cp2kOutput()
    if match := re.search(r"CP2K\| version string:\s*(.+)", text):
        out.version = match.group(1).strip()
    converged = re.findall(r"\*\*\* SCF run converged in\s+(\d+) steps", text)
    not_converged = "SCF run NOT converged" in text
    if converged or not_converged:
        out.scf_converged = bool(converged) and not not_converged
        out.scf_steps = int(converged[-1]) if converged else None
    energies = re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy[^:]*:\s*(" + _FLOAT + ")", text)
    if energies:
        out.energy = float(energies[-1]) * Hartree
    if (start := text.rfind("ATOMIC FORCES in [a.u.]")) >= 0:
        rows = re.findall(
            r"^\s*\d+\s+\d+\s+\S+\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*$",
            text[start : text.find("SUM OF ATOMIC FORCES", start)],
            flags=re.M,
        )
        if len(rows) == n_atoms:
            out.forces = np.array(rows, dtype=float) * Hartree / Bohr
    if (start := text.rfind("STRESS| Analytical stress tensor [GPa]")) >= 0:
        rows = re.findall(r"STRESS\|\s+[xyz]\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + ")", text[start:])
        if len(rows) >= 3:
            tensor = np.array(rows[:3], dtype=float)
            # CP2K prints the pressure-like tensor (positive = compressed); ASE's stress is its negative
            out.stress = -tensor[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] * GPa
    out.errors = [_abort_message(block) for block in re.findall(r"\[ABORT\][^\n]*\n(.*?)\n\s*\*{20,}", text, flags=re.S)]
    out.completed = "PROGRAM ENDED AT" in text
    return out


def _abort_message(block: str) -> str:
    """The text of CP2K's [ABORT] banner without its ASCII-art figure and source location."""
    words = []
    for line in block.splitlines():
        body = line.rstrip().rstrip("*")[_ABORT_TEXT_COLUMN:].strip()
        if body and not re.fullmatch(r"[\w/]+\.F:\d+", body):
            words.append(body)
    return " ".join(words)


_ABORT_TEXT_COLUMN = 13  # the banner's figure fills the columns before the message


def check_executable(command: str) -> list[str]:
    """The CP2K command line as arguments (the executable alone, or behind ``srun``/``mpirun``),
    or a clear error naming the setting."""
    words = command_words(command)
    if words is None:
        raise UqFlowsError(
            f"CP2K executable {command!r} not found: install it (Debian: apt-get install cp2k cp2k-data) "
            "or set UQ_FLOWS_CP2K_COMMAND (a program, or a launcher line such as 'srun -n 4 cp2k.psmp')"
        )
    return words


MPI_START_FAILURE = "before MPI_INIT completed"  # OpenMPI's message when its runtime could not start
MPI_START_RETRIES = 2
SCF_NOT_CONVERGED, TIMED_OUT = "scf_not_converged", "timeout"  # the failures a rerun can fix
MIN_MIXING_ALPHA = 0.05  # reruns halve α down to this, never below (nor above a smaller α given)


def next_attempt(failure: str | None, settings: Cp2kSettings, attempt: int, max_reruns: int) -> Cp2kSettings | None:
    """The settings of rerun number ``attempt`` (1, 2, …) after ``failure``, or None: no rerun.

    An unconverged SCF gets twice MAX_SCF and half the mixing α (not below ``MIN_MIXING_ALPHA``);
    a timeout the same settings. Neither changes the converged answer; other failures are not rerun.
    """
    if failure not in (SCF_NOT_CONVERGED, TIMED_OUT) or attempt > max_reruns:
        return None
    if failure == TIMED_OUT:
        return settings
    alpha = min(settings.mixing_alpha, max(MIN_MIXING_ALPHA, settings.mixing_alpha / 2))
    return settings.model_copy(update={"max_scf": 2 * settings.max_scf, "mixing_alpha": alpha})


def saved_wavefunction(folder: Path, name: str) -> str | None:
    """The newest whole wavefunction file CP2K left in ``folder``: ``name``, or its backup
    ``name.bak-1`` when a kill cut ``name`` short mid-write (it is then smaller); None if neither exists."""
    latest, backup = folder / name, folder / f"{name}.bak-1"
    if latest.exists() and (not backup.exists() or latest.stat().st_size >= backup.stat().st_size):
        return latest.name
    return backup.name if backup.exists() else None


@dataclass
class Cp2kLabeller:
    """Runs CP2K on structures, one folder each under ``workdir``; returns labels.

    The settings, thread count, timeout and rerun bound are checked when the labeller is made:
    bad values raise ``InputError`` before any structure is touched.
    """

    settings: Cp2kSettings = field(default_factory=Cp2kSettings)
    command: str = "cp2k.psmp"
    data_dir: Path = Path("/usr/share/cp2k")
    threads: int = 1
    timeout: float = 3600.0
    max_reruns: int = 2

    def __post_init__(self):
        settings = self.settings.model_dump() if isinstance(self.settings, BaseModel) else self.settings
        self.settings = Cp2kSettings.checked(settings)  # model_copy(update=...) does not validate
        if int(self.threads) < 1:
            raise InputError(f"CP2K threads must be at least 1, got {self.threads}")
        if not self.timeout > 0:
            raise InputError(f"CP2K timeout must be positive (seconds), got {self.timeout}")
        if int(self.max_reruns) != self.max_reruns or self.max_reruns < 0:
            raise InputError(f"CP2K reruns must be a whole number ≥ 0, got {self.max_reruns}")

    @classmethod
    def from_settings(cls, settings: Cp2kSettings | None = None) -> Cp2kLabeller:
        from uq_flows.settings import get_settings

        s = get_settings()
        return cls(settings or Cp2kSettings(), s.cp2k_command, s.cp2k_data_dir, s.cp2k_threads, s.cp2k_timeout,
                   s.cp2k_max_reruns)

    def provenance(self, atoms: Atoms) -> dict:
        """Code, settings, the k-mesh N1×N2×N3 and how many points CP2K was given for it."""
        mesh = self.settings.mesh(atoms)
        n_points = len(self.settings.kpoint_list(mesh)[1])
        return {"code": "cp2k", "settings": self.settings.model_dump(), "kpoints": list(mesh), "n_kpoints": n_points}

    def label(self, atoms: Atoms, structure_id: str, workdir: Path, **fields) -> Label:
        """Label one structure; a rejected label if it must not be run, failed on any error that
        the reruns (``next_attempt``) did not fix."""
        extra_provenance = fields.pop("provenance", {})
        if problem := structure_rejection(atoms, self.settings.hard_min_distance):
            provenance = {"code": "cp2k", "settings": self.settings.model_dump(), **extra_provenance}
            return Label(id=structure_id, status=REJECTED, kind=DFT, source="cp2k", reason=problem,
                         provenance=provenance, **fields)
        provenance = {**self.provenance(atoms), **extra_provenance}
        failed = lambda reason: Label.failed(structure_id, DFT, "cp2k", reason, provenance=provenance, **fields)  # noqa: E731
        try:
            text = write_input(atoms, self.settings)
            command = check_executable(self.command)
        except UqFlowsError as error:
            return failed(str(error))
        folder = Path(workdir) / f"cp2k-{structure_id}"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{PROJECT}-RESTART.*"):  # an earlier label's wavefunction must not seed a rerun
            stale.unlink()
        provenance["folder"] = str(folder)
        provenance["command"] = self.command
        environment = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "CP2K_DATA_DIR": str(self.data_dir)}
        settings, reruns = self.settings, []
        started = time.perf_counter()
        while True:
            (folder / INPUT_NAME).write_text(text)
            provenance["settings"] = settings.model_dump()
            provenance["input_sha256"] = hashlib.sha256(text.encode()).hexdigest()
            output, failure, reason = self._run(command, folder, environment, settings, len(atoms), provenance)
            provenance["wall_time_s"] = round(time.perf_counter() - started, 3)
            if reason is None:
                return Label.from_results(structure_id, DFT, "cp2k", output.energy, output.forces, output.stress,
                                          provenance=provenance, **fields)
            rerun = next_attempt(failure, settings, len(reruns) + 1, self.max_reruns)
            if rerun is None:
                tried = f" after {len(reruns)} rerun{'' if len(reruns) == 1 else 's'}" if failure else ""
                return failed(reason + tried)
            wavefunction = saved_wavefunction(folder, restart_file_name(settings.mesh(atoms)))
            changes = {key: [old, new] for key, old in settings.model_dump().items()
                       if (new := getattr(rerun, key)) != old}
            reruns.append({"reason": reason, "changes": {**changes, "wfn_restart_file": wavefunction}})
            provenance["reruns"] = reruns
            settings = rerun
            text = write_input(atoms, settings, wavefunction)

    def _run(self, command: list[str], folder: Path, environment: dict, settings: Cp2kSettings, n_atoms: int,
             provenance: dict) -> tuple[Cp2kOutput | None, str | None, str | None]:
        """Run CP2K once on the folder's input: (output, None, None) on success, else (output or None,
        the kind of failure a rerun may fix or None, the reason)."""
        output_path = folder / OUTPUT_NAME
        output_path.unlink(missing_ok=True)  # CP2K appends: an old run's output must not be read as this one
        for earlier in ("version", "scf_steps"):  # nor an earlier attempt's numbers
            provenance.pop(earlier, None)
        for attempt in range(1 + MPI_START_RETRIES):
            try:
                process = subprocess.run(
                    [*command, "-i", INPUT_NAME, "-o", OUTPUT_NAME], cwd=folder, env=environment,
                    capture_output=True, text=True, timeout=self.timeout,
                )
            except subprocess.TimeoutExpired:
                return None, TIMED_OUT, f"CP2K did not finish within {self.timeout:g} s"
            except OSError as error:
                return None, None, f"CP2K could not start: {error}"
            if process.returncode == 0 or MPI_START_FAILURE not in process.stderr:
                break
            # the MPI runtime failed before CP2K ran (a busy node's singleton start-up): nothing was computed
            provenance["mpi_start_retries"] = provenance.get("mpi_start_retries", 0) + 1
            output_path.unlink(missing_ok=True)
            time.sleep(1.0 + attempt)
        if not output_path.exists():
            return None, None, f"CP2K wrote no output (exit code {process.returncode}): {process.stderr.strip()[-300:]}"
        output = parse_output(output_path.read_text(errors="replace"), n_atoms)
        provenance["version"] = output.version
        provenance["scf_steps"] = output.scf_steps
        if process.returncode != 0 or output.errors:
            detail = "; ".join(output.errors) or process.stderr.strip()[-300:] or "no message"
            return output, None, f"CP2K failed (exit code {process.returncode}): {detail}"
        if output.scf_converged is False:
            return output, SCF_NOT_CONVERGED, (f"SCF not converged within MAX_SCF = {settings.max_scf} steps "
                                               f"(EPS_SCF {settings.eps_scf:g})")
        if output.energy is None or output.forces is None:
            return output, None, ("CP2K output has no " + ("energy" if output.energy is None else "forces") +
                                  ("" if output.completed else " (run did not complete)"))
        return output, None, None


def describe_mesh(provenance: dict) -> str:
    """'N1×N2×N3 (n points)' from a CP2K label's provenance, or '' when it has no mesh."""
    mesh = provenance.get("kpoints")
    if not mesh:
        return ""
    n = provenance.get("n_kpoints")
    return "×".join(map(str, mesh)) + (f" ({n} pts)" if n is not None else "")
