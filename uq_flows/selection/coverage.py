"""How much of the candidates' feature space a selection covers, and a picture of it.

Coverage is measured in the PCA space DIRECT clusters in (the m Kaiser components):

- ``per_component``: along each component, the candidates' range is cut into ``n_bins``
  equal bins; the coverage of that component is the fraction of bins holding at least one
  candidate that also hold a selected one (the feature-coverage score of the DIRECT paper,
  Qi et al. 2024). ``score`` is its mean over components.
- ``pc1_pc2``: the same on an ``n_bins`` × ``n_bins`` grid of the first two components.
- ``random_baseline``: the same scores for a uniformly random subset of the same size
  (seeded), so a number can be judged against what no method at all would give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uq_flows.errors import InputError


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(len(values), dtype=np.int64)
    index = np.floor((values - low) / (high - low) * n_bins).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)


def _scores(scores: np.ndarray, selected: np.ndarray, n_bins: int) -> tuple[list[float], float | None]:
    per_component = []
    bins = [_bin_index(scores[:, c], n_bins) for c in range(scores.shape[1])]
    for b in bins:
        occupied = np.unique(b)
        hit = np.unique(b[selected])
        per_component.append(len(hit) / len(occupied))
    pc12 = None
    if len(bins) >= 2:
        cells = bins[0] * n_bins + bins[1]
        pc12 = len(np.unique(cells[selected])) / len(np.unique(cells))
    return per_component, pc12


def feature_coverage(scores, selected, n_bins: int = 50, seed: int = 0) -> dict[str, Any]:
    """Coverage of the candidates' PCA scores (n × m) by the ``selected`` row indices."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or len(scores) == 0:
        raise InputError(f"coverage needs a non-empty (n × m) array of scores, got shape {scores.shape}")
    if n_bins < 1:
        raise InputError(f"n_bins must be positive, got {n_bins}")
    selected = np.unique(np.asarray(selected, dtype=np.int64))
    if len(selected) and (selected[0] < 0 or selected[-1] >= len(scores)):
        raise InputError("selected indices out of range of the candidates")
    result: dict[str, Any] = {"n_bins": n_bins, "n_components": scores.shape[1], "n_selected": len(selected)}
    if scores.shape[1] == 0 or len(selected) == 0:
        return {**result, "score": 0.0 if len(selected) == 0 else None, "per_component": [], "pc1_pc2": None, "random_baseline": None}
    per_component, pc12 = _scores(scores, selected, n_bins)
    rng = np.random.default_rng(seed)
    random_rows = rng.choice(len(scores), size=len(selected), replace=False)
    random_per_component, random_pc12 = _scores(scores, random_rows, n_bins)
    return {
        **result,
        "score": float(np.mean(per_component)),
        "per_component": [float(x) for x in per_component],
        "pc1_pc2": pc12,
        "random_baseline": {"score": float(np.mean(random_per_component)), "pc1_pc2": random_pc12, "seed": seed},
    }


def plot_selection(scores, selected, path: str | Path, title: str | None = None) -> Path:
    """PNG of the first two PCA components: every candidate in grey, the selection on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uq_flows.io import atomic_path

    scores = np.asarray(scores, dtype=float)
    selected = np.asarray(selected, dtype=np.int64)
    path = Path(path)
    x = scores[:, 0] if scores.shape[1] >= 1 else np.zeros(len(scores))
    y = scores[:, 1] if scores.shape[1] >= 2 else np.arange(len(scores), dtype=float)
    figure, axes = plt.subplots(figsize=(5.0, 4.2))
    small = 2 if len(scores) > 5000 else 8
    axes.scatter(x, y, s=small, c="#BBBBBB", linewidths=0, rasterized=True, label=f"candidates ({len(scores)})")
    axes.scatter(x[selected], y[selected], s=small * 3, c="#D55E00", linewidths=0, rasterized=True,
                 label=f"selected ({len(selected)})")
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2" if scores.shape[1] >= 2 else "candidate index (one component kept)")
    axes.legend(loc="best", fontsize=8, markerscale=2)
    if title:
        axes.set_title(title, fontsize=9)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=150, bbox_inches="tight")
    plt.close(figure)
    return path
