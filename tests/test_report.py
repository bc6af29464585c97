"""The loop report: figures and the one-page HTML from a loop's numbers (engine-free part).

The report of a real loop from the store is tested with the loop itself
(tests/flows/test_loop.py, tests/flows/test_loop_rebuild.py).
"""

import base64
import dataclasses
import io
import json
import re

import matplotlib.image
import numpy as np
import pytest

from uq_flows.report import LoopReport, threshold_curve, write_report
from uq_flows.uncertainty import ReferenceErrors


def finished_row(iteration, **values):
    row = {"iteration": iteration, "complete": True, "n_candidates": 20, "n_high_u": 6, "n_dft_ok": 5,
           "n_dft_failed": 1, "n_rejected": 0, "n_teacher": 14, "n_deferred": 0, "dft_total": 6 * (iteration + 1),
           "n_training": 19 * (iteration + 1), "train_energy_rmse_per_atom": 0.004, "train_force_rmse": 0.12,
           "test_energy_rmse_per_atom": None, "test_force_rmse": None, "spearman_dft": 0.6, "n_next_candidates": 20,
           "converged": False, "reason": "continuing", "uc": 0.3}
    return {**row, **values}


@pytest.fixture
def loop_report():
    rng = np.random.default_rng(3)
    parts = []
    for iteration in (0, 1):
        u = rng.uniform(0.3, 3.0, 6)
        reference = [rng.normal(size=(8, 3)) for _ in u]
        mean = [r + rng.normal(scale=s / 3, size=r.shape) for r, s in zip(reference, u)]
        parts.append(ReferenceErrors.from_forces(u, reference, mean, iteration))
    rows = [finished_row(0), finished_row(1, converged=True, reason="reached max_iterations = 3"),
            {"iteration": 2, "complete": False, "n_candidates": 20, "n_high_u": 4, "dft_total": 12, "uc": 0.3}]
    candidate_u = rng.lognormal(-1.5, 1.0, 60)
    return LoopReport(loop="si-test", state="running", members=["a", "b", "c"], iterations=rows,
                      candidate_u=candidate_u, dft=ReferenceErrors.concatenate(parts))


def test_reference_errors_are_the_ensemble_mean_force_error_of_eq_5():
    reference = [np.zeros((2, 3)), np.zeros((1, 3))]
    mean = [np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), np.array([[0.0, 2.0, 0.0]])]
    errors = ReferenceErrors.from_forces([1.0, 2.0], reference, mean, iteration=4)
    assert errors.max_error.tolist() == [5.0, 2.0]  # max over atoms of the norm
    assert errors.sq_sum.tolist() == [26.0, 4.0] and errors.n_components.tolist() == [6, 3]
    assert errors.iteration.tolist() == [4, 4] and errors.spearman() is None  # ρ needs three structures


def test_threshold_curve_matches_a_direct_count(loop_report):
    uc, rmse, fraction = threshold_curve(loop_report)
    k = 120
    kept = loop_report.dft.u < uc[k]
    expected = np.sqrt(loop_report.dft.sq_sum[kept].sum() / loop_report.dft.n_components[kept].sum())
    assert rmse[k] == pytest.approx(expected)
    assert fraction[k] == pytest.approx(np.mean(loop_report.candidate_u >= uc[k]))
    assert np.isnan(rmse[0]) and fraction[0] == 1.0 and fraction[-1] == 0.0  # nothing trusted / nothing to DFT


def test_write_report_embeds_every_figure_and_the_iteration_table(tmp_path, loop_report):
    files = write_report(loop_report, tmp_path / "report")
    assert set(files) == {"u_vs_error", "accuracy_coverage", "force_rmse_vs_uc", "progress", "summary", "index"}
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in files.values())
    page = files["index"].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    for name, encoded in zip(("u_vs_error", "accuracy_coverage", "force_rmse_vs_uc", "progress"), images):
        assert base64.b64decode(encoded) == files[name].read_bytes()
        height, width, _ = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded))).shape
        assert width >= 500 and height >= 400
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", page)
    assert rows == [("0", "20"), ("1", "20"), ("2", "20")]
    assert "<td>running</td>" in page and "reached max_iterations = 3" in page and "4</td>" in page
    assert "<td>0.12</td>" in page  # train force RMSE, eV/Å
    assert "U is the weighted spread" in page  # the fixture does not say how the members were weighted
    for source, words in (("equal", "U is the equally weighted spread"),
                          ("paper", "inverse-RMSE-weighted (force RMSEs: OMat24 test, paper 001 Table S1)")):
        weighted = write_report(dataclasses.replace(loop_report, weights_source=source), tmp_path / source)
        assert words in weighted["index"].read_text()
    summary = json.loads(files["summary"].read_text())
    assert summary["n_dft_calculations"] == 12 and summary["n_dft_errors"] == 12 and summary["final_fit"]["iteration"] == 1


def test_a_loop_without_dft_errors_still_gets_its_report(tmp_path, loop_report):
    empty = LoopReport(loop="fresh", state="running", members=["a", "b"], iterations=loop_report.iterations[2:],
                       candidate_u=loop_report.candidate_u[:20])
    files = write_report(empty, tmp_path)
    assert all(path.stat().st_size > 0 for path in files.values())
    summary = json.loads(files["summary"].read_text())
    assert summary["n_dft_errors"] == 0 and summary["spearman_dft"] is None and summary["final_fit"] is None
    assert "<td>running</td>" in files["index"].read_text()


def test_the_rmse_below_uc_and_rho_come_from_the_audit_sample_when_there_is_one(tmp_path, loop_report):
    """DFT labels sit mostly above U_c (range-restricted): the random audit sample is the one to judge U on."""
    rng = np.random.default_rng(5)
    u = rng.uniform(0.01, 3.0, 9)
    reference = [rng.normal(size=(4, 3)) for _ in u]
    audit = ReferenceErrors.from_forces(u, reference, [r + rng.normal(scale=s / 5, size=r.shape)
                                                       for r, s in zip(reference, u)], 0)
    audited = LoopReport(loop="si-test", state="completed", members=["a", "b"], iterations=loop_report.iterations,
                         candidate_u=loop_report.candidate_u, dft=loop_report.dft, audit=audit)
    uc, rmse, _ = threshold_curve(audited)
    k = int(np.searchsorted(uc, 1.5))
    kept = audit.u < uc[k]
    assert rmse[k] == pytest.approx(np.sqrt(audit.sq_sum[kept].sum() / audit.n_components[kept].sum()))
    rows = [{**row, "n_audit": 9, "spearman_audit": 0.71,
             "calibration": {"a": 0.77, "b": 0.55, "z_std": 1.0, "z_std_uncalibrated": 3.5}}
            for row in loop_report.iterations[:2]]
    files = write_report(LoopReport(**{**audited.__dict__, "iterations": rows}), tmp_path)
    page = files["index"].read_text()
    assert f"{audit.spearman():.2f} (n = 9)" in page and "<td>0.71</td>" in page and "<td>3.5 → 1</td>" in page
    summary = json.loads(files["summary"].read_text())
    assert summary["n_audit"] == 9 and summary["spearman_audit"] == pytest.approx(audit.spearman())
