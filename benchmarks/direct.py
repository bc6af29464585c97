"""Benchmark of DIRECT down-sampling against maml's DIRECTSampler on the same features.

Generates n candidates × d features shaped like structure embeddings of MD snapshots
(prototypes in a latent space, snapshots scattered around them, a smooth non-linear map to
d features plus noise), saves them as .npy, and runs, one after the other in fresh
processes, ``uq_flows.selection.direct_sample`` in this environment and maml's
``DIRECTSampler`` in the benchmark environment (``.venv-bench``: maml's dependency pins stay
out of the main environment). Reports seconds (selection only, features already loaded),
peak resident memory of each process (the fastest of ``--repeat`` alternating runs), the
time ratio, and whether the selected sets agree.
Writes ``benchmarks/results/direct.json``.

    .venv/bin/python benchmarks/direct.py [--n 100000] [--features 128] [--maml-python .venv-bench/bin/python]

Configurations: ``mp-aloe`` (threshold 0.1, k = 5, MP-ALOE's settings), ``n-clusters``
(2000 clusters from threshold 0.25, k = 1: maml's threshold search stays small), and
``maml-search`` (1000 clusters from maml's default start 0.5: maml's update overshoots to tens
of thousands of subclusters and a Ward step of several GiB; uq-flows bisects instead, so the
selections differ by design). maml runs under a memory cap (``--maml-memory-gib``) so that
last case cannot exhaust the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "direct.json"
CONFIGS = [
    {"name": "mp-aloe", "n_clusters": None, "threshold": 0.1, "k": 5},
    {"name": "n-clusters", "n_clusters": 2000, "threshold": 0.25, "k": 1},
    {"name": "maml-search", "n_clusters": 1000, "threshold": 0.5, "k": 1},
]


def make_features(n: int, d: int, seed: int, latent: int = 16, prototypes: int = 2000, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(prototypes, latent)) * 2
    weights = rng.dirichlet(np.full(prototypes, 0.5))  # some prototypes sampled far more often
    z = centres[rng.choice(prototypes, size=n, p=weights)] + rng.normal(size=(n, latent)) * spread
    hidden = np.tanh(z @ (rng.normal(size=(latent, 64)) / np.sqrt(latent)))
    return hidden @ rng.normal(size=(64, d)) + rng.normal(size=(n, d)) * 0.05


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- workers


def worker(kind: str, features_path: str, config: dict, out_path: str) -> None:
    """Run one selection in this process and write seconds, peak memory and the selection."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    features = np.load(features_path)
    if kind == "ours":
        # imported before the clock starts, as maml's modules import them at import time
        import sklearn.cluster
        import sklearn.decomposition
        import sklearn.neighbors
        import sklearn.preprocessing  # noqa: F401

        from uq_flows.selection.direct import DirectConfig, direct_sample

        start = time.perf_counter()
        result = direct_sample(features, DirectConfig(n_clusters=config["n_clusters"], threshold=config["threshold"], k=config["k"]))
        seconds = time.perf_counter() - start
        selected = result.selected
        extra = {"n_clusters": result.n_clusters, "n_subclusters": result.n_subclusters,
                 "n_components": result.n_components, "thresholds_tried": result.thresholds_tried}
    else:
        from maml.sampling.clustering import BirchClustering
        from maml.sampling.direct import DIRECTSampler
        from maml.sampling.stratified_sampling import SelectKFromClusters

        sampler = DIRECTSampler(
            structure_encoder=False,
            clustering=BirchClustering(n=config["n_clusters"], threshold_init=config["threshold"]),
            select_k_from_clusters=SelectKFromClusters(k=config["k"]),
        )
        start = time.perf_counter()
        result = sampler.fit_transform(features)
        seconds = time.perf_counter() - start
        selected = np.array(sorted(int(i) for i in result["selected_indexes"]), dtype=np.int64)
        model = sampler.clustering.model
        extra = {"n_clusters": len(set(model.subcluster_labels_)), "n_subclusters": len(model.subcluster_centers_),
                 "threshold": sampler.clustering.threshold_init}
    np.save(out_path + ".npy", selected)
    Path(out_path).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                                          "n_selected": len(selected), **extra}))


def run_worker(python: str, kind: str, features_path: Path, config: dict, folder: Path, timeout: float,
               memory_gib: float | None) -> dict:
    out = folder / f"{kind}-{config['name']}.json"
    command = [python, str(Path(__file__).resolve()), "--worker", kind, "--worker-features", str(features_path),
               "--worker-config", json.dumps(config), "--worker-out", str(out)]

    def limit_memory():
        if memory_gib:
            size = int(memory_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wall = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=limit_memory, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - wall
    if done.returncode != 0 or not out.exists():
        tail = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
        if "Unable to allocate" in tail:  # numpy's MemoryError under the cap: say how much it wanted
            tail = "MemoryError: " + tail[tail.index("Unable to allocate"):].split(" for an array")[0]
        return {"error": f"exit {done.returncode}: {tail[:300]}", "wall_seconds": wall}
    report = json.loads(out.read_text())
    report["selected"] = np.load(str(out) + ".npy")
    report["wall_seconds"] = wall
    return report


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="candidates")
    parser.add_argument("--features", type=int, default=128, help="features per candidate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default=",".join(c["name"] for c in CONFIGS), help="comma-separated names")
    parser.add_argument("--maml-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--maml-memory-gib", type=float, default=8.0, help="address-space cap of the maml process")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest is reported (noisy machines)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["ours", "maml"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-features", help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.worker_features, json.loads(args.worker_config), args.worker_out)
        return 0

    configs = [c for c in CONFIGS if c["name"] in args.configs.split(",")]
    has_maml = Path(args.maml_python).exists()
    rows = []
    with tempfile.TemporaryDirectory(prefix="uq-direct-bench-") as scratch:
        folder = Path(scratch)
        start = time.perf_counter()
        features = make_features(args.n, args.features, args.seed)
        generate = time.perf_counter() - start
        features_path = folder / "features.npy"
        np.save(features_path, features)
        del features
        print(f"{args.n} × {args.features} features generated in {generate:.1f} s", file=sys.stderr)
        for config in configs:
            ours_runs, maml_runs = [], []
            for _ in range(max(1, args.repeat)):  # alternate, so drifting load hits both alike
                ours_runs.append(run_worker(sys.executable, "ours", features_path, config, folder, args.timeout, None))
                if has_maml and "error" not in (maml_runs[-1] if maml_runs else {}):
                    maml_runs.append(run_worker(args.maml_python, "maml", features_path, config, folder,
                                                args.timeout, args.maml_memory_gib))
            ours, maml = _fastest(ours_runs), _fastest(maml_runs) if has_maml else {
                "error": f"no maml environment at {args.maml_python}"}
            ours["seconds_all"] = [r["seconds"] for r in ours_runs if "seconds" in r]
            maml["seconds_all"] = [r["seconds"] for r in maml_runs if "seconds" in r]
            print(f"{config['name']}: uq-flows {ours.get('seconds', float('nan')):.1f} s, "
                  f"maml {maml.get('seconds', float('nan')):.1f} s {maml.get('error', '')}", file=sys.stderr)
            row = {"config": config, "ours": {k: v for k, v in ours.items() if k != "selected"},
                   "maml": {k: v for k, v in maml.items() if k != "selected"}}
            if "selected" in ours and "selected" in maml:
                a, b = set(ours["selected"].tolist()), set(maml["selected"].tolist())
                row["agree"] = a == b
                row["jaccard"] = len(a & b) / len(a | b) if a | b else 1.0
                row["time_ratio_maml_over_ours"] = maml["seconds"] / ours["seconds"]
            else:
                row["agree"] = None
            rows.append(row)

    result = {
        "benchmark": "direct",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {"n": args.n, "features": args.features, "seed": args.seed, "repeat": args.repeat,
                       "maml_memory_gib": args.maml_memory_gib, "timeout": args.timeout},
        "generate_seconds": generate,
        "targets": {"seconds": 60, "peak_rss_gib": 4},
        "runs": rows,
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "machine": platform.machine(), "cpus": os.cpu_count(), "maml_python": args.maml_python},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    _table(rows)
    print(f"wrote {args.output}")
    return 0


def _fastest(runs: list[dict]) -> dict:
    good = [r for r in runs if "seconds" in r]
    return dict(min(good, key=lambda r: r["seconds"])) if good else dict(runs[-1])


def _table(rows: list[dict]) -> None:
    header = ["config", "clusters", "selected", "uq-flows s", "uq-flows MiB", "maml s", "maml MiB", "maml/ours", "agree"]
    lines = [header]
    for row in rows:
        ours, maml = row["ours"], row["maml"]

        def num(d, key, fmt):
            return fmt.format(d[key]) if key in d else "—"

        lines.append([
            row["config"]["name"],
            num(ours, "n_clusters", "{}"),
            num(ours, "n_selected", "{}") + (f" / {maml['n_selected']}" if "n_selected" in maml else ""),
            num(ours, "seconds", "{:.1f}"),
            num(ours, "peak_rss_mb", "{:.0f}"),
            num(maml, "seconds", "{:.1f}") if "seconds" in maml else maml.get("error", "—").removeprefix("exit 1: ")[:48],
            num(maml, "peak_rss_mb", "{:.0f}"),
            f"{row['time_ratio_maml_over_ours']:.1f}×" if "time_ratio_maml_over_ours" in row else "—",
            {True: "yes", False: f"no (Jaccard {row.get('jaccard', 0):.3f})", None: "—"}[row["agree"]],
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))


if __name__ == "__main__":
    raise SystemExit(main())
