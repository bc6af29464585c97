"""The demo loop on a real single-node SLURM, with pilot workers from the rendered templates.

Needs root (``make slurm-demo``). Installs Debian's ``slurm-wlm`` and ``munge`` where missing,
configures one node with a ``gpu`` and a ``cpu`` partition (a fake GPU so ``--gres=gpu:1``
schedules), starts munged, slurmctld and slurmd, a MongoDB wire-protocol server (mongoeco on
SQLite, .venv-mongo) on 127.0.0.1, renders the cluster files with ``uq-flows hpc-templates``,
submits ``workflows/demo.yaml`` and runs the rendered ``launch_pilots.sh`` (qlaunch keeps pilots
queued; each pilot is ``uq-flows worker``). It stops everything it started, by PID, restores
any SLURM configuration it replaced, and prints one JSON object (also written to
benchmarks/results/slurm_demo.json):

completed, wall_s (submission to the loop's end), busy_s (firework run time), idle_fraction
(wall time with no firework running), queue_jobs, fireworks_by_partition, category_mismatches.

    python benchmarks/slurm_demo.py [--config workflows/demo.yaml] [--timeout 1800] [--keep DIR] [--results FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UQ_FLOWS = Path(sys.executable).parent / "uq-flows"
MONGO_PYTHON = ROOT / ".venv-mongo" / "bin" / "python"
WIRE_SERVER = ROOT / "tests" / "manager" / "wire_server.py"
SLURM_FILES = (Path("/etc/slurm/slurm.conf"), Path("/etc/slurm/gres.conf"))
RESULTS = ROOT / "benchmarks" / "results" / "slurm_demo.json"


class CannotRun(RuntimeError):
    """This machine cannot run the demo (not root, no apt-get, packages not installable)."""


def can_run() -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (it installs and starts SLURM and munge)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    if not MONGO_PYTHON.exists():
        return f"{MONGO_PYTHON} is missing: make mongo-env"
    return None


def install() -> None:
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            raise CannotRun(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")


def slurm_conf(host: str, cpus: int, memory_mb: int) -> str:
    return "\n".join([
        "ClusterName=uqflows", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=slurm", "AuthType=auth/munge",
        "StateSaveLocation=/var/spool/slurmctld", "SlurmdSpoolDir=/var/spool/slurmd",
        "SlurmctldPidFile=/run/slurm/slurmctld.pid", "SlurmdPidFile=/run/slurm/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log", "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "MpiDefault=none", "SwitchType=switch/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=4000",
        "ReturnToService=2", "GresTypes=gpu", "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN",
        f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP", "",
    ])


class Cluster:
    """munged, slurmctld and slurmd started here; stopped (by PID) and the configuration restored on exit."""

    def __init__(self, folder: Path):
        self.folder, self.processes, self.backups = folder, [], {}

    def __enter__(self) -> Cluster:
        host = socket.gethostname()
        cpus = os.cpu_count() or 1
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        for path in SLURM_FILES:
            if path.exists():
                self.backups[path] = path.read_bytes()
        SLURM_FILES[0].parent.mkdir(parents=True, exist_ok=True)
        SLURM_FILES[0].write_text(slurm_conf(host, cpus, memory))
        SLURM_FILES[1].write_text(f"NodeName={host} Name=gpu File=/dev/null Count=1\n")
        for folder, owner in (("/run/munge", "munge"), ("/var/spool/slurmctld", "slurm"), ("/var/spool/slurmd", None),
                              ("/run/slurm", None), ("/var/log/slurm", None)):
            Path(folder).mkdir(parents=True, exist_ok=True)
            if owner:
                shutil.chown(folder, owner, owner)
        self.start(["runuser", "-u", "munge", "--", "munged", "-F"], "munged")
        time.sleep(1.0)
        self.start(["slurmctld", "-D", "-i"], "slurmctld")
        time.sleep(2.0)
        self.start(["slurmd", "-D"], "slurmd")
        self.wait_idle(host)
        return self

    def start(self, command: list[str], name: str) -> None:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        self.processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True), log))

    def wait_idle(self, host: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True).stdout.split()
            states = dict(zip(out[::2], out[1::2]))
            if {p.rstrip("*") for p in states} >= {"cpu", "gpu"} and all(s == "idle" for s in states.values()):
                return
            if any(s.startswith(("inval", "drain", "down")) for s in states.values()):
                subprocess.run(["scontrol", "update", f"nodename={host}", "state=resume"], capture_output=True)
            time.sleep(1.0)
        raise CannotRun(f"SLURM did not come up: sinfo {out}; see {self.folder}")

    def __exit__(self, *exc) -> None:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True)
        for process, log in reversed(self.processes):
            stop(process)
            log.close()
        for path in SLURM_FILES:
            if path in self.backups:
                path.write_bytes(self.backups[path])
            else:
                path.unlink(missing_ok=True)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def wire_server(folder: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([str(MONGO_PYTHON), str(WIRE_SERVER), "--db", str(folder / "wire.sqlite"),
                                "--parent-pid", str(os.getpid()), "--max-seconds", "7200"],
                               stdout=subprocess.PIPE, stderr=open(folder / "wire.log", "w"), text=True,
                               start_new_session=True)
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        stop(process)
        raise CannotRun(f"the wire-protocol server did not start: see {folder / 'wire.log'}")
    return process, int(line.split()[1])


def uq_flows(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(UQ_FLOWS), *args], env=env, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise RuntimeError(f"uq-flows {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def measure(env: dict, loop: str, started: dt.datetime, ended: dt.datetime) -> dict:
    """Busy time, idle fraction, fireworks by partition and category mismatches, from the launchpad."""
    os.environ.update(env)
    from uq_flows.manager.launchpad import open_launchpad
    from uq_flows.manager.submit import loop_fw_ids

    lp = open_launchpad()
    fw_ids = loop_fw_ids(lp, loop)
    category = {doc["fw_id"]: (doc.get("spec") or {}).get("_category")
                for doc in lp.fireworks.find({"fw_id": {"$in": fw_ids}}, {"fw_id": 1, "spec._category": 1})}
    intervals, by_partition, mismatches = [], {}, []
    for launch in lp.launches.find({"fw_id": {"$in": fw_ids}, "state": "COMPLETED"}):
        history = {h["state"]: h for h in launch.get("state_history", [])}
        if "RUNNING" not in history or "COMPLETED" not in history:
            continue
        begin = _time(history["RUNNING"]["created_on"])
        intervals.append((begin, begin + dt.timedelta(seconds=launch.get("runtime_secs") or 0)))
        worker = (launch.get("fworker") or {}).get("name", "")
        parts = worker.split("-")  # uq-flows-CATEGORY-PARTITION-JOBID
        pilot_category, partition = (parts[2], parts[3]) if len(parts) >= 5 else ("?", "?")
        by_partition[partition] = by_partition.get(partition, 0) + 1
        wanted = category.get(launch["fw_id"])
        if (wanted or "cpu") != pilot_category:
            mismatches.append({"fw_id": launch["fw_id"], "category": wanted, "pilot": worker})
    busy = sum((b - a).total_seconds() for a, b in intervals)
    covered, last = 0.0, started
    for a, b in sorted(intervals):
        a, b = max(a, last), max(b, last)
        covered += (b - a).total_seconds()
        last = b
    wall = (ended - started).total_seconds()
    return {"wall_s": round(wall, 1), "busy_s": round(busy, 1),
            "idle_fraction": round(1 - min(covered, wall) / wall, 3) if wall > 0 else None,
            "fireworks_by_partition": by_partition, "category_mismatches": len(mismatches),
            "mismatched": mismatches[:10]}


def _time(value) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def run(config: Path, folder: Path, timeout: float) -> dict:
    with Cluster(folder):
        server, port = wire_server(folder)
        pilots = None
        try:
            env = {**os.environ, "UQ_FLOWS_HOME": str(folder / "home"),
                   "UQ_FLOWS_DB_URI": f"mongodb://127.0.0.1:{port}/uqdemo"}
            env.pop("UQ_FLOWS_LAUNCHPAD_FILE", None)
            env.pop("UQ_FLOWS_JOBSTORE_FILE", None)
            uq_flows("hpc-templates", "--out", str(folder / "hpc"), "--gpu-partition", "gpu", "--cpu-partition", "cpu",
                     # one pilot per category, each on one of the node's cores: neither blocks the other,
                     # and a pilot outlives the other category's stages (the longest, DFT, runs ~90 s here)
                     "--gpu-cpus", "1", "--cpu-cpus", "1", "--walltime", "01:00:00", "--idle-timeout", "300",
                     "--max-queued", "1", env=env)
            started = dt.datetime.now(dt.UTC)
            loop = uq_flows("submit", str(config), "--json", env=env).stdout
            loop = json.loads(loop)["loop"]
            pilots = subprocess.Popen(["bash", str(folder / "hpc" / "launch_pilots.sh")], cwd=folder / "hpc",
                                      env=env, stdout=open(folder / "qlaunch.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
            deadline, state = time.monotonic() + timeout, "running"
            while time.monotonic() < deadline:
                status = json.loads(uq_flows("status", loop, "--json", env=env, check=False).stdout or "{}")
                state = ((status.get("loops") or [{}])[0]).get("state", "running")
                if state in ("completed", "failed", "stopped"):
                    break
                if pilots.poll() is not None:  # qlaunch gave up: nothing would run the loop
                    state = f"qlaunch exited: {(folder / 'qlaunch.log').read_text()[-500:]}"
                    break
                time.sleep(5.0)
            ended = dt.datetime.now(dt.UTC)
            queue_jobs = len(list((folder / "hpc").rglob("FW_submit.script")))
            return {"completed": state == "completed", "state": state, "loop": loop, **measure(env, loop, started, ended),
                    "queue_jobs": queue_jobs, "folder": str(folder)}
        finally:
            if pilots is not None:
                stop(pilots)
            stop(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "workflows" / "demo.yaml")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", type=Path, default=None, help="Folder for logs and databases (default: a temporary one)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where the JSON object is written too")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started, also when stopped
    why = can_run()
    if why:
        print(json.dumps({"completed": False, "skipped": why}))
        return 2
    folder = args.keep or Path(tempfile.mkdtemp(prefix="uq-slurm-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        install()
        load_before = os.getloadavg()
        result = run(args.config, folder, args.timeout)
        # other work on the machine stretches the fireworks more than the handoffs: say how busy it was
        result["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    except CannotRun as error:
        print(json.dumps({"completed": False, "skipped": str(error)}))
        return 2
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
