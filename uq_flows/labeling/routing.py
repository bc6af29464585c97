"""Route scored structures to DFT or teacher labels by U (paper 001, UAMD; METHODS §2).

U < U_c: teacher (uMLIP) label; U ≥ U_c, or U unknown because not every member could
predict the structure: DFT. Structures that scoring found unphysical (non-finite, atoms
closer than the hard minimum) are ``rejected``: never taught, never sent to DFT. A random
audit sample goes to DFT whatever its U (and is also teacher-labelled): it is the unbiased
sample for the energy alignment, ρ(U, error) and calibration (METHODS §2). An optional
per-iteration DFT budget keeps the audit and the most uncertain structures and defers the
rest. Every decision carries its reason. U_c can also be chosen as the largest threshold
whose teacher labels reach a target force RMSE on the audit sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from uq_flows.errors import InputError
from uq_flows.uncertainty import force_error_terms, threshold_for_target_force_rmse

RouteName = Literal["dft", "teacher", "deferred", "rejected"]
ROUTES = ("dft", "teacher", "deferred", "rejected")
DEFAULT_UC = 1.0  # eV/Å, paper 001 (force RMSE ≤ 0.1 eV/Å among trusted configurations)


class Route(BaseModel):
    """Where one structure goes and why."""

    id: str
    U: float | None
    route: RouteName
    reason: str
    audit: bool = False


def route_by_uncertainty(
    ids: Sequence[str],
    u: Sequence[float | None],
    uc: float = DEFAULT_UC,
    dft_budget: int | None = None,
    audit: Sequence[str] = (),
    rejected: Mapping[str, str] | None = None,
) -> list[Route]:
    """Teacher below U_c, DFT at or above it; over-budget DFT candidates are deferred.

    ``audit`` ids go to DFT whatever their U and count against the budget first;
    ``rejected`` maps ids scoring screened out to the reason (they get no label).
    """
    if len(ids) != len(u):
        raise InputError(f"{len(ids)} ids but {len(u)} U values")
    if not (uc >= 0):
        raise InputError(f"U_c must be a non-negative number, got {uc}")
    if dft_budget is not None and dft_budget < 0:
        raise InputError(f"the DFT budget must be ≥ 0, got {dft_budget}")
    rejected = rejected or {}
    forced = set(audit) - set(rejected)
    routes = []
    for structure_id, value in zip(ids, u):
        known = value is not None and math.isfinite(value)
        if structure_id in rejected:
            route, reason = "rejected", rejected[structure_id]
        elif structure_id in forced:
            route, reason = "dft", "audit sample: DFT whatever U"
        elif not known:
            route, reason = "dft", "U unknown (not every member predicted it)"
        elif value >= uc:
            route, reason = "dft", f"U = {value:.4g} ≥ U_c = {uc:g} eV/Å"
        else:
            route, reason = "teacher", f"U = {value:.4g} < U_c = {uc:g} eV/Å"
        routes.append(Route(id=structure_id, U=value if known else None, route=route, reason=reason,
                            audit=structure_id in forced))
    if dft_budget is not None:
        # priority: forced first, then unknown U, then highest U
        candidates = [k for k, r in enumerate(routes) if r.route == "dft"]
        priority = sorted(
            candidates,
            key=lambda k: (routes[k].id not in forced, routes[k].U is not None, -(routes[k].U or 0.0)),
        )
        for rank, k in enumerate(priority[dft_budget:], start=dft_budget + 1):
            routes[k] = routes[k].model_copy(update={
                "route": "deferred",
                "reason": f"{routes[k].reason}; deferred: rank {rank} by U exceeds the DFT budget of {dft_budget}",
            })
    return routes


def audit_sample(ids: Sequence[str], size: int, seed: int = 0, groups: Sequence[str] | None = None) -> list[str]:
    """A reproducible random sample of ids for the DFT audit (input order kept).

    With ``groups`` (e.g. each structure's chemical system), the sample is stratified: one
    random member of every group first (as far as ``size`` allows, groups in random order),
    the rest at random. A per-element energy alignment fitted only on SiGe and Ge cannot
    place pure Si (it absorbs the mixing-energy difference of the two sources), and a
    residual on those pairs would not show it.
    """
    if size < 1:
        raise InputError(f"the audit sample needs at least one structure, got {size}")
    if not ids:
        return []
    if groups is not None and len(groups) != len(ids):
        raise InputError(f"{len(groups)} audit groups for {len(ids)} structures")
    size = min(size, len(ids))
    rng = np.random.default_rng(seed)
    if groups is None or len(set(groups)) < 2:
        return [ids[k] for k in np.sort(rng.choice(len(ids), size=size, replace=False))]
    order = rng.permutation(len(ids))
    firsts: dict[str, int] = {}
    for k in order:
        firsts.setdefault(groups[k], int(k))
    chosen = list(firsts.values())[:size]
    taken = set(chosen)
    chosen += [int(k) for k in order if int(k) not in taken][: size - len(chosen)]
    return [ids[k] for k in sorted(chosen)]


def uc_for_target_rmse(
    u: Sequence[float], teacher_forces: np.ndarray, dft_forces: np.ndarray, n_atoms: Sequence[int], target: float
) -> float:
    """Largest U_c whose teacher forces have RMSE ≤ ``target`` against DFT on the audit set."""
    sq_sum, n_components = force_error_terms(dft_forces, teacher_forces, np.asarray(n_atoms))
    return threshold_for_target_force_rmse(np.asarray(u, dtype=float), sq_sum, n_components, target)


def count_routes(routes: Sequence[Route]) -> dict[str, int]:
    return {name: sum(r.route == name for r in routes) for name in ROUTES}
