"""Combine member predictions into the ensemble uncertainty U per structure.

Paper 001, eqs. 1-4: U is computed only for structures that every member predicted; a
structure that any member could not predict gets ``U = NaN`` and that member's status and
reason, never a number computed from a silently smaller ensemble. A structure screened out
before any model ran (``invalid``, ``rejected``) keeps that status and reason, without a
member name: it is the structure's fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.ensemble.members import MemberSpec
from uq_flows.ensemble.predict import STRUCTURE_STATUSES, MemberPredictions, predict_member
from uq_flows.ensemble.rmse import paper_force_rmse, read_rmse_file
from uq_flows.errors import InputError
from uq_flows.screening import HARD_MIN_DISTANCE, check_min_distance
from uq_flows.uncertainty import (
    force_uncertainty,
    inverse_rmse_weights,
    member_max_deviation,
)

OK = "ok"
WEIGHT_SCHEMES = ("auto", "paper", "equal")


@dataclass(frozen=True)
class MemberWeights:
    """Weights w_k (paper 001, eq. 2) normalised over the members used, and their origin."""

    members: list[str]
    weights: np.ndarray
    source: str
    rmse: dict[str, float] | None = None


def resolve_weights(members: Sequence[str], scheme: str | Path | Mapping[str, float] = "auto") -> MemberWeights:
    """Weights from the paper's table, an RMSE file or mapping, or equal weights.

    ``auto`` takes the paper's OMat24 RMSEs when every member is in the table and equal
    weights otherwise (the offline CHGNet and SevenNet members are not in it).
    """
    members = list(members)
    if len(set(members)) != len(members):
        raise InputError(f"members given more than once: {members}")
    if isinstance(scheme, Mapping):
        rmse, source = dict(scheme), "given"
    elif scheme == "equal":
        return MemberWeights(members, np.full(len(members), 1 / len(members)), "equal")
    elif scheme in ("paper", "auto"):
        rmse, source = paper_force_rmse(), "paper"
        if scheme == "auto" and not set(members) <= set(rmse):
            return resolve_weights(members, "equal")
    else:
        rmse, source = read_rmse_file(scheme), str(scheme)
    missing = [name for name in members if name not in rmse]
    if missing:
        if source in ("paper", "given"):
            hint = "give an RMSE file (uq-flows measure-rmse writes one), or use equal weights"
        else:  # the file was given: its names do not match the members'
            hint = (f"the file names {', '.join(sorted(rmse)) or 'no member'}; use the members' names "
                    f"({', '.join(members)}) in it, or use equal weights")
        raise InputError(f"no force RMSE for {', '.join(missing)} in {source} weights: {hint}")
    used = {name: float(rmse[name]) for name in members}
    return MemberWeights(members, inverse_rmse_weights(list(used.values())), source, used)


@dataclass
class EnsembleScores:
    """U and status per structure, with the per-member worst-atom deviations d_jk."""

    members: list[str]
    weights: np.ndarray
    weights_source: str
    variant: int
    n_atoms: np.ndarray
    u: np.ndarray
    status: list[str]
    reasons: list[str | None]
    member_max_deviation: np.ndarray
    mean_energy: np.ndarray
    extra: dict = field(default_factory=dict)

    def rows(self, structures: Sequence[Atoms] | None = None) -> list[dict]:
        """One plain dict per structure, in input order (for JSON and tables)."""
        rows = []
        for j in range(len(self.u)):
            row = {
                "U": None if np.isnan(self.u[j]) else float(self.u[j]),
                "status": self.status[j],
                "reason": self.reasons[j],
                "n_atoms": int(self.n_atoms[j]),
                "mean_energy": None if np.isnan(self.mean_energy[j]) else float(self.mean_energy[j]),
                "max_deviation": {
                    name: None if np.isnan(d) else float(d)
                    for name, d in zip(self.members, self.member_max_deviation[:, j])
                },
            }
            if structures is not None:
                row = {
                    "id": structures[j].info.get("uq_id"),
                    "formula": structures[j].get_chemical_formula(),
                    "source": structures[j].info.get("uq_source"),
                    **row,
                }
            rows.append(row)
        return rows


def concatenate_predictions(chunks: Sequence[MemberPredictions]) -> MemberPredictions:
    """One member's predictions over consecutive chunks of structures, in order."""
    names = {chunk.member for chunk in chunks}
    if len(names) != 1:
        raise InputError(f"cannot concatenate predictions of different members: {sorted(names)}")
    return MemberPredictions(
        member=chunks[0].member,
        n_atoms=np.concatenate([c.n_atoms for c in chunks]),
        energies=np.concatenate([c.energies for c in chunks]),
        forces=np.concatenate([c.forces for c in chunks]),
        stresses=np.concatenate([c.stresses for c in chunks]),
        status=[s for c in chunks for s in c.status],
        reasons=[r for c in chunks for r in c.reasons],
    )


def combine_predictions(predictions: Sequence[MemberPredictions], weights: MemberWeights, variant: int = 1) -> EnsembleScores:
    """U (paper 001, eq. 1; variants 0 and 2: eqs. 1 with w=1/K and 3) per structure."""
    names = [p.member for p in predictions]
    if names != weights.members:
        raise InputError(f"predictions for {names} but weights for {weights.members}")
    if len(predictions) < 2:
        raise InputError("an ensemble needs at least two members")
    n_atoms = predictions[0].n_atoms
    for p in predictions[1:]:
        if not np.array_equal(p.n_atoms, n_atoms):
            raise InputError(f"{p.member} predicted other structures than {names[0]} (atom counts differ)")
    n_configs = len(n_atoms)
    status, reasons = [OK] * n_configs, [None] * n_configs
    for p in predictions:
        for j, (s, reason) in enumerate(zip(p.status, p.reasons)):
            if s == OK or status[j] in STRUCTURE_STATUSES:
                continue
            if s in STRUCTURE_STATUSES:
                status[j], reasons[j] = s, reason
            elif status[j] == OK:
                status[j], reasons[j] = s, f"{p.member}: {reason}" if reason else p.member
            else:
                reasons[j] = f"{reasons[j]}; {p.member}: {reason}"
    ok = np.array([s == OK for s in status])
    atom_ok = np.repeat(ok, n_atoms)
    u = np.full(n_configs, np.nan)
    deviation = np.full((len(predictions), n_configs), np.nan)
    if ok.any():
        forces = np.stack([p.forces[atom_ok] for p in predictions])
        u[ok] = force_uncertainty(forces, n_atoms[ok], weights.weights, variant)
        deviation[:, ok] = member_max_deviation(
            forces, n_atoms[ok], weights.weights, weighted_mean=variant == 2
        )
    mean_energy = np.where(ok, np.mean([p.energies for p in predictions], axis=0), np.nan)
    return EnsembleScores(
        members=names,
        weights=weights.weights,
        weights_source=weights.source,
        variant=variant,
        n_atoms=n_atoms,
        u=u,
        status=status,
        reasons=reasons,
        member_max_deviation=deviation,
        mean_energy=mean_energy,
    )


def score_structures(
    structures: Sequence[Atoms],
    members: Sequence[MemberSpec],
    weights: str | Path | Mapping[str, float] = "auto",
    variant: int = 1,
    device: str | None = None,
    progress: Callable[[str, int], None] | None = None,
    min_distance: float = HARD_MIN_DISTANCE,
) -> tuple[EnsembleScores, list[MemberPredictions]]:
    """Run every member on ``structures`` and combine their predictions into U.

    Structures with non-finite positions or cell, or atoms closer than ``min_distance`` Å,
    reach no member (see ``predict_member``); a member is loaded only if some structure
    passes.
    """
    if not structures:
        raise InputError("no structures to score")
    check_min_distance(min_distance)
    resolved = resolve_weights([m.name for m in members], weights)
    predictions = []
    for spec in members:
        step = (lambda k, name=spec.name: progress(name, k)) if progress else None
        predictions.append(
            predict_member(spec, structures, device=device, progress=step, min_distance=min_distance)
        )
    return combine_predictions(predictions, resolved, variant), predictions


def functional_warnings(specs: Sequence[MemberSpec]) -> list[str]:
    """A warning when members were trained on different functionals (METHODS §1: never mix silently)."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        groups.setdefault(spec.functional or "unknown functional", []).append(spec.name)
    if len([f for f in groups if f != "unknown functional"]) > 1:
        by = "; ".join(f"{functional}: {', '.join(names)}" for functional, names in groups.items())
        return [f"members trained on different functionals ({by}); U includes their systematic difference"]
    return []
