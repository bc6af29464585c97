"""Benchmark: DFT-labelling strategies for an ACE fit at equal DFT budgets, on a pool of Cu cells.

Data (made once, kept under ``--data``): about 1,200 Cu cells of ≤ 8 atoms from the package's
generators (strained and rattled cells, vacancies, surfaces, short pairs; no isolated dimers,
see ``KINDS``), split at random into a pool and a fixed test set (``--test-fraction``), and the
predictions of the offline uMLIP members (chgnet-0.3.0, sevennet-0-11jul2024, chgnet-0.2.0;
stored, ``NAME=precomputed:PATH``) and of a **stand-in reference**: an offline uMLIP that is
not in the ensemble (``--reference``, default sevennet-l3i5) labels every cell in place of
DFT. "DFT" below always means that stand-in's labels; nothing here is a DFT calculation.
EMT is not used as the reference: the teacher (CHGNet) cannot be aligned to it (per-atom
residual ~0.1 eV/atom against the 0.02 limit), so teacher labels would be off by far more
than any strategy differs.

Strategies, at equal DFT budgets (DFT atoms as a fraction of the pool's atoms), all fitted
with the loop's ACE recipe (its ``fit`` section: linear ACE, 3-member bootstrap ensemble) and
scored on the same fixed test set (RMSE of the ensemble mean; energy per atom, force
components):

1. the loop: ``uq-flows run`` on the pool (replay campaign; first batch DIRECT, then QBC +
   DIRECT; DFT where U ≥ U_c plus the random audit, aligned teacher labels elsewhere), one
   point per iteration with its cumulative DFT atoms;
2. paper 001's single shot at several U_c: U of the whole pool from the stored members
   (``PrecomputedEnsemble``), DFT where U ≥ U_c and on a random alignment sample of
   ``--align-sample`` cells (paid for, so counted and used), teacher labels elsewhere shifted
   by ``align_teacher_energies`` and mixed by ``mix_labels`` (what ``uq-flows mix`` runs);
3. random DFT at the loop's and the single shot's DFT budgets (``--seeds`` draws each; the
   random DFT cells are the alignment's sample), aligned teacher labels elsewhere;
4. all-DFT: every pool cell with its reference label.

Prints a table, writes ``results/campaigns.json`` and the learning curves
``results/campaigns.png``.

    .venv/bin/python benchmarks/campaigns.py [--n 600] [--reference sevennet-l3i5] [--iterations 6]
        [--batch 100] [--loop-uc 0.3] [--uc 0.08 0.1 0.3 1 2 3] [--seeds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from uq_flows.ace.basis import AceFitOptions
from uq_flows.ace.data import TrainingSet, training_set
from uq_flows.ace.fit import fit_ace
from uq_flows.ensemble.members import parse_member
from uq_flows.ensemble.precomputed import PrecomputedEnsemble
from uq_flows.ensemble.predict import predict_member
from uq_flows.errors import InputError
from uq_flows.explore.generators import starting_set
from uq_flows.flows.config import load_config
from uq_flows.io import Labels, read_structures, with_labels, write_extxyz
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL
from uq_flows.labeling.mixing import align_teacher_energies, alignment_sample, label_errors, mix_labels
from uq_flows.records import structure_id

RESULTS = Path(__file__).resolve().parent / "results"
MEMBERS = ("chgnet-0.3.0", "sevennet-0-11jul2024", "chgnet-0.2.0")
TEACHER = MEMBERS[0]
REFERENCE = "sevennet-l3i5"
EMT = "emt"
MODEL_SPECS = {EMT: "emt=ase:ase.calculators.emt:EMT"}
#: no isolated dimers: the loop's linear-ACE recipe cannot fit Cu₂ in vacuum (1.6-1.8 eV/atom off with every
#: dimer in its training set), so the 8 dimers alone would set any test RMSE
KINDS = ("strained", "vacancies", "surfaces", "pairs")
DUPLICATE_RATTLE = 0.03  # Å: a generated cell equal to an earlier one is rattled until it is new


def distinct_cells(structures: list, seen: set[str], seed: int) -> list:
    """The cells with every duplicate (same content id as an earlier cell, here or in ``seen``) rattled
    by ``DUPLICATE_RATTLE`` Å until it is new: starting_set's short pairs repeat (every site of the fcc
    cell is equivalent), and a pool or test set may not hold one structure twice."""
    rng = np.random.default_rng(seed)
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        while (key := structure_id(atoms)) in seen:
            atoms.positions += rng.normal(scale=DUPLICATE_RATTLE, size=atoms.positions.shape)
            atoms.info["generator"] = atoms.info.get("generator", "") + f"; rattled {DUPLICATE_RATTLE:g} Å (duplicate)"
        atoms.info["uq_id"] = key
        seen.add(key)
        out.append(atoms)
    return out


def _predict(model: str, structures: list, path: Path) -> float:
    """One model's labels on ``structures``, written with each structure's status; seconds taken."""
    begin = time.perf_counter()
    predicted = predict_member(parse_member(MODEL_SPECS.get(model, model)), structures)
    write_extxyz(path, [with_labels(atoms, predicted.energies[k], predicted.structure_forces(k),
                                    status=predicted.status[k])
                        for k, atoms in enumerate(structures)])
    return round(time.perf_counter() - begin, 1)


def make_data(folder: Path, n: int, seed: int, test_fraction: float, reference: str,
              extra_models: tuple[str, ...] = ()) -> dict:
    """Cu cells and every model's predictions on them, each made once and kept in ``folder``.

    Cells: the package's generators (``starting_set``, Cu, ≤ 8 atoms, the ``KINDS``) with
    duplicates made distinct (``cells.extxyz``). Predictions: every member and the stand-in
    reference on every cell (``predictions/MODEL.extxyz``; a model already there is not run
    again, so another reference runs one model). Then, for this reference and a random split
    into pool and test set, ``ref-REFERENCE/``: pool and test set with the reference's labels and
    the members' stored predictions on the pool, restricted to cells every model labelled.
    """
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "made.json"
    made = json.loads(done.read_text()) if done.exists() else {}
    made_with = {"n": n, "seed": seed, "kinds": list(KINDS)}
    if made.get("made_with") != made_with:
        cells = distinct_cells(starting_set(["Cu"], n, max_atoms=8, seed=seed, kinds=KINDS), set(), seed)
        write_extxyz(folder / "cells.extxyz", cells)
        made = {"made_with": made_with, "n_cells": len(cells), "model_seconds": {}}
        for old in (folder / "predictions").glob("*.extxyz") if (folder / "predictions").exists() else ():
            old.unlink()
        done.write_text(json.dumps(made, indent=1))
    cells = read_structures(folder / "cells.extxyz")
    (folder / "predictions").mkdir(exist_ok=True)
    for model in dict.fromkeys((*MEMBERS, reference, *extra_models)):
        path = folder / "predictions" / f"{model}.extxyz"
        if not path.exists():
            print(f"predicting {len(cells)} cells with {model} ...", flush=True)
            made["model_seconds"][model] = _predict(model, cells, path)
            done.write_text(json.dumps(made, indent=1))
    test = np.zeros(len(cells), bool)
    test[np.random.default_rng(seed).choice(len(cells), round(test_fraction * len(cells)), replace=False)] = True
    return {**made, "test_fraction": test_fraction, **_reference_files(folder, reference, test)}


def _ok(path: Path) -> tuple[list, np.ndarray]:
    structures = read_structures(path)
    return structures, np.array([a.info.get("status", "ok") == "ok" for a in structures])


def _reference_files(folder: Path, reference: str, test: np.ndarray) -> dict:
    """``ref-REFERENCE/{pool,test}.extxyz`` (reference labels) and ``ref-REFERENCE/MEMBER.extxyz`` (pool)."""
    out = folder / f"ref-{reference}"
    out.mkdir(exist_ok=True)
    labelled, keep = _ok(folder / "predictions" / f"{reference}.extxyz")
    members = {}
    for member in MEMBERS:
        members[member], ok = _ok(folder / "predictions" / f"{member}.extxyz")
        keep &= ok

    def chosen(structures, mask):
        picked = [a for a, k in zip(structures, mask) if k]
        for atoms in picked:
            atoms.info.pop("status", None)
        return picked

    pool = chosen(labelled, keep & ~test)
    write_extxyz(out / "pool.extxyz", pool)
    write_extxyz(out / "test.extxyz", chosen(labelled, keep & test))
    for member, structures in members.items():
        write_extxyz(out / f"{member}.extxyz", chosen(structures, keep & ~test))
    return {"reference": reference, "n_pool": int((keep & ~test).sum()), "n_test": int((keep & test).sum()),
            "n_dropped": int((~keep).sum()), "pool_atoms": int(sum(len(a) for a in pool)), "files": str(out)}


# ---------------------------------------------------------------- the loop (uq-flows run)

def loop_config(files: Path, batch: int, iterations: int, uc: float) -> dict:
    return {
        "name": "replay-cu", "elements": ["Cu"],
        "pool": {"structures": [str(files / "pool.extxyz")], "batch": batch},
        "test": [str(files / "test.extxyz")],
        # stored predictions are members of their own (a built-in name means the live model)
        "members": [f"stored-{m}=precomputed:{files / f'{m}.extxyz'}" for m in MEMBERS],
        "teacher": {"energy_from": f"stored-{TEACHER}"}, "uc": uc,
        "dft": {"labeller": "dataset", "dataset": str(files / "pool.extxyz")},
        "fit": {"backend": "linear", "n_functions": 20, "ensemble_size": 3},
        "select": {"formation_energy_prefilter": False},
        "convergence": {"max_iterations": iterations},
    }


def run_loop(work: Path, config: dict, pool_atoms: int) -> dict:
    (work / "loop.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "UQ_FLOWS_HOME": str(work / "home")}
    for key in ("UQ_FLOWS_DB_URI", "UQ_FLOWS_LAUNCHPAD_FILE", "UQ_FLOWS_JOBSTORE_FILE", "UQ_FLOWS_CAMPAIGN_URI"):
        env.pop(key, None)
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "uq-flows"), "run", str(work / "loop.yaml"), "--json"],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise RuntimeError(f"the campaign failed ({done.returncode}): {done.stderr[-3000:]}")
    (loop,) = json.loads(done.stdout)["loops"]
    rows, dft_structures = [], 0
    for it in loop["iterations"]:
        dft_structures += it["n_dft_ok"]
        alignment = it.get("alignment") or {}
        rows.append({
            "strategy": "loop", "iteration": it["iteration"], "candidates": it["n_candidates"],
            "dft_iteration": it["n_dft_ok"], "teacher_iteration": it["n_teacher"], "audit_iteration": it["n_audit"],
            "dft_structures": dft_structures, "dft_atoms": it["dft_atoms_total"],
            "dft_fraction": it["dft_atoms_total"] / pool_atoms, "n_training": it["n_training"],
            "n_waiting_alignment": it["n_waiting_alignment"],
            "alignment_residual_mev_per_atom": _mev(alignment.get("residual_rmse_per_atom")),
            "spearman_audit": it.get("spearman_audit"), "pool_left": it["pool_left"],
            "test_energy_mev_per_atom": _mev(it["fixed_test"]["energy_rmse_per_atom"]),
            "test_force_ev_per_a": it["fixed_test"]["force_rmse"], "reason": it["reason"]})
    return {"state": loop["state"], "wall_s": round(wall, 1), "rows": rows}


def _mev(value: float | None) -> float | None:
    return None if value is None else 1000 * value


# ---------------------------------------------------------------- strategies on the whole pool

class Pool:
    """The pool with its reference labels, the members' stored predictions and their U (the loop's weights)."""

    def __init__(self, files: Path, test: TrainingSet, options: AceFitOptions, work: Path,
                 align_sample: int, max_residual: float):
        self.ensemble = PrecomputedEnsemble.load(files / "pool.extxyz", {m: files / f"{m}.extxyz" for m in MEMBERS})
        self.weights = self.ensemble.weights()  # "auto", as the loop's config: equal for these members
        self.u = self.ensemble.uncertainty(self.weights)
        self.numbers = [atoms.numbers for atoms in self.ensemble.structures]
        self.reference = self.ensemble.reference
        self.teacher = self.ensemble.predictions[TEACHER]
        self.n_atoms = self.ensemble.n_atoms
        self.test, self.options, self.work = test, options, work
        self.align_sample, self.max_residual = align_sample, max_residual
        self.fits = 0

    @property
    def atoms(self) -> int:
        return int(self.n_atoms.sum())

    def subset(self, labels: Labels, chosen: np.ndarray) -> Labels:
        forces = np.split(labels.forces, np.cumsum(labels.n_atoms)[:-1])
        return Labels(labels.energies[chosen], np.concatenate([forces[j] for j in chosen]), labels.n_atoms[chosen])

    def align(self, on: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        """Teacher→reference energy shifts per pool cell, fitted (uq_flows' alignment, mode on) on the
        cells ``on``, all of which carry reference labels; NaN shifts when the fit is refused."""
        try:
            alignment = align_teacher_energies([self.numbers[j] for j in on], self.subset(self.reference, on),
                                               self.subset(self.teacher, on), "on", len(on), seed, self.max_residual)
        except InputError as error:
            return np.full(len(self.u), np.nan), {"refused": str(error)}
        shifts, _ = alignment.configuration_shifts(self.numbers)
        return shifts, {"shift_ev_per_atom": alignment.fit.shifts["Cu"], "n_sample": len(on),
                        "residual_mev_per_atom": 1000 * alignment.fit.residual_rmse_per_atom}

    def mix_and_fit(self, strategy: str, setting: dict, dft: np.ndarray, shifts: np.ndarray, alignment: dict) -> dict:
        """Reference labels on ``dft`` (bool per cell), aligned teacher labels elsewhere (``mix_labels``),
        an ACE fit with the loop's recipe on them and its RMSEs on the fixed test set. Teacher labels the
        alignment cannot place are left out of the fit, as the loop leaves them waiting."""
        routed = np.where(dft, np.inf, 0.0)  # U as routed: inf → reference, 0 → teacher (U_c = 1)
        mixed = mix_labels(self.reference, self.teacher, self.teacher, routed, 1.0, shifts)
        used = ~mixed.unalignable
        energy, force = label_errors(mixed.labels, self.reference, used)
        offsets = np.concatenate([[0], np.cumsum(self.n_atoms)])
        structures = [with_labels(atoms, mixed.labels.energies[j], mixed.labels.forces[offsets[j]:offsets[j + 1]])
                      for j, atoms in enumerate(self.ensemble.structures) if used[j]]
        self.fits += 1
        fit = fit_ace(training_set(structures, name=strategy), self.options, self.work / f"fit-{self.fits}", self.test)
        return {"strategy": strategy, **setting, "dft_structures": int(dft.sum()),
                "dft_atoms": int(self.n_atoms[dft].sum()), "dft_fraction": float(self.n_atoms[dft].sum() / self.atoms),
                "n_training": int(used.sum()), "n_teacher": int(mixed.teacher.sum()),
                "n_teacher_left_out": int(mixed.unalignable.sum()), "alignment": alignment,
                "pool_label_energy_mev_per_atom": 1000 * energy, "pool_label_force_ev_per_a": force,
                "test_energy_mev_per_atom": 1000 * fit.metrics.test_energy_rmse_per_atom,
                "test_force_ev_per_a": fit.metrics.test_force_rmse}

    def single_shot(self, uc: float, seed: int) -> dict:
        """Paper 001's threshold: reference labels where U ≥ U_c and on the random alignment sample
        (its reference labels are paid for, so they count and are used), aligned teacher labels elsewhere."""
        sample = alignment_sample(len(self.u), self.align_sample, seed)
        shifts, alignment = self.align(sample, seed)
        dft = self.u >= uc
        dft[sample] = True
        return self.mix_and_fit("single-shot", {"uc": uc, "high_u": int((self.u >= uc).sum())}, dft, shifts, alignment)

    def random(self, target_atoms: int, seed: int) -> dict:
        """Random cells, in random order up to the DFT atoms nearest ``target_atoms``, get reference labels
        (and are the alignment's sample: a random sample already); aligned teacher labels elsewhere."""
        order = np.random.default_rng(seed).permutation(len(self.u))
        cumulative = np.cumsum(self.n_atoms[order])
        k = max(2, int(np.argmin(np.abs(cumulative - target_atoms))) + 1)
        dft = np.zeros(len(self.u), bool)
        dft[order[:k]] = True
        shifts, alignment = self.align(np.flatnonzero(dft), seed)
        return self.mix_and_fit("random", {"seed": seed, "target_atoms": int(target_atoms)}, dft, shifts, alignment)

    def all_dft(self) -> dict:
        dft = np.ones(len(self.u), bool)
        return self.mix_and_fit("all-DFT", {}, dft, np.zeros(len(self.u)), {})


# ---------------------------------------------------------------- table, figure, main

def random_summary(rows: list[dict], basis: list[tuple[str, float]]) -> list[dict]:
    """Random selection per budget: mean and spread (sample std, min, max) over the seeds."""
    out = []
    for source, target in basis:
        runs = [r for r in rows if r["target_atoms"] == int(target)]
        summary = {"strategy": "random", "matched_to": source, "target_atoms": int(target), "n_seeds": len(runs)}
        for key in ("dft_structures", "dft_atoms", "dft_fraction", "n_training", "test_energy_mev_per_atom",
                    "test_force_ev_per_a", "pool_label_energy_mev_per_atom", "pool_label_force_ev_per_a"):
            values = np.array([r[key] for r in runs], float)
            summary[key] = float(values.mean())
            summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[f"{key}_min"], summary[f"{key}_max"] = float(values.min()), float(values.max())
        out.append(summary)
    return out


def table(rows: list[dict]) -> list[str]:
    head = (f"{'strategy':<12} {'setting':<22} {'DFT str.':>9} {'DFT atoms':>9} {'DFT frac':>8} {'train':>6} "
            f"{'test E meV/at':>15} {'test F eV/Å':>15}")
    lines = [head]
    for row in rows:
        spread = row["strategy"] == "random"

        def cell(key, digits):
            text = f"{row[key]:.{digits}f}"
            return text + (f"±{row[key + '_std']:.{digits}f}" if spread else "")
        lines.append(f"{row['strategy']:<12} {setting(row):<22} {row['dft_structures']:>9.0f} {row['dft_atoms']:>9.0f} "
                     f"{row['dft_fraction']:>8.3f} {row['n_training']:>6.0f} {cell('test_energy_mev_per_atom', 1):>15} "
                     f"{cell('test_force_ev_per_a', 3):>15}")
    return lines


def setting(row: dict) -> str:
    if row["strategy"] == "loop":
        return f"iteration {row['iteration']}"
    if row["strategy"] == "single-shot":
        return f"U_c = {row['uc']:g} eV/Å"
    if row["strategy"] == "random":
        return f"= {row['matched_to']} ({row['n_seeds']} seeds)"
    return "whole pool"


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| strategy | setting | DFT structures | DFT atoms | DFT fraction of pool atoms | training structures "
             "| test energy RMSE (meV/atom) | test force RMSE (eV/Å) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        spread = row["strategy"] == "random"

        def cell(key, digits):
            return f"{row[key]:.{digits}f}" + (f" ± {row[key + '_std']:.{digits}f}" if spread else "")
        lines.append(f"| {row['strategy']} | {setting(row)} | {cell('dft_structures', 0)} | {cell('dft_atoms', 0)} "
                     f"| {cell('dft_fraction', 3)} | {cell('n_training', 0)} | {cell('test_energy_mev_per_atom', 1)} "
                     f"| {cell('test_force_ev_per_a', 3)} |")
    return lines


def figure(loop: list[dict], single: list[dict], random_rows: list[dict], all_dft: dict, path: Path,
           reference: str, n_test: int) -> Path:
    """Fixed-test RMSEs against the DFT fraction of the pool's atoms, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uq_flows import plots

    panels = (("test_energy_mev_per_atom", 1, "energy RMSE (meV/atom)"), ("test_force_ev_per_a", 1, "force RMSE (eV/Å)"))
    fig, axes_row = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for axes, (key, scale, label) in zip(axes_row, panels):
        values = []
        x = [r["dft_fraction"] for r in loop]
        y = [r[key] for r in loop]
        axes.plot(x, y, "o-", color=plots.BLUE, lw=1.8, ms=5, label="loop (uq-flows run), per iteration")
        for r in loop:
            axes.annotate(f"it {r['iteration']}", (r["dft_fraction"], r[key]), textcoords="offset points",
                          xytext=(5, -9), fontsize=7, color=plots.BLUE)
        values += y
        x = [r["dft_fraction"] for r in single]
        y = [r[key] for r in single]
        axes.plot(x, y, "s-", color=plots.VERMILION, lw=1.8, ms=5, label="single-shot U ≥ U_c (paper 001)")
        for r in single:
            axes.annotate(f"{r['uc']:g}", (r["dft_fraction"], r[key]), textcoords="offset points", xytext=(4, 4),
                          fontsize=7, color=plots.VERMILION)
        values += y
        ordered = sorted(random_rows, key=lambda r: r["dft_fraction"])
        x = [r["dft_fraction"] for r in ordered]
        y = [r[key] for r in ordered]
        spread = [[r[key] - r[f"{key}_min"] for r in ordered], [r[f"{key}_max"] - r[key] for r in ordered]]
        axes.errorbar(x, y, yerr=spread, fmt="^", color=plots.GREEN, ms=5, capsize=3,
                      label="random DFT (mean, min–max over seeds)")
        values += [r[f"{key}_min"] for r in ordered] + [r[f"{key}_max"] for r in ordered]
        axes.axhline(all_dft[key], color=plots.BLACK, ls="--", lw=1.2, label="all-DFT (whole pool)")
        axes.plot([all_dft["dft_fraction"]], [all_dft[key]], "D", color=plots.BLACK, ms=5)
        values.append(all_dft[key])
        axes.set_xscale("log")
        plots._log_if_spans_decades(axes, values, decades=1.0)
        plots._decimal_log_ticks(axes, "x")
        axes.set_xlabel("DFT fraction of the pool's atoms (stand-in reference labels)")
        axes.set_ylabel(f"fixed-test {label}")
        axes.grid(alpha=0.3)
    handles, labels = axes_row[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=8)
    fig.suptitle(f"linear-ACE ensemble (the loop's fit) on the fixed test set ({n_test} Cu cells); "
                 f"'DFT' = stand-in reference (model {reference}); U_c in eV/Å", fontsize=9)
    fig.tight_layout()
    return plots._save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="Generator rounds (about 2 cells each)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="Cells held out as the fixed test set")
    parser.add_argument("--batch", type=int, default=100, help="The loop's pool batch")
    parser.add_argument("--iterations", type=int, default=6, help="The loop's iterations")
    parser.add_argument("--loop-uc", type=float, default=0.3, help="The loop's U_c (eV/Å)")
    parser.add_argument("--uc", type=float, nargs="+", default=[0.08, 0.1, 0.3, 1.0, 2.0, 3.0],
                        help="Single-shot thresholds U_c (eV/Å)")
    parser.add_argument("--seeds", type=int, default=3, help="Random selections per DFT budget")
    parser.add_argument("--align-sample", type=int, default=20, help="Single-shot: random cells the alignment is fitted on")
    parser.add_argument("--reference", default=REFERENCE, help="Stand-in reference model (labels in place of DFT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "uq-flows-campaign-data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    begin = time.perf_counter()
    made = make_data(args.data, args.n, args.seed, args.test_fraction, args.reference)
    files = Path(made["files"])
    seconds = {"data": round(time.perf_counter() - begin, 1)}
    name = f"stand-in reference (model {args.reference})"
    with tempfile.TemporaryDirectory(prefix="uq-campaign-") as scratch:
        work = Path(scratch)
        config = loop_config(files, args.batch, args.iterations, args.loop_uc)
        started = time.perf_counter()
        loop = run_loop(work, config, made["pool_atoms"])
        seconds["loop"] = round(time.perf_counter() - started, 1)
        options = load_config(work / "loop.yaml").fit  # the loop's ACE recipe, as the loop reads it
        test = training_set(read_structures(files / "test.extxyz"), name="test")
        pool = Pool(files, test, options, work, args.align_sample, DEFAULT_MAX_RESIDUAL)
        started = time.perf_counter()
        single = [pool.single_shot(uc, args.seed) for uc in sorted(args.uc, reverse=True)]
        all_dft = pool.all_dft()
        seconds["single_shot_and_all_dft"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        basis = ([(f"loop it. {r['iteration']}", r["dft_atoms"]) for r in loop["rows"]]
                 + [(f"U_c {r['uc']:g}", r["dft_atoms"]) for r in single])
        basis = list(dict((int(t), (s, t)) for s, t in basis).values())  # one per distinct budget
        random_runs = [pool.random(int(target), args.seed + 1000 + k) for _, target in basis for k in range(args.seeds)]
        random_rows = random_summary(random_runs, basis)
        seconds["random"] = round(time.perf_counter() - started, 1)
    seconds["total"] = round(time.perf_counter() - begin, 1)
    rows = [*loop["rows"], *single, *random_rows, all_dft]
    where = (f"RMSEs of the ACE ensemble mean on the fixed test set: {made['n_test']} Cu cells labelled by the {name}, "
             "none in the pool; 'DFT' below means the stand-in reference's labels")
    print(f"pool {made['n_pool']} cells ({made['pool_atoms']} atoms), test {made['n_test']} cells; members "
          f"{', '.join(MEMBERS)}, teacher {TEACHER}, {name}; loop {loop['state']} in {loop['wall_s']} s")
    print(where)
    print("\n".join(table(rows)))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "when": datetime.now(timezone.utc).isoformat(), "machine": platform.node(), "cpus": os.cpu_count(),
        "reference": name, "members": list(MEMBERS), "teacher": TEACHER, "metric_sample": where,
        "fit": options.model_dump(mode="json"), "data": made, "seconds": seconds,
        "u": {"weights": pool.weights.source, "median": float(np.median(pool.u)),
              "quantiles_90_99": [float(np.quantile(pool.u, q)) for q in (0.9, 0.99)]},
        "loop": {"state": loop["state"], "wall_s": loop["wall_s"], "uc": args.loop_uc, "batch": args.batch,
                 "iterations": loop["rows"]},
        "single_shot": single, "random": random_rows, "random_runs": random_runs, "all_dft": all_dft,
        "table_markdown": markdown(rows), "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "campaigns.json").write_text(json.dumps(result, indent=1))
    figure(loop["rows"], single, random_rows, all_dft, args.out / "campaigns.png", args.reference, made["n_test"])
    print(f"wrote {args.out / 'campaigns.json'} and {args.out / 'campaigns.png'} ({seconds['total']} s)")
    return 0 if loop["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
