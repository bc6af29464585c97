"""Benchmark of the engine-free uncertainty code on random ragged ensembles.

Times ``force_uncertainty`` (U(1), paper 001 eq. 1) against a literal per-configuration
loop, checks they agree, and times ``ensemble_mean_force_error`` (eq. 5),
``force_error_terms`` and ``accuracy_coverage``. Writes ``benchmarks/results/uncertainty.json``.

    .venv/bin/python benchmarks/uncertainty.py [--configs N] [--members K] [--atoms A]

Configurations have between A - A//2 and A + A//2 atoms, A on average exactly, so the
force array holds K * N * A * 3 float64 values (100000 x 11 x 64: 1.69 GB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy

from uq_flows.uncertainty import (
    accuracy_coverage,
    ensemble_mean_force_error,
    force_error_terms,
    force_uncertainty,
    inverse_rmse_weights,
)

RESULTS = Path(__file__).resolve().parent / "results" / "uncertainty.json"
# Paper 001 force RMSEs (eV/A) of its eleven TopN members, used for realistic weights.
PAPER_RMSE = [0.23719, 0.243286, 0.24351, 0.253712, 0.2643, 0.27751, 0.350226, 0.48766, 0.49757, 0.50635, 0.5111]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def ragged_counts(rng: np.random.Generator, n_configs: int, mean_atoms: int) -> np.ndarray:
    """Atom counts in [A - A//2, A + A//2] summing to exactly n_configs * A (paired offsets)."""
    half = mean_atoms // 2
    offsets = rng.integers(-half, half + 1, size=n_configs // 2)
    deltas = np.concatenate([offsets, -offsets, np.zeros(n_configs % 2, dtype=offsets.dtype)])
    rng.shuffle(deltas)
    return mean_atoms + deltas


def make_data(rng: np.random.Generator, n_configs: int, n_members: int, mean_atoms: int):
    """Members = shared base force + noise whose scale varies by configuration (log-normal)."""
    n_atoms = ragged_counts(rng, n_configs, mean_atoms)
    n_total = int(n_atoms.sum())
    forces = rng.standard_normal((n_members, n_total, 3))
    spread = np.repeat(rng.lognormal(mean=-2.0, sigma=1.0, size=n_configs), n_atoms)
    forces *= spread[None, :, None]
    base = rng.standard_normal((n_total, 3))
    forces += base
    reference = base + rng.standard_normal((n_total, 3)) * spread[:, None]
    return forces, n_atoms, reference


def loop_reference_u1(forces: np.ndarray, n_atoms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Eq. 1 literally, one configuration at a time (the straightforward implementation)."""
    out = np.empty(n_atoms.size)
    start = 0
    for j, count in enumerate(n_atoms):
        block = forces[:, start : start + count, :]
        start += count
        mean = block.mean(axis=0)
        d = np.linalg.norm(block - mean, axis=2).max(axis=1)
        out[j] = math.sqrt(float(np.dot(weights, d * d)))
    return out


def best_of(repeat: int, func, *args, **kwargs):
    best, result = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, result


def print_table(rows: list[tuple[str, float, str]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for name, seconds, note in rows:
            print(f"  {name:<44} {seconds:>10.3f} s  {note}")
        return
    table = Table(title=title)
    table.add_column("operation")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for name, seconds, note in rows:
        table.add_row(name, f"{seconds:.3f}", note)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=11)
    parser.add_argument("--atoms", type=int, default=64, help="mean atoms per configuration")
    parser.add_argument("--repeat", type=int, default=3, help="best-of repeats for vectorised timings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.configs < 1 or args.members < 2 or args.atoms < 1 or args.repeat < 1:
        parser.error("need --configs >= 1, --members >= 2, --atoms >= 1, --repeat >= 1")

    n_total = args.configs * args.atoms
    forces_mb = args.members * n_total * 3 * 8 / 2**20
    # forces + (K, N) squared deviations + a few (N, 3) arrays
    needed_mb = forces_mb * (1 + 1 / 3) + 6 * n_total * 3 * 8 / 2**20
    free = available_mb()
    print(f"forces: {args.members} x {n_total} x 3 float64 = {forces_mb / 1024:.2f} GiB; "
          f"estimated need {needed_mb / 1024:.2f} GiB; available "
          + (f"{free / 1024:.2f} GiB" if free is not None else "unknown"))
    if free is not None and needed_mb > 0.9 * free:
        print("not enough memory: lower --configs or --atoms", file=sys.stderr)
        return 1

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    forces, n_atoms, reference = make_data(rng, args.configs, args.members, args.atoms)
    generate_s = time.perf_counter() - t0
    rss_after_data = peak_rss_mb()
    rmse = np.resize(PAPER_RMSE, args.members)
    weights = inverse_rmse_weights(rmse)

    vec_s, u_vec = best_of(args.repeat, force_uncertainty, forces, n_atoms, weights, variant=1)
    loop_s, u_loop = best_of(1, loop_reference_u1, forces, n_atoms, weights)
    max_abs_diff = float(np.max(np.abs(u_vec - u_loop)))
    err_s, error = best_of(args.repeat, ensemble_mean_force_error, reference, forces, n_atoms)
    predicted = forces.mean(axis=0)
    terms_s, (sq_sum, n_comp) = best_of(args.repeat, force_error_terms, reference, predicted, n_atoms)
    energy_error = rng.standard_normal(args.configs) * 0.01
    cov_s, curve = best_of(args.repeat, accuracy_coverage, u_vec, energy_error, sq_sum, n_comp)
    rss_peak = peak_rss_mb()

    speedup = loop_s / vec_s
    rows = [
        ("generate random data", generate_s, f"{forces_mb / 1024:.2f} GiB forces"),
        ("force_uncertainty variant 1 (vectorised)", vec_s, f"best of {args.repeat}"),
        ("eq. 1 loop over configurations (reference)", loop_s, f"speed-up x{speedup:.1f}"),
        ("ensemble_mean_force_error", err_s, f"best of {args.repeat}"),
        ("force_error_terms", terms_s, f"best of {args.repeat}"),
        ("accuracy_coverage", cov_s, f"{curve.coverage.size} points"),
    ]
    title = (f"{args.configs} configs x {args.members} members x {args.atoms} atoms (mean); "
             f"max |U_vec - U_loop| = {max_abs_diff:.2e}; peak RSS {rss_peak / 1024:.2f} GiB")
    print_table(rows, title)

    result = {
        "benchmark": "uncertainty",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": {
            "configs": args.configs,
            "members": args.members,
            "mean_atoms": args.atoms,
            "atoms_total": int(n_atoms.sum()),
            "atoms_min": int(n_atoms.min()),
            "atoms_max": int(n_atoms.max()),
            "repeat": args.repeat,
            "seed": args.seed,
        },
        "forces_gib": forces_mb / 1024,
        "seconds": {
            "generate": generate_s,
            "force_uncertainty_v1": vec_s,
            "loop_reference_v1": loop_s,
            "ensemble_mean_force_error": err_s,
            "force_error_terms": terms_s,
            "accuracy_coverage": cov_s,
        },
        "speedup_vs_loop": speedup,
        "max_abs_diff_vs_loop": max_abs_diff,
        "agree": bool(max_abs_diff <= 1e-10 * max(1.0, float(np.max(u_vec)))),
        "peak_rss_gib": rss_peak / 1024,
        "peak_rss_after_data_gib": rss_after_data / 1024,
        "u_median": float(np.median(u_vec)),
        "error_median": float(np.median(error)),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
