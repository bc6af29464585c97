"""Command of the selection stage: select (query by committee + DIRECT, paper 003)."""

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
    app,
    check_out,
    emit,
    err,
    fail,
    fmt,
    guard,
    progress_bar,
)


def _limit(value: float, option: str) -> float | None:
    """A pre-filter limit; inf switches it off."""
    if math.isnan(value) or value <= 0:
        fail(f"{option} must be a positive number (inf switches the pre-filter off), got {value}")
    return None if math.isinf(value) else value


def _multipliers(values: list[str], no_defaults: bool) -> dict[str, float]:
    from uq_flows.selection.qbc import DEFAULT_MULTIPLIERS

    multipliers = {} if no_defaults else dict(DEFAULT_MULTIPLIERS)
    for text in values:
        rule, sep, value = text.partition("=")
        try:
            multipliers[rule.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not rule.strip():
            fail(f"--multiplier takes RULE=FACTOR (an element symbol or noble_gas/actinoid/lanthanoid), got {text!r}")
    return multipliers


def _read_references(path: Path | None) -> dict | None:
    if path is None:
        return None
    import yaml

    if not path.is_file():
        fail(f"--elemental-references {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as exc:
        fail(f"--elemental-references {path}: not JSON/YAML: {exc}")
    if not isinstance(data, dict) or not data:
        fail(f"--elemental-references {path}: expected a mapping {{symbol: eV/atom}} or {{member: {{symbol: eV/atom}}}}")
    return data


def _read_features(path: Path):
    import numpy as np

    from uq_flows.errors import InputError

    if not path.is_file():
        fail(f"--features {path}: no such file")
    if path.suffix.lower() != ".npy":
        fail(f"--features {path}: give a NumPy .npy file holding an (n_structures × n_features) array")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--features {path}: cannot read: {exc}") from exc


@app.command()
@guard
def select(
    candidates: Annotated[list[Path] | None, typer.Argument(help="Candidate structures: files or folders (extxyz, pacemaker pickle, POSCAR/CIF).")] = None,
    committee: Annotated[list[str] | None, typer.Option("--model", help="QBC committee member (repeat, ≥ 2): a model as for score --model, or an ACE potential [NAME=]PATH.yaml|.yace.")] = None,
    no_qbc: Annotated[bool, typer.Option("--no-qbc", help="Skip query by committee: DIRECT on every candidate.")] = False,
    descriptor: Annotated[str | None, typer.Option("--descriptor", help="Structure descriptor: chgnet-0.3.0 (default), sevennet-0-11jul2024, other CHGNet/SevenNet members, or ace:PATH.yaml.")] = None,
    features: Annotated[Path | None, typer.Option("--features", help="Precomputed descriptors: .npy of shape (n_structures, n_features), rows in candidate order; QBC is skipped.")] = None,
    n_clusters: Annotated[int | None, typer.Option("--n-clusters", min=1, help="Target number of clusters (the BIRCH threshold is lowered until reached).")] = None,
    birch_threshold: Annotated[float | None, typer.Option("--birch-threshold", help="BIRCH threshold (default 0.1, MP-ALOE; 0.5 as the start with --n-clusters).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Structures taken per cluster.")] = 1,
    mode: Annotated[str, typer.Option("--mode", help="center (ranks by distance to the centre), random, or smallest (fewest atoms).")] = "center",
    seed: Annotated[int, typer.Option("--seed", help="Seed of --mode random and of the coverage baseline.")] = 0,
    no_pc_weighting: Annotated[bool, typer.Option("--no-pc-weighting", help="Do not weight PCA scores by their explained-variance ratio.")] = False,
    energy_threshold: Annotated[float, typer.Option("--energy-threshold", help="QBC threshold on the std of energy per atom (eV/atom).")] = 0.1,
    force_threshold: Annotated[float, typer.Option("--force-threshold", help="QBC threshold on the pairwise force RMS difference (eV/Å).")] = 0.1,
    stress_threshold: Annotated[float, typer.Option("--stress-threshold", help="QBC threshold on the pairwise Voigt stress difference (eV/Å³).")] = 0.1,
    multiplier: Annotated[list[str] | None, typer.Option("--multiplier", help="RULE=FACTOR threshold multiplier (repeat): an element symbol or noble_gas, actinoid, lanthanoid; overrides MP-ALOE's.")] = None,
    no_default_multipliers: Annotated[bool, typer.Option("--no-default-multipliers", help="Start from no multipliers instead of MP-ALOE's (noble gas 5, He 3, Ne 2, Tc 4, actinoid 4, lanthanoid 3).")] = False,
    no_site_scaling: Annotated[bool, typer.Option("--no-site-scaling", help="Do not multiply thresholds by sqrt(N_sites)/sqrt(2).")] = False,
    max_force: Annotated[float, typer.Option("--max-force", help="Pre-filter: discard if the median largest force exceeds this (eV/Å; inf: off).")] = 50.0,
    max_pressure: Annotated[float, typer.Option("--max-pressure", help="Pre-filter: discard if the median |pressure| exceeds this (eV/Å³; inf: off).")] = 0.5,
    max_formation_energy: Annotated[float, typer.Option("--max-formation-energy", help="Pre-filter: discard if the median formation energy exceeds this (eV/atom; needs --elemental-references; inf: off).")] = 0.25,
    elemental_references: Annotated[Path | None, typer.Option("--elemental-references", help="JSON/YAML {symbol: eV/atom} or {member: {symbol: eV/atom}} for formation energies.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of the first two PCA components with the selection.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Selected structures (.xyz/.extxyz, tagged with uq_id, cluster and QBC metrics) or the report (.json).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the descriptor cache.")] = False,
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="Exit 0 and write --out even if a committee member or the descriptor failed on some candidates.")] = False,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Select candidates for labelling: query by committee, then DIRECT down-sampling (paper 003)."""
    from uq_flows.io import read_many
    from uq_flows.records import structure_id
    from uq_flows.selection.direct import MODES, DirectConfig
    from uq_flows.selection.pipeline import select_candidates
    from uq_flows.selection.qbc import QBCConfig
    from uq_flows.settings import get_settings

    candidates = list(candidates or [])
    committee = list(committee or [])
    if not candidates and features is None:
        fail("no candidates: give candidate structure files, --features FILE.npy, or both")
    if features is not None and committee:
        fail("--features skips QBC: drop --model, or drop --features to describe the QBC-selected structures")
    if no_qbc and committee:
        fail("--no-qbc and --model (a QBC committee) contradict each other")
    if features is None and not no_qbc and not committee:
        fail("query by committee needs a committee: --model at least twice; or give --no-qbc")
    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if birch_threshold is not None and not (birch_threshold > 0 and math.isfinite(birch_threshold)):
        fail(f"--birch-threshold must be a positive number, got {birch_threshold}")
    if features is not None and descriptor is not None:
        fail("--descriptor and --features both give the descriptors; choose one")
    check_out(out, (".json", ".xyz", ".extxyz"))
    if out is not None and out.suffix.lower() != ".json" and not candidates:
        fail(f"--out {out}: writing structures needs the candidate structures; use a .json report")
    if plot is not None:
        check_out(plot, (".png",))

    qbc_config = None
    if committee:
        qbc_config = QBCConfig(
            energy_threshold=energy_threshold,
            force_threshold=force_threshold,
            stress_threshold=stress_threshold,
            multipliers=_multipliers(multiplier or [], no_default_multipliers),
            site_scaling=not no_site_scaling,
            max_formation_energy=_limit(max_formation_energy, "--max-formation-energy"),
            max_force=_limit(max_force, "--max-force"),
            max_pressure=_limit(max_pressure, "--max-pressure"),
            elemental_references=_read_references(elemental_references),
        )
    direct_config = DirectConfig(
        n_clusters=n_clusters, threshold=birch_threshold, k=k, mode=mode,
        weighting=not no_pc_weighting, seed=seed,
    )
    feature_array = _read_features(features) if features is not None else None
    structures = read_many(candidates) if candidates else None
    ids = None
    if structures is not None:
        decimals = get_settings().structure_id_decimals
        ids = [structure_id(atoms, decimals) for atoms in structures]

    with progress_bar() as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        result = select_candidates(
            structures, committee=committee or None, qbc_config=qbc_config, descriptor=descriptor,
            features=feature_array, direct_config=direct_config, cache=not no_cache, device=device,
            progress=report,
        )
    payload = result.summary()
    if ids is not None:
        payload["ids"] = [ids[j] for j in result.selected]
    if qbc_config is not None and qbc_config.elemental_references is None and qbc_config.max_formation_energy is not None:
        payload["notes"].append("formation-energy pre-filter off: no --elemental-references")
    if payload["failed"] and not allow_failed:
        payload["error"] = f"{len(payload['failed'])} of {result.n_candidates} candidates could not be evaluated"
    else:
        if plot is not None and result.direct is not None:
            from uq_flows.selection.coverage import plot_selection

            plot_selection(result.direct.scores, result.direct.selected, plot,
                           title=f"{len(result.selected)} of {len(result.described)} candidates, {result.direct.n_clusters} clusters")
            payload["plot"] = str(plot)
        if out is not None:
            _write_out(out, payload, result, structures, ids)
            payload["out"] = str(out)
    if as_json:
        emit(payload)
    else:
        _summary_table(payload)
    if "error" in payload:
        fail(payload["error"] + "; see 'failed' (use --allow-failed to select among the others)", EXIT_PARTIAL)


def _write_out(out: Path, payload: dict, result, structures, ids) -> None:
    from uq_flows.io import atomic_path, write_extxyz
    from uq_flows.records import jsonable

    if out.suffix.lower() == ".json":
        with atomic_path(out) as temporary:
            temporary.write_text(json.dumps(jsonable(payload), indent=1))
        return
    labels = result.labels
    chosen = []
    for j in result.selected:
        atoms = structures[j].copy()
        atoms.calc = structures[j].calc
        source = atoms.info.pop("uq_source", None)
        atoms.info.update({"uq_id": ids[j], "candidate_index": int(j), "cluster": int(labels[j])})
        if source is not None:
            atoms.info["source_file"] = source
        if result.qbc is not None:
            for name, value in zip(("qbc_energy", "qbc_force", "qbc_stress"), result.qbc.metrics[j]):
                if math.isfinite(value):
                    atoms.info[name] = float(value)
        chosen.append(atoms)
    if not chosen:
        with atomic_path(out) as temporary:
            temporary.write_text("")
        return
    write_extxyz(out, chosen)


def _summary_table(payload: dict) -> None:
    table = Table(title="candidate selection")
    table.add_column("stage")
    table.add_column("candidates", justify="right")
    table.add_row("input", str(payload["n_candidates"]))
    if payload["qbc"] is not None:
        q = payload["qbc"]
        table.add_row(
            f"QBC ({', '.join(q['members'])}): failed {q['n_failed']}, pre-filtered {q['n_prefiltered']}, "
            f"above threshold E/F/S {q['n_exceeding']['energy']}/{q['n_exceeding']['force']}/{q['n_exceeding']['stress']}",
            str(payload["n_after_qbc"]),
        )
    if payload["descriptor"] is not None:
        d = payload["descriptor"]
        table.add_row(f"described with {d['name']} ({d['n_features']} features, {d['n_cached']} cached)", str(payload["n_described"]))
    if payload["direct"] is not None:
        d = payload["direct"]
        table.add_row(
            f"DIRECT: {d['n_components']} PCs, threshold {fmt(d['threshold'])}, {payload['n_clusters']} clusters, "
            f"k={d['config']['k']} ({d['config']['mode']})",
            str(payload["n_selected"]),
        )
    err.print(table)
    coverage = payload["coverage"]
    if coverage and coverage.get("score") is not None:
        baseline = coverage.get("random_baseline") or {}
        err.print(
            f"coverage of PCA bins: {coverage['score']:.3f} per component, {fmt(coverage['pc1_pc2'], 3)} on PC1×PC2 "
            f"(a random subset of the same size: {fmt(baseline.get('score'), 3)}, {fmt(baseline.get('pc1_pc2'), 3)})",
            highlight=False,
        )
    for note in payload["notes"]:
        err.print(f"note: {note}", highlight=False)
    for row in payload["failed"][:20]:
        err.print(f"[red]failed[/] #{row['index']} ({row['stage']}): {row['status']}: {row['reason']}", highlight=False)
    err.print(f"selected: {payload['selected'][:50]}{' ...' if len(payload['selected']) > 50 else ''}", highlight=False)
