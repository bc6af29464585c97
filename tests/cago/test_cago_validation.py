"""CAGO against a known truth (paper 004, Fig. 2c): EMT Cu, a linear-ACE committee fitted to it."""

import pytest

from benchmarks.cago import run_validation


@pytest.mark.slow
def test_cago_calibrated_structures_have_the_target_error(tmp_path):
    result = run_validation(target=0.1, n_members=10, n_cago=4, n_seeds=8, max_steps=25, workdir=tmp_path)
    target = result["target"]
    assert result["n_structures"] >= 6  # seeds kept after the paper's filters
    assert abs(result["calibrated_mean_error"] - target) <= 0.3 * target
    assert abs(result["uncalibrated_mean_error"] - target) > abs(result["calibrated_mean_error"] - target)
    assert result["calibration"]["z_std"] == pytest.approx(1.0, abs=0.05)
