"""Agreement with maml's own DIRECTSampler, run in the benchmark environment (.venv-bench).

maml pulls its own dependency pins, so it lives outside the main environment; this test is
skipped where that environment has not been built (``make bench-env``).
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from uq_flows.selection.direct import DirectConfig, direct_sample

ROOT = Path(__file__).resolve().parents[2]
MAML_PYTHON = Path(os.environ.get("UQ_FLOWS_MAML_PYTHON", ROOT / ".venv-bench" / "bin" / "python"))

SCRIPT = """
import json, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
import logging; logging.disable(logging.INFO)
from maml.sampling.clustering import BirchClustering
from maml.sampling.direct import DIRECTSampler
from maml.sampling.stratified_sampling import SelectKFromClusters
features = np.load(sys.argv[1])
runs = json.loads(sys.argv[2])
out = []
for n, threshold, k in runs:
    sampler = DIRECTSampler(structure_encoder=False, clustering=BirchClustering(n=n, threshold_init=threshold),
                            select_k_from_clusters=SelectKFromClusters(k=k))
    out.append(sorted(int(i) for i in sampler.fit_transform(features)["selected_indexes"]))
print(json.dumps(out))
"""


def _has_maml() -> bool:
    if not MAML_PYTHON.exists():
        return False
    probe = subprocess.run([str(MAML_PYTHON), "-c", "import maml.sampling.direct"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_maml(), reason=f"maml is not installed in {MAML_PYTHON} (make bench-env)")
def test_selection_equals_maml_direct_sampler(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 5)) * 3
    latent = centres[rng.integers(10, size=3000)] + rng.normal(size=(3000, 5)) * 0.4
    features = np.tanh(latent @ rng.normal(size=(5, 32)) / 3) + rng.normal(size=(3000, 32)) * 0.02
    path = tmp_path / "features.npy"
    np.save(path, features)
    runs = [[None, 0.1, 5], [None, 0.03, 1], [40, 0.5, 3], [200, 0.5, 1]]
    done = subprocess.run([str(MAML_PYTHON), "-c", SCRIPT, str(path), json.dumps(runs)],
                          capture_output=True, text=True, timeout=600, check=True)
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    for (n, threshold, k), maml_selected in zip(runs, expected):
        ours = direct_sample(features, DirectConfig(n_clusters=n, threshold=threshold, k=k)).selected.tolist()
        assert ours == maml_selected, (n, threshold, k, len(ours), len(maml_selected))
