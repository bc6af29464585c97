"""Workflow overhead of one distillation iteration, against the time spent in models and "DFT".

One iteration = score (2 cheap members: EMT and a stretched EMT) → threshold → label (the
reference labeller, EMT, one job per DFT structure; the teacher, EMT, one job) → assemble,
on N rattled 4-atom Cu cells. The models are deliberately cheap so that what is left is the
workflow's own cost: building and resolving jobs, serialising inputs and outputs, the
JobStore (embedded MontyStore under a temporary UQ_FLOWS_HOME) and, for FireWorks, the
launchpad (embedded, in-process rockets through ``uq_flows.manager.rocket.run_worker``).

compute  = time inside the calculators (every EMT ``calculate``, member scoring, reference and
           teacher labels), measured by wrapping ``EMT.calculate``;
job time = time inside ``jobflow.Job.run`` (function + reference resolution + store writes);
overhead = total wall − compute; reported per iteration and per job.

    .venv/bin/python benchmarks/workflow_overhead.py [--sizes 100 5000] [--dft-budget 40] [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from ase.build import bulk

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "results" / "workflow_overhead.json"
# the two cheap ensemble members (EMT and EMT with forces and energies ×1.1); EMT is also the reference and teacher
EMT_MEMBER = "emt=ase:ase.calculators.emt:EMT"
MEMBERS = [EMT_MEMBER, "stretched=ase:tests.flows.slow_calculators:StretchedEMT"]


class Timers:
    def __init__(self):
        self.compute = 0.0
        self.calls = 0
        self.job_time = 0.0
        self.jobs = 0
        self._depth = 0

    def install(self):
        from ase.calculators.emt import EMT
        from jobflow.core.job import Job

        original_calculate, original_run = EMT.calculate, Job.run
        timers = self

        def calculate(self_, *args, **kwargs):
            timers._depth += 1
            start = time.perf_counter()
            try:
                return original_calculate(self_, *args, **kwargs)
            finally:
                timers._depth -= 1
                if timers._depth == 0:
                    timers.compute += time.perf_counter() - start
                    timers.calls += 1

        def run(self_, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original_run(self_, *args, **kwargs)
            finally:
                timers.job_time += time.perf_counter() - start
                timers.jobs += 1

        EMT.calculate, Job.run = calculate, run
        return lambda: (setattr(EMT, "calculate", original_calculate), setattr(Job, "run", original_run))



def rattled_cells(n: int, seed: int = 0):
    """``n`` 4-atom Cu cells rattled by 0.01-0.10 Å."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.01 + 0.09 * rng.random(), seed=int(rng.integers(1 << 30)))
        cells.append(atoms)
    return cells


def distillation_flow(records, uc: float = 0.12, dft_budget: int | None = 40):
    """score (EMT + a stretched EMT) → threshold → DFT (EMT) / teacher (EMT) → assemble."""
    from uq_flows.ensemble.jobs import EnsembleScoreMaker
    from uq_flows.flows.distillation import DistillationFlowMaker
    from uq_flows.labeling.jobs import (
        CalculatorLabelMaker,
        LabelStageMaker,
        TeacherLabelMaker,
        ThresholdMaker,
    )

    emt = EMT_MEMBER
    return DistillationFlowMaker(
        score_maker=EnsembleScoreMaker(members=MEMBERS, chunk_size=1000),
        threshold_maker=ThresholdMaker(uc=uc, dft_budget=dft_budget),
        label_maker=LabelStageMaker(dft_maker=CalculatorLabelMaker(calculator=emt),
                                    teacher_maker=TeacherLabelMaker(energy_from=emt)),
    ).make(records)


def build(n: int, uc: float, dft_budget: int):
    from uq_flows.records import records_from_atoms

    return distillation_flow(records_from_atoms(rattled_cells(n)), uc=uc, dft_budget=dft_budget)


def measure(n: int, engine: str, uc: float, dft_budget: int) -> dict:
    from uq_flows.settings import get_settings

    with tempfile.TemporaryDirectory(prefix="uqf-overhead-") as home:
        os.environ["UQ_FLOWS_HOME"] = home
        for key in ("UQ_FLOWS_DB_URI", "UQ_FLOWS_LAUNCHPAD_FILE", "UQ_FLOWS_JOBSTORE_FILE"):
            os.environ.pop(key, None)
        get_settings.cache_clear()
        timers = Timers()
        restore = timers.install()
        try:
            start = time.perf_counter()
            flow = build(n, uc, dft_budget)
            built = time.perf_counter() - start
            if engine == "run_locally":
                from jobflow import run_locally

                from uq_flows.manager.stores import open_jobstore

                store = open_jobstore()
                run_locally(flow, store=store, root_dir=Path(home) / "run", log=False, ensure_success=True)
                n_jobs = timers.jobs
            else:
                from uq_flows.manager.launchpad import close_launchpad, open_launchpad
                from uq_flows.manager.rocket import run_worker
                from uq_flows.manager.stores import open_jobstore
                from uq_flows.manager.submit import submit_flow

                lp = open_launchpad()
                submit_flow(flow, lp, loop="overhead")
                n_jobs = run_worker(lp, None, loop="overhead", launch_dir=Path(home) / "launches", idle_checks=1,
                                    sleep=0.05)
                close_launchpad(lp)
                store = open_jobstore()
            total = time.perf_counter() - start
            from tests.conftest import flow_output

            summary = flow_output(store, flow).summary
        finally:
            restore()
    overhead = total - timers.compute
    return {
        "engine": engine, "n_candidates": n, "n_jobs": n_jobs, "n_dft": summary.n_dft, "n_teacher": summary.n_teacher,
        "n_deferred": summary.n_deferred, "calculator_calls": timers.calls,
        "total_s": round(total, 3), "build_s": round(built, 3), "compute_s": round(timers.compute, 3),
        "job_run_s": round(timers.job_time, 3),
        "overhead_per_iteration_s": round(overhead, 3),
        "overhead_per_job_s": round(overhead / max(n_jobs, 1), 4),
        "overhead_fraction": round(overhead / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 5000])
    parser.add_argument("--uc", type=float, default=0.12)
    parser.add_argument("--dft-budget", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="Skip sizes once this much time is used.")
    args = parser.parse_args()
    began, rows, skipped = time.monotonic(), [], []
    plan = [(n, "run_locally") for n in args.sizes] + [(n, "fireworks") for n in args.sizes if n <= 100]
    for n, engine in plan:
        if time.monotonic() - began > args.max_seconds:
            skipped.append({"n_candidates": n, "engine": engine, "reason": f"over --max-seconds {args.max_seconds}"})
            continue
        row = measure(n, engine, args.uc, args.dft_budget)
        rows.append(row)
        print(f"done {engine} {n}: {row['total_s']} s", file=sys.stderr, flush=True)
    header = ("engine", "n_candidates", "n_jobs", "n_dft", "total_s", "compute_s", "job_run_s",
              "overhead_per_iteration_s", "overhead_per_job_s", "overhead_fraction")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))
    payload = {
        "benchmark": "workflow overhead of one distillation iteration (score → threshold → label → assemble)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "members": MEMBERS,
        "dft": "CalculatorLabelMaker(EMT), one job per DFT structure", "teacher": "TeacherLabelMaker(EMT), one job",
        "uc": args.uc, "dft_budget": args.dft_budget, "store": "embedded MontyStore (sqlite) under a temporary home",
        "notes": [
            "compute = time inside EMT.calculate (all models and the reference labeller)",
            "job_run_s = time inside jobflow Job.run (function + reference resolution + store writes)",
            "overhead = total wall - compute; per job = overhead / jobs run; one iteration per row",
            "fireworks = embedded launchpad, in-process rockets (run_worker), measured for the 100 case only",
        ],
        "rows": rows, "skipped": skipped,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
