"""Fit ACE potentials (pacemaker or linear), their ensembles and active sets, and measure them.

One member: fit → ``potential.yaml`` (reference energies in its metadata) → ``potential.yace``
→ ``potential.asi`` (and ``potential.lasi`` for local D-optimality) → train/test RMSEs from
evaluating the written potential (the same path every consumer takes, so a file that does
not reproduce the fit shows up here). An ensemble repeats this with seeds seed, seed + 1, ...
(bootstrap samples optional) and adds committee thresholds from the training set. Active
sets, RMSEs and thresholds always use the whole training set, also for bootstrap members.

RMSEs: energy per atom, sqrt(mean_j ((E_pred,j − E_ref,j)/N_j)²) in eV/atom; forces per
Cartesian component, sqrt(mean_i,α (ΔF_iα)²) in eV/Å.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from uq_flows.ace.activeset import build_active_set, training_projections
from uq_flows.ace.basis import AceFitOptions, create_basis, functions_per_element
from uq_flows.ace.committee import (
    CommitteeThresholds,
    committee_thresholds,
    committee_uncertainty,
)
from uq_flows.ace.data import TrainingSet, bootstrap_indices, fit_reference_energies
from uq_flows.ace.local import build_local_active_set
from uq_flows.ace.potential import AceCalculator, predict, save_potential, write_yace
from uq_flows.errors import InputError
from uq_flows.io import atomic_path

POTENTIAL_NAME = "potential"
SUMMARY_FILE = "fit.json"


class FitMetrics(BaseModel):
    """Train and test RMSEs: energy in eV/atom, force components in eV/Å."""

    train_energy_rmse_per_atom: float
    train_force_rmse: float
    test_energy_rmse_per_atom: float | None = None
    test_force_rmse: float | None = None


class MemberFit(BaseModel):
    """One fitted potential and where its files are."""

    index: int
    seed: int
    folder: str
    potential: str = Field(description="B-basis .yaml with reference energies in its metadata.")
    potential_yace: str
    active_set: str | None = None
    local_active_set: str | None = None
    n_training_structures: int = Field(description="Structures fitted (a bootstrap sample may repeat some).")
    metrics: FitMetrics
    fit_seconds: float
    pacemaker_reported: dict[str, float] | None = Field(
        None, description="pacemaker's own final train RMSEs from its log (fitted sample; cross-check only)."
    )
    active_set_info: dict | None = None


class AceFitResult(BaseModel):
    """Everything a fit produced; ``fit.json`` in the output folder holds it."""

    backend: str
    options: AceFitOptions
    elements: list[str]
    functions_per_element: dict[str, int]
    reference_energies: dict[str, float]
    n_train: int
    n_test: int
    members: list[MemberFit]
    metrics: FitMetrics = Field(description="Of the single potential, or of the ensemble mean.")
    metrics_of: str
    committee_thresholds: CommitteeThresholds | None = None
    clusters: list[int] | None = Field(None, description="Cluster of each training structure (local D-optimality).")
    cluster_names: list[str] | None = None
    out: str

    @property
    def potential(self) -> str:
        return self.members[0].potential

    @property
    def potentials(self) -> list[str]:
        return [m.potential for m in self.members]

    @property
    def active_set(self) -> str | None:
        return self.members[0].active_set


def rmse(energies_pred, energies_ref, forces_pred, forces_ref, n_atoms) -> tuple[float, float]:
    """(energy RMSE per atom, force-component RMSE)."""
    n_atoms = np.asarray(n_atoms, dtype=float)
    de = (np.asarray(energies_pred) - np.asarray(energies_ref)) / n_atoms
    df = np.asarray(forces_pred) - np.asarray(forces_ref)
    return float(np.sqrt(np.mean(de**2))), float(np.sqrt(np.mean(df**2)))


def check_training(training: TrainingSet, options: AceFitOptions, elements: list[str]) -> dict[str, int]:
    """Functions per element; fails early when an active set could not be built."""
    functions = functions_per_element(create_basis(elements, options))
    if options.active_set:
        for element, count in training.atoms_per_element().items():
            if count < functions[element]:
                raise InputError(
                    f"{count} {element} atoms in the training set for {functions[element]} basis functions: "
                    "the active set needs at least as many atoms as functions per element "
                    "(use fewer functions, more data, or no active set)"
                )
    if options.local == "labels":
        missing = [j for j, atoms in enumerate(training.structures) if options.cluster_key not in atoms.info]
        if missing:
            raise InputError(
                f"{len(missing)} training structure(s) have no '{options.cluster_key}' label for local "
                f"D-optimality (first: structure {missing[0]})"
            )
    return functions


def fit_member(training: TrainingSet, options: AceFitOptions, index: int, folder: str | Path,
               reference: dict[str, float], elements: list[str], test: TrainingSet | None = None,
               log: Callable[[str], None] = lambda message: None) -> tuple[MemberFit, tuple, tuple | None]:
    """Fit member ``index`` into ``folder``; returns it and its (energies, forces) on train and test."""
    from uq_flows.settings import get_settings

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seed = options.seed + index
    drawn = bootstrap_indices(len(training), seed) if options.use_bootstrap() else None
    sample = training if drawn is None else training.subset(drawn)
    potential = folder / f"{POTENTIAL_NAME}.yaml"
    start = time.perf_counter()
    where = "" if options.linear else f"; pacemaker log: {folder / 'pacemaker' / 'log.txt'}"
    log(f"fitting member {index} ({options.backend}, seed {seed}, {len(sample)} structures{where})")
    reported = None
    if options.linear:
        from uq_flows.ace.linear import fit_linear_ace

        # its energies and forces on the whole training set come with it, from the design matrix
        basis, train_energies, train_forces = fit_linear_ace(training, reference, options, elements,
                                                             workers=get_settings().fit_threads, sample=drawn)
        train_pred = (train_energies, train_forces)
    else:
        from pyace import BBasisConfiguration

        from uq_flows.ace.pacemaker import reported_metrics, run_pacemaker

        output = run_pacemaker(folder / "pacemaker", sample, reference, options, seed, elements)
        basis = BBasisConfiguration(str(output))
        reported = reported_metrics(output.parent / "log.txt")
    fit_seconds = time.perf_counter() - start
    save_potential(basis, potential, reference, uq_flows_backend=options.backend, uq_flows_seed=str(seed))
    write_yace(potential)

    calculator = AceCalculator(potential)
    if not options.linear:
        train_pred = predict(calculator, training.structures)
    e_rmse, f_rmse = rmse(train_pred[0], training.energies, np.concatenate(train_pred[1]),
                          training.all_forces(), training.n_atoms)
    if not (np.isfinite(e_rmse) and np.isfinite(f_rmse)):
        raise InputError(f"member {index}: the fitted potential predicts non-finite energies or forces")
    metrics = FitMetrics(train_energy_rmse_per_atom=e_rmse, train_force_rmse=f_rmse)
    test_pred = None
    if test is not None:
        test_pred = predict(calculator, test.structures)
        metrics.test_energy_rmse_per_atom, metrics.test_force_rmse = rmse(
            test_pred[0], test.energies, np.concatenate(test_pred[1]), test.all_forces(), test.n_atoms
        )
    member = MemberFit(index=index, seed=seed, folder=str(folder), potential=str(potential),
                       potential_yace=str(potential.with_suffix(".yace")), n_training_structures=len(sample),
                       metrics=metrics, fit_seconds=fit_seconds, pacemaker_reported=reported)
    if options.active_set:
        log(f"active set of member {index}")
        projections = training_projections(potential, training, options.outlier_filter)
        summary = build_active_set(potential, training, potential.with_suffix(".asi"), options.outlier_filter,
                                   options.gamma_tolerance, options.maxvol_iters, projections)
        member.active_set = summary.path
        member.active_set_info = {"n_environments": summary.n_environments, "n_dropped": summary.n_dropped,
                                  "n_functions": summary.n_functions, "training_gamma_max": summary.training_gamma_max}
        if options.local is not None:
            labels = [a.info.get(options.cluster_key) for a in training.structures] if options.local == "labels" else None
            local, assignment = build_local_active_set(
                potential, training, options.local, options.n_clusters, labels, options.seed,
                options.outlier_filter, options.gamma_tolerance, options.maxvol_iters, projections,
            )
            local.save(potential.with_suffix(".lasi"))
            member.local_active_set = str(potential.with_suffix(".lasi"))
            member.active_set_info.update({"clusters": local.clusters, "cluster_sizes": local.sizes,
                                           "cluster_assignment": assignment.tolist(),
                                           "clusters_without_active_set": local.skipped})
    return member, train_pred, test_pred


def combine_members(members: list[MemberFit], train_preds: list, test_preds: list, training: TrainingSet,
                    test: TrainingSet | None, options: AceFitOptions, reference: dict[str, float],
                    elements: list[str], functions: dict[str, int], out: str | Path) -> AceFitResult:
    """The fit result: single-potential metrics, or ensemble-mean metrics and committee thresholds."""
    thresholds = None
    if len(members) == 1:
        metrics, metrics_of = members[0].metrics, "potential"
    else:
        energies = np.array([p[0] for p in train_preds])
        forces = np.array([np.concatenate(p[1]) for p in train_preds])
        committee = committee_uncertainty(energies, forces, training.n_atoms)
        thresholds = committee_thresholds(committee)
        e_rmse, f_rmse = rmse(committee.mean_energies, training.energies, committee.mean_forces,
                              training.all_forces(), training.n_atoms)
        metrics, metrics_of = FitMetrics(train_energy_rmse_per_atom=e_rmse, train_force_rmse=f_rmse), "ensemble mean"
        if test is not None:
            mean_e = np.mean([p[0] for p in test_preds], axis=0)
            mean_f = np.mean([np.concatenate(p[1]) for p in test_preds], axis=0)
            metrics.test_energy_rmse_per_atom, metrics.test_force_rmse = rmse(
                mean_e, test.energies, mean_f, test.all_forces(), test.n_atoms
            )
    info = members[0].active_set_info or {}
    return AceFitResult(
        backend=options.backend, options=options, elements=elements, functions_per_element=functions,
        reference_energies=reference, n_train=len(training), n_test=len(test) if test is not None else 0,
        members=members, metrics=metrics, metrics_of=metrics_of, committee_thresholds=thresholds,
        clusters=info.get("cluster_assignment"), cluster_names=info.get("clusters"), out=str(out),
    )


def member_folder(out: str | Path, index: int, ensemble_size: int) -> Path:
    return Path(out) if ensemble_size == 1 else Path(out) / f"member-{index}"


def fit_ace(training: TrainingSet, options: AceFitOptions, out: str | Path, test: TrainingSet | None = None,
            log: Callable[[str], None] = lambda message: None,
            progress: Callable[[int], None] = lambda members_done: None) -> AceFitResult:
    """Fit ``options.ensemble_size`` potentials into ``out`` and write ``out/fit.json``; ``log`` gets
    each step's message, ``progress`` the number of members fitted so far."""
    if not options.linear:
        from uq_flows.ace.pacemaker import pacemaker_command

        pacemaker_command()  # a missing fit environment fails before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    elements = training.elements
    if test is not None:
        extra = sorted(set(test.elements) - set(elements))
        if extra:
            raise InputError(f"test structures contain element(s) {', '.join(extra)} absent from the training set")
    functions = check_training(training, options, elements)
    reference = dict(options.reference_energies) if options.reference_energies else fit_reference_energies(training)
    missing = sorted(set(elements) - set(reference))
    if missing:
        raise InputError(f"no reference energy given for element(s) {', '.join(missing)}")
    members, train_preds, test_preds = [], [], []
    for index in range(options.ensemble_size):
        member, train_pred, test_pred = fit_member(
            training, options, index, member_folder(out, index, options.ensemble_size), reference, elements, test, log
        )
        members.append(member)
        train_preds.append(train_pred)
        test_preds.append(test_pred)
        progress(index + 1)
    result = combine_members(members, train_preds, test_preds, training, test, options, reference, elements,
                             functions, out)
    write_summary(result)
    return result


def write_summary(result: AceFitResult) -> Path:
    path = Path(result.out) / SUMMARY_FILE
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(result.model_dump(mode="json"), indent=1))
    return path


def read_summary(path: str | Path) -> AceFitResult:
    path = Path(path)
    try:
        return AceFitResult.model_validate_json(path.read_text())
    except Exception as error:
        raise InputError(f"{path}: not a uq-flows fit summary: {error}") from error
