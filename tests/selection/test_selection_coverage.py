"""Coverage of the candidates' PCA space by a selection, and its picture."""

import numpy as np
import pytest
from uqf_selection_data import blobs

from uq_flows.errors import InputError
from uq_flows.selection.coverage import feature_coverage, plot_selection
from uq_flows.selection.direct import DirectConfig, direct_sample


def test_bin_coverage_by_hand():
    scores = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])  # 4 bins on PC1, 2 on PC2
    result = feature_coverage(scores, [0, 3], n_bins=4, seed=0)
    assert result["per_component"] == [0.5, 1.0]  # PC1: bins 0, 3 of 0..3; PC2: both occupied bins
    assert result["score"] == pytest.approx(0.75)
    assert result["pc1_pc2"] == pytest.approx(0.5)  # cells (0,0),(3,3) of 4 occupied
    assert feature_coverage(scores, [0, 1, 2, 3], n_bins=4)["score"] == 1.0
    assert feature_coverage(scores, [], n_bins=4)["score"] == 0.0
    with pytest.raises(InputError, match="out of range"):
        feature_coverage(scores, [4])


def test_direct_covers_a_rare_cluster_that_random_picks_miss():
    features, truth = blobs(sizes=(900, 900, 6), seed=4)  # one rare cluster far away
    result = direct_sample(features, DirectConfig(n_clusters=3, k=1))
    coverage = feature_coverage(result.scores, result.selected, n_bins=20, seed=0)
    assert 2 in truth[result.selected]
    assert coverage["random_baseline"]["seed"] == 0
    assert coverage["n_selected"] == 3 and 0 < coverage["score"] <= 1


def test_plot_is_a_png(tmp_path):
    features, _ = blobs()
    result = direct_sample(features, DirectConfig(n_clusters=5, k=2))
    path = plot_selection(result.scores, result.selected, tmp_path / "pca.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = plot_selection(result.scores[:, :1], result.selected, tmp_path / "one.png")
    assert one.stat().st_size > 1000
