"""Commands of the scoring stage: score, evaluate, mix, measure-rmse (paper 001)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from uq_flows.cli.common import (
    EXIT_PARTIAL,
    DeviceOption,
    JsonOption,
    PredictionOption,
    ReferenceOption,
    RmseOption,
    TopNOption,
    VariantOption,
    WeightsOption,
    app,
    check_out,
    emit,
    energy_convention,
    err,
    fail,
    fmt,
    guard,
    pairs,
    progress_bar,
    rmse_pairs,
)
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL
from uq_flows.screening import HARD_MIN_DISTANCE, check_min_distance


@app.command()
@guard
def score(
    files: Annotated[list[Path], typer.Argument(help="Structure files or folders (extxyz, pacemaker pickle, POSCAR/CIF).")],
    model: Annotated[list[str], typer.Option("--model", help="Ensemble member (repeat): a built-in name, mace:PATH, ase:module:Class, or NAME=SPEC.")],
    weights: WeightsOption = "auto",
    variant: VariantOption = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Write the scored structures (.json, .xyz or .extxyz) with U and status.")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="Folder for one extxyz of labels per member (input to evaluate/mix).")] = None,
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="Exit 0 and write --out even if some structures could not be scored.")] = False,
    device: DeviceOption = None,
    min_distance: Annotated[float, typer.Option("--min-distance", help="Reject structures with two atoms closer than this (Å, periodic images included; 0: off); no member runs on them.")] = HARD_MIN_DISTANCE,
    as_json: JsonOption = False,
) -> None:
    """Score structures with a heterogeneous uMLIP ensemble and compute U (paper 001, eq. 1)."""
    from uq_flows.ensemble.members import parse_member
    from uq_flows.ensemble.scoring import functional_warnings, score_structures
    from uq_flows.io import read_many, with_labels, write_extxyz
    from uq_flows.records import structure_id
    from uq_flows.settings import get_settings

    check_out(out, (".json", ".xyz", ".extxyz"))
    check_min_distance(min_distance)
    if predictions is not None and predictions.exists() and not predictions.is_dir():
        fail(f"--predictions {predictions}: not a folder")
    specs = [parse_member(text) for text in model]
    if len(specs) < 2:
        fail("an ensemble needs at least two --model")
    structures = read_many(files)
    decimals = get_settings().structure_id_decimals
    for atoms in structures:
        atoms.info["uq_id"] = structure_id(atoms, decimals)
    warnings = functional_warnings(specs)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)

    with progress_bar() as progress:
        tasks = {spec.name: progress.add_task(spec.name, total=len(structures)) for spec in specs}
        scores, member_predictions = score_structures(
            structures, specs, weights, variant, device,
            progress=lambda name, k: progress.update(tasks[name], completed=k), min_distance=min_distance,
        )
    rows = scores.rows(structures)
    failed = [row for row in rows if row["status"] != "ok"]
    payload = {
        "members": [
            {"name": s.name, "weight": float(w), "functional": s.functional, "version": s.version}
            for s, w in zip(specs, scores.weights)
        ],
        "weights_source": scores.weights_source,
        "variant": variant,
        "min_distance": min_distance,
        "n_structures": len(rows),
        "n_failed": len(failed),
        "warnings": warnings,
        "structures": rows,
    }
    if failed and not allow_failed:
        payload["error"] = f"{len(failed)} of {len(rows)} structures could not be scored"
    else:
        if out is not None:
            _write_scored(out, structures, rows, payload)
            payload["out"] = str(out)
        if predictions is not None:
            predictions.mkdir(parents=True, exist_ok=True)
            for p in member_predictions:
                labelled = [
                    with_labels(atoms, p.energies[j], p.structure_forces(j), status=p.status[j])
                    for j, atoms in enumerate(structures)
                ]
                write_extxyz(predictions / f"{p.member.replace('/', '_')}.extxyz", labelled)
            payload["predictions"] = str(predictions)
    if as_json:
        emit(payload)
    else:
        _score_table(rows, payload)
    if "error" in payload:
        fail(payload["error"] + "; statuses above (use --allow-failed to keep the others)", EXIT_PARTIAL)


def _write_scored(out: Path, structures, rows, payload) -> None:
    from uq_flows.io import atomic_path, write_extxyz

    if out.suffix.lower() == ".json":
        from uq_flows.records import jsonable

        with atomic_path(out) as temporary:
            temporary.write_text(json.dumps(jsonable(payload), indent=1))
        return
    tagged = []
    for atoms, row in zip(structures, rows):
        copy = atoms.copy()
        copy.info.pop("uq_source", None)
        copy.info.update({"uq_id": row["id"], "U": row["U"] if row["U"] is not None else math.nan,
                          "status": row["status"], "source_file": row["source"]})
        tagged.append(copy)
    write_extxyz(out, tagged)


def _score_table(rows, payload) -> None:
    table = Table(title=f"U ({payload['weights_source']} weights, variant {payload['variant']})")
    for column in ("#", "id", "formula", "atoms", "U (eV/Å)", "status"):
        table.add_column(column, justify="right" if column in ("#", "atoms", "U (eV/Å)") else "left")
    for index, row in enumerate(rows):
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}: {row['reason']}[/]"
        table.add_row(str(index), row["id"], row["formula"], str(row["n_atoms"]), fmt(row["U"]), status)
    err.print(table)


def _load_ensemble(reference, prediction, reference_energy, prediction_energy):
    from uq_flows.ensemble.precomputed import PrecomputedEnsemble

    return PrecomputedEnsemble.load(reference, pairs(prediction, "--prediction"), reference_energy, prediction_energy)


def _matching_line(ensemble) -> str:
    """How predictions were paired with reference configurations, for the terminal."""
    reordered = f"; re-ordered to the reference: {', '.join(ensemble.reordered)}" if ensemble.reordered else ""
    return f"predictions matched to reference configurations by {ensemble.matched_by}{reordered}"




@app.command()
@guard
def evaluate(
    reference: ReferenceOption,
    prediction: PredictionOption,
    rmse: RmseOption = None,
    weights: WeightsOption = "auto",
    top_n: TopNOption = None,
    variant: VariantOption = 1,
    uc: Annotated[list[float] | None, typer.Option("--uc", min=0, help="Threshold U_c in eV/Å (repeat; inf allowed).")] = None,
    target_rmse: Annotated[float | None, typer.Option("--target-rmse", min=0, help="Report the U_c whose trusted set reaches this force RMSE (eV/Å).")] = None,
    reference_energy: Annotated[str, typer.Option("--reference-energy", help="Reference energies are total or per-atom.")] = "total",
    prediction_energy: Annotated[str, typer.Option("--prediction-energy", help="Predicted energies are total or per-atom.")] = "total",
    plot: Annotated[Path | None, typer.Option("--plot", help="Folder for PNG figures.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Judge U against reference labels: Spearman ρ, thresholds, accuracy–coverage (paper 001)."""
    import numpy as np

    from uq_flows import plots
    from uq_flows.uncertainty import (
        accuracy_coverage,
        force_error_terms,
        spearman,
        summarize_thresholds,
        threshold_for_target_force_rmse,
    )

    energy_convention(reference_energy, "--reference-energy")
    energy_convention(prediction_energy, "--prediction-energy")
    ensemble = _load_ensemble(reference, prediction, reference_energy, prediction_energy)
    chosen = ensemble.weights(rmse_pairs(rmse or []), weights, top_n)
    u = ensemble.uncertainty(chosen, variant)
    error = ensemble.mean_force_error(chosen.members)
    mean = ensemble.mean_labels(chosen.members)
    sq_sum, n_components = force_error_terms(ensemble.reference.forces, mean.forces, ensemble.n_atoms)
    energy_error = (mean.energies - ensemble.reference.energies) / ensemble.n_atoms
    rho = spearman(u, error) if len(u) >= 3 else math.nan
    summaries = summarize_thresholds(u, ensemble.n_atoms, uc or [], sq_sum, n_components, energy_error)
    curve = accuracy_coverage(u, energy_error, sq_sum, n_components)
    payload: dict[str, Any] = {
        "n_configs": len(u),
        "n_atoms": int(ensemble.n_atoms.sum()),
        "spearman": rho,
        "variant": variant,
        "weights_source": chosen.source,
        "members": [
            {"name": name, "rank": rank, "weight": float(w), "rmse": (chosen.rmse or {}).get(name)}
            for rank, (name, w) in enumerate(zip(chosen.members, chosen.weights), start=1)
        ],
        "force_rmse": float(np.sqrt(sq_sum.sum() / n_components.sum())),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(energy_error**2))),
        "thresholds": [vars(s) for s in summaries],
        "u": {"min": float(u.min()), "median": float(np.median(u)), "max": float(u.max())},
        "matched_by": ensemble.matched_by,
        "reordered": list(ensemble.reordered),
    }
    if target_rmse is not None:
        payload["uc_for_target_rmse"] = {
            "target": target_rmse,
            "uc": threshold_for_target_force_rmse(u, sq_sum, n_components, target_rmse),
        }
    if plot is not None:
        plot.mkdir(parents=True, exist_ok=True)
        payload["plots"] = [
            str(plots.uncertainty_parity(u, error, plot / "u_vs_error.png", rho)),
            str(plots.accuracy_coverage(curve.coverage, curve.energy_rmse, curve.force_rmse, plot / "accuracy_coverage.png")),
        ]
    if as_json:
        emit(payload)
        return
    err.print(
        f"{payload['n_configs']} configurations, {payload['n_atoms']} atoms; members "
        + ", ".join(f"{m['name']} (w={m['weight']:.3f})" for m in payload["members"])
        + f"\n{_matching_line(ensemble)}"
        + f"\nSpearman ρ(U, error) = {fmt(rho, 3)}; ensemble-mean force RMSE {fmt(payload['force_rmse'])} eV/Å",
        highlight=False,
    )
    if summaries:
        table = Table(title="thresholds")
        for column in ("U_c (eV/Å)", "configs < U_c", "DFT atoms", "DFT configs", "force RMSE < U_c (eV/Å)"):
            table.add_column(column, justify="right")
        for s in summaries:
            table.add_row(fmt(s.uc), str(s.n_below), f"{s.dft_atom_fraction:.1%}", f"{s.dft_config_fraction:.1%}", fmt(s.force_rmse_below))
        err.print(table)
    if "uc_for_target_rmse" in payload:
        err.print(f"U_c for force RMSE ≤ {target_rmse} eV/Å: {fmt(payload['uc_for_target_rmse']['uc'])}")


@app.command()
@guard
def mix(
    reference: ReferenceOption,
    prediction: PredictionOption,
    uc: Annotated[float, typer.Option("--uc", min=0, help="Threshold U_c (eV/Å): U < U_c takes teacher labels.")],
    energy_from: Annotated[str, typer.Option("--energy-from", help="Prediction NAME whose energies teach.")],
    forces_from: Annotated[str, typer.Option("--forces-from", help="Prediction NAME whose forces teach.")],
    out: Annotated[Path, typer.Option("--out", help="Distilled dataset: pacemaker pickle (.pkl.gz ...) or extxyz.")],
    rmse: RmseOption = None,
    weights: WeightsOption = "auto",
    top_n: TopNOption = None,
    variant: VariantOption = 1,
    reference_energy: Annotated[str, typer.Option("--reference-energy", help="Reference energies are total or per-atom.")] = "total",
    prediction_energy: Annotated[str, typer.Option("--prediction-energy", help="Predicted energies are total or per-atom.")] = "total",
    align_energies: Annotated[str, typer.Option("--align-energies", help="Shift teacher energies onto the reference scale by per-element constants: auto (when the mean per-atom energies differ by more than 0.1 eV/atom), on, off.")] = "auto",
    align_sample: Annotated[int, typer.Option("--align-sample", min=1, help="Random configurations the shifts are fitted on (capped at the number of configurations).")] = 20,
    align_max_residual: Annotated[float, typer.Option("--align-max-residual", help="Refuse the alignment when its per-atom residual RMSE exceeds this (eV/atom).")] = DEFAULT_MAX_RESIDUAL,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random alignment sample.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Build a distilled dataset: teacher labels where U < U_c, reference labels elsewhere (UAMD)."""
    import numpy as np

    from uq_flows.io import (
        EXTXYZ_SUFFIXES,
        PACEMAKER_SUFFIXES,
        with_labels,
        write_structures,
    )
    from uq_flows.labeling.mixing import ALIGN_MODES, align_teacher_energies, label_errors, mix_labels
    from uq_flows.records import structure_id
    from uq_flows.settings import get_settings

    energy_convention(reference_energy, "--reference-energy")
    energy_convention(prediction_energy, "--prediction-energy")
    check_out(out, PACEMAKER_SUFFIXES + EXTXYZ_SUFFIXES)
    if align_energies not in ALIGN_MODES:
        fail(f"--align-energies must be one of {', '.join(ALIGN_MODES)}, got {align_energies!r}")
    if not align_max_residual > 0:
        fail(f"--align-max-residual must be positive, got {align_max_residual}")
    names = pairs(prediction, "--prediction")
    for option, name in (("--energy-from", energy_from), ("--forces-from", forces_from)):
        if name not in names:
            fail(f"{option} {name}: no --prediction of that name (have {', '.join(names)})")
    ensemble = _load_ensemble(reference, prediction, reference_energy, prediction_energy)
    chosen = ensemble.weights(rmse_pairs(rmse or []), weights, top_n)
    u = ensemble.uncertainty(chosen, variant)
    numbers = [atoms.numbers for atoms in ensemble.structures]
    alignment = align_teacher_energies(numbers, ensemble.reference, ensemble.predictions[energy_from], align_energies,
                                       align_sample, seed, align_max_residual)
    shifts, problems = alignment.configuration_shifts(numbers)
    mixed = mix_labels(ensemble.reference, ensemble.predictions[energy_from], ensemble.predictions[forces_from], u, uc,
                       shifts)
    energy_rmse, force_rmse = label_errors(mixed.labels, ensemble.reference)
    teacher_energy_rmse, teacher_force_rmse = label_errors(mixed.labels, ensemble.reference, mixed.teacher)

    decimals = get_settings().structure_id_decimals
    offsets = mixed.labels.n_atoms.cumsum() - mixed.labels.n_atoms
    structures = [
        with_labels(atoms, mixed.labels.energies[j], mixed.labels.forces[offsets[j] : offsets[j] + len(atoms)])
        for j, atoms in enumerate(ensemble.structures)
    ]
    sources = mixed.label_source
    write_structures(
        out,
        structures,
        uq_id=[structure_id(atoms, decimals) for atoms in structures],
        U=[float(x) for x in u],
        label_source=sources,
        energy_source=[energy_from if s == "teacher" else "reference" for s in sources],
        forces_source=[forces_from if s == "teacher" else "reference" for s in sources],
        energy_shift=[float(x) for x in mixed.energy_shift],
    )
    unalignable_reasons = sorted({problems[j] for j in np.flatnonzero(mixed.unalignable)})
    fit = alignment.fit
    payload = {
        "out": str(out),
        "uc": uc,
        "n_configs": len(u),
        "n_teacher": int(mixed.teacher.sum()),
        "n_dft": int((~mixed.teacher).sum()),
        "dft_atom_fraction": mixed.dft_atom_fraction,
        "dft_config_fraction": mixed.dft_config_fraction,
        # the DFT a campaign pays: the alignment needs reference labels on its sample too
        "dft_atom_fraction_with_alignment_sample": mixed.paid_atom_fraction(alignment.sample),
        "energy_rmse_per_atom": energy_rmse,
        "force_rmse": force_rmse,
        "label_errors": {
            "all": {"n_configs": len(u), "energy_rmse_per_atom": energy_rmse, "force_rmse": force_rmse},
            "teacher": {"n_configs": int(mixed.teacher.sum()), "energy_rmse_per_atom": teacher_energy_rmse,
                        "force_rmse": teacher_force_rmse},
        },
        "energy_from": energy_from,
        "forces_from": forces_from,
        "members": chosen.members,
        "weights_source": chosen.source,
        "matched_by": ensemble.matched_by,
        "reordered": list(ensemble.reordered),
        "alignment": {
            "applied": alignment.applied,
            "mode": alignment.mode,
            "mean_difference_per_atom": alignment.mean_difference_per_atom,
            "shifts": fit.shifts if fit else {},
            "residual_rmse_per_atom": fit.residual_rmse_per_atom if fit else None,
            "max_residual": align_max_residual,
            "rank_deficient": fit.rank_deficient if fit else None,
            "n_sample": len(alignment.sample),
            "sample": fit.sample if fit else None,
            "seed": seed,
            "sample_indices": [int(j) for j in alignment.sample],
            "n_unalignable": int(mixed.unalignable.sum()),
            "unalignable_reasons": unalignable_reasons,
            "warning": alignment.warning,
        },
    }
    if as_json:
        emit(payload)
        return
    n_teacher = payload["n_teacher"]
    lines = [
        f"wrote {out}: {n_teacher} teacher-labelled, {payload['n_dft']} reference-labelled configurations; "
        f"DFT share {mixed.dft_atom_fraction:.1%} of atoms, {mixed.dft_config_fraction:.1%} of configurations"
        + (f" ({payload['dft_atom_fraction_with_alignment_sample']:.1%} of atoms with the alignment sample, "
           "whose reference labels are needed too)" if len(alignment.sample) else ""),
        _matching_line(ensemble),
    ]
    if fit:
        shifts_text = ", ".join(f"{el} {value:+.4f}" for el, value in fit.shifts.items())
        lines.append(
            f"teacher energies aligned to the reference ({alignment.mode}; mean difference "
            f"{alignment.mean_difference_per_atom:+.3g} eV/atom): shifts {shifts_text} eV/atom fitted on "
            f"{len(alignment.sample)} random configurations, residual {fit.residual_rmse_per_atom * 1000:.3g} meV/atom"
        )
    else:
        lines.append(f"teacher energies not aligned ({alignment.mode}; mean difference "
                     f"{alignment.mean_difference_per_atom:+.3g} eV/atom)")
    if mixed.unalignable.any():
        lines.append(f"{int(mixed.unalignable.sum())} configurations below U_c kept reference labels: "
                     + "; ".join(unalignable_reasons))
    if alignment.warning:
        lines.append(f"[yellow]warning:[/] {alignment.warning}")
    lines.append(
        f"labels vs reference over all {len(u)} configurations (reference-labelled ones exact): energy RMSE "
        f"{energy_rmse * 1000:.3g} meV/atom{' after alignment' if fit else ''}, force RMSE {force_rmse:.3g} eV/Å"
    )
    if n_teacher:
        lines.append(
            f"over the {n_teacher} teacher-labelled configurations: energy RMSE {teacher_energy_rmse * 1000:.3g} "
            f"meV/atom{' after alignment' if fit else ''}, force RMSE {teacher_force_rmse:.3g} eV/Å"
        )
    err.print("\n".join(lines), highlight=False)


@app.command("measure-rmse")
@guard
def measure_rmse(
    reference: Annotated[list[Path], typer.Argument(help="Labelled reference structures (extxyz or pacemaker pickle).")],
    model: Annotated[list[str], typer.Option("--model", help="Model to measure (repeat), as for score --model.")],
    out: Annotated[Path, typer.Option("--out", help="RMSE file (.json) usable as --weights FILE.")],
    reference_energy: Annotated[str, typer.Option("--reference-energy", help="Reference energies are total or per-atom.")] = "total",
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure each member's force RMSE on a labelled reference set, for inverse-RMSE weights."""
    from uq_flows.ensemble.members import load_calculator, parse_member
    from uq_flows.ensemble.precomputed import check_unique, identities, identity_kind
    from uq_flows.ensemble.predict import predict_member
    from uq_flows.ensemble.rmse import measure_force_rmse, write_rmse_file
    from uq_flows.io import read_labels, read_many
    from uq_flows.settings import get_settings

    energy_convention(reference_energy, "--reference-energy")
    check_out(out, (".json",))
    specs = [parse_member(text) for text in model]
    structures = read_many(reference)
    # members run on these structures, so predictions pair with them by construction; a structure
    # given twice (e.g. in two of the files) would count twice in the RMSE
    kind = identity_kind(structures)
    check_unique(structures, identities(structures, kind, get_settings().structure_id_decimals), kind)
    labels = read_labels(structures, reference_energy)
    rmse, used, versions = {}, {}, {}
    with progress_bar() as progress:
        for spec in specs:
            task = progress.add_task(spec.name, total=len(structures))
            predicted = predict_member(spec, structures, calculator=load_calculator(spec, device),
                                       progress=lambda k, t=task: progress.update(t, completed=k))
            rmse[spec.name], used[spec.name] = measure_force_rmse(predicted, labels.forces)
            versions[spec.name] = spec.version
    meta = {"reference": [str(p) for p in reference], "n_structures": len(structures), "n_used": used, "versions": versions}
    write_rmse_file(out, rmse, meta)
    payload = {"out": str(out), "rmse": rmse, **meta}
    if as_json:
        emit(payload)
        return
    table = Table(title=f"force RMSE on {len(structures)} reference structures")
    for column in ("member", "RMSE (eV/Å)", "structures used"):
        table.add_column(column)
    for name, value in rmse.items():
        table.add_row(name, fmt(value), str(used[name]))
    err.print(table)
    err.print(f"wrote {out}")
