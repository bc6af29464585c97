"""uq-flows hpc-templates: cluster files for this installation, checked against the partitions."""

import stat
import sys
from pathlib import Path

import yaml

from tests.cli_helpers import run, run_json
from uq_flows.settings import get_settings

URI = "mongodb://user:secret@127.0.0.1:27017/uq"


def fake_sinfo(folder: Path, cpus: int) -> Path:
    """An sinfo that reports ``cpus`` CPUs per node for partitions gpu and cpu, and none else."""
    script = folder / "bin" / "sinfo"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\ncase "$*" in *"-p gpu"*|*"-p cpu"*) echo {cpus};; *) echo "no partition" >&2;; esac\n')
    script.chmod(0o755)
    return script.parent


def test_the_rendered_files_name_this_installation_and_keep_the_secret_private(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_sinfo(tmp_path, 2)}:/usr/bin:/bin")
    result = run_json("hpc-templates", "--out", tmp_path / "hpc", "--db-uri", URI, "--walltime", "01:00:00")
    folder = tmp_path / "hpc"
    assert result["queues"]["cpu"]["cpus"] == 2  # a node of the cpu partition, as sinfo reports it
    for private in ("worker.env", "my_launchpad.yaml"):
        assert stat.S_IMODE((folder / private).stat().st_mode) == 0o600
    assert f"export UQ_FLOWS_DB_URI={URI}" in (folder / "worker.env").read_text()
    gpu = yaml.safe_load((folder / "qadapter_gpu.yaml").read_text())
    assert gpu["rocket_launch"].startswith(f"{Path(sys.executable).parent / 'uq-flows'} worker --category gpu")
    assert "--timeout 3000" in gpu["rocket_launch"]  # ten minutes under the walltime
    assert gpu["queue"] == "gpu" and gpu["gres"] == "gpu:1" and "UQ_FLOWS_DEVICE=cpu" in gpu["pre_rocket"]
    cpu = yaml.safe_load((folder / "qadapter_cpu.yaml").read_text())
    assert cpu["cpus_per_task"] == 2 and "UQ_FLOWS_CP2K_THREADS=2" in cpu["pre_rocket"]
    launchpad = yaml.safe_load((folder / "my_launchpad.yaml").read_text())
    assert launchpad["host"] == URI and launchpad["uri_mode"] and launchpad["name"] == "uq"
    assert yaml.safe_load((folder / "FW_config.yaml").read_text())["PING_TIME_SECS"] == 30
    assert f"{Path(sys.executable).parent / 'qlaunch'} -l" in (folder / "launch_pilots.sh").read_text()


def test_resources_that_do_not_fit_and_a_missing_server_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_sinfo(tmp_path, 2)}:/usr/bin:/bin")
    too_big = run("hpc-templates", "--out", tmp_path / "a", "--db-uri", URI, "--cpu-cpus", 32, expect=2).stderr
    assert "--cpu-cpus 32 does not fit partition cpu (2 CPUs per node)" in too_big
    nowhere = run("hpc-templates", "--out", tmp_path / "b", "--db-uri", URI, "--gpu-partition", "gpgpu", expect=2)
    assert "SLURM has no partition 'gpgpu'" in nowhere.stderr
    assert "give --db-uri" in run("hpc-templates", "--out", tmp_path / "c", expect=2).stderr
    odd = run("hpc-templates", "--out", tmp_path / "d", "--db-uri", URI, "--cpu-cpus", 2, "--cp2k-ranks", 3, expect=2)
    assert "--cp2k-ranks 3 must divide --cpu-cpus 2" in odd.stderr
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing written


def test_cp2k_ranks_run_inside_the_cpu_pilots_allocation(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_sinfo(tmp_path, 2)}:/usr/bin:/bin")
    run("hpc-templates", "--out", tmp_path / "hpc", "--db-uri", URI, "--cpu-cpus", 2, "--cp2k-ranks", 2)
    cpu = yaml.safe_load((tmp_path / "hpc" / "qadapter_cpu.yaml").read_text())
    assert (cpu["ntasks"], cpu["cpus_per_task"]) == (2, 1)
    assert "UQ_FLOWS_CP2K_THREADS=1" in cpu["pre_rocket"] and "srun -n 2 " in cpu["pre_rocket"]


def test_doctor_fails_a_device_this_torch_cannot_use(monkeypatch):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU torch can use: the failing case cannot be shown")
    monkeypatch.setenv("UQ_FLOWS_DEVICE", "cuda")
    get_settings.cache_clear()
    result = run_json("doctor", "--no-database", expect=1)
    (device,) = [row for row in result["checks"] if row["check"] == "device"]
    assert device["status"] == "fail" and "UQ_FLOWS_DEVICE=cpu" in device["hint"]
