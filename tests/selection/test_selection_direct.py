"""DIRECT: known clusters, agreement with maml's algorithm, modes, seeds and bad inputs."""

import numpy as np
import pytest
from sklearn.cluster import Birch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from uqf_selection_data import blobs

from uq_flows.errors import InputError
from uq_flows.selection.direct import (
    DirectConfig,
    direct_sample,
    nearest_subcluster,
    principal_scores,
)


def maml_reference(features, n=None, threshold=0.5, k=1, weighting=True, n_sites=None, smallest=False):
    """maml 2025.4.3's DIRECTSampler written out step by step (StandardScaler → PCA with
    Kaiser's rule → BirchClustering → SelectKFromClusters), returning the sorted set."""
    scaled = StandardScaler().fit_transform(features)
    pca = PCA().fit(scaled)
    m = len([e for e in pca.explained_variance_ if e > 1])
    scores = pca.transform(scaled)[:, :m]
    if weighting:
        scores = scores * pca.explained_variance_ratio_[:m]
    model = Birch(n_clusters=n, threshold=threshold).fit(scores)
    if n is not None:
        while len(set(model.subcluster_labels_)) < n:
            threshold = threshold / n * len(set(model.subcluster_labels_))
            model = Birch(n_clusters=n, threshold=threshold).fit(scores)
    labels = model.predict(scores)
    centres = dict(zip(model.subcluster_labels_, model.subcluster_centers_))
    selected = []
    for label in set(labels):
        rows = np.where(label == labels)[0]
        if smallest:
            if k >= len(rows):
                selected.extend(rows)
            else:
                selected.extend(rows[np.argpartition(np.array(n_sites)[rows], np.arange(k))[np.arange(k)]])
            continue
        distance = np.linalg.norm(scores[rows] - centres[label], axis=1)
        ranks = np.array([int(i) for i in np.linspace(0, len(rows) - 1, k)])
        selected.extend(rows[np.argpartition(distance, ranks)[ranks]])
    return sorted({int(i) for i in selected})


def test_one_structure_per_known_cluster():
    features, truth = blobs()
    result = direct_sample(features, DirectConfig(n_clusters=5, k=1))
    assert result.n_clusters == 5 and len(result.selected) == 5
    assert sorted(truth[result.selected]) == [0, 1, 2, 3, 4]  # every blob once
    # the clusters found are the blobs
    for label in range(5):
        assert len(set(truth[result.labels == label])) == 1
    assert list(result.selected) == sorted(result.selected)


def test_k_per_cluster_spreads_from_centre_to_edge():
    features, truth = blobs()
    result = direct_sample(features, DirectConfig(n_clusters=5, k=4))
    assert len(result.selected) == 20
    assert np.bincount(truth[result.selected]).tolist() == [4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    "config",
    [
        {"n": None, "threshold": 0.1, "k": 5},
        {"n": None, "threshold": 0.05, "k": 1},  # many two-point subclusters: distance ties
        {"n": None, "threshold": 0.2, "k": 3, "weighting": False},
        {"n": 30, "threshold": 0.5, "k": 3},  # threshold lowered, last-subcluster centres
        {"n": 100, "threshold": 0.5, "k": 1},
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_selection_equals_maml(config, seed):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(6, 4)) * 3
    z = latent[rng.integers(6, size=1500)] + rng.normal(size=(1500, 4)) * 0.5
    features = z @ rng.normal(size=(4, 16)) + rng.normal(size=(1500, 16)) * 0.3
    expected = maml_reference(features, **config)
    result = direct_sample(features, DirectConfig(
        n_clusters=config["n"], threshold=config["threshold"], k=config["k"], weighting=config.get("weighting", True)))
    assert result.selected.tolist() == expected


def test_smallest_equals_maml_and_prefers_few_atoms():
    features, _ = blobs()
    n_sites = np.random.default_rng(3).integers(1, 6, size=len(features))  # many ties
    expected = maml_reference(features, n=5, threshold=0.5, k=3, n_sites=n_sites, smallest=True)
    result = direct_sample(features, DirectConfig(n_clusters=5, k=3, mode="smallest"), n_sites=n_sites)
    assert result.selected.tolist() == expected
    for label in range(5):
        members = np.flatnonzero(result.labels == label)
        chosen = np.intersect1d(members, result.selected)
        assert n_sites[chosen].max() <= np.sort(n_sites[members])[2]
    with pytest.raises(InputError, match="smallest.*number of atoms"):
        direct_sample(features, DirectConfig(n_clusters=5, k=3, mode="smallest"))


def test_random_mode_is_seeded_and_draws_without_replacement():
    features, _ = blobs()
    first = direct_sample(features, DirectConfig(n_clusters=5, k=7, mode="random", seed=4))
    again = direct_sample(features, DirectConfig(n_clusters=5, k=7, mode="random", seed=4))
    other = direct_sample(features, DirectConfig(n_clusters=5, k=7, mode="random", seed=5))
    assert first.selected.tolist() == again.selected.tolist()
    assert first.selected.tolist() != other.selected.tolist()
    assert len(first.selected) == 35 and len(set(first.selected.tolist())) == 35
    assert np.bincount(first.labels[first.selected]).tolist() == [7] * 5


def test_whole_run_is_deterministic():
    features, _ = blobs(sizes=(300, 200, 100), seed=2)
    runs = [direct_sample(features, DirectConfig(threshold=0.02, k=2)) for _ in range(2)]
    assert runs[0].selected.tolist() == runs[1].selected.tolist()
    assert runs[0].labels.tolist() == runs[1].labels.tolist()


def test_clusters_smaller_than_k_are_taken_whole_and_reported():
    features, truth = blobs(sizes=(3, 60), seed=1)
    result = direct_sample(features, DirectConfig(n_clusters=2, k=10))
    small = np.flatnonzero(truth == 0)
    assert set(small) <= set(result.selected.tolist())
    assert len(result.selected) == 13 and result.n_clusters_below_k == 1
    assert any("fewer than k=10" in note for note in result.notes)


def test_mean_centre_picks_the_member_nearest_the_mean():
    features, _ = blobs(sizes=(50,), seed=5)
    result = direct_sample(features, DirectConfig(threshold=100.0, k=1, centre="mean"))
    distances = np.linalg.norm(result.scores - result.scores.mean(axis=0), axis=1)
    assert result.n_clusters == 1 and result.selected.tolist() == [int(np.argmin(distances))]


def test_weighting_scales_scores_by_explained_variance_ratio():
    features, _ = blobs()
    weighted, variance, ratio = principal_scores(features, weighting=True)
    plain, _, _ = principal_scores(features, weighting=False)
    assert np.allclose(weighted, plain * ratio)
    assert (variance > 1).all() and len(ratio) == weighted.shape[1]


def test_too_many_subclusters_for_ward_bisects_the_threshold():
    features, _ = blobs(sizes=(400, 400, 400), seed=3)
    config = DirectConfig(n_clusters=20, threshold=1e-4, k=1, max_global_subclusters=300)
    result = direct_sample(features, config)
    assert result.n_clusters == 20 and 20 <= result.n_subclusters <= 300
    assert result.thresholds_tried[0] == 1e-4 and result.thresholds_tried[1] == 2e-4  # raised, then bisected
    assert len(result.selected) == 20


def test_kd_tree_assignment_equals_birch_predict():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5000, 5)) * 0.3
    model = Birch(threshold=0.05, n_clusters=None, compute_labels=False).fit(scores)
    assert len(model.subcluster_centers_) > 1000
    assert np.array_equal(nearest_subcluster(model, scores, brute_force_limit=0), model.predict(scores))


def test_kd_tree_ties_fall_back_to_birch_predict():
    class Model:  # two identical centres: every point has an exact tie
        subcluster_centers_ = np.repeat(np.random.default_rng(1).normal(size=(200, 3)), 2, axis=0)

        def predict(self, x):
            d = ((x[:, None, :] - self.subcluster_centers_[None]) ** 2).sum(axis=2)
            return np.argmin(d, axis=1)  # first index among ties, as scikit-learn

    scores = np.random.default_rng(2).normal(size=(3000, 3))
    nearest = nearest_subcluster(Model(), scores, brute_force_limit=0)
    assert (nearest % 2 == 0).all()  # always the first of each identical pair
    assert np.array_equal(nearest, Model().predict(scores))


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((0, 4)), "no candidates"),
        (np.zeros(5), "2-D"),
        (np.zeros((5, 0)), "0 features"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, np.inf]]), r"NaN or infinite values in 2 row\(s\): 1, 2"),
        (np.ones((10, 3)), "constant"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_bad_features_are_rejected_clearly(features, message):
    with pytest.raises(InputError, match=message):
        direct_sample(features)


def test_bad_settings_are_rejected_clearly():
    features, _ = blobs(sizes=(5, 5))
    with pytest.raises(InputError, match="20 clusters requested for only 10 candidates"):
        direct_sample(features, DirectConfig(n_clusters=20))
    duplicated = np.repeat(features[:3], 4, axis=0)
    with pytest.raises(InputError, match="only 3 distinct points"):
        direct_sample(duplicated, DirectConfig(n_clusters=5))
    with pytest.raises(InputError, match="k must be a positive integer"):
        DirectConfig(k=0)
    with pytest.raises(InputError, match="mode must be one of"):
        DirectConfig(mode="centre")
    with pytest.raises(InputError, match="threshold must be a positive"):
        DirectConfig(threshold=-0.1)
    with pytest.raises(InputError, match="atom counts"):
        direct_sample(features, n_sites=[1, 2])


def test_one_candidate_is_selected_without_clustering():
    result = direct_sample(np.array([[1.0, 2.0]]))
    assert result.selected.tolist() == [0] and result.n_clusters == 1
