"""The loop's decisions, engine-free: budgets, counts, stop criteria, candidate thinning.

Kept apart from the workflow layer as DPGEN2 keeps its convergence and selection classes
apart from its engine (DESIGN.md, "Shape of the code"): ``flows.loop`` only moves documents
between jobs and asks these functions what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from uq_flows.labeling.labels import DFT, FAILED, OK, REJECTED, TEACHER, Label
from uq_flows.labeling.routing import Route

T = TypeVar("T")


class ConvergenceConfig(BaseModel):
    """When the loop stops (the first criterion met wins) and how much DFT it may spend."""

    model_config = ConfigDict(extra="forbid")

    max_iterations: int = Field(3, ge=1)
    dft_budget_total: int | None = Field(None, ge=0)
    dft_budget_per_iteration: int | None = Field(None, ge=0)
    target_energy_rmse: float | None = Field(None, gt=0, description="eV/atom, test (or train) RMSE of the fit.")
    target_force_rmse: float | None = Field(None, gt=0, description="eV/Å")
    max_high_u_fraction: float | None = Field(None, ge=0, le=1, description="Stop once fewer candidates are high-U.")

    def dft_budget(self, dft_so_far: int) -> int | None:
        """DFT calculations the next iteration may run: the per-iteration budget within what the total leaves."""
        budget = self.dft_budget_per_iteration
        if self.dft_budget_total is not None:
            left = max(0, self.dft_budget_total - dft_so_far)
            budget = left if budget is None else min(budget, left)
        return budget

    def stop_reason(self, iteration: int, counts: IterationCounts, energy_rmse: float | None,
                    force_rmse: float | None, n_next_candidates: int, pool_left: int | None = None) -> str | None:
        """Why the loop stops after ``iteration`` (0-based), or None to go on.

        ``energy_rmse`` (eV/atom) and ``force_rmse`` (eV/Å) are the fit's test RMSEs, or its
        training RMSEs when it has no test set. ``pool_left``: a replay campaign's pool
        structures not yet taken (None: not a pool campaign).
        """
        if iteration + 1 >= self.max_iterations:
            return f"reached max_iterations = {self.max_iterations}"
        if self.dft_budget_total is not None and counts.dft_total >= self.dft_budget_total:
            return f"DFT budget of {self.dft_budget_total} used ({counts.dft_total})"
        if self.target_energy_rmse is not None and self.target_force_rmse is not None \
                and energy_rmse is not None and force_rmse is not None \
                and energy_rmse <= self.target_energy_rmse and force_rmse <= self.target_force_rmse:
            return f"fit RMSEs {energy_rmse:.3g} eV/atom and {force_rmse:.3g} eV/Å reached the targets"
        if self.max_high_u_fraction is not None and counts.high_u_fraction <= self.max_high_u_fraction:
            return f"high-U fraction {counts.high_u_fraction:.2f} ≤ {self.max_high_u_fraction}"
        if pool_left == 0:
            return "the pool is used up"
        if n_next_candidates == 0:
            return "no new candidates were selected"
        return None


class IterationCounts(BaseModel):
    """Where one iteration's candidates ended: every candidate in exactly one outcome (once labelled)."""

    n_candidates: int
    n_high_u: int = Field(0, description="Routed to DFT by U or deferred over budget (the audit not counted).")
    n_dft_ok: int = 0
    n_dft_failed: int = 0
    n_teacher: int = 0
    n_teacher_failed: int = 0
    n_deferred: int = 0
    n_rejected: int = Field(0, description="Screened out: unphysical structure or forces above the maximum.")
    dft_total: int = Field(0, description="DFT calculations run by the loop so far (ok, failed or rejected after).")

    @classmethod
    def of(cls, n_candidates: int, routes: Sequence[Route] | None, labels: Sequence[Label] | None,
           n_deferred: int = 0, dft_so_far: int = 0) -> IterationCounts:
        """Counts from the routes and final labels of an iteration; None for what has not happened yet."""
        counts = {"n_candidates": n_candidates, "dft_total": dft_so_far}
        if routes is not None:
            counts["n_high_u"] = sum(r.route == "deferred" or (r.route == "dft" and not r.audit) for r in routes)
        if labels is not None:
            def number(kind: str, status: str) -> int:
                return sum(x.kind == kind and x.status == status for x in labels)

            # a rejected label without numbers was screened before any calculation ran
            ran = [x for x in labels if x.kind == DFT and (x.status != REJECTED or x.forces is not None)]
            counts.update(n_dft_ok=number(DFT, OK), n_dft_failed=number(DFT, FAILED), n_teacher=number(TEACHER, OK),
                          n_teacher_failed=number(TEACHER, FAILED), n_deferred=n_deferred,
                          n_rejected=sum(x.status == REJECTED for x in labels), dft_total=dft_so_far + len(ran))
        return cls(**counts)

    @property
    def high_u_fraction(self) -> float:
        return self.n_high_u / max(self.n_candidates, 1)


def spread_evenly(items: Sequence[T], limit: int) -> list[T]:
    """At most ``limit`` items, evenly spread over the sequence (first and last kept)."""
    items = list(items)
    if len(items) <= limit:
        return items
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, limit)]


def unique_by_id(groups: Iterable[Iterable[T] | None]) -> list[T]:
    """The items of every group in order, the first of each ``id`` only."""
    seen, out = set(), []
    for group in groups:
        for item in group or []:
            if item.id not in seen:
                seen.add(item.id)
                out.append(item)
    return out
