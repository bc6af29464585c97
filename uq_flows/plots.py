"""Figures people read first: U against error, accuracy against coverage, a loop's progress (paper 001, Figs. 2-4).

Colour-blind-safe colours (Okabe-Ito), labelled axes with units, log scales where values
span decades. Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from uq_flows.io import atomic_path  # noqa: E402

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency
BLUE, ORANGE, GREEN, VERMILION = "#0072B2", "#E69F00", "#009E73", "#D55E00"
SKY, PURPLE, BLACK = "#56B4E9", "#CC79A7", "#000000"
CYCLE = (BLUE, ORANGE, GREEN, VERMILION, SKY, PURPLE, BLACK)
HEXBIN_MIN = 200  # fewer points than this are drawn one by one: a hexbin of ten points hides them


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=150, bbox_inches="tight")
    plt.close(figure)
    return path


def _decimal_log_ticks(axes, which: str = "xy") -> None:
    """Ticks labelled as plain decimals at 1, 2, 5 × 10^k (1 × 10^k over more than 2.5 decades):
    no crowded 2×10⁻¹ minor labels. Call once the axis limits are final."""
    for name in which:
        axis, limits = (axes.xaxis, axes.get_xlim()) if name == "x" else (axes.yaxis, axes.get_ylim())
        span = np.log10(max(limits) / min(limits)) if min(limits) > 0 else np.inf
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0) if span <= 2.5 else (1.0,)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _log_if_spans_decades(axes, values, axis: str = "y", decades: float = 1.5) -> None:
    positive = np.asarray(values, float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if positive.size and np.log10(positive.max() / positive.min()) > decades:
        (axes.set_yscale if axis == "y" else axes.set_xscale)("log")
        _decimal_log_ticks(axes, axis)


def uncertainty_parity(u: np.ndarray, error: np.ndarray, path: str | Path, rho: float | None = None,
                       groups: np.ndarray | None = None, group_label: str = "iteration") -> Path:
    """U against the ensemble-mean force error on log-log axes, with y = x (paper 001, Fig. 2a-d).

    A hexbin from ``HEXBIN_MIN`` points on; fewer are drawn as points, coloured by ``groups``.
    """
    u, error = np.asarray(u, float), np.asarray(error, float)
    keep = (u > 0) & (error > 0) & np.isfinite(u) & np.isfinite(error)
    figure, axes = plt.subplots(figsize=(4.8, 4.2))
    if keep.any():
        low = min(u[keep].min(), error[keep].min()) / 2
        high = max(u[keep].max(), error[keep].max()) * 2
        if keep.sum() >= HEXBIN_MIN:
            hexbin = axes.hexbin(u[keep], error[keep], xscale="log", yscale="log", bins="log", gridsize=40,
                                 cmap="viridis", mincnt=1, extent=np.log10([low, high, low, high]))
            figure.colorbar(hexbin, ax=axes, label="configurations per bin")
        else:
            labels = np.zeros(u.size, int) if groups is None else np.asarray(groups)
            for k, group in enumerate(np.unique(labels[keep])):
                chosen = keep & (labels == group)
                axes.scatter(u[chosen], error[chosen], s=28, color=CYCLE[k % len(CYCLE)], edgecolor="white",
                             linewidth=0.5, label=None if groups is None else f"{group_label} {group}", zorder=3)
            axes.set_xscale("log")
            axes.set_yscale("log")
        axes.plot([low, high], [low, high], "--", color="grey", lw=1, label="y = x")
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        _decimal_log_ticks(axes)
        axes.legend(loc="upper left", frameon=False, fontsize=8)
    axes.set_xlabel("uncertainty U (eV/Å)")
    axes.set_ylabel("ensemble-mean force error, max over atoms (eV/Å)")
    title = f"{keep.sum()} configurations"
    if rho is not None and np.isfinite(rho):
        title += f", Spearman ρ = {rho:.2f}"
    axes.set_title(title, fontsize=10)
    return _save(figure, Path(path))


def accuracy_coverage(coverage: np.ndarray, energy_rmse: np.ndarray | None, force_rmse: np.ndarray,
                      path: str | Path, title: str = "most uncertain configurations dropped first") -> Path:
    """Energy (when given) and force RMSE of the configurations kept, against the fraction kept."""
    panels = [(np.asarray(force_rmse, float), "force RMSE (eV/Å)", VERMILION)]
    if energy_rmse is not None and np.isfinite(energy_rmse).any():
        panels.insert(0, (np.asarray(energy_rmse, float) * 1000, "energy RMSE (meV/atom)", BLUE))
    figure, axes_row = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    coverage = np.asarray(coverage, float)
    for axes, (values, label, colour) in zip(axes_row[0], panels):
        axes.plot(coverage, values, color=colour, lw=1.8, marker="o" if coverage.size <= 30 else None, ms=4)
        _log_if_spans_decades(axes, values)
        axes.set_xlabel("coverage (fraction of configurations kept)")
        axes.set_ylabel(label)
        axes.set_xlim(0, 1.02)
        axes.grid(alpha=0.3)
    figure.suptitle(textwrap.fill(f"accuracy–coverage: {title}", 50 * len(panels)), fontsize=10)
    return _save(figure, Path(path))


def threshold_tradeoff(uc: np.ndarray, force_rmse_below: np.ndarray, dft_fraction: np.ndarray, path: str | Path,
                       chosen: dict[str, float] | None = None, target: float | None = None) -> Path:
    """Force RMSE of the trusted set {U < U_c} and the fraction sent to DFT, against U_c (paper 001, Fig. 3-4).

    ``chosen`` marks thresholds used (label -> U_c); ``target`` a force RMSE target (eV/Å).
    """
    figure, left = plt.subplots(figsize=(6.0, 4.0))
    right = left.twinx()
    left.plot(uc, force_rmse_below, color=VERMILION, lw=1.8, label="force RMSE of uMLIP labels (U < U_c)")
    right.plot(uc, np.asarray(dft_fraction) * 100, color=BLUE, lw=1.8, ls="-.", label="sent to DFT (U ≥ U_c)")
    if target is not None:
        left.axhline(target, color=VERMILION, ls=":", lw=1, label=f"target {target:g} eV/Å")
    for k, (label, value) in enumerate((chosen or {}).items()):
        if value is not None and np.isfinite(value) and value > 0:
            left.axvline(value, color=CYCLE[(k + 2) % len(CYCLE)], ls="--", lw=1, label=f"{label}: U_c = {value:.3g} eV/Å")
    left.set_xscale("log")
    if len(uc):
        left.set_xlim(np.min(uc), np.max(uc))
    _decimal_log_ticks(left, "x")
    _log_if_spans_decades(left, force_rmse_below)
    left.set_xlabel("threshold U_c (eV/Å)")
    left.set_ylabel("force RMSE below U_c (eV/Å)", color=VERMILION)
    right.set_ylabel("configurations sent to DFT (%)", color=BLUE)
    right.set_ylim(0, 102)
    left.grid(alpha=0.3)
    lines = [h for axes in (left, right) for h in axes.get_legend_handles_labels()[0]]
    figure.legend(lines, [line.get_label() for line in lines], loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  ncol=2, frameon=False, fontsize=8)
    return _save(figure, Path(path))


def iteration_progress(rows: list[dict], path: str | Path) -> Path:
    """Per iteration: structures by label source, DFT fraction, fit RMSEs, ρ and training-set size.

    ``rows`` carry ``IterationSummary`` fields; missing or None values (a running
    iteration) are left out of the lines.
    """
    iterations = np.array([row["iteration"] for row in rows])

    def column(key: str, scale: float = 1.0) -> np.ndarray:
        return np.array([np.nan if row.get(key) is None else row[key] * scale for row in rows], float)

    figure, axes = plt.subplots(2, 3, figsize=(12.0, 6.6))
    bars, fraction, size = axes[0]
    energy, force, rho = axes[1]
    bottom = np.zeros(len(rows))
    for key, label, colour in (("n_dft_ok", "DFT", BLUE), ("n_teacher", "uMLIP teacher", ORANGE),
                               ("n_rejected", "rejected by screens", PURPLE), ("n_dft_failed", "DFT failed", VERMILION),
                               ("n_deferred", "deferred (over budget)", SKY)):
        values = np.nan_to_num(column(key))
        bars.bar(iterations, values, bottom=bottom, color=colour, label=label, width=0.7)
        bottom += values
    bars.set_ylabel("structures labelled")
    bars.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize=8)
    candidates = column("n_candidates")
    fraction.plot(iterations, 100 * column("n_high_u") / candidates, "o-", color=VERMILION, label="high U (U ≥ U_c)")
    fraction.plot(iterations, 100 * column("n_dft_ok") / candidates, "s--", color=BLUE, label="DFT-labelled")
    fraction.set_ylabel("share of the iteration's candidates (%)")
    fraction.set_ylim(0, 105)
    fraction.legend(frameon=False, fontsize=8)
    size.plot(iterations, column("n_training"), "o-", color=GREEN, label="training structures")
    size.plot(iterations, column("dft_total"), "s--", color=BLUE, label="DFT calculations so far")
    size.set_ylabel("structures (cumulative)")
    size.legend(frameon=False, fontsize=8)
    for axes_, prefix, scale, unit, colour in ((energy, "energy_rmse_per_atom", 1000, "energy RMSE (meV/atom)", BLUE),
                                               (force, "force_rmse", 1, "force RMSE (eV/Å)", VERMILION)):
        for split, style in (("train", "o-"), ("test", "s--")):
            values = column(f"{split}_{prefix}", scale)
            if np.isfinite(values).any():
                axes_.plot(iterations, values, style, color=colour if split == "train" else BLACK, label=f"{split}")
        _log_if_spans_decades(axes_, np.concatenate([column(f"train_{prefix}", scale), column(f"test_{prefix}", scale)]))
        axes_.set_ylabel(f"ACE fit {unit}")
        if axes_.get_legend_handles_labels()[0]:
            axes_.legend(frameon=False, fontsize=8)
    for key, style, colour, label in (("spearman_audit", "o-", GREEN, "audit sample"),
                                      ("spearman_dft", "s:", BLACK, "all DFT labels (U ≥ U_c mostly)")):
        values = column(key)
        if np.isfinite(values).any():
            rho.plot(iterations, values, style, color=colour, label=label)
    if rho.get_legend_handles_labels()[0]:
        rho.legend(frameon=False, fontsize=8)
    else:
        rho.text(0.5, 0.75, "ρ needs ≥ 3 audited or DFT\nstructures in an iteration", transform=rho.transAxes,
                 ha="center", color="grey")
    rho.axhline(0, color="grey", lw=0.8)
    rho.set_ylim(-1.05, 1.05)
    rho.set_ylabel("Spearman ρ(U, force error)")
    for axes_ in axes.ravel():
        axes_.set_xlabel("iteration")
        axes_.set_xticks(iterations)
        axes_.grid(alpha=0.3)
    figure.tight_layout()
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
    _decimal_log_ticks(axes)
    axes.set_xlabel("root mean variance of σ per bin (eV/Å)")
    axes.set_ylabel("force error RMSE per bin (eV/Å)")
    axes.legend(frameon=False)
    axes.set_title("calibration of the committee force uncertainty", fontsize=10)
    return _save(figure, Path(path))
