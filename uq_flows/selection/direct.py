"""DIRECT down-sampling: standardise → PCA (Kaiser) → BIRCH → k per cluster (METHODS §6).

The steps and their numbers are those of maml's ``DIRECTSampler`` (Qi et al., npj Comput.
Mater. 10, 43, 2024; used by MP-ALOE, paper 003), on scikit-learn's ``StandardScaler``,
``PCA`` and ``Birch``, so the same features give the same selection:

1. ``StandardScaler`` on the (n_structures × n_features) descriptors;
2. ``PCA``; keep the m components with explained variance > 1 (Kaiser's rule); scores
   multiplied by their explained-variance ratio when ``weighting`` is on (maml's default);
3. BIRCH with ``threshold``; with a target ``n_clusters``, while fewer than n subclusters
   form, the threshold becomes threshold / n × found and BIRCH is refitted; then the
   subclusters are merged into n clusters by agglomerative (Ward) clustering;
4. per cluster, members ranked by distance to the cluster centre; ranks
   int(linspace(0, size − 1, k)) are taken (k = 1: the closest to the centre).
   ``random``: k members drawn at random; ``smallest``: the k with the fewest atoms.

Where this differs from maml, on purpose:

- the result is the sorted array of selected row indices: maml removes duplicates through a
  ``set`` and returns them in arbitrary order. The selected *set* is the same.
- ``random`` draws without replacement from a generator seeded by ``seed`` (maml draws with
  replacement from numpy's global state, so it can pick fewer than k and is not
  reproducible). ``center`` and ``smallest`` keep maml's ``np.argpartition`` on each
  cluster's values in row order, so even ties (frequent: the two points of a two-point
  BIRCH subcluster are equally far from its centre) are broken as maml breaks them.
- clusters with fewer than k members are taken whole and counted in
  ``n_clusters_below_k`` (maml does the same silently, via duplicate ranks and its set).
- with a target n_clusters, Ward clustering of S subclusters needs S²/2 doubles; where
  maml's threshold search would end with more than ``max_global_subclusters`` (20,000:
  3 GiB) subclusters, the threshold is raised or bisected until n ≤ S ≤ 20,000 (maml
  runs Ward on all of them: in ``benchmarks/direct.py`` its search from the default 0.5
  overshoots to 54,000 subclusters and an 11 GiB array). Below that limit the search is
  maml's, step for step. A target above the number of distinct rows is an error (maml
  would loop for ever).
- ``n_clusters`` in the result counts clusters holding at least one candidate: every
  candidate goes to its nearest subcluster, so a requested cluster can end up empty (as
  in maml, which loops over the labels that occur); a note says how many.
- speed, same arithmetic: maml assigns points to subclusters by brute force twice per
  fit (``Birch.fit`` computes labels, then ``predict``), and finds each cluster's members
  with a pass over all labels per cluster (O(n × clusters)). Here labels are computed once,
  with a KD-tree (near-ties re-checked by ``Birch.predict`` itself), and clusters are
  grouped by one sort (about 3× faster than maml at 100,000 candidates and 21,000
  clusters in ``benchmarks/direct.py``).
- ``centre="mean"`` (not the default) ranks by distance to the mean of the cluster's
  members. The default, ``"birch"``, is maml's: the BIRCH subcluster centre, which with a
  target n_clusters is the centre of the *last* subcluster merged into each cluster.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from uq_flows.errors import InputError

logger = logging.getLogger(__name__)

MODES = ("center", "random", "smallest")
CENTRES = ("birch", "mean")
DEFAULT_THRESHOLD = 0.1  # MP-ALOE's BIRCH threshold (threshold mode)
DEFAULT_THRESHOLD_WITH_N = 0.5  # maml's threshold_init, the start when a cluster count is given
Mode = Literal["center", "random", "smallest"]


@dataclass(frozen=True)
class DirectConfig:
    """DIRECT settings. ``threshold=None`` means 0.1 (MP-ALOE) without a target cluster
    count and 0.5 (maml's start) with one; ``k=1`` is maml's default (MP-ALOE used 5)."""

    n_clusters: int | None = None
    threshold: float | None = None
    k: int = 1
    mode: Mode = "center"
    weighting: bool = True
    centre: Literal["birch", "mean"] = "birch"
    seed: int = 0
    branching_factor: int = 50
    max_global_subclusters: int = 20_000  # Ward on S subclusters needs S²/2 doubles (3.2 GB at 20k)
    max_refits: int = 100

    def __post_init__(self) -> None:
        if self.n_clusters is not None and (not _is_int(self.n_clusters) or self.n_clusters < 1):
            raise InputError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        if self.threshold is not None and (
            not isinstance(self.threshold, (int, float)) or not self.threshold > 0 or math.isinf(self.threshold)
        ):
            raise InputError(f"the BIRCH threshold must be a positive number, got {self.threshold!r}")
        if not _is_int(self.k) or self.k < 1:
            raise InputError(f"k must be a positive integer, got {self.k!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.centre not in CENTRES:
            raise InputError(f"centre must be one of {', '.join(CENTRES)}, got {self.centre!r}")
        if not _is_int(self.seed):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        if not _is_int(self.branching_factor) or self.branching_factor < 2:
            raise InputError(f"branching_factor must be an integer > 1, got {self.branching_factor!r}")

    @property
    def initial_threshold(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        return DEFAULT_THRESHOLD_WITH_N if self.n_clusters is not None else DEFAULT_THRESHOLD

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DirectConfig:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown DIRECT settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class DirectResult:
    """Selected rows (ascending) and everything needed to judge and plot the selection."""

    selected: np.ndarray  # row indices, ascending
    labels: np.ndarray  # cluster of every row
    scores: np.ndarray  # (n, m) PCA scores used for clustering (weighted when weighting is on)
    explained_variance: np.ndarray  # of the m kept components
    explained_variance_ratio: np.ndarray  # of the m kept components
    n_components: int
    threshold: float  # the BIRCH threshold finally used
    thresholds_tried: list[float]
    n_subclusters: int
    n_clusters: int  # clusters with at least one member
    cluster_sizes: np.ndarray
    n_clusters_below_k: int
    config: DirectConfig
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "n_candidates": len(self.labels),
            "n_selected": len(self.selected),
            "n_components": self.n_components,
            "explained_variance_ratio": float(self.explained_variance_ratio.sum()),
            "threshold": self.threshold,
            "thresholds_tried": list(self.thresholds_tried),
            "n_subclusters": self.n_subclusters,
            "n_clusters": self.n_clusters,
            "largest_cluster": int(self.cluster_sizes.max()) if len(self.cluster_sizes) else 0,
            "n_clusters_below_k": self.n_clusters_below_k,
            "config": self.config.as_dict(),
            "notes": list(self.notes),
        }


def check_features(features, n_expected: int | None = None, name: str = "features") -> np.ndarray:
    """A finite float64 (n_structures × n_features) array, with messages naming bad rows."""
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric: {exc}") from None
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n_structures × n_features) array, got shape {array.shape}")
    if array.shape[0] == 0:
        raise InputError(f"{name}: no candidates (0 rows)")
    if array.shape[1] == 0:
        raise InputError(f"{name}: 0 features per structure")
    if n_expected is not None and array.shape[0] != n_expected:
        raise InputError(f"{name} has {array.shape[0]} rows but there are {n_expected} candidate structures")
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        raise InputError(f"{name} contain NaN or infinite values in {len(rows)} row(s): {shown}")
    return array


def principal_scores(features: np.ndarray, weighting: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised PCA scores of the components with explained variance > 1 (Kaiser),
    times their explained-variance ratio when ``weighting``; with the variances and ratios."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(features)
    pca = PCA().fit(scaled)
    m = int(np.count_nonzero(pca.explained_variance_ > 1))
    if m == 0:
        raise InputError(
            "no principal component has a variance above 1 after standardisation: the features are "
            "constant (or identical for every candidate), so they cannot tell candidates apart"
        )
    scores = pca.transform(scaled)[:, :m]
    del scaled
    ratio = pca.explained_variance_ratio_[:m]
    if weighting:
        scores *= ratio
    return scores, pca.explained_variance_[:m].copy(), ratio.copy()


def nearest_subcluster(model, scores: np.ndarray, brute_force_limit: float = 5e7) -> np.ndarray:
    """``Birch.predict`` (index of the nearest subcluster centre) without its brute-force cost.

    scikit-learn compares every point with every subcluster centre: 100,000 points and
    86,000 subclusters take over a minute. A KD-tree finds the two nearest centres instead;
    where they are within 1e-9 (relative) of a tie, the point is re-assigned by
    ``Birch.predict`` itself, so the labels equal scikit-learn's, ties included. Small
    problems (points × centres ≤ ``brute_force_limit``) and > 40 dimensions use
    ``Birch.predict`` directly.
    """
    centres = model.subcluster_centers_
    n, m = scores.shape
    if len(centres) < 3 or len(centres) * n <= brute_force_limit or m > 40:
        return model.predict(scores)
    from sklearn.neighbors import KDTree

    distance, index = KDTree(centres).query(scores, k=2)
    nearest = index[:, 0].copy()
    gap = distance[:, 1] ** 2 - distance[:, 0] ** 2
    scale = np.einsum("ij,ij->i", scores, scores) + distance[:, 1] ** 2 + 1e-300
    close = gap <= 1e-9 * scale
    if close.any():
        nearest[close] = model.predict(scores[close])
    return nearest


def _fit_birch(scores: np.ndarray, threshold: float, config: DirectConfig):
    from sklearn.cluster import Birch

    model = Birch(threshold=threshold, n_clusters=None, branching_factor=config.branching_factor, compute_labels=False)
    return model.fit(scores)


def birch_clusters(scores: np.ndarray, config: DirectConfig) -> tuple[np.ndarray, np.ndarray, float, list[float], int]:
    """Cluster labels, one centre per label (maml's convention), the final threshold, the
    thresholds tried, and the number of subclusters.

    With a target cluster count n, maml's search is kept: while fewer than n subclusters
    form, threshold ← threshold / n × found. Only where maml would then merge more than
    ``max_global_subclusters`` subclusters (Ward needs S²/2 doubles: 3 GiB at 20,000) does
    the search go on, by bisection of the threshold, until n ≤ subclusters ≤ that limit.
    """
    from sklearn.cluster import AgglomerativeClustering

    n = len(scores)
    target = config.n_clusters
    if target is not None and target > 1:
        distinct = len(np.unique(scores, axis=0))
        if target > distinct:
            raise InputError(
                f"{target} clusters requested but the candidates have only {distinct} distinct points "
                f"in PCA space ({n} candidates)"
            )
    limit = config.max_global_subclusters
    threshold = config.initial_threshold
    too_few = too_many = None  # thresholds known to give < n, > limit subclusters
    tried: list[float] = []
    for _ in range(config.max_refits):
        tried.append(threshold)
        model = _fit_birch(scores, threshold, config)
        found = len(model.subcluster_centers_)
        if target is None or target <= found <= limit:
            break
        if found < target:
            too_few = threshold
            if too_many is None:
                logger.info("BIRCH threshold %g gives %d subclusters for %d clusters; lowering it", threshold, found, target)
                threshold = threshold / target * found  # maml's update, same operation order
                continue
        else:
            too_many = threshold
            if too_few is None:
                logger.info("BIRCH threshold %g gives %d subclusters, more than %d; raising it", threshold, found, limit)
                threshold = threshold * 2
                continue
        threshold = math.sqrt(too_few * too_many)
    else:
        raise InputError(
            f"no BIRCH threshold found that gives between {target} and {limit} subclusters after "
            f"{config.max_refits} fits (last: {threshold:.4g} → {found}); ask for fewer clusters"
        )
    centres = model.subcluster_centers_
    nearest = nearest_subcluster(model, scores)
    if target is None:
        return nearest, centres, threshold, tried, found
    sub_labels = AgglomerativeClustering(n_clusters=target).fit_predict(centres)
    labels = sub_labels[nearest]
    # maml: dict(zip(subcluster_labels_, subcluster_centers_)) keeps the last subcluster per label
    reverse_first = np.unique(sub_labels[::-1], return_index=True)[1]
    last = len(sub_labels) - 1 - reverse_first
    return labels, centres[last], threshold, tried, found


def _group(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by cluster (ascending row order inside a cluster, as ``np.where`` gives
    them), the start of each cluster in that order, and the cluster sizes."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    return order, starts, sizes


def select_k(
    scores: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray | None,
    config: DirectConfig,
    n_sites: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to k rows per cluster by ``config.mode``; sorted row indices, cluster sizes, and
    the number of clusters smaller than k. ``labels`` run over 0..C-1 and ``centres[c]``
    is the centre of cluster c.

    ``center`` and ``smallest`` call ``np.argpartition`` on each cluster's values in row
    order, exactly as maml does, so ties (two points of a two-point BIRCH subcluster are
    equally far from its centre; many candidates share an atom count) are broken the same.
    """
    order, starts, sizes = _group(labels)
    k = config.k
    whole = sizes <= k  # maml's duplicate ranks and set() take such clusters whole
    picked = [order[np.repeat(whole, sizes)]]
    big = np.flatnonzero(~whole)
    if config.mode == "center":
        if config.centre == "mean" or centres is None:
            sums = np.zeros((len(sizes), scores.shape[1]))
            np.add.at(sums, labels, scores)
            centre_of = sums / sizes[:, None]
        else:
            centre_of = centres
        values = np.linalg.norm(scores - centre_of[labels], axis=1)  # maml's formula, bit for bit
    elif config.mode == "smallest":
        if n_sites is None:
            raise InputError("mode 'smallest' needs the number of atoms of every candidate (structures, not only features)")
        values = np.asarray(n_sites)
        if len(values) != len(labels):
            raise InputError(f"{len(values)} atom counts for {len(labels)} candidates")
    else:  # random: k members per cluster without replacement, from a seeded generator
        rng = np.random.default_rng(config.seed)
        for c in big:
            rows = order[starts[c] : starts[c] + sizes[c]]
            picked.append(rng.choice(rows, size=k, replace=False))
        return np.sort(np.concatenate(picked)), sizes, int(np.count_nonzero(sizes < k))
    for c in big:
        rows = order[starts[c] : starts[c] + sizes[c]]
        if config.mode == "center":
            ranks = np.array([int(i) for i in np.linspace(0, sizes[c] - 1, k)])
        else:
            ranks = np.arange(k)
        picked.append(rows[np.argpartition(values[rows], ranks)[ranks]])
    return np.sort(np.concatenate(picked)), sizes, int(np.count_nonzero(sizes < k))


def direct_sample(features, config: DirectConfig | None = None, n_sites=None) -> DirectResult:
    """DIRECT selection on a (n_structures × n_features) array; see the module docstring."""
    config = config or DirectConfig()
    array = check_features(features)
    n = len(array)
    if n_sites is not None:
        n_sites = np.asarray(n_sites).reshape(-1)
        if len(n_sites) != n:
            raise InputError(f"{len(n_sites)} atom counts for {n} candidates")
    if config.n_clusters is not None and config.n_clusters > n:
        raise InputError(f"{config.n_clusters} clusters requested for only {n} candidates")
    if n == 1:
        return DirectResult(
            selected=np.array([0]), labels=np.zeros(1, dtype=np.int64), scores=np.zeros((1, 1)),
            explained_variance=np.zeros(0), explained_variance_ratio=np.zeros(0), n_components=0,
            threshold=config.initial_threshold, thresholds_tried=[], n_subclusters=1, n_clusters=1,
            cluster_sizes=np.array([1]), n_clusters_below_k=int(config.k > 1), config=config,
            notes=["one candidate: selected without clustering"],
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # PCA on nearly collinear features
        scores, variance, ratio = principal_scores(array, config.weighting)
    labels, centres, threshold, tried, n_sub = birch_clusters(scores, config)
    # relabel to 0..C-1 (empty subclusters dropped) so centres index by label
    used, labels = np.unique(labels, return_inverse=True)
    centres = centres[used] if centres is not None else None
    selected, sizes, below = select_k(scores, labels, centres, config, n_sites)
    notes = []
    if below:
        notes.append(f"{below} of {len(sizes)} clusters have fewer than k={config.k} members and were taken whole")
    if config.n_clusters is not None and len(sizes) < config.n_clusters:
        notes.append(
            f"{config.n_clusters - len(sizes)} of the {config.n_clusters} clusters requested hold no candidate "
            "(every candidate goes to its nearest BIRCH subcluster, as in maml)"
        )
    if len(tried) > 1:
        notes.append(f"BIRCH threshold lowered {len(tried) - 1} time(s) to {threshold:.4g} to reach {config.n_clusters} clusters")
    return DirectResult(
        selected=selected,
        labels=labels,
        scores=scores,
        explained_variance=variance,
        explained_variance_ratio=ratio,
        n_components=scores.shape[1],
        threshold=float(threshold),
        thresholds_tried=[float(t) for t in tried],
        n_subclusters=int(n_sub),
        n_clusters=len(sizes),
        cluster_sizes=sizes,
        n_clusters_below_k=below,
        config=config,
        notes=notes,
    )
