"""Calibration diagnostics (paper 002, section 2.4) on hand-computed cases."""

import math

import numpy as np
import pytest

from uq_flows.errors import InputError
from uq_flows.uncertainty import ence, gaussian_nll, global_scaling, miscalibration_area, spearman, z_score_stats


def test_spearman_monotone():
    u = np.array([0.1, 0.5, 0.2, 3.0, 1.0])
    assert spearman(u, u**3 + 7) == pytest.approx(1.0)
    assert spearman(u, -np.exp(u)) == pytest.approx(-1.0)


def test_spearman_hand_value():
    # ranks x = 1,2,3,4 and y = 1,3,2,4: sum d^2 = 2; rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)


def test_spearman_constant_is_nan():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


@pytest.mark.parametrize(
    "u, errors, message",
    [([1, 2, 3], [1, 2], "entries"), ([1, 2], [1, 2], "at least 3"), ([1, 2, np.nan], [1, 2, 3], "NaN")],
)
def test_spearman_rejects(u, errors, message):
    with pytest.raises(InputError, match=message):
        spearman(u, errors)


def test_global_scaling_plain_and_bias_corrected():
    # r^2 / sigma^2 = 1, 4 -> mean 2.5
    assert global_scaling([1.0, -2.0], [1.0, 1.0]) == pytest.approx(2.5)
    # M = 5: -1/5 + (5-3)/(5-1) * 2.5 = -0.2 + 1.25 = 1.05
    assert global_scaling([1.0, -2.0], [1.0, 1.0], n_members=5) == pytest.approx(1.05)
    # M = 4: -1/4 + 1/3 * 2.5
    assert global_scaling([1.0, -2.0], [1.0, 1.0], n_members=4) == pytest.approx(-0.25 + 2.5 / 3)


def test_global_scaling_rejects():
    with pytest.raises(InputError, match="at least 4"):
        global_scaling([1.0], [1.0], n_members=3)
    with pytest.raises(InputError, match="positive"):
        global_scaling([1.0, 1.0], [1.0, 0.0])
    with pytest.raises(InputError, match="shape"):
        global_scaling([1.0, 1.0], [1.0])


def test_ence_zero_when_residuals_match_sigma():
    sigma = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    residuals = sigma * np.array([1, -1, 1, -1, 1, -1])
    assert ence(residuals, sigma, n_bins=3) == pytest.approx(0.0, abs=1e-15)


def test_ence_hand():
    # sorted sigma: bin 1 = (1, 1), bin 2 = (2, 2); residuals all 2
    # bin 1: RMV 1, RMSE 2 -> 1; bin 2: RMV 2, RMSE 2 -> 0; ENCE = 0.5
    assert ence([2.0, 2.0, 2.0, 2.0], [2.0, 1.0, 2.0, 1.0], n_bins=2) == pytest.approx(0.5)


def test_ence_uneven_bins():
    # 5 items in 2 bins: sizes 3, 2 after sorting by sigma (1, 1, 1 | 3, 3)
    # bin 1 residuals 1, 1, 4 -> RMSE sqrt(18/3) = sqrt(6); RMV 1 -> sqrt(6) - 1
    # bin 2 residuals 3, 3 -> 0
    value = ence([1.0, 3.0, 1.0, 3.0, 4.0], [1.0, 3.0, 1.0, 3.0, 1.0], n_bins=2)
    assert value == pytest.approx((math.sqrt(6) - 1) / 2)


def test_ence_rejects():
    with pytest.raises(InputError, match="n_bins"):
        ence([1.0, 2.0], [1.0, 1.0], n_bins=3)
    with pytest.raises(InputError, match="n_bins"):
        ence([1.0, 2.0], [1.0, 1.0], n_bins=0)


def test_miscalibration_area_hand():
    # z = 0 everywhere: observed proportion is 1 for every p -> integral of (1 - p) = 0.5
    assert miscalibration_area([0.0, 0.0], [1.0, 1.0]) == pytest.approx(0.5)
    # huge z: observed 0 until p = 1 (interval = whole line); p = 0, .5, 1 -> |diff| 0, .5, 0
    # trapezoid: .5 * (0 + .5)/2 + .5 * (.5 + 0)/2 = 0.25
    assert miscalibration_area([1e6, -1e6], [1.0, 1.0], n_points=3) == pytest.approx(0.25)


def test_miscalibration_area_small_for_gaussian_residuals():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.1, 2.0, size=20000)
    residuals = rng.normal(size=sigma.size) * sigma
    assert miscalibration_area(residuals, sigma) < 0.01
    assert miscalibration_area(residuals, sigma / 3) > 0.2  # overconfident


def test_z_score_stats():
    # z = 1, -1, 3: mean 1; population std sqrt((0 + 4 + 4)/3)
    mean, std = z_score_stats([2.0, -2.0, 3.0], [2.0, 2.0, 1.0])
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(math.sqrt(8 / 3))


def test_gaussian_nll():
    assert gaussian_nll([0.0], [1.0]) == pytest.approx(0.5 * math.log(2 * math.pi))
    expected = 0.5 * (math.log(2 * math.pi) + math.log(4.0) + 1.0)
    assert gaussian_nll([2.0, -2.0], [2.0, 2.0]) == pytest.approx(expected)


def test_calibration_rejects_non_finite():
    for func in (ence, miscalibration_area, z_score_stats, gaussian_nll, global_scaling):
        with pytest.raises(InputError, match="NaN"):
            func([1.0, np.inf], [1.0, 1.0])
        with pytest.raises(InputError, match="positive"):
            func([1.0, 1.0], [1.0, -1.0])
