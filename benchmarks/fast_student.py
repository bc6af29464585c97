"""Benchmark: a fast ACE student for campaigns, against a converged pacemaker fit with paper 001's settings.

Data (made once, cached under ``--data``): Cu cells of ≤ 8 atoms from the package's generators
(``starting_set(["Cu"], n, max_atoms=8)``: strained-rattled, vacancies, surfaces, short-range
pairs, dimers), duplicates rattled until distinct, labelled by ASE EMT. The training split is
drawn with ``--seed``, the test split with ``--seed + 1`` (no cell in both). Every error in the
table is measured on the held-out test split, by evaluating the written potential files
(``uq_flows.ace.fit_ace``, the path every consumer takes).

Recipes, all through ``fit_ace`` on the same training split, no active set (as the loop fits):

- ``converged``: pacemaker with paper 001's settings, which are the package's defaults
  (``AceFitOptions()``: 8-term embedding, SBessel, cutoff 5 Å, κ = 0.01, BFGS, 72 functions)
  with ``max_steps = --steps`` (paper: 2000). Whether its loss had converged is read off
  pacemaker's log (relative loss change over the last 10 % of the steps, and the optimizer's
  stop message).
- ``pacemaker-N``: the same with N steps (``--fast-steps``).
- ``linear-F``: linear ACE with F functions per element; its ridge α (``l2``) and force
  weight κ are chosen on a validation part of the training split (``--validation`` fraction,
  drawn with ``--seed``): ridge fits on the rest, validation RMSEs from the design matrices,
  the pair minimising E_val/min E_val + F_val/min F_val is refitted on the whole training split.

``--probe N`` only times an N-step pacemaker fit on the training split (to size ``--n``: here
0.72 s per step at 958 atoms, so ``--n 60`` for 2000 steps in ≲ 25 minutes). pacemaker's
``batch_size`` (``--batch-size``, through ``pacemaker_input``) changes speed only. If the
converged fit does not generalise (test force RMSE > 3× train), the ratio target is void and
the recommendation ranks the recipes within the time target on the bulk test cells.
Writes ``benchmarks/results/fast_student.json``; fits are kept under ``--data/fits`` and an
unchanged fit is read back instead of refitted (``reused`` in the JSON).

    .venv/bin/python benchmarks/fast_student.py --data /tmp/fast-student [--n 60] [--steps 2000] [--probe 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.campaigns import distinct_cells  # noqa: E402  (the same distinct Cu cells)
from uq_flows.ace.basis import AceFitOptions, create_basis
from uq_flows.ace.data import TrainingSet, fit_frame, fit_reference_energies, training_set
from uq_flows.ace.fit import SUMMARY_FILE, AceFitResult, fit_ace, read_summary
from uq_flows.ace.linear import row_weights
from uq_flows.ace.potential import AceCalculator, predict
from uq_flows.explore.generators import starting_set
from uq_flows.io import read_structures, with_labels, write_extxyz
from uq_flows.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "fast_student.json"
TARGET_ERROR_RATIO = 1.3
TARGET_TIME_RATIO = 0.10
REFERENCE_MAX_TEST_OVER_TRAIN = 3.0  # a converged fit whose test force RMSE exceeds 3x its train RMSE overfits
ALPHAS = [1e-12, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
KAPPAS = [0.01, 0.1, 0.3]


# ---------------------------------------------------------------- data

def _label(structures: list) -> list:
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = EMT()
        out.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


def make_data(folder: Path, n: int, n_test: int, seed: int) -> tuple[TrainingSet, TrainingSet, dict]:
    """Train (seed) and test (seed + 1) splits, EMT-labelled, cached in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    made_path = folder / "made.json"
    wanted = {"n": n, "n_test": n_test, "seed": seed, "max_atoms": 8, "labels": "ASE EMT"}
    made = json.loads(made_path.read_text()) if made_path.exists() else {}
    if made.get("made_with") != wanted:
        begin = time.perf_counter()
        seen: set[str] = set()
        train = _label(distinct_cells(starting_set(["Cu"], n, max_atoms=8, seed=seed), seen, seed))
        test = _label(distinct_cells(starting_set(["Cu"], n_test, max_atoms=8, seed=seed + 1), seen, seed + 1))
        write_extxyz(folder / "train.extxyz", train)
        write_extxyz(folder / "test.extxyz", test)
        made = {"made_with": wanted, "seconds": round(time.perf_counter() - begin, 1)}
        made_path.write_text(json.dumps(made, indent=1))
    train = training_set(read_structures(folder / "train.extxyz"))
    test = training_set(read_structures(folder / "test.extxyz"))
    info = {**made, "train_structures": len(train), "train_atoms": int(train.n_atoms.sum()),
            "test_structures": len(test), "test_atoms": int(test.n_atoms.sum()), "folder": str(folder)}
    return train, test, info


# ---------------------------------------------------------------- fits

def fit(name: str, options: AceFitOptions, train: TrainingSet, test: TrainingSet, fits: Path,
        data_key: dict, reuse: bool = True) -> tuple[AceFitResult, bool]:
    """``fit_ace`` into ``fits/name``; an earlier fit with the same options and data is read back."""
    out = fits / name
    key_path = out / "benchmark-key.json"
    key = {"options": options.model_dump(mode="json"), "data": data_key}
    if reuse and key_path.exists() and (out / SUMMARY_FILE).exists() and json.loads(key_path.read_text()) == key:
        print(f"{name}: reusing {out}", file=sys.stderr, flush=True)
        return read_summary(out / SUMMARY_FILE), True
    print(f"{name}: fitting ...", file=sys.stderr, flush=True)
    key_path.unlink(missing_ok=True)
    (out / "pacemaker" / "log.txt").unlink(missing_ok=True)  # pacemaker appends to an old log
    result = fit_ace(train, options, out, test, log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    key_path.write_text(json.dumps(key, indent=1))
    return result, False


_ITERATION = re.compile(r"Iteration\s+#(\d+).*?Loss:\s*([0-9.eE+-]+)")


_RMSE = re.compile(r"Iteration\s+#(\d+).*?RMSE Energy\(low\):\s*([0-9.eE+-]+).*?Forces\(low\):\s*([0-9.eE+-]+)")


def pacemaker_log(log_path: Path, steps: int) -> dict:
    """Loss per logged iteration, the optimizer's stop message, and the loss change over the last 10 %."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return {"log": str(log_path), "found": False}
    text = text[text.rfind("INIT STATS"):]  # the last run only
    trace = [(int(m.group(1)), float(m.group(2))) for m in _ITERATION.finditer(text)]
    messages = [line.strip() for line in text.splitlines()
                if re.search(r"(message|Optimization result|CONVERGENCE|Maximum number of iterations|success)", line)]
    out: dict = {"log": str(log_path), "found": True, "loss_trace": trace[-40:], "optimizer_messages": messages[-6:]}
    rmses = [(int(m.group(1)), float(m.group(2)), float(m.group(3))) for m in _RMSE.finditer(text)]
    if rmses:
        final = rmses[-1]
        reached = [step for step, e, f in rmses
                   if e <= TARGET_ERROR_RATIO * final[1] and f <= TARGET_ERROR_RATIO * final[2]]
        out["train_rmse_final_logged"] = {"step": final[0], "energy_meV_per_atom": final[1], "force_meV_per_A": final[2]}
        out["first_step_within_target_ratio_of_final_train_rmse"] = reached[0] if reached else None
    if trace:
        last_step, last_loss = trace[-1]
        earlier = [loss for step, loss in trace if step <= last_step - max(1, steps // 10)]
        out["final_step"], out["final_loss"] = last_step, last_loss
        if earlier:
            out["loss_relative_change_last_10pct"] = (earlier[-1] - last_loss) / earlier[-1]
    return out


def seconds_per_step(log_path: Path) -> float | None:
    """Seconds per BFGS iteration from the log's timestamps of the logged iterations (first excluded)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    lines = text[text.rfind("INIT STATS"):].splitlines()
    stamps = []
    for line in lines:
        m = _ITERATION.search(line)
        t = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.](\d+)", line)
        if m and t:
            moment = datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + float("0." + t.group(2))
            stamps.append((int(m.group(1)), moment))
    if len(stamps) < 2:
        return None
    (s0, t0), (s1, t1) = stamps[0], stamps[-1]
    return (t1 - t0) / (s1 - s0) if s1 > s0 else None


def choose_linear_regularisation(train: TrainingSet, functions: int, validation: float, seed: int) -> dict:
    """Ridge α and κ of a linear fit chosen on a validation part of the training split.

    The design matrices are pyace's ``LinearACEDataset`` of the package's basis (as in
    ``uq_flows.ace.linear.fit_linear_ace``), weighted by the package's ``row_weights``; the
    validation RMSEs (energy per atom, force components) come from the validation design matrix.
    """
    from pyace.linearacefit import LinearACEDataset
    from sklearn.linear_model import Ridge

    begin = time.perf_counter()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(round(validation * len(train))))
    fit_part, val_part = train.subset(order[n_val:]), train.subset(order[:n_val])
    reference = fit_reference_energies(train)
    options = AceFitOptions(backend="linear", n_functions=functions)
    workers = get_settings().fit_threads
    design = {}
    for name, part in (("fit", fit_part), ("validation", val_part)):
        dataset = LinearACEDataset(create_basis(train.elements, options), fit_frame(part, reference))
        design[name] = (dataset.get_design_matrix(max_workers=max(1, min(workers, len(part)))),
                        dataset.get_target_vector(), part.n_atoms)
    x_fit, y_fit, n_fit = design["fit"]
    x_val, y_val, n_val_atoms = design["validation"]
    n_cfg = len(n_val_atoms)
    grid = []
    for kappa in KAPPAS:
        weights = row_weights(n_fit, kappa)
        for alpha in ALPHAS:
            model = Ridge(alpha=alpha, fit_intercept=False).fit(x_fit, y_fit, sample_weight=weights)
            residual = x_val @ model.coef_ - y_val
            grid.append({"kappa": kappa, "l2": alpha,
                         "validation_energy_rmse_per_atom": float(np.sqrt(np.mean(residual[:n_cfg] ** 2))),
                         "validation_force_rmse": float(np.sqrt(np.mean(residual[n_cfg:] ** 2)))})
    e_min = min(g["validation_energy_rmse_per_atom"] for g in grid)
    f_min = min(g["validation_force_rmse"] for g in grid)
    for g in grid:
        g["score"] = g["validation_energy_rmse_per_atom"] / e_min + g["validation_force_rmse"] / f_min
    best = min(grid, key=lambda g: g["score"])
    return {"functions_per_element": functions, "kappa": best["kappa"], "l2": best["l2"],
            "n_fit_structures": len(fit_part), "n_validation_structures": len(val_part),
            "selection_seconds": round(time.perf_counter() - begin, 1), "best": best, "grid": grid}


GROUPS = {"bulk": ("strained-rattled", "vacancy"), "surface": ("surface",), "short-pairs": ("short",),
          "dimer": ("dimer",)}


def generator_kind(atoms) -> str:
    return str(atoms.info.get("generator", "?")).split(" ")[0].rstrip(":")


def test_breakdown(result: AceFitResult, test: TrainingSet) -> dict:
    """Test RMSEs per group of generators (the written potential evaluated on the test split again)."""
    from uq_flows.ace.fit import rmse

    energies, forces = predict(AceCalculator(result.potential), test.structures)
    kinds = np.array([generator_kind(a) for a in test.structures])
    out = {}
    for group, members in GROUPS.items():
        pick = np.flatnonzero(np.isin(kinds, members))
        if len(pick) == 0:
            continue
        e, f = rmse(energies[pick], test.energies[pick], np.concatenate([forces[k] for k in pick]),
                    np.concatenate([test.forces[k] for k in pick]), test.n_atoms[pick])
        out[group] = {"n_structures": int(len(pick)), "n_atoms": int(test.n_atoms[pick].sum()),
                      "test_energy_rmse_per_atom": e, "test_force_rmse": f}
    return out


def row(name: str, result: AceFitResult, reused: bool, extra: dict | None = None) -> dict:
    member = result.members[0]
    return {"recipe": name, "backend": result.backend, "functions_per_element": result.options.n_functions,
            "max_steps": result.options.max_steps if result.backend == "pacemaker" else None,
            "kappa": result.options.kappa, "l2": result.options.l2,
            "fit_seconds": member.fit_seconds, "reused": reused,
            "test_energy_rmse_per_atom": result.metrics.test_energy_rmse_per_atom,
            "test_force_rmse": result.metrics.test_force_rmse,
            "train_energy_rmse_per_atom": result.metrics.train_energy_rmse_per_atom,
            "train_force_rmse": result.metrics.train_force_rmse,
            "folder": result.out, **(extra or {})}


def add_breakdown(r: dict, result: AceFitResult, test: TrainingSet) -> dict:
    r["test_by_group"] = test_breakdown(result, test)
    return r


def pacemaker_extra(result: AceFitResult) -> dict:
    log = Path(result.members[0].folder) / "pacemaker" / "log.txt"
    info = pacemaker_log(log, result.options.max_steps)
    info["seconds_per_step"] = seconds_per_step(log)
    return {"pacemaker": info}


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Folder for the cached data and fits.")
    parser.add_argument("--n", type=int, default=60, help="starting_set n of the training split (≈ 2n cells).")
    parser.add_argument("--n-test", type=int, default=100, help="starting_set n of the test split.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000, help="BFGS steps of the converged fit (paper 001: 2000).")
    parser.add_argument("--fast-steps", type=int, nargs="*", default=[100, 150, 200])
    parser.add_argument("--functions", type=int, nargs="*", default=[20, 50, 100], help="Linear recipes.")
    parser.add_argument("--validation", type=float, default=0.2, help="Fraction of the training split for λ, κ.")
    parser.add_argument("--probe", type=int, default=0, help="Only time a pacemaker fit of this many steps.")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="pacemaker backend batch_size (structures per batch; speed only, same loss); 0: package default.")
    parser.add_argument("--no-reuse", action="store_true", help="Refit even where a kept fit matches.")
    args = parser.parse_args()

    train, test, data = make_data(args.data, args.n, args.n_test, args.seed)
    print(f"data: {data['train_structures']} train cells ({data['train_atoms']} atoms), "
          f"{data['test_structures']} test cells ({data['test_atoms']} atoms)", file=sys.stderr, flush=True)
    fits = args.data / "fits"
    data_key = data["made_with"]
    reuse = not args.no_reuse
    extra_input = {"backend": {"batch_size": args.batch_size}} if args.batch_size else {}

    def paper(steps: int) -> AceFitOptions:
        """The package's pacemaker defaults (paper 001's settings) with ``steps`` BFGS steps."""
        return AceFitOptions(max_steps=steps, active_set=False, pacemaker_input=extra_input)

    if args.probe:
        options = paper(args.probe)
        result, _ = fit(f"probe-{args.probe}", options, train, test, fits, data_key, reuse=False)
        extra = pacemaker_extra(result)
        per_step = extra["pacemaker"]["seconds_per_step"]
        print(json.dumps({"fit_seconds": result.members[0].fit_seconds, "seconds_per_step": per_step,
                          "train_atoms": data["train_atoms"],
                          "estimated_seconds_for_steps": per_step * args.steps if per_step else None,
                          "steps": args.steps}, indent=1))
        return

    rows, selections = [], []
    for functions in args.functions:
        print(f"linear-{functions}: choosing l2 and kappa on the validation part ...", file=sys.stderr, flush=True)
        chosen = choose_linear_regularisation(train, functions, args.validation, args.seed)
        selections.append(chosen)
        options = AceFitOptions(backend="linear", n_functions=functions, l2=chosen["l2"], kappa=chosen["kappa"],
                                active_set=False)
        result, reused = fit(f"linear-{functions}", options, train, test, fits, data_key, reuse)
        rows.append(add_breakdown(row(f"linear-{functions}", result, reused, {"selection": {
            k: chosen[k] for k in ("kappa", "l2", "selection_seconds", "best")}}), result, test))
        # the package default regularisation, for comparison
        options = AceFitOptions(backend="linear", n_functions=functions, active_set=False)
        result, reused = fit(f"linear-{functions}-default", options, train, test, fits, data_key, reuse)
        rows.append(add_breakdown(row(f"linear-{functions}-default", result, reused), result, test))
    for steps in args.fast_steps:
        options = paper(steps)
        result, reused = fit(f"pacemaker-{steps}", options, train, test, fits, data_key, reuse)
        rows.append(add_breakdown(row(f"pacemaker-{steps}", result, reused, pacemaker_extra(result)), result, test))
    options = paper(args.steps)
    result, reused = fit(f"converged-{args.steps}", options, train, test, fits, data_key, reuse)
    converged = add_breakdown(row(f"converged-{args.steps}", result, reused, pacemaker_extra(result)), result, test)

    for r in [*rows, converged]:
        r["energy_ratio"] = r["test_energy_rmse_per_atom"] / converged["test_energy_rmse_per_atom"]
        r["force_ratio"] = r["test_force_rmse"] / converged["test_force_rmse"]
        r["time_ratio"] = r["fit_seconds"] / converged["fit_seconds"]
        for group, values in r["test_by_group"].items():
            ref = converged["test_by_group"][group]
            values["energy_ratio"] = values["test_energy_rmse_per_atom"] / ref["test_energy_rmse_per_atom"]
            values["force_ratio"] = values["test_force_rmse"] / ref["test_force_rmse"]
        r["meets_target"] = bool(max(r["energy_ratio"], r["force_ratio"]) <= TARGET_ERROR_RATIO
                                 and r["time_ratio"] <= TARGET_TIME_RATIO)
    meeting = [r for r in rows if r["meets_target"]]
    # A converged fit that does not generalise (test far above train) makes "within 1.3x of it" void:
    # then the recipe is chosen among those within the time target by its largest bulk-test ratio.
    generalisation = converged["test_force_rmse"] / converged["train_force_rmse"]
    reference_sound = generalisation <= REFERENCE_MAX_TEST_OVER_TRAIN
    fast = [r for r in rows if r["time_ratio"] <= TARGET_TIME_RATIO]
    by_bulk = lambda r: max(r["test_by_group"]["bulk"]["energy_ratio"], r["test_by_group"]["bulk"]["force_ratio"])
    if reference_sound and meeting:
        recommended, rule = min(meeting, key=lambda r: r["fit_seconds"]), "fastest recipe meeting the target"
    else:
        recommended = min(fast or rows, key=by_bulk)
        rule = ("converged fit does not generalise (test/train force RMSE "
                f"{generalisation:.0f} > {REFERENCE_MAX_TEST_OVER_TRAIN:g}); recipe within the time target with "
                "the smallest largest bulk-test error ratio" if not reference_sound else
                "no recipe meets the target; recipe within the time target with the smallest largest bulk-test ratio")
    report = {
        "benchmark": "fast_student",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "fit_threads": get_settings().fit_threads, "load_average_at_end": os.getloadavg()},
        "data": data,
        "metrics_sample": "every test_* metric and ratio: the held-out test split (seed + 1), "
                          "by evaluating the written potential; train_*: the training split",
        "target": {"error_ratio_max": TARGET_ERROR_RATIO, "time_ratio_max": TARGET_TIME_RATIO},
        "converged": converged,
        "recipes": rows,
        "linear_selection": selections,
        "target_met_by": [r["recipe"] for r in meeting],
        "recommended": recommended["recipe"],
        "recommendation_rule": rule,
        "converged_test_over_train_force_rmse": generalisation,
        "converged_generalises": reference_sound,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")

    print(f"test split: {data['test_structures']} cells, {data['test_atoms']} atoms; "
          f"training split: {data['train_structures']} cells, {data['train_atoms']} atoms")
    header = (f"{'recipe':<22} {'fit (s)':>8} {'test E (meV/at)':>15} {'test F (eV/Å)':>13} "
              f"{'E ratio':>7} {'F ratio':>7} {'time ratio':>10}  target")
    print(header)
    print("-" * len(header))
    for r in [converged, *rows]:
        print(f"{r['recipe']:<22} {r['fit_seconds']:>8.1f} {1e3 * r['test_energy_rmse_per_atom']:>15.2f} "
              f"{r['test_force_rmse']:>13.4f} {r['energy_ratio']:>7.2f} {r['force_ratio']:>7.2f} "
              f"{r['time_ratio']:>10.3f}  {'met' if r['meets_target'] else ''}")
    group = "bulk"
    print(f"\n{group} test cells only (strained-rattled and vacancy cells: "
          f"{converged['test_by_group'][group]['n_structures']} cells):")
    print(f"{'recipe':<22} {'test E (meV/at)':>15} {'test F (eV/Å)':>13} {'E ratio':>7} {'F ratio':>7}")
    for r in [converged, *rows]:
        g = r["test_by_group"][group]
        print(f"{r['recipe']:<22} {1e3 * g['test_energy_rmse_per_atom']:>15.2f} {g['test_force_rmse']:>13.4f} "
              f"{g['energy_ratio']:>7.2f} {g['force_ratio']:>7.2f}")
    pm = converged["pacemaker"]
    print(f"converged fit: final step {pm.get('final_step')}, loss {pm.get('final_loss')}, relative loss change "
          f"over the last 10 % of steps {pm.get('loss_relative_change_last_10pct')}; {pm.get('optimizer_messages')}")
    print(f"converged fit: train RMSEs {1e3 * converged['train_energy_rmse_per_atom']:.2f} meV/atom, "
          f"{converged['train_force_rmse']:.4f} eV/Å (written potential on the training split); "
          f"test/train force RMSE {generalisation:.1f}")
    print(f"target (all test cells) met by: {', '.join(report['target_met_by']) or 'none'}")
    print(f"recommended: {recommended['recipe']} ({rule})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
