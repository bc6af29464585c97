"""Cluster files rendered for this installation: no hand edits (``uq-flows hpc-templates``).

One folder holds what a cluster user needs: ``worker.env`` (the database URI and this
installation's settings, private), a FireWorks launchpad file and one fworker per category
for ``qlaunch``, ``FW_config.yaml`` (a 30-s heartbeat for FireWorks' own rockets), and one
SLURM queue adapter per category whose queue job is a pilot (``uq-flows worker``): one
allocation runs job after job of its category until idle. Resources are checked against the
partitions (``sinfo``) where SLURM answers.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from uq_flows.errors import InputError
from uq_flows.io import atomic_path

PRIVATE = 0o600  # worker.env and the launchpad file hold the database credentials


@dataclass
class QueueResources:
    """What one category's pilot asks of its partition."""

    partition: str
    cpus: int
    walltime: str = "12:00:00"
    gpus: int = 0
    memory_mb: int | None = None
    ranks: int = 1  # MPI ranks of CP2K inside the pilot's allocation (srun -n RANKS), cpus / ranks threads each

    @property
    def seconds(self) -> int:
        """The walltime in seconds (``[D-]HH:MM:SS``)."""
        days, _, clock = self.walltime.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0)
        return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


@dataclass
class ClusterTemplates:
    """The settings of one rendering (``render``)."""

    db_uri: str
    queues: dict[str, QueueResources]
    account: str | None = None
    idle_timeout: float = 300.0
    max_queued: int = 4  # qlaunch -m: the user's queue jobs (pending or running) qlaunch keeps at most
    home: Path = field(default_factory=lambda: Path.home() / ".uq-flows")
    device: str | None = None  # None: cuda for gpu pilots when this torch has CUDA, else cpu
    heartbeat: float = 30.0
    cp2k: str = "cp2k.psmp"  # the CP2K program the ranks run


def partition_cpus(partition: str) -> int | None:
    """CPUs per node of ``partition`` as SLURM reports them (None: no SLURM to ask)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%c"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    values = [int(v.rstrip("+")) for v in out.stdout.split() if v.rstrip("+").isdigit()]
    if out.returncode != 0 or not values:
        raise InputError(f"SLURM has no partition {partition!r} (sinfo: {out.stderr.strip() or 'nothing listed'})")
    return min(values)


def cuda_build() -> bool:
    """Whether this installation's torch was built with CUDA (a CPU wheel cannot use a GPU)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is not None


def check_resources(queues: dict[str, QueueResources]) -> None:
    """Every pilot fits its partition (where SLURM answers) and asks for at least one CPU."""
    for category, queue in queues.items():
        if queue.cpus < 1:
            raise InputError(f"--{category}-cpus must be at least 1")
        if queue.ranks < 1 or queue.cpus % queue.ranks:
            raise InputError(f"--cp2k-ranks {queue.ranks} must divide --{category}-cpus {queue.cpus}")
        available = partition_cpus(queue.partition)
        if available is not None and queue.cpus > available:
            raise InputError(f"--{category}-cpus {queue.cpus} does not fit partition {queue.partition} "
                             f"({available} CPUs per node)")
        try:
            queue.seconds  # noqa: B018 (parses the walltime)
        except ValueError:
            raise InputError(f"walltime {queue.walltime!r}: use HH:MM:SS or D-HH:MM:SS") from None


def render(templates: ClusterTemplates, out: Path) -> list[Path]:
    """Write the cluster files into ``out``; the paths written."""
    check_resources(templates.queues)
    out.mkdir(parents=True, exist_ok=True)
    uq_flows = Path(sys.executable).parent / "uq-flows"
    written = []

    def write(name: str, text: str, mode: int | None = None) -> None:
        with atomic_path(out / name, mode) as temporary:
            temporary.write_text(text)
        written.append(out / name)

    cuda = cuda_build()
    env = {
        "UQ_FLOWS_DB_URI": templates.db_uri,
        "UQ_FLOWS_HOME": str(templates.home),
        "UQ_FLOWS_HEARTBEAT_SECONDS": f"{templates.heartbeat:g}",
        "FW_CONFIG_FILE": str(out / "FW_config.yaml"),
    }
    write("worker.env", "# uq-flows workers and qlaunch source this (it holds the database credentials)\n"
          + "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()), mode=PRIVATE)
    database = templates.db_uri.rsplit("/", 1)[-1].split("?")[0] or "uq_flows"
    write("my_launchpad.yaml", yaml.safe_dump({"host": templates.db_uri, "uri_mode": True, "name": database,
                                               "logdir": None, "strm_lvl": "WARNING"}, sort_keys=False),
          mode=PRIVATE)
    write("FW_config.yaml", yaml.safe_dump({"PING_TIME_SECS": int(templates.heartbeat),
                                            "LAUNCHPAD_LOC": str(out / "my_launchpad.yaml")}, sort_keys=False))
    for category, queue in templates.queues.items():
        query = ('{"$or": [{"spec._category": "cpu"}, {"spec._category": {"$exists": false}}]}'
                 if category == "cpu" else '{}')
        write(f"fworker_{category}.yaml", yaml.safe_dump(
            {"name": f"uq-flows-{category}", "category": "" if category == "cpu" else category,
             "query": query, "env": {}}, sort_keys=False))
        device = templates.device or ("cuda" if category == "gpu" and cuda else "cpu")
        per_rank = max(1, queue.cpus // queue.ranks)
        threads = [f"export UQ_FLOWS_TORCH_THREADS={per_rank}"]
        if category == "cpu":
            threads.append(f"export UQ_FLOWS_CP2K_THREADS={per_rank}")
            if queue.ranks > 1:  # the allocation's tasks run CP2K's ranks; the pilot itself is one process
                threads.append(f"export UQ_FLOWS_CP2K_COMMAND={shlex.quote(f'srun -n {queue.ranks} {templates.cp2k}')}")
        stop_taking = max(60, queue.seconds - 600)  # leave ten minutes for the last job to be recorded
        adapter = {
            "_fw_name": "CommonAdapter", "_fw_q_type": "SLURM", "_fw_template_file": None,
            "rocket_launch": (f"{uq_flows} worker --category {category} --idle-timeout {templates.idle_timeout:g} "
                              f"--timeout {stop_taking}"),
            "nodes": 1, "ntasks": queue.ranks, "cpus_per_task": per_rank, "walltime": queue.walltime,
            "queue": queue.partition, "account": templates.account, "job_name": f"uq-flows-{category}",
            "pre_rocket": "\n".join([f"source {out / 'worker.env'}", f"export UQ_FLOWS_DEVICE={device}", *threads]),
            "post_rocket": None, "logdir": str(out / "logs"),
        }
        if queue.gpus:
            adapter["gres"] = f"gpu:{queue.gpus}"
        if queue.memory_mb:
            adapter["mem"] = f"{queue.memory_mb}M"
        write(f"qadapter_{category}.yaml", yaml.safe_dump(adapter, sort_keys=False))
    (out / "logs").mkdir(exist_ok=True)
    qlaunch = Path(sys.executable).parent / "qlaunch"  # this installation's FireWorks
    commands = "\n".join(
        f"{qlaunch} -l {out / 'my_launchpad.yaml'} -w {out / f'fworker_{category}.yaml'} "
        f"-q {out / f'qadapter_{category}.yaml'} rapidfire --nlaunches infinite -m {templates.max_queued} "
        f"--sleep 15 &" for category in templates.queues)
    write("launch_pilots.sh", "#!/bin/bash\n# keeps pilots queued while jobs of their category are ready "
          "(run on the login node, e.g. in tmux)\n" + f"source {out / 'worker.env'}\n{commands}\nwait\n", mode=0o755)
    return written
