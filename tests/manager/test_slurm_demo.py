"""A loop on a real single-node SLURM with pilot workers (benchmarks/slurm_demo.py, small)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import emt_dataset, perturbed
from uq_flows.io import write_extxyz

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_a_replay_loop_runs_through_slurm_pilots_in_the_partition_of_each_job(tmp_path):
    """Stored predictions and a dataset labeller (no CP2K, no uMLIP run): what is measured is the
    cluster path, every job in the partition of its category. Skipped, saying why, where the
    machine cannot stand up SLURM (not root, no apt-get)."""
    pool = emt_dataset(12)
    write_extxyz(tmp_path / "pool.extxyz", pool)
    for name, scale, seed in (("a", 0.02, 1), ("b", 0.04, 2)):
        write_extxyz(tmp_path / f"{name}.extxyz", perturbed(pool, scale, seed))
    config = {
        "name": "slurm", "elements": ["Cu"], "structures": ["pool.extxyz"], "generate": None,
        "members": ["a=precomputed:a.extxyz", "b=precomputed:b.extxyz"], "teacher": {"energy_from": "a"},
        "uc": 0.15, "align_energies": "off", "audit": {"enabled": "off"},
        "dft": {"labeller": "dataset", "dataset": "pool.extxyz"},
        "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 2},
        "explore": {"n_seeds": 1, "md": {"steps": 20, "snapshot_every": 10}, "cago": None, "n_cago_members": 2},
        "select": {"max_candidates": 4, "formation_energy_prefilter": False},
        "convergence": {"max_iterations": 1},
    }
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "slurm_demo.py"), "--config", str(tmp_path / "loop.yaml"),
                           "--keep", str(tmp_path / "demo"), "--timeout", "900", "--results", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=1500)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" in result:
        pytest.skip(f"no SLURM here: {result['skipped']}")
    assert result["completed"], (result, done.stderr[-3000:])
    assert result["category_mismatches"] == 0 and set(result["fireworks_by_partition"]) == {"gpu", "cpu"}
    assert result["queue_jobs"] >= 2 and 0 <= result["idle_fraction"] < 1
