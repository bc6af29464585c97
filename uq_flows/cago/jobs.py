"""jobflow Makers for calibration and CAGO (paper 004); category ``gpu`` for model-heavy work."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jobflow import Job, Maker, job
from pydantic import BaseModel

from uq_flows.cago.adversarial import adversarial_structures
from uq_flows.cago.calibration import PowerLawCalibration
from uq_flows.cago.committee import committee_errors, committee_identity, load_committee
from uq_flows.cago.filters import DEFAULT_MAX_COMMITTEE_FORCE
from uq_flows.cago.optimizer import CagoSettings
from uq_flows.stages import CAGO, CALIBRATE, set_category, tag_stage
from uq_flows.labeling.assembly import DistilledDataset
from uq_flows.labeling.labels import Label
from uq_flows.screening import DEFAULT_MIN_DISTANCE
from uq_flows.records import StructureRecord


class CalibrationDocument(BaseModel):
    """A power-law calibration stored with the committee it belongs to."""

    calibration: PowerLawCalibration
    committee: list[str]
    uncalibrated_z_std: float


@job
def calibrate_job(structures: list[StructureRecord], dataset: DistilledDataset | list[Label],
                  committee: list[str]) -> CalibrationDocument:
    """Fit σ_cal = a·σ̂^b on ok labels the committee was not fitted on (paper 004, eq. 5)."""
    by_id = {s.id: s for s in structures}
    given = dataset.labels if isinstance(dataset, DistilledDataset) else dataset
    labels = [label for label in given if label.ok and label.id in by_id]
    members = load_committee(committee)
    sigma_hat, errors = committee_errors(members, [by_id[x.id].to_atoms() for x in labels],
                                         [np.asarray(x.forces) for x in labels])
    calibration = PowerLawCalibration.fit(sigma_hat, errors, n_members=members.n_members)
    raw = PowerLawCalibration.identity().diagnostics(sigma_hat, errors)
    return CalibrationDocument(calibration=calibration, committee=committee_identity(committee),
                               uncalibrated_z_std=raw.z_std)


@dataclass
class CalibrationMaker(Maker):
    name: str = "calibrate committee"
    category: str | None = "gpu"

    def make(self, structures, dataset, committee: list[str]) -> Job:
        new_job = calibrate_job(structures, dataset, committee)
        new_job.name = self.name
        return set_category(tag_stage(new_job, CALIBRATE), self.category)


class SeedOutcome(BaseModel):
    seed_id: str
    kept: bool
    reason: str | None
    converged: bool
    steps: int
    mean_sigma_cal: float


class AdversarialDocument(BaseModel):
    """Kept CAGO structures (new candidates) and what happened to every seed."""

    target: float
    calibrated: bool
    structures: list[StructureRecord]
    seeds: list[SeedOutcome]


@job
def cago_job(seeds: list[StructureRecord], committee: list[str], calibration: CalibrationDocument | None,
             settings: CagoSettings, max_committee_force: float, min_distance: float) -> AdversarialDocument:
    members = load_committee(committee)
    if calibration is not None:
        foreign = sorted(set(committee_identity(committee)) - set(calibration.committee))
        if foreign:
            raise ValueError(f"the calibration was fitted for another committee; not in it: {foreign}")
    cal = calibration.calibration if calibration is not None else PowerLawCalibration.identity()
    results = adversarial_structures([s.to_atoms() for s in seeds], members, cal, settings,
                                     max_committee_force, min_distance)
    kept = [StructureRecord.from_atoms(r.result.atoms, source=f"cago:{seeds[r.seed_index].id}") for r in results if r.kept]
    outcomes = [
        SeedOutcome(seed_id=seeds[r.seed_index].id, kept=r.kept, reason=r.reason, converged=r.result.converged,
                    steps=len(r.result.trace) - 1, mean_sigma_cal=float(np.mean(r.result.sigma_cal)))
        for r in results
    ]
    return AdversarialDocument(target=settings.target, calibrated=calibration is not None, structures=kept, seeds=outcomes)


@dataclass
class CagoMaker(Maker):
    """Adversarial structures at a target force error from seed structures (category ``gpu``)."""

    name: str = "cago"
    settings: CagoSettings = field(default_factory=CagoSettings)
    max_committee_force: float = DEFAULT_MAX_COMMITTEE_FORCE
    min_distance: float = DEFAULT_MIN_DISTANCE
    category: str | None = "gpu"

    def make(self, seeds, committee: list[str], calibration=None) -> Job:
        new_job = cago_job(seeds, committee, calibration, self.settings, self.max_committee_force, self.min_distance)
        new_job.name = self.name
        return set_category(tag_stage(new_job, CAGO), self.category)
