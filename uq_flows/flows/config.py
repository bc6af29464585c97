"""The loop's configuration: one YAML file, validated before anything is submitted."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from uq_flows.ace.basis import AceFitOptions
from uq_flows.cago.optimizer import CagoSettings
from uq_flows.errors import InputError
from uq_flows.explore.generators import GENERATORS
from uq_flows.explore.md import MDSettings
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL
from uq_flows.labeling.cp2k import Cp2kSettings
from uq_flows.labeling.source_screens import SourceScreens
from uq_flows.loop_state import ConvergenceConfig
from uq_flows.selection.references import check_reference_elements


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateConfig(_Strict):
    n: int = Field(4, ge=1)
    max_atoms: int = Field(16, ge=1)
    kinds: list[str] = Field(default_factory=lambda: list(GENERATORS))
    seed: int = 0


class DftConfig(_Strict):
    """Who labels high-U structures: CP2K, VASP (atomate2), a stand-in ASE calculator, or the
    stored labels of an existing dataset (a replay)."""

    labeller: Literal["cp2k", "vasp", "calculator", "dataset"] = "cp2k"
    cp2k: Cp2kSettings = Field(default_factory=Cp2kSettings)
    incar_overrides: dict = Field(default_factory=dict)
    calculator: str = Field("emt=ase:ase.calculators.emt:EMT", description="Stand-in reference (labeller: calculator).")
    fallback_calculator: str | None = Field(
        None, description="If the labeller is cp2k and CP2K is not installed: use this calculator instead, loudly."
    )
    dataset: Path | None = Field(None, description="labeller dataset: labelled structures (any format the package "
                                                   "reads) whose labels replay DFT, found by uq_id, else by content.")
    energy: Literal["total", "per-atom"] = Field("total", description="labeller dataset: how its energies are stored.")
    min_success_fraction: float = Field(0.8, ge=0, le=1)
    batch_size: int = Field(1, ge=1, description="Structures per DFT job (small cells: fewer fireworks; CP2K and "
                                                 "calculator labellers; VASP runs one job per structure).")


    @model_validator(mode="after")
    def _dataset_given(self) -> DftConfig:
        if self.labeller == "dataset" and self.dataset is None:
            raise ValueError("labeller dataset needs dataset: PATH (the labelled structures to replay)")
        return self

    def reference_model(self) -> str | None:
        """The model spec that labels in place of DFT: the stand-in calculator, or the dataset's stored labels."""
        if self.labeller == "dataset":
            return f"dataset={'precomputed' if self.energy == 'total' else 'precomputed-per-atom'}:{self.dataset}"
        return self.calculator if self.labeller == "calculator" else None


class TeacherConfig(_Strict):
    energy_from: str = "chgnet-0.3.0"
    forces_from: str | None = None


class ExploreConfig(_Strict):
    n_seeds: int = Field(4, ge=1, description="Labelled structures of the iteration that seed MD.")
    md: MDSettings = Field(default_factory=lambda: MDSettings(steps=200, snapshot_every=50))
    cago: CagoSettings | None = Field(default_factory=lambda: CagoSettings(max_steps=20))
    n_cago_members: int = Field(3, ge=2, description="Committee members CAGO uses (paper 004: 3-4).")
    max_cago_seeds: int = Field(8, ge=1)
    calibrate: bool = Field(True, description="Calibrate σ = a·σ̂^b every iteration on the held-out audit labels "
                                              "(paper 004, eqs. 4-5); false runs CAGO uncalibrated, with a warning.")
    min_calibration_atoms: int = Field(8, ge=2, description="Held-out atoms needed to calibrate; fewer: CAGO waits.")


class PoolConfig(_Strict):
    """A replay campaign's candidates: a fixed pool of structures, taken batch by batch (DIRECT over
    the pool first, then QBC with the loop's ACE committee plus DIRECT) until it is used up."""

    structures: list[Path] = Field(min_length=1, description="Pool files or folders (any format the package reads).")
    batch: int = Field(ge=1, description="Candidates taken from the pool per iteration.")
    descriptor: str = Field("chgnet-0.3.0", description="Descriptor for the first batch's DIRECT (no ACE fit yet).")
    explore: bool = Field(False, description="Also run MD and CAGO; their structures are new, so they need a "
                                             "labeller that can label any structure (not a dataset).")


class SelectConfig(_Strict):
    qbc: bool = True
    qbc_config: dict = Field(default_factory=dict)
    n_clusters: int | None = Field(None, ge=1)
    birch_threshold: float = Field(0.1, gt=0)
    k: int = Field(1, ge=1)
    max_candidates: int = Field(50, ge=1, description="Candidates passed to the next iteration at most.")
    formation_energy_prefilter: bool = Field(
        True, description="MP-ALOE's pre-filter (formation energy > 0.25 eV/atom) with elemental references "
                          "computed once from the teacher (qbc_config.elemental_references wins if given).")


class AuditConfig(_Strict):
    """A random sample of every iteration's candidates labelled by DFT *and* the teacher, whatever U.

    It is the unbiased sample for the energy alignment, ρ(U, error), the fit's test RMSEs and
    the CAGO calibration (METHODS §2, §7). ``auto``: on when the labels need aligning or CAGO
    is calibrated.
    """

    enabled: Literal["auto", "on", "off"] = "auto"
    size: int | None = Field(None, ge=1, description="Structures per iteration (overrides fraction).")
    fraction: float = Field(0.1, gt=0, le=1, description="Share of the candidates per iteration.")
    min_size: int = Field(3, ge=1)
    seed: int = 0

    def size_for(self, n_candidates: int) -> int:
        wanted = self.size if self.size is not None else max(self.min_size, math.ceil(self.fraction * n_candidates))
        return min(wanted, n_candidates)


class LoopConfig(_Strict):
    """Everything one loop needs; see workflows/demo.yaml."""

    name: str = Field(min_length=1)
    elements: list[str] = Field(min_length=1)
    structures: list[Path] = Field(default_factory=list, description="Initial candidates (files or folders).")
    generate: GenerateConfig | None = Field(default_factory=GenerateConfig)
    pool: PoolConfig | None = Field(None, description="A replay campaign: candidates from this pool, batch by batch "
                                                      "(instead of structures and generate).")
    test: list[Path] = Field(default_factory=list, description="Labelled test structures every iteration's ACE fit "
                                                               "is evaluated on (a fixed test set).")
    members: list[str] = Field(min_length=2)
    weights: str = "auto"
    top_n: int | None = Field(
        None, ge=2, description="Score with the N members of lowest force RMSE (paper 001, Fig. 2a; as evaluate "
                                "--top-n): needs RMSE weights, the paper's table or an RMSE file (measure-rmse).")
    uc: float = Field(1.0, ge=0)
    target_force_rmse: float | None = Field(
        None, gt=0, description="eV/Å: choose U_c each iteration as the largest whose teacher forces reach this RMSE "
                                "on the audit sample (replaces uc).")
    audit: AuditConfig = Field(default_factory=AuditConfig)
    align_energies: Literal["auto", "on", "off"] = Field(
        "auto", description="Per-element teacher→DFT energy shifts; auto: on unless the teacher is the DFT labeller.")
    align_max_residual: float = Field(DEFAULT_MAX_RESIDUAL, gt=0, description="eV/atom: refuse a worse alignment.")
    screens: SourceScreens = Field(default_factory=SourceScreens)
    chunk_size: int = Field(500, ge=1, description="Structures per stored chunk: one scoring and one teacher job "
                                                   "per chunk (and member).")
    max_chunks: int | None = Field(
        64, ge=1, description="At most this many chunks per stored set: past chunk_size × max_chunks candidates the "
                              "chunks grow instead, so jobs per iteration stop growing; raise it where more workers "
                              "run at once, null for no limit.")
    dft: DftConfig = Field(default_factory=DftConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    fit: AceFitOptions = Field(default_factory=lambda: AceFitOptions(backend="linear", n_functions=20, ensemble_size=3))
    explore: ExploreConfig = Field(default_factory=ExploreConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    workdir: Path | None = Field(None, description="Shared folder the loop's own folder (potential files, launches, log) "
                                                   "goes in, as workdir/LOOP_ID (default: home/loops/LOOP_ID).")

    @model_validator(mode="after")
    def _teacher_by_member_name(self) -> LoopConfig:
        """``teacher: {energy_from: NAME}`` names a member: the teacher is that member's spec."""
        from uq_flows.ensemble.members import parse_member
        from uq_flows.errors import MemberError

        by_name = {}
        for text in self.members:
            with contextlib.suppress(MemberError):  # a bad member is reported by _models_are_known
                by_name[parse_member(text).name] = text
        self.teacher = self.teacher.model_copy(update={
            key: by_name.get(value, value) for key in ("energy_from", "forces_from")
            if (value := getattr(self.teacher, key)) is not None})
        return self

    @model_validator(mode="after")
    def _models_are_known(self) -> LoopConfig:
        """Every member, the teacher and the stand-in labellers parse, before any loop is created."""
        from uq_flows.ensemble.members import parse_member
        from uq_flows.errors import MemberError

        models = {f"members[{k}]": m for k, m in enumerate(self.members)}
        models.update({"teacher.energy_from": self.teacher.energy_from, "teacher.forces_from": self.teacher.forces_from,
                       "dft.calculator" if self.dft.labeller != "dataset" else "dft.dataset": self.dft.reference_model(),
                       "dft.fallback_calculator": self.dft.fallback_calculator})
        for where, text in models.items():
            if text is None:
                continue
            try:
                parse_member(text)
            except MemberError as error:
                raise ValueError(f"{where}: {error}") from None
        names = [parse_member(m).name for m in self.members]
        if len(set(names)) < len(names):
            raise ValueError(f"members: a name is given twice ({', '.join(names)})")
        if self.top_n is not None:
            self.members = self._top_members(names)
        return self

    def _top_members(self, names: list[str]) -> list[str]:
        """The ``top_n`` members of lowest force RMSE under ``weights`` (idempotent: a stored
        config that already holds them keeps them)."""
        from uq_flows.ensemble.scoring import resolve_weights
        from uq_flows.uncertainty import top_n_members

        if self.top_n > len(names):
            raise ValueError(f"top_n ({self.top_n}) exceeds the {len(names)} members")
        try:
            rmse = resolve_weights(names, "paper" if self.weights == "auto" else self.weights).rmse
        except InputError as error:
            raise ValueError(f"top_n ranks members by force RMSE: {error}") from None
        if rmse is None:
            raise ValueError("top_n ranks members by force RMSE: give weights as the paper's table or an RMSE file, "
                             "not equal")
        keep = set(top_n_members(rmse, self.top_n))
        return [text for text, name in zip(self.members, names) if name in keep]

    @model_validator(mode="after")
    def _has_candidates(self) -> LoopConfig:
        if self.pool is not None:
            if self.structures or ("generate" in self.model_fields_set and self.generate is not None):
                raise ValueError("a pool campaign takes its candidates from pool.structures: drop structures and "
                                 "generate")
            self.generate = None
            self.select = self.select.model_copy(update={"max_candidates": self.pool.batch})
            if self.pool.explore and self.dft.labeller == "dataset":
                raise ValueError("pool.explore makes new structures, which a dataset labeller cannot label")
        elif not self.structures and self.generate is None:
            raise ValueError("give initial structures, a generate section or a pool")
        if self.target_force_rmse is not None and self.audit.enabled == "off":
            raise ValueError("target_force_rmse chooses U_c on the audit sample: it needs audit.enabled auto or on")
        if self.select.formation_energy_prefilter and "elemental_references" not in self.select.qbc_config:
            try:
                check_reference_elements(self.elements)
            except InputError as error:
                raise ValueError(f"select.formation_energy_prefilter: {error}") from error
        if "active_set" not in self.fit.model_fields_set:  # the loop selects by QBC: γ only when asked for
            self.fit = self.fit.model_copy(update={"active_set": False})
        if self.explore.n_cago_members > self.fit.ensemble_size and self.explore.cago is not None:
            raise ValueError(f"explore.n_cago_members ({self.explore.n_cago_members}) exceeds the ACE committee "
                             f"(fit.ensemble_size = {self.fit.ensemble_size})")
        return self

    @property
    def aligns_energies(self) -> bool:
        """Teacher energies need shifting to the DFT zero: the labeller is not the teacher itself."""
        if self.align_energies != "auto":
            return self.align_energies == "on"
        same = self.dft.labeller == "calculator" and self.dft.calculator == self.teacher.energy_from
        return not same

    @property
    def audits(self) -> bool:
        if self.audit.enabled != "auto":
            return self.audit.enabled == "on"
        return self.aligns_energies or self.target_force_rmse is not None or (
            self.explore.cago is not None and self.explore.calibrate)

    def required_executables(self) -> list[str]:
        """Programs the loop runs (``cp2k``, ``vasp``, ``pacemaker``); checked before submitting."""
        needed = [self.dft.labeller] if self.dft.labeller in ("cp2k", "vasp") else []
        return needed + (["pacemaker"] if not self.fit.linear else [])


def with_files_from(data: dict, base: Path) -> dict:
    """The config mapping with the files its models name (``mace:``, ``precomputed:``) and an RMSE
    weights file made absolute against ``base``, the config file's folder (as ``structures``)."""
    from uq_flows.ensemble.members import with_base_folder

    def model(text):
        return with_base_folder(text, base) if isinstance(text, str) else text

    data = dict(data)
    if isinstance(data.get("members"), list):
        data["members"] = [model(text) for text in data["members"]]
    for section, keys in (("teacher", ("energy_from", "forces_from")), ("dft", ("calculator", "fallback_calculator"))):
        if isinstance(data.get(section), dict):
            data[section] = {key: model(value) if key in keys else value for key, value in data[section].items()}
    def file(path):
        return str(base / path) if isinstance(path, str) and not Path(path).expanduser().is_absolute() else path

    if isinstance(data.get("dft"), dict) and "dataset" in data["dft"]:
        data["dft"] = {**data["dft"], "dataset": file(data["dft"]["dataset"])}
    if isinstance(data.get("pool"), dict) and isinstance(data["pool"].get("structures"), list):
        data["pool"] = {**data["pool"], "structures": [file(p) for p in data["pool"]["structures"]]}
    if isinstance(data.get("test"), list):
        data["test"] = [file(p) for p in data["test"]]
    weights = data.get("weights")
    if isinstance(weights, str) and weights not in ("auto", "paper", "equal") and not Path(weights).is_absolute():
        data["weights"] = str(base / weights)
    return data


def load_config(path: str | Path) -> LoopConfig:
    """The loop configuration in ``path``; a clear InputError for anything wrong with it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise InputError(f"config {path} does not exist") from error
    except yaml.YAMLError as error:
        raise InputError(f"config {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"config {path} must be a mapping of settings")
    base = path.resolve().parent
    data = with_files_from(data, base)
    try:
        config = LoopConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())
        raise InputError(f"config {path}: {problems}") from error
    return config.model_copy(update={"structures": [p if p.is_absolute() else base / p for p in config.structures]})
