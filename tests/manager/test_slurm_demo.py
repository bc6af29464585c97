"""A loop on a real single-node SLURM with pilot workers (benchmarks/slurm_demo.py, small)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import emt_dataset, write_replay

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_a_replay_loop_runs_through_slurm_pilots_in_the_partition_of_each_job(tmp_path):
    """Stored predictions and a dataset labeller (no CP2K, no uMLIP run): what is measured is the
    cluster path, every job in the partition of its category. Skipped, saying why, where the
    machine cannot stand up SLURM (not root, no apt-get)."""
    config = write_replay(tmp_path, emt_dataset(12), name="slurm", align_energies="off", audit={"enabled": "off"})
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "slurm_demo.py"), "--config", str(config),
                           "--keep", str(tmp_path / "demo"), "--timeout", "900", "--results", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=1500)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" in result:
        pytest.skip(f"no SLURM here: {result['skipped']}")
    assert result["completed"], (result, done.stderr[-3000:])
    assert result["category_mismatches"] == 0 and set(result["fireworks_by_partition"]) == {"gpu", "cpu"}
    assert result["queue_jobs"] >= 2 and 0 <= result["idle_fraction"] < 1
