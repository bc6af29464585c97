"""Clustering-enhanced local D-optimality (paper 000 §3.5; METHODS §5).

A single active set built from a heterogeneous training set spans the outer hull of all
motifs, so environments between motifs look interpolative. The local variant partitions
the training configurations into clusters (user labels, k-means or BIRCH on descriptors),
builds one active set per cluster and element, and takes γ_local(atom) = min_c γ_c(atom).
The authors fitted one ACE per cluster; here one potential's basis serves every cluster
(as in METHODS §5), so only the active sets differ.

Descriptors for clustering: per configuration and element, the mean B-projection vector of
that element's atoms (zeros for an absent element), concatenated and standardised.
A cluster with fewer environments of an element than basis functions gets no active set for
that element (MaxVol needs a square, non-singular selection); such atoms take the minimum
over the clusters that have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_flows.ace.activeset import Projections, maxvol_inverse, training_projections
from uq_flows.ace.data import TrainingSet
from uq_flows.ace.potential import AceCalculator, evaluate_each
from uq_flows.errors import InputError
from uq_flows.io import atomic_path

_SEPARATOR = "::"


def configuration_descriptors(projections: Projections, n_structures: int) -> np.ndarray:
    """(n_structures, Σ_μ n_v,μ) per-element mean projections, standardised per column."""
    blocks = []
    for element, matrix in projections.matrices.items():
        sums = np.zeros((n_structures, matrix.shape[1]))
        counts = np.zeros(n_structures)
        np.add.at(sums, projections.structure_index[element], matrix)
        np.add.at(counts, projections.structure_index[element], 1)
        blocks.append(sums / np.maximum(counts, 1)[:, None])
    features = np.hstack(blocks)
    scale = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def cluster_configurations(descriptors: np.ndarray, method: str, n_clusters: int = 2, seed: int = 0,
                           labels: Sequence[object] | None = None) -> np.ndarray:
    """Cluster index per configuration: ``labels`` as given, k-means or BIRCH on ``descriptors``."""
    n = len(descriptors)
    if method == "labels":
        if labels is None or len(labels) != n:
            raise InputError(f"clustering by labels needs one label per training structure ({n})")
        names = sorted({str(label) for label in labels})
        return np.array([names.index(str(label)) for label in labels])
    if n_clusters > n:
        raise InputError(f"{n_clusters} clusters requested for {n} training structures")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(descriptors)
    if method == "birch":
        from sklearn.cluster import Birch

        return Birch(n_clusters=n_clusters, threshold=0.5).fit_predict(descriptors)
    raise InputError(f"unknown clustering method {method!r}; use labels, kmeans or birch")


@dataclass
class LocalActiveSet:
    """Active set inverses per cluster and element; γ_local = min over clusters."""

    clusters: list[str]
    inverses: list[dict[str, np.ndarray]]
    sizes: list[int] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """A ``.lasi`` file: npz with keys ``cluster::element`` (and ``cluster::size``)."""
        arrays = {}
        for name, inverses, size in zip(self.clusters, self.inverses, self.sizes or [0] * len(self.clusters)):
            arrays[f"{name}{_SEPARATOR}size"] = np.array(size)
            for element, inverse in inverses.items():
                arrays[f"{name}{_SEPARATOR}{element}"] = inverse
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> LocalActiveSet:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: local active set file not found")
        try:
            data = np.load(path)
        except Exception as error:
            raise InputError(f"{path}: not a local active set (.lasi): {error}") from error
        by_cluster: dict[str, dict[str, np.ndarray]] = {}
        sizes: dict[str, int] = {}
        for key in data.files:
            name, _, element = key.rpartition(_SEPARATOR)
            if element == "size":
                sizes[name] = int(data[key])
            else:
                by_cluster.setdefault(name, {})[element] = data[key]
        clusters = sorted(by_cluster)
        return cls(clusters, [by_cluster[c] for c in clusters], [sizes.get(c, 0) for c in clusters])

    def atom_grades(self, element: str, projection: np.ndarray) -> np.ndarray:
        """γ_c of one environment for every cluster with an active set for ``element`` (others inf)."""
        out = np.full(len(self.clusters), np.inf)
        for c, inverses in enumerate(self.inverses):
            if element in inverses:
                out[c] = float(np.abs(projection @ inverses[element]).max())
        return out


def build_local_active_set(potential: str | Path, training: TrainingSet, method: str, n_clusters: int = 2,
                           labels: Sequence[object] | None = None, seed: int = 0,
                           outlier_filter: str = "force-error", tolerance: float = 1.01, max_iters: int = 300,
                           projections: Projections | None = None) -> tuple[LocalActiveSet, np.ndarray]:
    """One active set per cluster of training configurations; returns it and the cluster of each structure."""
    projections = projections or training_projections(potential, training, outlier_filter)
    descriptors = configuration_descriptors(projections, len(training))
    assignment = cluster_configurations(descriptors, method, n_clusters, seed, labels)
    if method == "labels":
        names = sorted({str(label) for label in labels})
    else:
        names = [f"cluster-{c}" for c in range(int(assignment.max()) + 1)]
    inverses: list[dict[str, np.ndarray]] = []
    skipped: dict[str, list[str]] = {}
    for c, name in enumerate(names):
        cluster_inverses = {}
        for element, matrix in projections.matrices.items():
            rows = projections.keep[element] & (assignment[projections.structure_index[element]] == c)
            if rows.sum() < matrix.shape[1]:
                skipped.setdefault(name, []).append(element)
                continue
            cluster_inverses[element] = maxvol_inverse(matrix[rows], element, tolerance, max_iters)
        inverses.append(cluster_inverses)
    for element in projections.matrices:
        if not any(element in inv for inv in inverses):
            raise InputError(
                f"no cluster has enough {element} environments for an active set of "
                f"{projections.matrices[element].shape[1]} functions; use fewer clusters or functions"
            )
    sizes = [int(np.sum(assignment == c)) for c in range(len(names))]
    return LocalActiveSet(names, inverses, sizes, skipped), assignment


def local_extrapolation_grades(potential: str | Path, local: LocalActiveSet,
                               structures: Sequence[Atoms]) -> list[np.ndarray]:
    """γ_local per atom = min over clusters of γ_c (paper 000 §3.5)."""
    calculator = AceCalculator(potential)
    out = []
    for copy, _ in evaluate_each(calculator, structures):
        symbols = copy.get_chemical_symbols()
        projections = calculator.projections()
        out.append(np.array([local.atom_grades(s, p).min() for s, p in zip(symbols, projections)]))
    return out

