"""Commands of the labelling stage: label (CP2K, VASP, teachers)."""

from __future__ import annotations

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
)


@app.command()
@guard
def label(
    files: Annotated[list[Path], typer.Argument(help="Structure files or folders to label.")],
    labeller: Annotated[str, typer.Option("--model", help="cp2k or vasp (DFT labels), or a model as for score --model (teacher labels).")],
    forces_from: Annotated[str | None, typer.Option("--forces-from", help="Teacher labels: take forces from this model instead.")] = None,
    kpoints: Annotated[tuple[int, int, int] | None, typer.Option("--kpoints", help="DFT k-point mesh N1 N2 N3, each ≥ 1 (default: Γ-centred, spacing 2π × 0.03 Å⁻¹).")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Keep DFT run folders here (default: a temporary folder).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Labelled structures: extxyz or pacemaker pickle.")] = None,
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="Exit 0 and write --out even if some labels failed.")] = False,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Label structures locally with CP2K, VASP or a teacher (energies total in eV, forces in eV/Å)."""
    import tempfile

    from uq_flows.io import (
        EXTXYZ_SUFFIXES,
        PACEMAKER_SUFFIXES,
        read_many,
        write_structures,
    )
    from uq_flows.records import structure_id
    from uq_flows.settings import get_settings

    check_out(out, PACEMAKER_SUFFIXES + EXTXYZ_SUFFIXES)
    if kpoints is not None and labeller not in ("cp2k", "vasp"):
        fail("--kpoints applies to the DFT labellers cp2k and vasp")
    if forces_from is not None and labeller in ("cp2k", "vasp"):
        fail("--forces-from applies to teacher labellers")
    if kpoints is not None and min(kpoints) < 1:
        fail(f"--kpoints must be at least 1 in each direction, got {' '.join(map(str, kpoints))}: give e.g. "
             "--kpoints 3 3 3 (1 1 1 is Γ only), or leave it out for the default spacing")
    cp2k = _cp2k_labeller(kpoints) if labeller == "cp2k" else None  # settings and executable checked before any work
    structures = read_many(files)
    decimals = get_settings().structure_id_decimals
    ids = [structure_id(atoms, decimals) for atoms in structures]
    with tempfile.TemporaryDirectory(prefix="uq-label-") as scratch:
        folder = workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        labels = _run_labeller(labeller, forces_from, kpoints, cp2k, structures, ids, folder, device)
    rows = [
        {"id": x.id, "status": x.status, "kind": x.kind, "source": x.source, "energy": x.energy,
         "forces": x.forces, "stress": x.stress, "reason": x.reason}
        | ({"kpoints": x.provenance.get("kpoints"), "n_kpoints": x.provenance.get("n_kpoints")} if labeller == "cp2k" else {})
        for x in labels
    ]
    failed = [row for row in rows if row["status"] != "ok"]
    payload: dict[str, Any] = {"labeller": labeller, "n_structures": len(rows), "n_failed": len(failed), "labels": rows}
    if failed and not allow_failed:
        payload["error"] = f"{len(failed)} of {len(rows)} structures could not be labelled"
    elif out is not None:
        good = [(atoms, x) for atoms, x in zip(structures, labels) if x.status == "ok"]
        write_structures(out, [x.to_atoms(atoms) for atoms, x in good],
                         label_source=[x.kind for _, x in good], source=[x.source for _, x in good])
        payload["out"] = str(out)
    if as_json:
        emit(payload)
    else:
        from uq_flows.labeling.cp2k import describe_mesh

        table = Table(title=f"labels from {labeller}")
        mesh_column = ("k-mesh",) if labeller == "cp2k" else ()
        for column in ("#", "id", "status", *mesh_column, "energy (eV)", "max |F| (eV/Å)", "reason"):
            table.add_column(column)
        for index, (row, x) in enumerate(zip(rows, labels)):
            largest = max(sum(c * c for c in f) ** 0.5 for f in x.forces) if x.forces else None
            mesh = (describe_mesh(x.provenance),) if labeller == "cp2k" else ()
            table.add_row(str(index), row["id"], row["status"], *mesh, fmt(row["energy"], 10), fmt(largest), row["reason"] or "")
        err.print(table)
    if "error" in payload:
        fail(payload["error"] + " (use --allow-failed to keep the others)", EXIT_PARTIAL)


def _cp2k_labeller(kpoints):
    """The CP2K labeller of the command line; an InputError (exit 2) for bad settings or no CP2K."""
    from uq_flows.labeling.cp2k import Cp2kLabeller, Cp2kSettings, check_executable

    runner = Cp2kLabeller.from_settings(Cp2kSettings.checked({"kpoints": kpoints}))
    check_executable(runner.command)
    return runner


def _run_labeller(labeller, forces_from, kpoints, cp2k, structures, ids, folder, device=None):
    if labeller == "cp2k":
        labels = []
        with progress_bar() as progress:
            task = progress.add_task("cp2k", total=len(structures))
            for atoms, structure_id in zip(structures, ids):
                labels.append(cp2k.label(atoms, structure_id, folder))
                progress.advance(task)
        return labels
    if labeller == "vasp":
        from uq_flows.labeling.jobs import run_vasp_locally

        return run_vasp_locally(structures, ids, folder, kpoints)
    from uq_flows.ensemble.members import parse_member
    from uq_flows.labeling.teacher import teacher_labels

    with progress_bar() as progress:
        tasks: dict[str, object] = {}

        def report(member: str, done: int) -> None:
            if member not in tasks:
                tasks[member] = progress.add_task(member, total=len(structures))
            progress.update(tasks[member], completed=done)

        return teacher_labels(structures, ids, parse_member(labeller),
                              parse_member(forces_from) if forces_from else None, device, progress=report)
