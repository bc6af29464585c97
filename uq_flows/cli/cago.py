"""Commands of the adversarial stage: calibrate, cago, explore, generate (paper 004)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from uq_flows.cli.common import (
    EXIT_PARTIAL,
    DeviceOption,
    JsonOption,
    app,
    check_out,
    emit,
    err,
    fail,
    fmt,
    guard,
    progress_bar,
    validated,
)
from uq_flows.io import write_extxyz

CommitteeOption = Annotated[
    list[str], typer.Option("--model", help="Committee member (repeat): an ACE potential file (.yaml/.yace) or a model as for score --model.")
]
OutStructures = Annotated[Path, typer.Option("--out", help="Output structures (.extxyz or .xyz).")]
STRUCTURE_OUTPUTS = (".xyz", ".extxyz")  # unlabelled candidates


@app.command()
@guard
def calibrate(
    reference: Annotated[list[Path], typer.Argument(help="Labelled validation structures (energy and forces).")],
    committee: CommitteeOption,
    out: Annotated[Path, typer.Option("--out", help="Calibration file (.json).")],
    plot: Annotated[Path | None, typer.Option("--plot", help="Folder for the calibration PNG.")] = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit σ_cal = a·σ̂^b to a committee's force errors on labelled data (paper 004, eqs. 4-5)."""
    from uq_flows.cago.calibration import PowerLawCalibration
    from uq_flows.cago.committee import (
        committee_errors,
        committee_identity,
        load_committee,
    )
    from uq_flows.io import atomic_path, read_labels, read_many

    check_out(out, (".json",))
    structures = read_many(reference)
    labels = read_labels(structures)
    offsets = labels.n_atoms.cumsum() - labels.n_atoms
    forces = [labels.forces[o : o + n] for o, n in zip(offsets, labels.n_atoms)]
    members = load_committee(committee, device=device)
    sigma_hat, errors = committee_errors(members, structures, forces)
    calibration = PowerLawCalibration.fit(sigma_hat, errors, n_members=members.n_members)
    raw = PowerLawCalibration.identity().diagnostics(sigma_hat, errors)
    document = {**calibration.model_dump(), "committee": committee_identity(committee), "uncalibrated": raw.model_dump()}
    with atomic_path(out) as temporary:
        temporary.write_text(json.dumps(document, indent=1))
    payload: dict[str, Any] = {"out": str(out), **document}
    if plot is not None:
        from uq_flows import plots

        plot.mkdir(parents=True, exist_ok=True)
        payload["plot"] = str(plots.calibration_curve(sigma_hat, errors, calibration(sigma_hat), plot / "calibration.png"))
    if as_json:
        emit(payload)
        return
    fitted = calibration.fitted
    err.print(
        f"σ_cal = {calibration.a:.4g} · σ̂^{calibration.b:.4g} from {fitted.n_atoms} atoms, {members.n_members} members; "
        f"z std {raw.z_std:.3g} → {fitted.z_std:.3g}, ENCE {raw.ence:.3g} → {fitted.ence:.3g}; wrote {out}",
        highlight=False,
    )


def _read_calibration(path: Path | None, committee: list[str]):
    from uq_flows.cago.calibration import PowerLawCalibration
    from uq_flows.cago.committee import committee_identity

    if path is None:
        return PowerLawCalibration.identity(), "uncalibrated (σ_cal = σ̂)"
    try:
        document = json.loads(path.read_text())
        calibration = PowerLawCalibration.model_validate({k: document[k] for k in ("a", "b", "n_members", "fitted")})
    except (OSError, ValueError, KeyError) as error:
        fail(f"--calibration {path}: not a calibration file written by uq-flows calibrate ({error})")
    foreign = sorted(set(committee_identity(committee)) - set(document.get("committee", [])))
    if foreign:
        fail(f"--calibration {path} was fitted for another committee; not in it: {', '.join(foreign)}")
    return calibration, str(path)


@app.command()
@guard
def cago(
    structures: Annotated[list[Path], typer.Argument(help="Seed structures.")],
    committee: CommitteeOption,
    target: Annotated[float, typer.Option("--target", help="δ: target force error per atom, eV/Å.")],
    out: OutStructures,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="File from uq-flows calibrate.")] = None,
    bias: Annotated[float, typer.Option("--bias", help="l_bias on |F̄_i|² (eq. 8).")] = 0.0,
    steps: Annotated[int, typer.Option("--steps", min=1, help="L-BFGS iterations at most per seed.")] = 50,
    fixed_cell: Annotated[bool, typer.Option("--fixed-cell", help="Keep the cell fixed.")] = False,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Calibrated adversarial geometry optimisation towards a target force error (paper 004)."""
    from uq_flows.cago.adversarial import adversarial_structures
    from uq_flows.cago.committee import load_committee
    from uq_flows.cago.optimizer import CagoSettings
    from uq_flows.io import read_many

    check_out(out, STRUCTURE_OUTPUTS)
    if target <= 0:
        fail("--target must be positive (eV/Å)")
    cal, cal_source = _read_calibration(calibration, committee)
    seeds = read_many(structures)
    members = load_committee(committee, device=device)
    settings = CagoSettings(target=target, bias=bias, max_steps=steps, optimize_cell=not fixed_cell)
    with progress_bar() as progress:
        task = progress.add_task("CAGO", total=len(seeds))
        results = adversarial_structures(seeds, members, cal, settings, progress=lambda k: progress.update(task, completed=k))
    kept = [r.tagged_atoms(target) for r in results if r.kept]
    if kept:
        write_extxyz(out, kept)
    rows = [
        {"seed": r.seed_index, "kept": r.kept, "reason": r.reason, "converged": r.result.converged,
         "steps": len(r.result.trace) - 1, "mean_sigma_cal": sum(r.result.sigma_cal) / len(r.result.sigma_cal),
         "final_fitness": r.result.trace[-1].fitness, "min_distance": r.result.trace[-1].min_distance}
        for r in results
    ]
    payload = {"target": target, "calibration": cal_source, "n_seeds": len(seeds), "n_kept": len(kept),
               "n_converged": sum(r["converged"] for r in rows), "out": str(out) if kept else None,
               "evaluations": members.n_evaluations, "structures": rows}
    if as_json:
        emit(payload)
        return
    table = Table(title=f"CAGO towards δ = {target:g} eV/Å ({cal_source})")
    for column in ("seed", "steps", "mean σ_cal (eV/Å)", "converged", "kept"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["seed"]), str(row["steps"]), fmt(row["mean_sigma_cal"]), str(row["converged"]),
                      "yes" if row["kept"] else f"[red]no: {row['reason']}[/]")
    err.print(table)
    err.print(f"wrote {len(kept)} structures to {out}" if kept else "no structure passed the filters; nothing written")


@app.command()
@guard
def explore(
    structures: Annotated[list[Path], typer.Argument(help="Starting structures.")],
    model: Annotated[str, typer.Option("--model", help="The model driving the MD: an ACE potential file or a model as for score --model.")],
    out: OutStructures,
    ensemble: Annotated[str, typer.Option("--ensemble", help="nvt (Langevin) or npt (Berendsen).")] = "nvt",
    temperature: Annotated[list[float] | None, typer.Option("--temperature", help="K; repeat for a schedule.")] = None,
    pressure: Annotated[list[float] | None, typer.Option("--pressure", help="GPa (npt); repeat for a schedule.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1)] = 1000,
    every: Annotated[int, typer.Option("--every", min=1, help="Snapshot every N steps.")] = 50,
    timestep: Annotated[float, typer.Option("--timestep", help="fs")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """MD exploration with stability checks; snapshots seed CAGO (paper 004, "Methods")."""
    from uq_flows.cago.committee import load_model
    from uq_flows.explore.md import MDSettings, run_md
    from uq_flows.io import read_many

    check_out(out, STRUCTURE_OUTPUTS)
    if ensemble not in ("nvt", "npt"):
        fail("--ensemble must be nvt or npt")
    settings = validated(MDSettings, {"temperatures": "--temperature", "pressures": "--pressure", "snapshot_every": "--every"},
                         ensemble=ensemble, temperatures=temperature or [300.0], pressures=pressure or [0.0],
                         steps=steps, snapshot_every=every, timestep=timestep, seed=seed)
    driver = load_model(model, device)
    starts = read_many(structures)
    snapshots, runs = [], []
    with progress_bar() as progress:
        task = progress.add_task("MD", total=len(starts))
        for index, atoms in enumerate(starts):
            result = run_md(atoms, driver, settings)
            for snapshot in result.snapshots:
                snapshot.info["md_start"] = index
            snapshots += result.snapshots
            runs.append({"start": index, "stable": result.stable, "reason": result.reason,
                         "steps_done": result.steps_done, "n_snapshots": len(result.snapshots)})
            progress.advance(task)
    if snapshots:
        write_extxyz(out, snapshots)
    payload = {"n_starts": len(starts), "n_snapshots": len(snapshots), "n_unstable": sum(not r["stable"] for r in runs),
               "out": str(out) if snapshots else None, "runs": runs}
    if as_json:
        emit(payload)
    else:
        for run in runs:
            if not run["stable"]:
                err.print(f"[yellow]start {run['start']}:[/] {run['reason']}", highlight=False)
        if snapshots:
            err.print(f"{len(snapshots)} snapshots from {len(starts)} runs → {out}")
    if not snapshots:
        fail(f"no snapshots: every run stopped before its first ({len(starts)} runs, reasons above); nothing written",
             EXIT_PARTIAL)


@app.command()
@guard
def generate(
    elements: Annotated[list[str], typer.Argument(help="Chemical elements, e.g. Cu W.")],
    out: OutStructures,
    n: Annotated[int, typer.Option("--n", min=1, help="Strained-rattled cells per element (vacancies, pairs: n/2).")] = 4,
    max_atoms: Annotated[int, typer.Option("--max-atoms", min=1)] = 16,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="strained, vacancies, surfaces, dimers, pairs (repeat).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Starting structures: strained and rattled supercells, vacancies, surfaces, dimers, short pairs."""
    from collections import Counter

    from uq_flows.explore.generators import GENERATORS, starting_set

    check_out(out, STRUCTURE_OUTPUTS)
    structures = starting_set(elements, n, max_atoms, seed, kind or GENERATORS)
    write_extxyz(out, structures)
    counts = Counter(a.info["generator"].split(" ")[0] for a in structures)
    payload = {"out": str(out), "n_structures": len(structures), "kinds": dict(counts),
               "max_atoms": max(len(a) for a in structures)}
    if as_json:
        emit(payload)
        return
    err.print(f"wrote {len(structures)} structures to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
