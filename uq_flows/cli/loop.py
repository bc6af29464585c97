"""Commands of the loop: run (embedded, in-process), submit (to a launchpad), status, results."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from uq_flows.cli.common import (
    EXIT_LOOP_FAILED,
    JobstoreOption,
    JsonOption,
    LaunchpadOption,
    app,
    emit,
    err,
    fail,
    fmt,
    guard,
    log_to_folder,
    quiet_stdout,
    use_databases,
)

ConfigArgument = Annotated[Path, typer.Argument(help="Loop configuration (YAML), e.g. workflows/demo.yaml.")]


def _read_stored_models(config) -> None:
    """Stored predictions and a replayed dataset are read once before anything is stored or
    submitted: an unreadable or ambiguous file is bad input, not a failure of every label job."""
    from uq_flows.ensemble.members import load_calculator, parse_member

    texts = {*config.members, config.teacher.energy_from, config.teacher.forces_from, config.dft.reference_model()}
    for spec in (parse_member(text) for text in texts - {None}):
        if spec.kind == "precomputed":
            load_calculator(spec)


def _prepare(config_path: Path):
    """Config with the loop id and the initial candidates; executables checked; nothing stored or submitted."""
    from uq_flows.explore.generators import starting_set
    from uq_flows.flows.config import load_config
    from uq_flows.io import read_many
    from uq_flows.manager.doctor import (
        executable_command,
        find_program,
        require_executables,
    )
    from uq_flows.records import records_from_atoms

    config = load_config(config_path)
    if config.dft.labeller == "cp2k" and config.dft.fallback_calculator and not find_program(executable_command("cp2k")):
        err.print(f"[bold yellow]NOTE: CP2K is not installed; high-U structures are labelled by the stand-in "
                  f"{config.dft.fallback_calculator}, NOT by DFT (install: apt-get install cp2k cp2k-data)[/]",
                  highlight=False)
        config = config.model_copy(update={"dft": config.dft.model_copy(
            update={"labeller": "calculator", "calculator": config.dft.fallback_calculator})})
    require_executables(config.required_executables())
    _read_stored_models(config)
    structures = read_many(config.structures) if config.structures else []
    if config.pool is not None:
        structures = read_many(config.pool.structures)
        if config.test:
            read_many(config.test)  # a fixed test set that cannot be read stops the loop before it starts
    if config.generate is not None:
        g = config.generate
        structures += starting_set(config.elements, g.n, g.max_atoms, g.seed, g.kinds)
    loop = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config.model_copy(update={"name": loop})
    return config, records_from_atoms(structures)


def _submit(loop_config, candidates, lp):
    """Store the candidates and submit the loop's first iteration; on failure nothing of the loop stays stored."""
    from uq_flows.campaign import Campaign
    from uq_flows.flows.loop import store_candidates
    from uq_flows.manager.advance import submit_iteration

    try:
        return submit_iteration(lp, loop_config, 0, store_candidates(loop_config, candidates), 0)
    except BaseException:
        with Campaign.open() as campaign:
            campaign.remove_loop(loop_config.name)
        raise


def _launch_folder(config) -> Path:
    from uq_flows.flows.loop import loop_folder

    folder = loop_folder(config) / "launches"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@app.command()
@guard
def run(config: ConfigArgument, as_json: JsonOption = False) -> None:
    """Run a whole loop here, on the embedded database (no server), rockets in-process; failed
    jobs are retried as `resume` would."""
    from uq_flows.flows.loop import loop_folder
    from uq_flows.manager.doctor import preflight
    from uq_flows.manager.launchpad import close_launchpad
    from uq_flows.manager.results import loop_overview
    from uq_flows.manager.rocket import run_with_retries

    loop_config, candidates = _prepare(config)
    with quiet_stdout():
        _, lp, store = preflight(executables=loop_config.required_executables())
        submission = _submit(loop_config, candidates, lp)
        log_file = log_to_folder(loop_folder(loop_config))
        err.print(f"loop {loop_config.name}: {len(candidates)} candidates, running on this machine"
                  + (f" (log: {log_file})" if log_file else ""), highlight=False)
        try:
            run_with_retries(lp, loop_config.name, idle_checks=1, launch_dir=_launch_folder(loop_config),
                             log_file=log_file, progress=lambda line: err.print(line, highlight=False))
            with store:
                status = loop_overview(lp, store, loop_config.name)
        finally:
            close_launchpad(lp)
    payload = {"loop": loop_config.name, "workflow_id": submission.workflow_id, **status}
    if as_json:
        emit(payload)
    else:
        _status_table(status)
    _exit_for_loops(status)


def _exit_for_loops(status: dict[str, Any]) -> None:
    """Exit 3 when a loop failed or was stopped (its failed jobs are in the status above)."""
    broken = [loop for loop in status["loops"] if loop["state"] in ("failed", "stopped")]
    if broken:
        fail("; ".join(f"loop {loop['id']} {loop['state']}" + (f" ({len(loop['fizzled'])} failed job(s))"
                                                                  if loop["fizzled"] else "") for loop in broken)
             + ": see the failed jobs above; `uq-flows resume LOOP` retries or rebuilds", EXIT_LOOP_FAILED)


@app.command()
@guard
def submit(
    config: ConfigArgument,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a loop to a launchpad for workers (qlaunch/rlaunch) to run; prints its id."""
    from uq_flows.manager.doctor import preflight
    from uq_flows.manager.launchpad import close_launchpad

    use_databases(launchpad, jobstore)
    loop_config, candidates = _prepare(config)
    with quiet_stdout():
        _, lp, _ = preflight(executables=loop_config.required_executables())
        try:
            submission = _submit(loop_config, candidates, lp)
        finally:
            close_launchpad(lp)
    payload = {"loop": loop_config.name, "workflow_id": submission.workflow_id, "n_candidates": len(candidates),
               "categories": submission.categories}
    if as_json:
        emit(payload)
    else:
        err.print(f"submitted loop {loop_config.name} (workflow {submission.workflow_id})")
        typer.echo(loop_config.name)


def _status_table(status: dict[str, Any]) -> None:
    for loop in status["loops"]:
        table = Table(title=f"loop {loop['id']}: {loop['state']}")
        fixed = any(it.get("fixed_test") for it in loop["iterations"])
        for column in ("iter", "candidates", "U_c", "high U", "DFT ok", "DFT failed", "rejected", "teacher",
                       "DFT atoms (total)", "test E (meV/atom)", "test F (eV/Å)",
                       *(("fixed test E (meV/atom)", "fixed test F (eV/Å)") if fixed else ()),
                       "ρ audit (n)", "CAGO a, b", "next", "decision"):
            table.add_column(column, justify="right")
        for it in loop["iterations"]:
            energy = it.get("test_energy_rmse_per_atom")
            calibration = it.get("calibration")
            fixed_test = it.get("fixed_test") or {}
            fixed_energy = fixed_test.get("energy_rmse_per_atom")
            table.add_row(str(it["iteration"]), str(it["n_candidates"]), fmt(it.get("uc"), 3), str(it["n_high_u"]),
                          str(it["n_dft_ok"]), str(it["n_dft_failed"]), str(it["n_rejected"]), str(it["n_teacher"]),
                          f"{it.get('dft_atoms', 0)} ({it.get('dft_atoms_total', 0)})",
                          fmt(None if energy is None else 1000 * energy, 3), fmt(it.get("test_force_rmse"), 3),
                          *((fmt(None if fixed_energy is None else 1000 * fixed_energy, 3),
                             fmt(fixed_test.get("force_rmse"), 3)) if fixed else ()),
                          f"{fmt(it.get('spearman_audit'), 2)} ({it.get('n_audit', 0)})",
                          f"{calibration['a']:.2f}, {calibration['b']:.2f}" if calibration else (it.get("cago") or "—"),
                          str(it["n_next_candidates"]), it["reason"])
        err.print(table)
        if fixed:
            err.print(f"fixed test: the config's test set ({fixed_test.get('n_structures')} structures), the same for "
                      "every iteration", highlight=False)
        err.print("test RMSEs and ρ(U, ensemble-mean force error) are measured on each iteration's random audit sample "
                  "(held out of that iteration's fit)", highlight=False)
        last = loop["iterations"][-1] if loop["iterations"] else None
        if last and last.get("alignment"):
            a = last["alignment"]
            shifts = ", ".join(f"{el} {mu:+.4f}" for el, mu in a["shifts"].items())
            err.print(f"energy alignment (teacher → DFT, eV/atom): {shifts}; residual "
                      f"{1000 * a['residual_rmse_per_atom']:.2g} meV/atom on {a['n_structures']} {a['sample']} "
                      "structures", highlight=False)
        for it in loop["iterations"]:
            for warning in it.get("warnings") or []:
                err.print(f"[yellow]iteration {it['iteration']}: {warning}[/]", highlight=False)
        jobs = ", ".join(f"{cat}: " + " ".join(f"{s.lower()} {n}" for s, n in states.items())
                         for cat, states in loop["jobs"].items())
        err.print(f"jobs by category: {jobs}", highlight=False)
        for row in loop.get("silent") or []:
            err.print(f"[yellow]job {row['fw_id']} {row['name']} is RUNNING but its worker has not pinged for "
                      f"{row['silent_s']:.0f} s (dead?): resume reruns it after {row['lost_after_s']:.0f} s[/]",
                      highlight=False)
        for fizzled in loop["fizzled"]:
            err.print(f"[red]failed job {fizzled['fw_id']} {fizzled['name']} ({fizzled['category']}): {fizzled['reason']}[/]",
                      highlight=False)


@app.command()
@guard
def status(
    loop: Annotated[str | None, typer.Argument(help="Loop id (default: every loop).")] = None,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per loop: state, and per iteration candidates, high-U, DFT done and failed, fit RMSEs, ρ."""
    from uq_flows.manager.results import connect, loop_overview

    use_databases(launchpad, jobstore)
    with quiet_stdout(), connect() as (lp, store):
        result = loop_overview(lp, store, loop)
    if loop is not None and not result["loops"]:
        fail(f"no loop {loop!r} in the database")
    if as_json:
        emit(result)
    else:
        _status_table(result)


@app.command()
@guard
def results(
    out: Annotated[Path, typer.Option("--out", help="Output file.")],
    output_format: Annotated[str, typer.Option("--format", help="extxyz, pacemaker or json.")],
    loop: Annotated[str | None, typer.Argument(help="Loop id (default: the only loop).")] = None,
    iteration: Annotated[int | None, typer.Option("--iteration", help="Only labels of this iteration.")] = None,
    u_min: Annotated[float | None, typer.Option("--u-min", help="Only structures with U ≥ this (eV/Å).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="dft or teacher.")] = None,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export a loop's labelled structures (json: id, iteration, U, source, energy, forces)."""
    from uq_flows.io import atomic_path, write_structures
    from uq_flows.manager.results import connect, only_loop, training_pool
    from uq_flows.records import jsonable

    use_databases(launchpad, jobstore)
    suffixes = {"extxyz": (".xyz", ".extxyz"), "pacemaker": (".pkl.gz", ".pckl.gzip", ".pkl", ".pckl"), "json": (".json",)}
    if output_format not in suffixes:
        fail(f"--format must be one of {', '.join(suffixes)}")
    if not out.name.lower().endswith(suffixes[output_format]):
        fail(f"--out {out}: a {output_format} file must end in {' or '.join(suffixes[output_format])}")
    if source not in (None, "dft", "teacher"):
        fail("--source must be dft or teacher")
    with quiet_stdout(), connect() as (_, store):
        loop = loop or only_loop()
        structures, labels = training_pool(loop)
    chosen = [x for x in labels
              if (iteration is None or x.iteration == iteration) and (source is None or x.kind == source)
              and (u_min is None or (x.U is not None and x.U >= u_min) or (x.U is None and math.isinf(u_min)))]
    if output_format == "json":
        records = [{"id": x.id, "iteration": x.iteration, "U": x.U, "source": x.kind, "code": x.source,
                    "energy": x.energy, "forces": x.forces} for x in chosen]
        with atomic_path(out) as temporary:
            temporary.write_text(json.dumps(jsonable(records)))
    elif chosen:
        write_structures(out, [x.to_atoms(structures[x.id]) for x in chosen], uq_id=[x.id for x in chosen],
                         label_source=[x.kind for x in chosen], source=[x.source for x in chosen],
                         U=[math.nan if x.U is None else x.U for x in chosen], iteration=[x.iteration for x in chosen])
    else:
        fail("no labelled structure matches; nothing written", 1)
    payload = {"loop": loop, "out": str(out), "n_structures": len(chosen),
               "by_source": {k: sum(x.kind == k for x in chosen) for k in ("dft", "teacher")}}
    if as_json:
        emit(payload)
    else:
        err.print(f"wrote {len(chosen)} structures of loop {loop} to {out}")


@app.command()
@guard
def report(
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs, summary.json and index.html.")],
    loop: Annotated[str | None, typer.Argument(help="Loop id (default: the only loop).")] = None,
    launchpad: LaunchpadOption = None,
    jobstore: JobstoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Figures (U vs error, accuracy–coverage, force RMSE vs U_c, progress) and a one-page HTML summary."""
    from uq_flows.manager.results import connect, loop_overview, only_loop, report_data
    from uq_flows.report import write_report

    use_databases(launchpad, jobstore)
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a folder")
    with quiet_stdout(), connect() as (lp, store):
        loop = loop or only_loop()
        entries = loop_overview(lp, store, loop)["loops"]
        if not entries:
            fail(f"no loop {loop!r} in the database")
        data = report_data(store, loop, entries[0]["state"])
    files = write_report(data, out)
    payload = {"loop": loop, "state": data.state, "n_iterations": len(data.iterations), "n_dft_errors": len(data.dft),
               "files": {name: str(path) for name, path in files.items()}}
    if as_json:
        emit(payload)
    else:
        err.print(f"report of loop {loop} ({data.state}, {len(data.iterations)} iterations): {files['index']}",
                  highlight=False)
