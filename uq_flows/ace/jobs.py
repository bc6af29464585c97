"""jobflow Makers for the ACE stage: fit (one job per ensemble member) and uncertainty (γ, committee).

``AceFitMaker.make(structures, dataset)`` takes the labelling stage's output (a
``DistilledDataset`` or its list of ``Label``s, matched to ``StructureRecord``s by id), or a
``LabelledSet`` in the campaign database (the loop's aligned training set), and returns a
flow of one fit job per member (FireWorks category ``fit_category``, ``cpu`` by
default; pacemaker fits may go to a GPU queue by config) and a collect job whose
``AceFitDocument`` holds metrics, thresholds and every potential file. File contents (text;
active sets base64-encoded npz) and per-atom arrays go to the JobStore's ``data`` store;
``AceFitDocument.write(folder)`` puts the files back on disk for a consumer job.
``AceUncertaintyMaker`` scores structures with a fitted model: γ per atom and per
configuration, γ_local, and committee UQ when the fit is an ensemble.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jobflow import Flow, Job, Maker, OutputReference, job
from pydantic import BaseModel, Field

from uq_flows.ace.activeset import extrapolation_grades
from uq_flows.ace.basis import AceFitOptions
from uq_flows.ace.committee import (
    CommitteeThresholds,
    committee_uncertainty,
    member_predictions,
)
from uq_flows.ace.data import fit_reference_energies, labelled_structures, training_set
from uq_flows.ace.fit import (
    FitMetrics,
    MemberFit,
    check_training,
    combine_members,
    fit_member,
    rmse,
)
from uq_flows.ace.local import LocalActiveSet, local_extrapolation_grades
from uq_flows.ace.potential import AceCalculator
from uq_flows.campaign import Campaign, LabelledSet
from uq_flows.errors import InputError
from uq_flows.stages import ACE_FIT, set_category, tag_stage
from uq_flows.records import StructureRecord
from uq_flows.settings import get_settings

FILE_KEYS = ["potential_yaml", "potential_yace", "active_set", "local_active_set"]
MEMBER_DATA = [*FILE_KEYS, "train_energies", "train_forces", "test_energies", "test_forces"]
UNCERTAINTY_DATA = ["gamma_atoms", "gamma_local_atoms", "force_uncertainty_atoms"]


class AceModelDocument(BaseModel):
    """One fitted member: metrics and the contents of its files."""

    index: int
    seed: int
    metrics: FitMetrics
    fit_seconds: float
    n_training_structures: int
    pacemaker_reported: dict[str, float] | None = None
    active_set_info: dict | None = None
    potential_yaml: str = Field(description="B-basis .yaml text (reference energies in its metadata).")
    potential_yace: str = Field(description=".yace text for LAMMPS (E0 = reference energies).")
    active_set: str | None = Field(None, description=".asi (npz) bytes, base64.")
    local_active_set: str | None = Field(None, description=".lasi (npz) bytes, base64.")
    train_energies: list[float] | None = None
    train_forces: list[list[float]] | None = None
    test_energies: list[float] | None = None
    test_forces: list[list[float]] | None = None

    def write(self, folder: str | Path, name: str = "potential") -> Path:
        """Write this member's files into ``folder``; returns the ``.yaml`` path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        yaml_path = folder / f"{name}.yaml"
        yaml_path.write_text(self.potential_yaml)
        (folder / f"{name}.yace").write_text(self.potential_yace)
        if self.active_set is not None:
            (folder / f"{name}.asi").write_bytes(base64.b64decode(self.active_set))
        if self.local_active_set is not None:
            (folder / f"{name}.lasi").write_bytes(base64.b64decode(self.local_active_set))
        return yaml_path


class AceFitDocument(BaseModel):
    """Output of the ACE fit stage: the ensemble, its metrics and committee thresholds."""

    backend: str
    options: AceFitOptions
    elements: list[str]
    reference_energies: dict[str, float]
    n_train: int
    n_test: int
    metrics: FitMetrics
    metrics_of: str
    committee_thresholds: CommitteeThresholds | None = None
    members: list[AceModelDocument]

    def write(self, folder: str | Path) -> list[Path]:
        """Write every member's files (``member-k/potential.*``); returns the ``.yaml`` paths."""
        return [m.write(Path(folder) / f"member-{m.index}") for m in self.members]


def _labels_of(dataset) -> list:
    from uq_flows.labeling.assembly import DistilledDataset
    from uq_flows.labeling.labels import Label

    if dataset is None:
        raise InputError("no dataset labels these structures (give one, or a LabelledSet)")
    if isinstance(dataset, dict):
        dataset = DistilledDataset.model_validate(dataset)
    labels = dataset.labels if isinstance(dataset, DistilledDataset) else list(dataset)
    return [Label.model_validate(x) if isinstance(x, dict) else x for x in labels]


def _training(structures, dataset, name, required: bool = True):
    """The ACE training set of structures and their labels, or of a ``LabelledSet``; None if empty and not required."""
    empty = not structures.n if isinstance(structures, LabelledSet) else not structures
    if empty:
        if required:
            raise InputError(f"{name}: no labelled structures to fit")
        return None
    if isinstance(structures, LabelledSet):
        with Campaign.open() as campaign:
            return training_set(campaign.labelled_atoms(structures), name=name)
    return training_set(labelled_structures(structures, _labels_of(dataset)), name=name)


def _encoded(path: str | None) -> str | None:
    return base64.b64encode(Path(path).read_bytes()).decode() if path else None


def _forces_list(forces) -> list[list[float]]:
    return np.concatenate(forces).tolist()


@job(data=MEMBER_DATA)
def fit_ace_member(structures: list[StructureRecord] | LabelledSet, dataset, options: AceFitOptions, index: int,
                   test_structures: list[StructureRecord] | LabelledSet | None = None, test_dataset=None,
                   workdir: str | None = None) -> AceModelDocument:
    """Fit member ``index`` of the ensemble on the dataset's ``ok`` labels."""
    training = _training(structures, dataset, "training dataset")
    test = _training(test_structures, test_dataset, "test dataset", required=False)
    elements = training.elements
    check_training(training, options, elements)
    reference = dict(options.reference_energies) if options.reference_energies else fit_reference_energies(training)
    with tempfile.TemporaryDirectory(prefix="uq-ace-") as scratch:
        folder = Path(workdir or scratch) / f"member-{index}"
        member, train_pred, test_pred = fit_member(training, options, index, folder, reference, elements, test)
        return AceModelDocument(
            index=index, seed=member.seed, metrics=member.metrics, fit_seconds=member.fit_seconds,
            n_training_structures=member.n_training_structures, pacemaker_reported=member.pacemaker_reported,
            active_set_info=member.active_set_info,
            potential_yaml=Path(member.potential).read_text(), potential_yace=Path(member.potential_yace).read_text(),
            active_set=_encoded(member.active_set), local_active_set=_encoded(member.local_active_set),
            train_energies=train_pred[0].tolist(), train_forces=_forces_list(train_pred[1]),
            test_energies=None if test_pred is None else test_pred[0].tolist(),
            test_forces=None if test_pred is None else _forces_list(test_pred[1]),
        )


@job(data=FILE_KEYS)
def collect_ace_fit(members: list[AceModelDocument], structures: list[StructureRecord] | LabelledSet, dataset,
                    options: AceFitOptions, test_structures: list[StructureRecord] | LabelledSet | None = None,
                    test_dataset=None) -> AceFitDocument:
    """Ensemble metrics and committee thresholds (paper 000, eq. 7) from the members' predictions."""
    training = _training(structures, dataset, "training dataset")
    test = _training(test_structures, test_dataset, "test dataset", required=False)

    def split(forces, n_atoms):
        return np.split(np.asarray(forces), np.cumsum(n_atoms)[:-1])

    train_preds = [(np.asarray(m.train_energies), split(m.train_forces, training.n_atoms)) for m in members]
    test_preds = [(np.asarray(m.test_energies), split(m.test_forces, test.n_atoms)) if test else None for m in members]
    stubs = [MemberFit(index=m.index, seed=m.seed, folder="", potential="", potential_yace="",
                       n_training_structures=m.n_training_structures, metrics=m.metrics, fit_seconds=m.fit_seconds)
             for m in members]
    elements = training.elements
    reference = dict(options.reference_energies) if options.reference_energies else fit_reference_energies(training)
    result = combine_members(stubs, train_preds, test_preds, training, test, options, reference, elements, {}, "")
    slim = [m.model_copy(update={"train_energies": None, "train_forces": None, "test_energies": None,
                                 "test_forces": None}) for m in members]
    return AceFitDocument(
        backend=options.backend, options=options, elements=elements, reference_energies=reference,
        n_train=len(training), n_test=len(test) if test else 0, metrics=result.metrics, metrics_of=result.metrics_of,
        committee_thresholds=result.committee_thresholds, members=sorted(slim, key=lambda m: m.index),
    )


@dataclass
class AceFitMaker(Maker):
    """Fit ACE (pacemaker or linear) on a labelled dataset: one job per member, then collect."""

    name: str = "ace fit"
    options: AceFitOptions = field(default_factory=AceFitOptions)
    category: str | None = field(default_factory=lambda: get_settings().fit_category)
    collect_category: str | None = field(default_factory=lambda: get_settings().combine_category)
    workdir: str | None = None

    def make(self, structures: list[StructureRecord] | LabelledSet, dataset=None,
             test_structures: list[StructureRecord] | LabelledSet | None = None, test_dataset=None) -> Flow:
        """``dataset`` labels ``structures`` (and ``test_dataset`` ``test_structures``) unless they are ``LabelledSet``s."""
        if not structures:
            raise ValueError("no structures to fit")
        if test_dataset is not None and test_structures is None:
            raise ValueError("test_dataset without test_structures")
        for given, labels, what in ((structures, dataset, "structures"), (test_structures, test_dataset, "test_structures")):
            if given and labels is None and not isinstance(given, (LabelledSet, OutputReference)):
                raise ValueError(f"give the dataset that labels {what} (or a LabelledSet)")
        jobs = []
        for index in range(self.options.ensemble_size):
            member = fit_ace_member(structures, dataset, self.options, index, test_structures, test_dataset,
                                    self.workdir)
            member.name = f"{self.name} member {index + 1}/{self.options.ensemble_size}"
            jobs.append(set_category(tag_stage(member, ACE_FIT), self.category))
        collect = collect_ace_fit([j.output for j in jobs], structures, dataset, self.options, test_structures,
                                  test_dataset)
        collect.name = f"{self.name} collect"
        set_category(collect, self.collect_category)
        return Flow([*jobs, collect], output=collect.output, name=self.name)


class AceStructureUncertainty(BaseModel):
    """γ and committee uncertainties of one structure."""

    id: str
    n_atoms: int
    status: str = Field(description="ok, or unsupported_element / unsupported_cell with a reason.")
    reason: str | None = None
    gamma: float | None = Field(None, description="γ_cfg = max over atoms (paper 000, eq. 14).")
    gamma_local: float | None = Field(None, description="max over atoms of γ_local (paper 000 §3.5).")
    energy_uncertainty: float | None = Field(None, description="U_E,cfg (CBE), eV.")
    force_uncertainty: float | None = Field(None, description="U_F,cfg (CBF), eV/Å.")
    extrapolative: bool | None = Field(None, description="γ > 1.")
    novel: bool | None = Field(None, description="U_E,cfg > ε_E or U_F,cfg > ε_F,cfg.")


class AceUncertaintyDocument(BaseModel):
    """Per-structure γ and committee UQ in input order; per-atom arrays in the data store."""

    n_members: int
    thresholds: CommitteeThresholds | None
    structures: list[AceStructureUncertainty]
    gamma_atoms: list[list[float] | None]
    gamma_local_atoms: list[list[float] | None] | None = None
    force_uncertainty_atoms: list[list[float] | None] | None = None


@job(data=UNCERTAINTY_DATA)
def ace_uncertainty(fit: AceFitDocument, structures: list[StructureRecord]) -> AceUncertaintyDocument:
    """γ (member 0's active set), γ_local and committee UQ of ``structures``."""
    if isinstance(fit, dict):
        fit = AceFitDocument.model_validate(fit)
    atoms = [record.to_atoms() for record in structures]
    rows = [AceStructureUncertainty(id=r.id, n_atoms=r.n_atoms, status="ok") for r in structures]
    with tempfile.TemporaryDirectory(prefix="uq-ace-") as scratch:
        paths = fit.write(scratch)
        calculator = AceCalculator(paths[0])
        for row, structure in zip(rows, atoms):
            try:
                calculator.check_elements(structure)
            except InputError as error:
                row.status = "unsupported_element" if "not in the potential" in str(error) else "unsupported_cell"
                row.reason = str(error)
        good = [j for j, row in enumerate(rows) if row.status == "ok"]
        chosen = [atoms[j] for j in good]
        gamma_atoms = [None] * len(rows)
        local_atoms = None
        force_atoms = None
        active_set = paths[0].with_suffix(".asi")
        if chosen and active_set.exists():
            for j, g in zip(good, extrapolation_grades(paths[0], chosen, active_set)):
                gamma_atoms[j] = g.tolist()
                rows[j].gamma, rows[j].extrapolative = float(g.max()), bool(g.max() > 1)
        local_path = paths[0].with_suffix(".lasi")
        if chosen and local_path.exists():
            local_atoms = [None] * len(rows)
            for j, g in zip(good, local_extrapolation_grades(paths[0], LocalActiveSet.load(local_path), chosen)):
                local_atoms[j] = g.tolist()
                rows[j].gamma_local = float(g.max())
        if chosen and len(paths) > 1:
            energies, forces = member_predictions(paths, chosen)
            committee = committee_uncertainty(energies, forces, [len(a) for a in chosen], fit.committee_thresholds)
            force_atoms = [None] * len(rows)
            novel = committee.novel_configs
            for k, (j, block) in enumerate(zip(good, committee.atom_blocks(committee.force_atom))):
                rows[j].energy_uncertainty = float(committee.energy[k])
                rows[j].force_uncertainty = float(committee.force_config[k])
                rows[j].novel = None if novel is None else bool(novel[k])
                force_atoms[j] = block.tolist()
    return AceUncertaintyDocument(n_members=len(fit.members), thresholds=fit.committee_thresholds, structures=rows,
                                  gamma_atoms=gamma_atoms, gamma_local_atoms=local_atoms,
                                  force_uncertainty_atoms=force_atoms)


@dataclass
class AceUncertaintyMaker(Maker):
    """Score structures with a fitted ACE model or ensemble: γ, γ_local, CBE/CBF/ABF."""

    name: str = "ace uncertainty"
    category: str | None = field(default_factory=lambda: get_settings().combine_category)

    def make(self, fit, structures: list[StructureRecord]) -> Job:
        new_job = ace_uncertainty(fit, structures)
        new_job.name = self.name
        return set_category(new_job, self.category)


@job
def fixed_test_errors(potentials: list[str], test_files: list[str]) -> dict:
    """The ACE ensemble mean's RMSEs (energy per atom, force components) on a fixed labelled test
    set: one yardstick for every iteration of a campaign, unlike its per-iteration audit sample."""
    from uq_flows.ace.potential import predict
    from uq_flows.io import read_labels, read_many

    atoms = read_many(test_files)
    labels = read_labels(atoms, name=", ".join(test_files))
    energies, forces = zip(*(predict(AceCalculator(path), atoms) for path in potentials))
    mean_energy = np.mean(energies, axis=0)
    mean_forces = np.mean([np.concatenate(f) for f in forces], axis=0)
    energy_rmse, force_rmse = rmse(mean_energy, labels.energies, mean_forces, labels.forces, labels.n_atoms)
    return {"n_structures": len(atoms), "n_atoms": int(labels.n_atoms.sum()), "energy_rmse_per_atom": energy_rmse,
            "force_rmse": force_rmse, "files": list(test_files)}
