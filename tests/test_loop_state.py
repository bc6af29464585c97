"""The loop's decisions without any workflow engine: budgets, counts, every stop criterion, thinning."""

from types import SimpleNamespace

import pytest

from uq_flows.labeling.labels import DFT, TEACHER, Label
from uq_flows.labeling.routing import Route
from uq_flows.loop_state import ConvergenceConfig, IterationCounts, spread_evenly, unique_by_id


def counts(**values) -> IterationCounts:
    return IterationCounts(**{"n_candidates": 10, **values})


@pytest.mark.parametrize(("per_iteration", "total", "so_far", "expected"), [
    (None, None, 50, None),  # no budget
    (4, None, 50, 4),
    (None, 10, 7, 3),  # what the total leaves
    (4, 10, 7, 3),  # the smaller of the two
    (4, 10, 12, 0),  # overspent (failed runs count): nothing, never negative
])
def test_dft_budget_of_the_next_iteration(per_iteration, total, so_far, expected):
    config = ConvergenceConfig(dft_budget_per_iteration=per_iteration, dft_budget_total=total)
    assert config.dft_budget(so_far) == expected


def test_every_stop_criterion_and_its_order():
    going = dict(iteration=0, counts=counts(n_high_u=5, dft_total=3), energy_rmse=0.01, force_rmse=0.2,
                 n_next_candidates=4)
    assert ConvergenceConfig(max_iterations=3).stop_reason(**going) is None
    assert ConvergenceConfig(max_iterations=1).stop_reason(**going) == "reached max_iterations = 1"
    assert ConvergenceConfig(max_iterations=3).stop_reason(**{**going, "iteration": 2}) == "reached max_iterations = 3"
    assert ConvergenceConfig(dft_budget_total=3).stop_reason(**going) == "DFT budget of 3 used (3)"
    assert ConvergenceConfig(dft_budget_total=4).stop_reason(**going) is None
    both = ConvergenceConfig(target_energy_rmse=0.02, target_force_rmse=0.25)
    assert both.stop_reason(**going) == "fit RMSEs 0.01 eV/atom and 0.2 eV/Å reached the targets"
    assert both.stop_reason(**{**going, "force_rmse": 0.3}) is None  # both targets must hold
    assert both.stop_reason(**{**going, "energy_rmse": None}) is None  # an unknown RMSE reaches nothing
    assert ConvergenceConfig(target_energy_rmse=0.02).stop_reason(**going) is None  # one target alone: never
    assert ConvergenceConfig(max_high_u_fraction=0.5).stop_reason(**going) == "high-U fraction 0.50 ≤ 0.5"
    assert ConvergenceConfig(max_high_u_fraction=0.4).stop_reason(**going) is None
    assert ConvergenceConfig().stop_reason(**{**going, "n_next_candidates": 0}) == "no new candidates were selected"
    # the first criterion met wins: iterations before budget before RMSE before high-U before candidates
    everything = ConvergenceConfig(max_iterations=1, dft_budget_total=1, target_energy_rmse=1, target_force_rmse=1,
                                   max_high_u_fraction=1)
    assert everything.stop_reason(**going).startswith("reached max_iterations")
    assert everything.model_copy(update={"max_iterations": 5}).stop_reason(**going).startswith("DFT budget")


def test_counts_put_every_candidate_in_exactly_one_outcome():
    routes = [Route(id="a", U=0.1, route="dft", reason="audit", audit=True),
              Route(id="b", U=2.0, route="dft", reason="high"), Route(id="c", U=3.0, route="dft", reason="high"),
              Route(id="d", U=4.0, route="dft", reason="high"), Route(id="e", U=5.0, route="deferred", reason="budget"),
              Route(id="f", U=0.1, route="teacher", reason="low"), Route(id="g", U=0.2, route="teacher", reason="low"),
              Route(id="h", U=None, route="rejected", reason="atoms 0.3 Å apart")]
    forces = [[0.0, 0.0, 0.0]]
    labels = [Label(id="a", status="ok", kind=DFT, source="cp2k", energy=-1.0, forces=forces),
              Label(id="b", status="ok", kind=DFT, source="cp2k", energy=-1.0, forces=forces),
              Label.failed("c", DFT, "cp2k", "SCF did not converge"),
              Label(id="d", status="rejected", kind=DFT, source="cp2k", energy=-1.0, forces=[[99.0, 0, 0]],
                    reason="force above 30 eV/Å"),  # ran, then screened: it cost a DFT calculation
              Label(id="f", status="ok", kind=TEACHER, source="chgnet", energy=-1.0, forces=forces),
              Label.failed("g", TEACHER, "chgnet", "model error"),
              Label(id="h", status="rejected", kind=DFT, source="screen", reason="atoms 0.3 Å apart")]
    result = IterationCounts.of(8, routes, labels, n_deferred=1, dft_so_far=10)
    assert (result.n_dft_ok, result.n_dft_failed, result.n_teacher, result.n_teacher_failed) == (2, 1, 1, 1)
    assert (result.n_deferred, result.n_rejected) == (1, 2)
    outcomes = ("n_dft_ok", "n_dft_failed", "n_teacher", "n_teacher_failed", "n_deferred", "n_rejected")
    assert sum(getattr(result, k) for k in outcomes) == result.n_candidates
    assert result.dft_total == 10 + 4  # a, b, c and d ran; h never reached DFT
    assert result.n_high_u == 4 and result.high_u_fraction == 0.5  # b, c, d and the deferred e; not the audit
    partial = IterationCounts.of(8, routes, None, dft_so_far=10)
    assert partial.n_high_u == 4 and partial.dft_total == 10 and partial.n_dft_ok == 0


def test_thinning_keeps_both_ends_and_ids_stay_unique():
    assert spread_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread_evenly([1, 2], 5) == [1, 2]
    records = [SimpleNamespace(id=i) for i in "abcab"]
    assert [r.id for r in unique_by_id([records[:3], None, records[3:], [SimpleNamespace(id="d")]])] == list("abcd")
