"""Benchmark: fit time and test RMSE of linear ACE (pyace ridge) against nonlinear ACE (pacemaker).

Both fit the same EMT-labelled Cu/Al data (fcc cells of 4-16 atoms, strained by ±3 %,
rattled by 0.02-0.12 Å, random occupations) with the same basis size, through
``uq_flows.ace.fit_ace``, so both RMSEs come from evaluating the written potential files.
The pacemaker fit runs the fit environment's executable (``make .venv-fit``) with paper-001
defaults (8 embedding terms, SBessel, cutoff 5 Å, κ = 0.01, BFGS) for ``--steps`` iterations;
its time includes TensorFlow's start-up. Writes ``benchmarks/results/ace_fit.json``.

    .venv/bin/python benchmarks/ace_fit.py [--train 60] [--test 20] [--functions 20 50] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from uq_flows.ace import AceFitOptions, fit_ace, training_set
from uq_flows.io import with_labels
from uq_flows.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "ace_fit.json"


def dataset(n: int, seed: int):
    """EMT-labelled Cu/Al fcc cells of 4, 8 or 16 atoms."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        atoms = bulk("Cu", "fcc", a=3.7 * rng.uniform(0.97, 1.03), cubic=True) * [(1, 1, 1), (2, 1, 1), (2, 2, 1)][j % 3]
        atoms.numbers = np.where(rng.random(len(atoms)) < 0.3, 13, 29)
        atoms.rattle(rng.uniform(0.02, 0.12), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        out.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return training_set(out)


def run(backend: str, functions: int, steps: int, train, test) -> dict:
    options = AceFitOptions(backend=backend, n_functions=functions, max_steps=steps, active_set=False)
    with tempfile.TemporaryDirectory(prefix="uq-ace-bench-") as out:
        start = time.perf_counter()
        result = fit_ace(train, options, out, test)
        wall = time.perf_counter() - start
    member = result.members[0]
    return {
        "backend": backend, "functions_per_element": functions, "steps": steps if backend == "pacemaker" else None,
        "fit_seconds": member.fit_seconds, "wall_seconds": wall, **result.metrics.model_dump(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--functions", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-pacemaker", action="store_true")
    args = parser.parse_args()

    train, test = dataset(args.train, 0), dataset(args.test, 1)
    rows = []
    for functions in args.functions:
        for backend in ("linear", "pacemaker"):
            if backend == "pacemaker" and args.skip_pacemaker:
                continue
            print(f"fitting {backend} with {functions} functions per element ...", file=sys.stderr, flush=True)
            rows.append(run(backend, functions, args.steps, train, test))
    ratios = []
    for functions in args.functions:
        pair = {r["backend"]: r for r in rows if r["functions_per_element"] == functions}
        if len(pair) == 2:
            lin, pm = pair["linear"], pair["pacemaker"]
            ratios.append({
                "functions_per_element": functions,
                "fit_time_pacemaker_over_linear": pm["fit_seconds"] / lin["fit_seconds"],
                "test_force_rmse_pacemaker_over_linear": pm["test_force_rmse"] / lin["test_force_rmse"],
                "test_energy_rmse_pacemaker_over_linear": pm["test_energy_rmse_per_atom"] / lin["test_energy_rmse_per_atom"],
            })
    report = {
        "benchmark": "ace_fit",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "fit_threads": get_settings().fit_threads},
        "data": {"train_structures": len(train), "train_atoms": int(train.n_atoms.sum()), "test_structures": len(test),
                 "test_atoms": int(test.n_atoms.sum()), "elements": train.elements, "labels": "ASE EMT"},
        "results": rows,
        "ratios": ratios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")

    header = f"{'backend':<10} {'funcs':>5} {'steps':>5} {'fit (s)':>8} {'test E (meV/at)':>15} {'test F (meV/Å)':>14} {'train F (meV/Å)':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:<10} {r['functions_per_element']:>5} {r['steps'] or '':>5} {r['fit_seconds']:>8.2f} "
              f"{1e3 * r['test_energy_rmse_per_atom']:>15.2f} {1e3 * r['test_force_rmse']:>14.1f} "
              f"{1e3 * r['train_force_rmse']:>15.1f}")
    for r in ratios:
        print(f"{r['functions_per_element']} functions: pacemaker/linear fit time ×{r['fit_time_pacemaker_over_linear']:.0f}, "
              f"test force RMSE ×{r['test_force_rmse_pacemaker_over_linear']:.2f}, "
              f"test energy RMSE ×{r['test_energy_rmse_pacemaker_over_linear']:.2f}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
