"""Calibration diagnostics for predicted uncertainties (paper 002, section 2.4; METHODS.md section 8).

``residuals`` are reference minus prediction (or its norm) and ``sigma`` the predicted
standard deviation for the same items, any matching shapes (flattened). For force vectors
the caller chooses what an item is: per-atom error norms, or single components.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from scipy.integrate import trapezoid
from scipy.special import ndtri

from uq_flows.errors import InputError
from uq_flows.uncertainty._checks import as_float_array, check_positive_int


def _pair(residuals, sigma) -> tuple[np.ndarray, np.ndarray]:
    r = as_float_array(residuals, "residuals")
    s = as_float_array(sigma, "sigma")
    if r.shape != s.shape:
        raise InputError(f"residuals has shape {r.shape} but sigma has shape {s.shape}")
    if np.any(s <= 0):
        raise InputError("sigma must be positive")
    return r.ravel(), s.ravel()


def spearman(u, errors) -> float:
    """Spearman rank correlation rho(U, error) (paper 001 quality measure; paper 002, 2.4).

    Needs >= 3 finite points of equal length. Returns NaN if either input is constant
    (the correlation is undefined then).
    """
    x = as_float_array(u, "u", ndim=1)
    y = as_float_array(errors, "errors", ndim=1)
    if x.size != y.size:
        raise InputError(f"u has {x.size} entries but errors has {y.size}")
    if x.size < 3:
        raise InputError(f"spearman needs at least 3 points, got {x.size}")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def global_scaling(residuals, sigma, n_members: int | None = None) -> float:
    """Global variance scaling alpha^2 = mean(r^2 / sigma^2) (paper 002, eq. 26).

    With ``n_members`` = M (ensemble size) the small-ensemble bias-corrected estimator of
    eq. 27 is returned: alpha^2 = -1/M + (M - 3)/(M - 1) * mean(r^2 / sigma^2), M >= 4.
    Calibrated sigma is alpha * sigma.
    """
    r, s = _pair(residuals, sigma)
    ratio = float(np.mean((r / s) ** 2))
    if n_members is None:
        return ratio
    m = check_positive_int(n_members, "n_members")
    if m < 4:
        raise InputError(f"the bias-corrected alpha^2 needs at least 4 ensemble members, got {m}")
    return -1.0 / m + (m - 3) / (m - 1) * ratio


def ence(residuals, sigma, n_bins: int = 10) -> float:
    """Expected normalised calibration error (paper 002, eq. 28).

    Items are sorted by sigma (stable) and split into ``n_bins`` bins of equal count (sizes
    differ by at most one when n is not a multiple). Per bin RMV = sqrt(mean sigma^2) and
    RMSE = sqrt(mean r^2); ENCE = mean over bins of |RMV - RMSE| / RMV. 0 is perfect.
    """
    r, s = _pair(residuals, sigma)
    n_bins = check_positive_int(n_bins, "n_bins")
    n = r.size
    if n_bins > n:
        raise InputError(f"n_bins = {n_bins} exceeds the {n} items")
    order = np.argsort(s, kind="stable")
    bins = (np.arange(n) * n_bins) // n
    size = np.bincount(bins, minlength=n_bins)
    rmv = np.sqrt(np.bincount(bins, weights=s[order] ** 2, minlength=n_bins) / size)
    rmse = np.sqrt(np.bincount(bins, weights=r[order] ** 2, minlength=n_bins) / size)
    return float(np.mean(np.abs(rmv - rmse) / rmv))


def miscalibration_area(residuals, sigma, n_points: int = 100) -> float:
    """Miscalibration area (paper 002, section 2.4.3), from central intervals of N(0, 1).

    With z = r / sigma and expected proportions p = linspace(0, 1, n_points), the observed
    proportion is obs(p) = fraction of items with |z| <= Phi^-1((1 + p) / 2), the half-width
    of the central interval holding probability p under a standard normal. The area is the
    trapezoid integral of |obs(p) - p| over p, in [0, 1]; 0 means z follows N(0, 1) in |z|.
    """
    r, s = _pair(residuals, sigma)
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    abs_z = np.sort(np.abs(r / s))
    p = np.linspace(0.0, 1.0, n_points)
    half_width = ndtri((1.0 + p) / 2.0)  # 0 at p = 0, +inf at p = 1
    observed = np.searchsorted(abs_z, half_width, side="right") / abs_z.size
    return float(trapezoid(np.abs(observed - p), p))


def z_score_stats(residuals, sigma) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0) of z = r / sigma; (0, 1) if calibrated."""
    r, s = _pair(residuals, sigma)
    z = r / s
    return float(np.mean(z)), float(np.std(z))


def gaussian_nll(residuals, sigma) -> float:
    """Mean Gaussian negative log-likelihood 0.5 * [ln(2 pi) + ln sigma^2 + r^2 / sigma^2] (paper 002, 2.4.1)."""
    r, s = _pair(residuals, sigma)
    return float(np.mean(0.5 * (np.log(2.0 * np.pi) + 2.0 * np.log(s) + (r / s) ** 2)))
