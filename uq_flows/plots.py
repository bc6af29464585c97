"""Figures people read first: U against error, and accuracy against coverage (paper 001, Fig. 2).

Colour-blind-safe colours (Okabe-Ito), labelled axes with units, log scales where values
span decades. Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from uq_flows.io import atomic_path  # noqa: E402

BLUE, ORANGE, GREEN, VERMILION = "#0072B2", "#E69F00", "#009E73", "#D55E00"


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=150, bbox_inches="tight")
    plt.close(figure)
    return path


def uncertainty_parity(u: np.ndarray, error: np.ndarray, path: str | Path, rho: float | None = None) -> Path:
    """Hexbin of U against the ensemble-mean force error on log-log axes, with y = x."""
    u, error = np.asarray(u, float), np.asarray(error, float)
    keep = (u > 0) & (error > 0) & np.isfinite(u) & np.isfinite(error)
    figure, axes = plt.subplots(figsize=(4.6, 4.0))
    if keep.any():
        low = min(u[keep].min(), error[keep].min()) / 2
        high = max(u[keep].max(), error[keep].max()) * 2
        hexbin = axes.hexbin(u[keep], error[keep], xscale="log", yscale="log", bins="log",
                             gridsize=40, cmap="viridis", mincnt=1, extent=np.log10([low, high, low, high]))
        figure.colorbar(hexbin, ax=axes, label="configurations")
        axes.plot([low, high], [low, high], "--", color=ORANGE, label="y = x")
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        axes.legend(loc="upper left", frameon=False)
    axes.set_xlabel("uncertainty U (eV/Å)")
    axes.set_ylabel("force error, max over atoms (eV/Å)")
    title = f"{keep.sum()} configurations"
    if rho is not None and np.isfinite(rho):
        title += f", Spearman ρ = {rho:.2f}"
    axes.set_title(title, fontsize=10)
    return _save(figure, Path(path))


def accuracy_coverage(coverage: np.ndarray, energy_rmse: np.ndarray, force_rmse: np.ndarray, path: str | Path) -> Path:
    """Energy and force RMSE of the configurations kept, against the fraction kept."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.6))
    for axes, values, label, colour in (
        (left, np.asarray(energy_rmse) * 1000, "energy RMSE (meV/atom)", BLUE),
        (right, force_rmse, "force RMSE (eV/Å)", VERMILION),
    ):
        axes.plot(coverage, values, color=colour, lw=1.8)
        positive = np.asarray(values)[np.isfinite(values) & (np.asarray(values) > 0)]
        if positive.size and positive.max() / positive.min() > 30:
            axes.set_yscale("log")
        axes.set_xlabel("coverage (fraction of configurations kept)")
        axes.set_ylabel(label)
        axes.set_xlim(0, 1)
        axes.grid(alpha=0.3)
    figure.suptitle("accuracy–coverage: most uncertain configurations dropped first", fontsize=10)
    return _save(figure, Path(path))


def calibration_curve(sigma_hat: np.ndarray, errors: np.ndarray, calibrated: np.ndarray, path: str | Path, n_bins: int = 12) -> Path:
    """Binned RMSE of force errors against RMV of σ (paper 002): calibrated and uncalibrated."""
    norms = np.linalg.norm(np.asarray(errors).reshape(-1, 3), axis=1)
    figure, axes = plt.subplots(figsize=(4.6, 4.0))
    for sigma, label, colour, marker in ((np.asarray(sigma_hat), "committee σ̂", ORANGE, "s"),
                                         (np.asarray(calibrated), "calibrated σ_cal", BLUE, "o")):
        order = np.argsort(sigma)
        bins = [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]
        rmv = np.array([np.sqrt(np.mean(sigma[b] ** 2)) for b in bins])
        rmse = np.array([np.sqrt(np.mean(norms[b] ** 2)) for b in bins])
        axes.loglog(rmv, rmse, marker=marker, color=colour, label=label, lw=1.2)
    values = np.concatenate([np.asarray(sigma_hat), np.asarray(calibrated), norms])
    values = values[values > 0]
    low, high = values.min() / 2, values.max() * 2
    axes.plot([low, high], [low, high], "--", color="grey", label="y = x")
    axes.set_xlabel("root mean variance of σ per bin (eV/Å)")
    axes.set_ylabel("force error RMSE per bin (eV/Å)")
    axes.legend(frameon=False)
    axes.set_title("calibration of the committee force uncertainty", fontsize=10)
    return _save(figure, Path(path))
