"""Commands of the ACE stage: fit (pacemaker or linear ACE, ensembles, active sets) and gamma (papers 000, 001)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from uq_flows.cli.common import JsonOption, app, emit, err, fail, fmt, guard, need, progress_bar

logger = logging.getLogger(__name__)

BACKENDS = ("pacemaker", "linear")
CLUSTERING = ("labels", "kmeans", "birch")
OUTLIER_FILTERS = ("force-error", "force", "none")


@app.command()
@guard
def fit(
    train: Annotated[list[Path], typer.Argument(help="Labelled training structures: extxyz, pacemaker pickles or folders.")],
    backend: Annotated[str, typer.Option("--backend", help="pacemaker (nonlinear, run in the fit environment) or linear (pyace ridge).")],
    test: Annotated[Path | None, typer.Option("--test", help="Labelled test structures for test RMSEs.")] = None,
    n_members: Annotated[int, typer.Option("--n-members", min=1, help="Ensemble members, fitted with seeds SEED, SEED+1, ...")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output folder (potential files and fit.json).")] = Path("ace-fit"),
    functions: Annotated[int, typer.Option("--functions", min=1, help="Basis functions per element.")] = 72,
    cutoff: Annotated[float, typer.Option("--cutoff", min=0.5, help="Radial cutoff (Å).")] = 5.0,
    kappa: Annotated[float, typer.Option("--kappa", min=0.0, max=1.0, help="Force weight κ in L = (1−κ)L_E + κL_F.")] = 0.01,
    steps: Annotated[int, typer.Option("--steps", min=1, help="pacemaker optimizer iterations (maxiter).")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first member.")] = 42,
    bootstrap: Annotated[bool | None, typer.Option("--bootstrap/--no-bootstrap", help="Fit members on bootstrap samples (default: on for linear ensembles only).")] = None,
    active_set: Annotated[bool, typer.Option("--active-set/--no-active-set", help="Build the D-optimality active set (.asi).")] = True,
    outlier_filter: Annotated[str, typer.Option("--outlier-filter", help="Atoms left out of MaxVol: force-error (pace_activeset), force, none.")] = "force-error",
    local: Annotated[str | None, typer.Option("--local", help="Local D-optimality: cluster the training set by labels, kmeans or birch.")] = None,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Clusters for kmeans/birch.")] = 2,
    cluster_key: Annotated[str, typer.Option("--cluster-key", help="Structure info key with user cluster labels (--local labels).")] = "config_type",
    as_json: JsonOption = False,
) -> None:
    """Fit ACE potentials (energies total in eV, forces eV/Å) with their active set; writes OUT/fit.json."""
    from uq_flows.ace.basis import AceFitOptions
    from uq_flows.ace.data import read_training_set
    from uq_flows.ace.fit import SUMMARY_FILE, fit_ace

    need("pyace")
    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if local is not None and local not in CLUSTERING:
        fail(f"--local must be one of {', '.join(CLUSTERING)}, got {local!r}")
    if outlier_filter not in OUTLIER_FILTERS:
        fail(f"--outlier-filter must be one of {', '.join(OUTLIER_FILTERS)}, got {outlier_filter!r}")
    if local is not None and not active_set:
        fail("--local needs the active set (drop --no-active-set)")
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a folder")
    options = AceFitOptions(
        backend=backend, n_functions=functions, cutoff=cutoff, kappa=kappa, max_steps=steps, seed=seed,
        ensemble_size=n_members, bootstrap=bootstrap, active_set=active_set, outlier_filter=outlier_filter,
        local=local, n_clusters=clusters, cluster_key=cluster_key,
    )
    training = read_training_set(train)
    testing = read_training_set([test]) if test is not None else None
    err.print(f"{len(training)} training structures ({', '.join(training.elements)}), "
              f"{len(testing) if testing else 0} test structures; backend {backend}", highlight=False)
    with progress_bar() as bar:
        task = bar.add_task("ACE members", total=n_members)

        def log(message: str) -> None:
            logger.info(message)
            bar.update(task, description=message)

        result = fit_ace(training, options, out, testing, log=log,
                         progress=lambda done: bar.update(task, completed=done))
    payload: dict[str, Any] = {
        "backend": backend,
        "potential": result.potential,
        "potentials": result.potentials,
        "active_set": result.active_set,
        "local_active_set": result.members[0].local_active_set,
        **result.metrics.model_dump(),
        "metrics_of": result.metrics_of,
        "elements": result.elements,
        "functions_per_element": result.functions_per_element,
        "reference_energies": result.reference_energies,
        "n_train": result.n_train,
        "n_test": result.n_test,
        "committee_thresholds": result.committee_thresholds.model_dump() if result.committee_thresholds else None,
        "members": [
            {"potential": m.potential, "potential_yace": m.potential_yace, "active_set": m.active_set,
             "seed": m.seed, "fit_seconds": m.fit_seconds, **m.metrics.model_dump()}
            for m in result.members
        ],
        "summary": str(Path(result.out) / SUMMARY_FILE),
    }
    if as_json:
        emit(payload)
    else:
        _fit_table(payload)


def _fit_table(payload: dict[str, Any]) -> None:
    table = Table(title=f"ACE fit ({payload['backend']}), RMSE of the {payload['metrics_of']}")
    for column in ("set", "energy (meV/atom)", "force (meV/Å)"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name in ("train", "test"):
        e, f = payload[f"{name}_energy_rmse_per_atom"], payload[f"{name}_force_rmse"]
        table.add_row(name, fmt(None if e is None else 1e3 * e), fmt(None if f is None else 1e3 * f))
    err.print(table)
    err.print(f"potential: {payload['potential']}\nactive set: {payload['active_set']}\nsummary: {payload['summary']}",
              highlight=False)


@app.command()
@guard
def gamma(
    structures: Annotated[list[Path], typer.Argument(help="Structure files or folders to score.")],
    potential: Annotated[list[Path], typer.Option("--model", help="ACE potential (.yaml); repeat for committee UQ on an ensemble.")],
    active_set: Annotated[Path | None, typer.Option("--active-set", help="Active set (.asi); default: the one beside the first potential.")] = None,
    local_active_set: Annotated[Path | None, typer.Option("--local-active-set", help="Local active sets (.lasi); default: the one beside the first potential, if any.")] = None,
    thresholds: Annotated[Path | None, typer.Option("--thresholds", help="fit.json with committee thresholds; default: the fit.json of the ensemble, if found.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Extrapolation grade γ per atom and structure (D-optimality), γ_local and committee UQ."""
    from uq_flows.ace.activeset import extrapolation_grades
    from uq_flows.ace.local import LocalActiveSet, local_extrapolation_grades
    from uq_flows.ace.potential import (
        ACTIVE_SET_SUFFIX,
        LOCAL_ACTIVE_SET_SUFFIX,
        beside,
    )
    from uq_flows.io import read_many
    from uq_flows.records import structure_id
    from uq_flows.settings import get_settings

    need("pyace")
    first = potential[0]
    if not first.exists():
        fail(f"--model {first}: no such file")
    if first.suffix.lower() != ".yaml":
        fail(f"--model {first}: γ needs the B-basis .yaml potential (the .yace has no projections)")
    active_set = active_set or beside(first, ACTIVE_SET_SUFFIX)
    if active_set is None:
        fail(f"no active set beside {first} ({first.with_suffix(ACTIVE_SET_SUFFIX).name}); give --active-set "
             "(uq-flows fit writes one beside each potential; pacemaker users: pace_activeset)")
    local_active_set = local_active_set or beside(first, LOCAL_ACTIVE_SET_SUFFIX)
    atoms = read_many(structures)
    decimals = get_settings().structure_id_decimals
    grades = extrapolation_grades(first, atoms, active_set)
    local = None
    if local_active_set is not None:
        local = local_extrapolation_grades(first, LocalActiveSet.load(local_active_set), atoms)
    rows: list[dict[str, Any]] = []
    for j, (structure, g) in enumerate(zip(atoms, grades)):
        row = {"id": structure_id(structure, decimals), "source": structure.info.get("uq_source"),
               "formula": structure.get_chemical_formula(), "n_atoms": len(structure),
               "gamma": float(g.max()), "gamma_atoms": g.tolist()}
        if local is not None:
            row["gamma_local"] = float(local[j].max())
            row["gamma_local_atoms"] = local[j].tolist()
        rows.append(row)
    payload: dict[str, Any] = {
        "potential": str(first), "active_set": str(active_set),
        "local_active_set": str(local_active_set) if local_active_set else None,
        "n_structures": len(rows), "n_extrapolative": int(sum(row["gamma"] > 1 for row in rows)),
    }
    if len(potential) > 1:
        payload["committee"] = _committee(potential, atoms, rows, thresholds)
    payload["structures"] = rows
    if as_json:
        emit(payload)
    else:
        _gamma_table(rows, payload)


def _committee(potentials: list[Path], atoms, rows, thresholds_file: Path | None) -> dict[str, Any]:
    from uq_flows.ace.committee import committee_uncertainty, member_predictions

    thresholds, source = _find_thresholds(potentials, thresholds_file)
    energies, forces = member_predictions(potentials, atoms)
    committee = committee_uncertainty(energies, forces, [len(a) for a in atoms], thresholds)
    novel = committee.novel_configs
    novel_atoms = committee.atom_blocks(committee.novel_atoms) if thresholds is not None else None
    for j, (row, block) in enumerate(zip(rows, committee.atom_blocks(committee.force_atom))):
        row["energy_uncertainty"] = float(committee.energy[j])
        row["force_uncertainty"] = float(committee.force_config[j])
        row["force_uncertainty_atoms"] = block.tolist()
        row["novel"] = None if novel is None else bool(novel[j])
        row["novel_atoms"] = None if novel_atoms is None else [bool(x) for x in novel_atoms[j]]
    return {"members": [str(p) for p in potentials],
            "thresholds": thresholds.model_dump() if thresholds is not None else None,
            "thresholds_source": source,
            "n_novel": None if novel is None else int(novel.sum())}


def _find_thresholds(potentials: list[Path], thresholds_file: Path | None):
    """Committee thresholds from --thresholds, or from the fit.json of the fit that produced these members."""
    from uq_flows.ace.fit import SUMMARY_FILE, read_summary

    if thresholds_file is not None:
        summary = read_summary(thresholds_file)
        if summary.committee_thresholds is None:
            fail(f"--thresholds {thresholds_file}: the fit has no committee thresholds (a single potential?)")
        return summary.committee_thresholds, str(thresholds_file)
    wanted = {p.resolve() for p in potentials}
    for folder in (potentials[0].parent, potentials[0].parent.parent):
        candidate = folder / SUMMARY_FILE
        if candidate.exists():
            summary = read_summary(candidate)
            if summary.committee_thresholds is not None and wanted <= {Path(p).resolve() for p in summary.potentials}:
                return summary.committee_thresholds, str(candidate)
    err.print("[yellow]note:[/] no committee thresholds found (give --thresholds fit.json); novelty flags are null",
              highlight=False)
    return None, None


def _gamma_table(rows, payload) -> None:
    table = Table(title=f"extrapolation grade γ ({payload['n_extrapolative']} of {payload['n_structures']} > 1)")
    columns = ["#", "id", "formula", "atoms", "γ"]
    if payload.get("local_active_set"):
        columns.append("γ local")
    if "committee" in payload:
        columns += ["U_E (eV)", "U_F (eV/Å)", "novel"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("id", "formula") else "right")
    for index, row in enumerate(rows):
        cells = [str(index), row["id"], row["formula"], str(row["n_atoms"]), fmt(row["gamma"])]
        if payload.get("local_active_set"):
            cells.append(fmt(row["gamma_local"]))
        if "committee" in payload:
            cells += [fmt(row["energy_uncertainty"]), fmt(row["force_uncertainty"]),
                      "—" if row["novel"] is None else ("yes" if row["novel"] else "no")]
        table.add_row(*cells)
    err.print(table)
