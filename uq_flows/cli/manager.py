"""Workflow-manager commands: doctor, resume and worker (run, submit, status, results build on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uq_flows.cli.common import (
    EXIT_LOOP_FAILED,
    EXIT_PARTIAL,
    JobstoreOption,
    JsonOption,
    LaunchpadOption,
    app,
    emit,
    err,
    fail,
    guard,
    log_file_path,
    quiet_stdout,
    use_databases,
)

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
@guard(check_settings=False)  # doctor reports broken settings as a failed check
def doctor(
    no_database: Annotated[bool, typer.Option("--no-database", help="Skip the launchpad and JobStore checks.")] = False,
    require: Annotated[list[str] | None, typer.Option("--require", help="Executable that must exist: cp2k, vasp or pacemaker (repeat).")] = None,
    load_models: Annotated[bool, typer.Option("--load-models", help="Also load every built-in uMLIP (slow).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Check environments, models, executables (CP2K, VASP, pacemaker) and databases."""
    from uq_flows.manager.doctor import run_doctor

    with quiet_stdout():
        result = run_doctor(database=not no_database, require=require or (), load_models=load_models)
    table = Table("check", "status", "detail", "hint", title="uq-flows doctor")
    for row in result["checks"]:
        table.add_row(row["check"], f"[{_STYLE[row['status']]}]{row['status']}[/]", row["detail"], row["hint"] or "")
    err.print(table)
    if json_out:
        emit(result)
    if not result["ok"]:
        err.print(f"[bold red]{result['counts']['fail']} check(s) failed[/]")
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
@guard
def resume(
    loop: Annotated[str | None, typer.Argument(help="Loop id (default: every uq-flows loop on the launchpad).")] = None,
    watch: Annotated[float | None, typer.Option("--watch", min=0.1, help="Repeat every SECONDS until interrupted (or --iterations).")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", min=1, help="Passes with --watch (default: until interrupted).")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", min=0, help="Reruns of a failed job (default: settings max_retries).")] = None,
    backoff: Annotated[float | None, typer.Option("--backoff", min=0, help="Seconds before the first rerun, doubling (default: settings retry_backoff).")] = None,
    lost_after: Annotated[float | None, typer.Option("--lost-after", min=0, help="Seconds without a ping before a RUNNING job is lost (default: lost_after_pings heartbeats of a uq-flows worker, lost_run_seconds for other workers).")] = None,
    run_local: Annotated[bool | None, typer.Option("--run-local/--no-run-local", help="Run ready jobs in this process (default: on the embedded launchpad).")] = None,
    all_workflows: Annotated[bool, typer.Option("--all-workflows", help="Without LOOP: also rerun failed jobs of workflows that are not uq-flows loops (another tool's).")] = False,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    json_out: JsonOption = False,
) -> None:
    """Rerun fizzled jobs (retry limit, backoff) and lost runs; --watch keeps doing it."""
    from uq_flows.manager.config import load_settings
    from uq_flows.manager.launchpad import (
        close_launchpad,
        describe_launchpad,
        is_embedded,
        open_launchpad,
    )
    from uq_flows.manager.resume import watch as watch_loop
    from uq_flows.manager.rocket import run_worker
    from uq_flows.manager.status import loop_status

    use_databases(launchpad, jobstore)
    if iterations is not None and watch is None:
        fail("--iterations needs --watch")
    with quiet_stdout():
        settings = load_settings()
        lp = open_launchpad(settings, check=True)
        try:
            _check_loop(lp, loop)
            local = is_embedded(lp) if run_local is None else run_local
            launched: list[int] = []

            def after_pass(lp_, report):
                if local:
                    launched.append(run_worker(lp_, None, loop=loop, launch_dir=Path(settings.home).expanduser() / "launches",
                                               idle_checks=1 if is_embedded(lp_) else 2, log_file=log_file_path(),
                                               progress=lambda line: err.print(line, highlight=False)))

            def on_report(i, report):
                err.print(
                    f"pass {i + 1}: rerun {len(report.rerun)}, lost {len(report.lost)}, waiting {len(report.waiting)}, "
                    f"given up {len(report.exhausted)}, blocked {len(report.blocked)}"
                    + (f", ran {launched[-1]} jobs here" if local and launched else ""),
                    highlight=False,
                )

            from uq_flows.manager.rebuild import rebuild_loop

            reports = watch_loop(
                lp, loop, interval=watch or 0.0, iterations=(1 if watch is None else iterations),
                after_pass=after_pass, on_report=on_report, rebuild=rebuild_loop,
                max_retries=max_retries, backoff=backoff, lost_after=lost_after, all_workflows=all_workflows,
            )
            status = loop_status(lp, loop)
            where = describe_launchpad(lp)
        finally:
            close_launchpad(lp)
    rebuilt = {name: result for report in reports for name, result in report.rebuilt.items()}
    defused = {fw_id for result in rebuilt.values() for fw_id in result.get("defused", [])}
    exhausted = {row["fw_id"]: row for report in reports for row in report.exhausted if row["fw_id"] not in defused}
    for name, result in rebuilt.items():
        err.print(f"loop {name}: rebuilt iteration {result['iteration']} (reusing {result['reused_dft_labels']} "
                  f"DFT labels; defused {len(result['defused'])} failed jobs)", highlight=False)
    for entry in status["loops"]:
        err.print(f"loop {entry['loop']}: {entry['state']} {entry['states']}", highlight=False)
    for row in exhausted.values():
        err.print(f"[red]left FIZZLED[/] fw {row['fw_id']} {row['name']}: {row['reason']}", highlight=False)
    if json_out:
        emit({
            "loop": loop,
            "launchpad": where,
            "passes": len(reports),
            "rerun": sum(len(r.rerun) for r in reports),
            "launched_here": sum(launched),
            "exhausted": list(exhausted.values()),
            "rebuilt": rebuilt,
            "reports": [r.as_dict() for r in reports],
            "status": status,
        })
    if exhausted:
        fail(f"{len(exhausted)} job(s) failed after their last retry (listed above): `uq-flows resume` after fixing "
             "the cause reruns or rebuilds them", EXIT_LOOP_FAILED)


def _check_loop(lp, loop: str | None) -> None:
    """Exit 2 when ``loop`` is given and the launchpad has no such loop (naming the ones it has)."""
    from uq_flows.manager.launchpad import describe_launchpad
    from uq_flows.manager.submit import list_loops

    if loop is not None and loop not in (loops := list_loops(lp)):
        fail(f"no loop {loop!r} on the launchpad {describe_launchpad(lp)} (loops: {', '.join(loops) or 'none'})")


@app.command()
@guard
def worker(
    category: Annotated[str | None, typer.Option("--category", help="Run fireworks of this queue category (gpu, cpu; default: any).")] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=0, help="Stop after this many seconds with nothing of the category to run.")] = 120.0,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=0, help="Stop after this many jobs (0: no limit).")] = 0,
    timeout: Annotated[float | None, typer.Option("--timeout", min=1, help="Take no new job after this many seconds (set it under the allocation's walltime).")] = None,
    loop: Annotated[str | None, typer.Option("--loop", help="Only fireworks of this loop.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Worker name recorded in the launches (default: uq-flows-CATEGORY-HOST-PID).")] = None,
    launch_dir: Annotated[Path | None, typer.Option("--launch-dir", help="Folder for the launcher_* run folders (default: $UQ_FLOWS_HOME/launches).")] = None,
    resume_every: Annotated[float, typer.Option("--resume-every", min=0, help="While idle, a resume pass (retries, lost runs, rebuilds) at most this often, in seconds (0: never).")] = 60.0,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    json_out: JsonOption = False,
) -> None:
    """A pilot worker: run fireworks of one category, one after another, until idle (one allocation,
    many jobs); while idle it resumes failed and lost jobs."""
    import os
    import socket

    from uq_flows.manager.config import load_settings
    from uq_flows.manager.launchpad import close_launchpad, describe_launchpad, open_launchpad
    from uq_flows.manager.rocket import run_worker

    use_databases(launchpad, jobstore)
    if launch_dir is not None and launch_dir.exists() and not launch_dir.is_dir():
        fail(f"--launch-dir {launch_dir}: not a folder")
    if name is None and os.environ.get("SLURM_JOB_ID"):  # a pilot: its partition and job in every launch
        name = f"uq-flows-{category or 'any'}-{os.environ.get('SLURM_JOB_PARTITION', '')}-{os.environ['SLURM_JOB_ID']}"
    name = name or f"uq-flows-{category or 'any'}-{socket.gethostname()}-{os.getpid()}"
    with quiet_stdout():
        settings = load_settings()
        lp = open_launchpad(settings, check=True)
        try:
            _check_loop(lp, loop)
            err.print(f"worker {name}: {category or 'any'} jobs from {describe_launchpad(lp)} until idle for "
                      f"{idle_timeout:g} s" + (f" or {max_jobs} jobs" if max_jobs else "")
                      + (f" (log: {log_file_path()})" if log_file_path() else ""), highlight=False)
            launched = run_worker(lp, category, name=name, loop=loop,
                                  launch_dir=launch_dir or Path(settings.home).expanduser() / "launches",
                                  max_launches=max_jobs, idle_timeout=idle_timeout, timeout=timeout,
                                  log_file=log_file_path(), resume_every=resume_every or None,
                                  progress=lambda line: err.print(line, highlight=False))
        finally:
            close_launchpad(lp)
    stopped = "max_jobs" if max_jobs and launched >= max_jobs else "idle"
    err.print(f"worker {name}: ran {launched} jobs; stopped: "
              + ("--max-jobs reached" if stopped == "max_jobs" else f"nothing to run for {idle_timeout:g} s"),
              highlight=False)
    if json_out:
        emit({"worker": name, "category": category, "launched": launched, "stopped": stopped})


@app.command("hpc-templates")
@guard
def hpc_templates(
    out: Annotated[Path, typer.Option("--out", help="Folder for the cluster files (created).")],
    db_uri: Annotated[str | None, typer.Option("--db-uri", help="MongoDB URI every worker reaches (default: the settings' db_uri).")] = None,
    scheduler: Annotated[str, typer.Option("--scheduler", help="Queue system (slurm).")] = "slurm",
    gpu_partition: Annotated[str, typer.Option("--gpu-partition", help="SLURM partition of gpu jobs (uMLIPs, MD, CAGO).")] = "gpu",
    cpu_partition: Annotated[str, typer.Option("--cpu-partition", help="SLURM partition of cpu jobs (DFT, fits, selection).")] = "cpu",
    gpu_cpus: Annotated[int, typer.Option("--gpu-cpus", min=1, help="CPUs of a gpu pilot.")] = 1,
    cpu_cpus: Annotated[int | None, typer.Option("--cpu-cpus", min=1, help="CPUs of a cpu pilot (default: a node of the partition, else 1).")] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=0, help="GPUs of a gpu pilot (--gres=gpu:N; 0: none).")] = 1,
    cp2k_ranks: Annotated[int, typer.Option("--cp2k-ranks", min=1, help="MPI ranks of CP2K in a cpu pilot (srun -n N inside its allocation; --cpu-cpus / N threads each).")] = 1,
    walltime: Annotated[str, typer.Option("--walltime", help="Allocation of each pilot, HH:MM:SS.")] = "12:00:00",
    account: Annotated[str | None, typer.Option("--account", help="SLURM account.")] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=0, help="A pilot leaves after this many idle seconds.")] = 300.0,
    max_queued: Annotated[int, typer.Option("--max-queued", min=1, help="Queue jobs of yours qlaunch keeps in SLURM at most (pending or running).")] = 4,
    json_out: JsonOption = False,
) -> None:
    """Render this installation's cluster files: worker.env, launchpad, fworkers, FW_config, pilot queue adapters."""
    from uq_flows.manager.config import load_settings
    from uq_flows.manager.hpc import ClusterTemplates, QueueResources, cuda_build, partition_cpus, render
    from uq_flows.programs import find_program

    if scheduler != "slurm":
        fail(f"--scheduler {scheduler}: only slurm is rendered (FireWorks' other adapters can take the same pilots)")
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: not a folder")
    settings = load_settings()
    uri = db_uri or (settings.db_uri.get_secret_value() if settings.db_uri else None)
    if not uri or not uri.startswith(("mongodb://", "mongodb+srv://")):
        fail("give --db-uri mongodb://USER:PASSWORD@HOST:PORT/DATABASE (or set db_uri): every worker needs the server")
    queues = {"gpu": QueueResources(gpu_partition, gpu_cpus, walltime, gpus=gpus),
              "cpu": QueueResources(cpu_partition, cpu_cpus or partition_cpus(cpu_partition) or 1, walltime,
                                    ranks=cp2k_ranks)}
    written = render(ClusterTemplates(db_uri=uri, queues=queues, account=account, idle_timeout=idle_timeout,
                                      max_queued=max_queued, cp2k=find_program(settings.cp2k_command) or "cp2k.psmp",
                                      home=Path(settings.home).expanduser(), heartbeat=settings.heartbeat_seconds), out)
    cuda = cuda_build()
    if not cuda:
        err.print("[yellow]this installation's torch is CPU-only: gpu pilots run their models on the CPU "
                  "(UQ_FLOWS_DEVICE=cpu). For GPUs: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu124[/]",
                  highlight=False)
    err.print(f"wrote {len(written)} files to {out}; then:\n  source {out / 'worker.env'}\n"
              f"  uq-flows submit my_loop.yaml\n  {out / 'launch_pilots.sh'}", highlight=False)
    if json_out:
        emit({"out": str(out), "files": [str(p) for p in written], "cuda": cuda,
              "queues": {k: vars(v) for k, v in queues.items()}})
