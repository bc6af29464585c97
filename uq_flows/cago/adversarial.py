"""Adversarial structures from seeds: CAGO on each, then the paper's pre-label filters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ase import Atoms
from pydantic import BaseModel, ConfigDict

from uq_flows.cago.calibration import PowerLawCalibration
from uq_flows.cago.filters import DEFAULT_MAX_COMMITTEE_FORCE, prelabel_problem
from uq_flows.cago.optimizer import CagoResult, CagoSettings, Committee, cago
from uq_flows.errors import InputError
from uq_flows.screening import DEFAULT_MIN_DISTANCE


class AdversarialStructure(BaseModel):
    """One seed's CAGO outcome: the structure, whether it is kept, and why not."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    seed_index: int
    result: CagoResult
    kept: bool
    reason: str | None = None

    def tagged_atoms(self, target: float) -> Atoms:
        atoms = self.result.atoms.copy()
        sigma = self.result.sigma_cal
        atoms.info.update(
            cago_seed=self.seed_index, cago_target=target, cago_converged=self.result.converged,
            cago_steps=len(self.result.trace) - 1, cago_mean_sigma_cal=sum(sigma) / len(sigma),
        )
        return atoms


def adversarial_structures(
    seeds: Sequence[Atoms],
    committee: Committee,
    calibration: PowerLawCalibration,
    settings: CagoSettings | None = None,
    max_committee_force: float = DEFAULT_MAX_COMMITTEE_FORCE,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    progress: Callable[[int], None] | None = None,
) -> list[AdversarialStructure]:
    """CAGO from every seed; structures failing the filters are kept in the list, marked."""
    if not seeds:
        raise InputError("no seed structures for CAGO")
    settings = settings or CagoSettings()
    out = []
    for index, seed in enumerate(seeds):
        result = cago(seed, committee, calibration, settings)
        problem = prelabel_problem(result.atoms, committee.forces([result.atoms])[:, 0], max_committee_force, min_distance)
        out.append(AdversarialStructure(seed_index=index, result=result, kept=problem is None, reason=problem))
        if progress:
            progress(index + 1)
    return out
