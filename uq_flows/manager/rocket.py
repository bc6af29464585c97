"""Run rockets in this process: the worker of the embedded default, or a simple queue worker.

``run_worker`` pulls fireworks of one category (None: any) until nothing is READY, RUNNING or
RESERVED in its scope (checked ``idle_checks`` times, ``sleep`` apart, so a worker does not
leave while another worker's job is about to make new ones READY), a timeout, or
``max_launches``. Unlike ``rapidfire(nlaunches=0)``, a ``gpu`` worker waits while ``cpu``
jobs it depends on are still running. The embedded launchpad is saved after every rocket,
after moving finished loop iterations to its archive (``archive_completed_workflows``).
With ``log_file``, what rockets print (FireWorks, jobflow, models) goes to that file; with
``progress``, one line per finished stage job and per failed job (``stage_line``).

As a program, ``python -m uq_flows.manager.rocket [--category gpu] [--timeout S]`` runs a
worker on the launchpad of the uq-flows settings.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from uq_flows.manager.status import ACTIVE_STATES, HEARTBEAT_KEY

if TYPE_CHECKING:
    from fireworks import LaunchPad

_RUNNABLE = ("READY", "RUNNING", "RESERVED")
LONG_JOB_SECONDS = 5.0  # progress lines for each of a stage's jobs that run this long (DFT, fits)


UNCATEGORISED_QUEUE = "cpu"


def worker_selection(category: str | None, scope: dict | None = None) -> dict:
    """FWorker ``category`` and ``query`` for a queue.

    jobflow adds small bookkeeping fireworks of its own when a job replaces itself with a
    flow (``store_inputs``); they carry no category, so the ``cpu`` queue takes them too.
    """
    scope = dict(scope or {})
    if category == UNCATEGORISED_QUEUE:
        either = [{"spec._category": category}, {"spec._category": {"$exists": False}}]
        return {"category": "", "query": {**scope, "$or": either}}
    return {"category": category or "", "query": scope}


def run_worker(
    lp: LaunchPad,
    category: str | None = None,
    *,
    name: str | None = None,
    loop: str | None = None,
    launch_dir: Path | str | None = None,
    timeout: float | None = None,
    max_launches: int = 0,
    sleep: float = 1.0,
    idle_checks: int = 2,
    idle_timeout: float | None = None,
    log_level: str = "WARNING",
    log_file: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
    resume_every: float | None = None,
) -> int:
    """Launch rockets (of ``category``, and of ``loop`` if given) until idle; the number launched.

    Idle means nothing READY, RUNNING or RESERVED in scope (``idle_checks`` times), or, for a
    pilot (``idle_timeout``), nothing of its category to run for ``idle_timeout`` seconds:
    a pilot does not hold its allocation while other queues' jobs run. With ``resume_every``,
    an idle worker makes a ``resume`` pass (reruns, releases, rebuilds) at most that often, so
    the loops of a cluster resume on their own while pilots run."""
    import fireworks.core.rocket
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import launch_rocket
    from fireworks.utilities.fw_utilities import create_datestamp_dir

    from uq_flows.settings import get_settings

    from uq_flows.manager.launchpad import archive_completed_workflows, save_launchpad
    from uq_flows.manager.submit import loop_fw_ids

    root = Path(launch_dir or os.getcwd()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    logger = logging.getLogger(__name__)
    launched, idle, start_dir, began = 0, 0, os.getcwd(), time.monotonic()
    last_work = last_resume = began
    rocket_stdout = _log_stream(log_file) if log_file else None
    # the heartbeat: rockets ping their launch this often, and the launch records it (its fworker's
    # env), so resume knows when this worker's job is lost (``heartbeat_seconds`` × ``lost_after_pings``)
    heartbeat = get_settings().heartbeat_seconds
    fireworks.core.rocket.PING_TIME_SECS = heartbeat
    try:
        while deadline is None or time.monotonic() < deadline:
            if max_launches and launched >= max_launches:
                break
            # a loop's workflows grow when jobs replace themselves: rescope every time
            scope = {} if loop is None else {"fw_id": {"$in": loop_fw_ids(lp, loop)}}
            fworker = FWorker(name=name or f"uq-flows-{category or 'any'}", env={HEARTBEAT_KEY: heartbeat},
                              **worker_selection(category, scope))
            if lp.run_exists(fworker):
                idle = 0
                workdir = create_datestamp_dir(str(root), logger, prefix="launcher_")
                os.chdir(workdir)
                try:
                    with contextlib.redirect_stdout(rocket_stdout) if rocket_stdout else contextlib.nullcontext():
                        ran = launch_rocket(lp, fworker, strm_lvl=log_level)
                    if ran and progress is not None:
                        line = stage_line(lp, fworker.name, time.monotonic() - began)
                        if line:
                            progress(line)
                finally:
                    os.chdir(start_dir)
                    archive_completed_workflows(lp)
                    save_launchpad(lp)
                if ran:
                    launched += 1
                elif not os.listdir(workdir):
                    os.rmdir(workdir)
                last_work = time.monotonic()
                continue
            if resume_every is not None and time.monotonic() - last_resume >= resume_every:
                last_resume = time.monotonic()
                if _resume_pass(lp, loop, progress).changed:
                    continue
            if idle_timeout is not None:
                if time.monotonic() - last_work >= idle_timeout:
                    break
            elif lp.fireworks.count_documents({**scope, "state": {"$in": list(_RUNNABLE)}}) == 0:
                idle += 1
                if idle >= idle_checks:
                    break
            else:
                idle = 0
            time.sleep(sleep)
    finally:
        os.chdir(start_dir)
    return launched


def _resume_pass(lp: LaunchPad, loop: str | None, progress: Callable[[str], None] | None,
                 rebuild: bool = True):
    """One ``resume`` pass (with the loop rebuild), its reruns and rebuilds told to ``progress``; the report."""
    from uq_flows.manager.rebuild import rebuild_loop
    from uq_flows.manager.resume import resume

    report = resume(lp, loop, rebuild=rebuild_loop if rebuild else None)
    if progress is not None:
        for row in report.rerun:
            progress(f"job {row['fw_id']} {row['name']}: retry {row['retry']} ({row['kind']})")
        for name, rebuilt in report.rebuilt.items():
            progress(f"loop {name}: rebuilt iteration {rebuilt['iteration']}")
    return report


def run_with_retries(lp: LaunchPad, loop: str, *, progress: Callable[[str], None] | None = None,
                     wait: Callable[[float], object] = time.sleep, **worker_kwargs) -> int:
    """Run ``loop``'s rockets here until nothing can run, retrying failed jobs as ``resume`` does
    (its retry limit and backoff, waiting out the backoff), so a job that tolerates failed
    parents runs only once their retries are spent; the number of rockets launched."""
    launched = 0
    while True:
        launched += run_worker(lp, None, loop=loop, progress=progress, **worker_kwargs)
        report = _resume_pass(lp, loop, progress, rebuild=False)  # a failed loop is left to `resume`
        if report.changed:  # reruns or released jobs to run now
            continue
        if not report.waiting:
            return launched
        due = min(row["due_in"] for row in report.waiting)
        if progress is not None:
            progress(f"{len(report.waiting)} failed job(s) of {loop}: next retry in {due:.0f} s")
        wait(due)


_LOG_STREAMS: dict[str, TextIO] = {}


def _log_stream(path: Path | str) -> TextIO:
    """The process's append stream to ``path``, opened once and left open: FireWorks and jobflow
    keep the handlers they made on it while it was ``sys.stdout`` and write to them later."""
    key = str(Path(path).resolve())
    if key not in _LOG_STREAMS:
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        _LOG_STREAMS[key] = open(key, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed at exit)
    return _LOG_STREAMS[key]


def stage_line(lp: LaunchPad, worker: str, elapsed: float) -> str | None:
    """What a user sees of the rocket ``worker`` just ran: a line for a failed job, and for a
    finished stage job (tagged ``uq_flows_stage``) with how many of its stage in its loop and
    iteration are done (``dft label 3/5``). A stage of many jobs shows its last one, and of
    long jobs (``LONG_JOB_SECONDS``) about ten. None for the untagged jobs between stages."""
    from uq_flows.manager.status import fizzle_reason
    from uq_flows.stages import ITERATION, LOOP_KEY, STAGE_KEY

    launch = lp.launches.find_one({"fworker.name": worker}, {"fw_id": 1, "state": 1, "runtime_secs": 1},
                                  sort=[("launch_id", -1)])
    if launch is None:
        return None
    fw = lp.fireworks.find_one({"fw_id": launch["fw_id"]}, {"fw_id": 1, "name": 1, "state": 1, "launches": 1,
                                                            "spec._tasks": 1})
    job = (((fw or {}).get("spec") or {}).get("_tasks") or [{}])[0].get("job") or {}
    metadata = job.get("metadata") or {}
    where = " ".join(part for part in (metadata.get(LOOP_KEY), None if metadata.get("iteration") is None
                                       else f"iteration {metadata['iteration']}") if part)
    clock = f"[{elapsed:6.0f} s]"
    if launch["state"] == "FIZZLED":
        return f"{clock} {where}: job {fw['fw_id']} {fw['name']} failed: {fizzle_reason(lp, fw)}"
    stored_inputs = (job.get("function") or {}).get("@callable") == "store_inputs"  # jobflow's, tagged like its job
    if launch["state"] != "COMPLETED" or not metadata.get(STAGE_KEY) or stored_inputs:
        return None
    if metadata[STAGE_KEY] == ITERATION:  # it only builds the iteration's jobs
        return f"{clock} {where}: started"
    runtime = f"({launch.get('runtime_secs') or 0:.1f} s)"
    prefix = "spec._tasks.0.job.metadata."
    same = {prefix + key: metadata.get(key) for key in (STAGE_KEY, LOOP_KEY, "iteration")}
    same["spec._tasks.0.job.function.@callable"] = {"$ne": "store_inputs"}
    total = lp.fireworks.count_documents(same)
    if total <= 1:
        return f"{clock} {where}: {metadata[STAGE_KEY]} done {runtime}"
    done = lp.fireworks.count_documents({**same, "state": "COMPLETED"})
    if done < total and ((launch.get("runtime_secs") or 0) < LONG_JOB_SECONDS or done % -(-total // 10)):
        return None
    return f"{clock} {where}: {metadata[STAGE_KEY]} {done}/{total} done {runtime}"


def active_count(lp: LaunchPad, fw_ids: list[int] | None = None) -> int:
    """Fireworks still READY, WAITING, RESERVED or RUNNING (in ``fw_ids`` if given)."""
    scope = {} if fw_ids is None else {"fw_id": {"$in": list(fw_ids)}}
    return lp.fireworks.count_documents({**scope, "state": {"$in": list(ACTIVE_STATES)}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run FireWorks rockets on the uq-flows launchpad.")
    parser.add_argument("--category", default=None, help="FireWorks category (gpu, cpu); default: any")
    parser.add_argument("--name", default=None, help="fworker name recorded in launches")
    parser.add_argument("--loop", default=None, help="only fireworks of this loop")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds between idle checks")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="stop after this many seconds with nothing of the category to run (a pilot)")
    parser.add_argument("--launch-dir", default=None, help="folder for launcher_* directories")
    args = parser.parse_args(argv)

    from uq_flows.errors import UqFlowsError
    from uq_flows.manager.launchpad import close_launchpad, open_launchpad

    try:
        lp = open_launchpad()
        n = run_worker(lp, args.category, name=args.name, loop=args.loop, launch_dir=args.launch_dir,
                       timeout=args.timeout, sleep=args.sleep, idle_timeout=args.idle_timeout)
        close_launchpad(lp)
    except UqFlowsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{n} rockets launched", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
