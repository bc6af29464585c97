"""Campaign scale (issue 14): the whole active-learning loop on N candidates, with near-free models.

Each run is ``uq-flows run CONFIG`` (embedded launchpad, in-process rockets through
``uq_flows.manager.rocket.run_worker``) in a fresh subprocess and a fresh temporary
UQ_FLOWS_HOME, on N rattled 4-atom Cu cells (``workflow_overhead.rattled_cells``) read from an
extxyz. Models: the two EMT members of ``workflow_overhead`` (EMT and a stretched EMT); EMT is
also the reference labeller and the teacher (so no energy alignment and no audit sample; the
teacher, an ensemble member, takes its labels from the scoring predictions); a
linear ACE ensemble of 2 with 8 functions; MD of 20 steps, no CAGO; 2 iterations; at most
``--dft-budget`` DFT labels per iteration.

compute     = time inside every EMT ``calculate`` (members, reference, teacher), as in
              ``workflow_overhead.py``;
overhead    = wall − compute (the workflow's own cost, as issue 14 counts it), also per candidate;
ace jobs    = time inside the jobs that fit, run and query the ACE potentials (fit members, MD,
              QBC, descriptors, DIRECT): model time of the loop itself, reported separately;
engine      = wall − time inside ``jobflow.Job.run``: FireWorks, the launchpad and its file,
              rockets; the rest of the overhead is inside jobs (inputs, stores, campaign database).

Per N it records fireworks per iteration, the largest document of each launchpad collection
(``bson.encode``; ``fireworks`` is the FireWorks spec), the largest document of the JobStore's
documents store (``outputs``) and data store, the sizes of ``launchpad.json`` and
``campaign.sqlite``, and the peak RSS of the run's process. The same runs are made on the
previous design (``--reference``, default c076d0e) from a temporary git worktree outside the
repository (PYTHONPATH to it; the .venv is shared); ratios are reference / current.

    .venv/bin/python benchmarks/loop_scale.py [--sizes 1000 10000] [--max-seconds 1200] \\
        [--reference c076d0e [--reference-max-n N] | --no-reference] [--profile-size 10000 [--keep-profile run.prof]]

``--profile-size N`` runs the current design once more at N under cProfile and stores the top
functions (own and cumulative time, callers, the heaviest of uq_flows and of jobflow/maggma/
montydb/FireWorks) in the JSON; that run's timings are not used. Each row records the commit
and uncommitted changes of the uq_flows it imported (``code_state``) and the load average.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.workflow_overhead import EMT_MEMBER, MEMBERS, Timers, rattled_cells

OUT = REPO / "benchmarks" / "results" / "loop_scale.json"
REFERENCE = "c076d0e"
# jobs whose work is the loop's own ACE models (fit, MD, QBC, descriptors, DIRECT), by normalised name
ACE_JOBS = re.compile(r"^(ace fit member|md explore|qbc|descriptors|direct)")
TARGETS = {
    "overhead_ms_per_candidate": 1.0,  # at 10^5 candidates, embedded default
    "largest_document_bytes": 100_000,
    "fireworks_growth": "sublinear in N",
}


def loop_config(structures: Path, uc: float, dft_budget: int, max_candidates: int) -> dict:
    """The cheapest loop the config allows: EMT members, reference and teacher; linear ACE; short MD; no CAGO."""
    return {
        "name": "scale", "elements": ["Cu"], "structures": [str(structures)], "generate": None,
        "members": MEMBERS, "uc": uc,
        "dft": {"labeller": "calculator", "calculator": EMT_MEMBER},
        "teacher": {"energy_from": EMT_MEMBER},
        "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 2},
        "explore": {"n_seeds": 2, "md": {"steps": 20, "snapshot_every": 10}, "cago": None},
        # a committee fitted on thousands of near-identical cells agrees closely: tiny QBC thresholds, so MD's
        # snapshots reach iteration 1 (else the loop stops after iteration 0: "no new candidates were selected")
        "select": {"max_candidates": max_candidates, "qbc_config": {"energy_threshold": 1e-6, "force_threshold": 1e-6,
                                                                    "stress_threshold": 1e-6}},
        "convergence": {"max_iterations": 2, "dft_budget_per_iteration": dft_budget},
    }


# ---------------------------------------------------------------------------------------------------------------
# the child: one `uq-flows run` in this process, measured


def job_kind(name: str) -> str:
    """A job's name without ids, paths and numbers: ``reference label <id>`` → ``reference label``."""
    name = re.sub(r"uq-[0-9a-f]{6,}", "", name)
    name = re.sub(r"\S*/\S*potential\.\w+", "", name)
    name = re.sub(r"\s*\d+(/\d+)?", "", name)
    return " ".join(name.split())


class LoopTimers(Timers):
    """``Timers`` (EMT compute, Job.run) plus time per job kind (and its EMT share) and a progress file."""

    def __init__(self, progress: Path):
        super().__init__()
        self.by_kind: dict[str, dict] = defaultdict(lambda: {"n": 0, "run_s": 0.0, "emt_s": 0.0})
        self.progress, self.began = progress, time.perf_counter()

    def install(self):
        from jobflow.core.job import Job

        restore_base = super().install()
        counted_run, timers = Job.run, self

        def run(self_, *args, **kwargs):
            start, emt = time.perf_counter(), timers.compute
            try:
                return counted_run(self_, *args, **kwargs)
            finally:
                entry = timers.by_kind[job_kind(self_.name)]
                entry["n"] += 1
                entry["run_s"] += time.perf_counter() - start
                entry["emt_s"] += timers.compute - emt
                timers.progress.write_text(json.dumps({
                    "elapsed_s": round(time.perf_counter() - timers.began, 2), "jobs": timers.jobs,
                    "last_job": self_.name, "compute_s": round(timers.compute, 3)}))

        Job.run = run
        return lambda: (setattr(Job, "run", counted_run), restore_base())


def child(args: argparse.Namespace) -> None:
    root = Path(args.code_root).resolve()
    sys.path[:] = [str(root)] + [p for p in sys.path if p and Path(p).resolve() != REPO]
    import io
    from contextlib import redirect_stdout

    timers = LoopTimers(Path(args.progress))
    restore = timers.install()
    import uq_flows
    from uq_flows.cli import app

    assert Path(uq_flows.__file__).resolve().is_relative_to(root), (uq_flows.__file__, root)
    stdout = io.StringIO()
    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
    start = time.perf_counter()
    try:
        with redirect_stdout(stdout):
            if profiler:
                code = profiler.runcall(app, ["run", args.config, "--json"], standalone_mode=False)
            else:
                code = app(["run", args.config, "--json"], standalone_mode=False)
    finally:
        wall = time.perf_counter() - start
        restore()
        if profiler:
            profiler.dump_stats(args.profile_out)
    if code not in (None, 0):
        raise SystemExit(f"uq-flows run exited with {code}")
    status = json.loads(stdout.getvalue())
    result = {
        "wall_s": wall, "compute_s": timers.compute, "calculator_calls": timers.calls, "job_run_s": timers.job_time,
        "jobs_run": timers.jobs, "by_kind": dict(timers.by_kind),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "uq_flows": str(Path(uq_flows.__file__).parent), "status": status,
    }
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# after a run: what the databases hold


def _launchpad_collections(path: Path) -> dict[str, list[dict]]:
    """The embedded launchpad file's collections (mongomock-persistence: {db: {coll: {documents: [[id, doc]]}}})."""
    from bson import json_util

    data = json_util.loads(path.read_text())
    out: dict[str, list[dict]] = {}
    for database in data.values():
        for name, collection in database.items():
            docs = collection.get("documents", []) if isinstance(collection, dict) else collection
            out[name] = [d[1] if isinstance(d, (list, tuple)) else d for d in docs]
    return out


def _iteration_of(doc: dict) -> int | None:
    task = (doc.get("spec", {}).get("_tasks") or [{}])[0]
    job = task.get("job")
    if isinstance(job, dict):
        return (job.get("metadata") or {}).get("iteration")
    return task.get("iteration")


def fireworks_per_iteration(fireworks: list[dict]) -> tuple[dict[str, int], int, dict[str, dict[str, int]]]:
    """Fireworks per iteration, by ``spec._tasks.0.job.metadata.iteration``.

    Jobs made at run time inside a stage (one per DFT label, QBC, ...) carry no iteration; each
    gets that of the newest tagged firework before it (fw ids grow as fireworks are created, and
    an iteration's fireworks are all made before the next iteration's). Also by job kind.
    """
    counts, inferred, kinds = Counter(), 0, defaultdict(Counter)
    current = None
    for doc in sorted(fireworks, key=lambda d: d["fw_id"]):
        iteration = _iteration_of(doc)
        if iteration is None:
            inferred += 1
            iteration = current
        else:
            current = iteration if current is None else max(current, iteration)
        counts[str(iteration)] += 1
        kinds[str(iteration)][job_kind(doc.get("name", ""))] += 1
    return dict(sorted(counts.items())), inferred, {k: dict(v.most_common()) for k, v in sorted(kinds.items())}


def _bytes(value) -> int:
    import bson

    return len(bson.encode(value if isinstance(value, dict) else {"v": value}))


def heaviest_path(doc: dict, depth: int = 10) -> str:
    """Where a document's bytes are: the path down the largest field while it holds most of its parent."""
    path, value, size = [], doc, _bytes(doc)
    for _ in range(depth):
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list) and len(value) <= 20:
            children = list(enumerate(value))
        else:
            break
        if not children:
            break
        child_size, key, child = max(((_bytes(v), k, v) for k, v in children), key=lambda t: t[0])
        if child_size < 0.5 * size:
            break
        path.append(str(key))
        value, size = child, child_size
    shape = f", a list of {len(value)}" if isinstance(value, list) else ""
    return f"{'.'.join(path) or '(whole document)'} ({size} bytes{shape})"


def _largest(docs, name=lambda doc: doc.get("name") or doc.get("job_name") or doc.get("blob_uuid")) -> dict:
    best, count = (0, None), 0
    for doc in docs:
        count += 1
        size = _bytes(doc)
        if size > best[0]:
            best = (size, doc)
    if best[1] is None:
        return {"n": count, "max_bytes": 0}
    label = name(best[1])
    return {"n": count, "max_bytes": best[0], "largest": None if label is None else str(label)[:80],
            "where": heaviest_path(best[1])}


def jobstore_documents(home: Path) -> dict[str, dict]:
    """Largest document of the embedded JobStore's collections: ``home/jobstore.sqlite`` (SqliteStore), or the
    previous design's MontyStore (sqlite) under ``home/jobstore``."""
    from maggma.stores import MontyStore

    from uq_flows.manager.stores import DATA_STORE, EMBEDDED_FILE, embedded_jobstore

    out = {}
    current = embedded_jobstore(home) if (home / EMBEDDED_FILE).exists() else None
    for name in ("outputs", "data"):
        if current is not None:
            store = current.docs_store if name == "outputs" else current.additional_stores[DATA_STORE]
        else:
            store = MontyStore(name, database_path=str(home / "jobstore"), database_name="uq_flows", storage="sqlite")
        store.connect()
        try:
            docs = store.query(criteria={})
            out[name] = _largest({k: v for k, v in d.items() if k != "_id"} for d in docs)
        finally:
            store.close()
    return out


def campaign_database(home: Path) -> dict | None:
    path = home / "campaign.sqlite"
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        largest_row = max((db.execute(f'SELECT max(length(doc)) FROM "{t}"').fetchone()[0] or 0
                           for t in tables if t != "chunks"), default=0)
        largest_chunk = db.execute("SELECT max(length(data)) FROM chunks").fetchone()[0] if "chunks" in tables else None
    return {"bytes": path.stat().st_size, "largest_row_bytes": largest_row, "largest_chunk_bytes": largest_chunk}


def archived_documents(home: Path) -> tuple[dict[str, list[dict]], int]:
    """Workflows the embedded launchpad moved to ``home/launchpad-archive/LOOP/*.json`` once finished (if any)."""
    from bson import json_util

    out: dict[str, list[dict]] = {"workflows": [], "fireworks": [], "launches": []}
    files = sorted((home / "launchpad-archive").glob("*/*.json"))
    for path in files:
        data = json_util.loads(path.read_text())
        out["workflows"].append(data["workflow"])
        out["fireworks"] += data["fireworks"]
        out["launches"] += data["launches"]
    return out, sum(f.stat().st_size for f in files)


def inspect_home(home: Path) -> dict:
    """Fireworks per iteration and the largest documents of the launchpad (archive included) and the JobStore."""
    launchpad = home / "launchpad.json"
    collections = _launchpad_collections(launchpad)
    archived, archive_bytes = archived_documents(home)
    for name, docs in archived.items():
        collections[name] = collections.get(name, []) + docs
    fireworks = collections.get("fireworks", [])
    names = {doc["fw_id"]: doc.get("name") for doc in fireworks}
    per_iteration, inferred, kinds = fireworks_per_iteration(fireworks)
    return {
        "launchpad_bytes": launchpad.stat().st_size, "launchpad_archive_bytes": archive_bytes,
        "archived_workflows": len(archived["workflows"]),
        "launchpad": {
            "fireworks": _largest(fireworks),
            "launches": _largest(collections.get("launches", []),
                                 lambda doc: f"launch of fw {doc.get('fw_id')} {names.get(doc.get('fw_id'), '')}"),
            "workflows": _largest(collections.get("workflows", [])),
        },
        "fireworks_per_iteration": per_iteration, "fireworks_iteration_inferred": inferred,
        "fireworks_by_kind": kinds, "workflows": len(collections.get("workflows", [])),
        "jobstore": jobstore_documents(home),
        "jobstore_bytes": sum(f.stat().st_size for f in [*(home / "jobstore").rglob("*"), *home.glob("jobstore.sqlite*")]
                              if f.is_file()),
        "campaign": campaign_database(home),
    }


# ---------------------------------------------------------------------------------------------------------------
# the parent: one subprocess per size and design


def run_once(variant: str, root: Path, n: int, config: Path, max_seconds: float, profile_out: Path | None = None) -> dict:
    row = {"variant": variant, "n_candidates": n, "code": str(root), "code_state": code_state(root),
           "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix=f"uqf-scale-{variant}-{n}-") as tmp:
        home, result, progress, log = (Path(tmp) / "home", Path(tmp) / "result.json", Path(tmp) / "progress.json",
                                       Path(tmp) / "run.log")
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k not in ("UQ_FLOWS_DB_URI", "UQ_FLOWS_LAUNCHPAD_FILE", "UQ_FLOWS_JOBSTORE_FILE",
                            "UQ_FLOWS_CONFIG_FILE", "MONGOMOCK_SERVERSTORE_FILE")}
        env.update(UQ_FLOWS_HOME=str(home), PYTHONPATH=str(root), PYTHONWARNINGS="ignore")
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--code-root", str(root),
                   "--config", str(config), "--result", str(result), "--progress", str(progress)]
        if profile_out is not None:
            command += ["--profile-out", str(profile_out)]
        start = time.monotonic()
        with open(log, "w") as log_handle:
            process = subprocess.Popen(command, env=env, cwd=home, stdout=log_handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=max_seconds)
            except subprocess.TimeoutExpired:
                code = None
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        row["process_s"] = round(time.monotonic() - start, 1)
        row["loadavg_after"] = os.getloadavg()
        reached = json.loads(progress.read_text()) if progress.exists() else None
        if code is None:
            row.update(completed=False, reason=f"not completed within --max-seconds {max_seconds:g}",
                       time_reached_s=row["process_s"], progress=reached)
            return row
        if code != 0 or not result.exists():
            tail = log.read_text(errors="replace").splitlines()[-40:]
            row.update(completed=False, reason=f"exit code {code}", progress=reached, log_tail=tail)
            return row
        measured = json.loads(result.read_text())
        status = measured.pop("status")
        (loop,) = status["loops"]
        row.update(completed=loop["state"] == "completed", state=loop["state"], **measured)
        row["iterations"] = [{k: it.get(k) for k in ("iteration", "n_candidates", "n_high_u", "n_dft_ok",
                                                     "n_teacher", "n_deferred", "n_training", "n_next_candidates",
                                                     "reason")} for it in loop["iterations"]]
        row["fizzled"] = loop.get("fizzled")
        row.update(inspect_home(home))
    return summarise(row)


def summarise(row: dict) -> dict:
    wall, n = row["wall_s"], row["n_candidates"]
    ace = sum(v["run_s"] - v["emt_s"] for k, v in row["by_kind"].items() if ACE_JOBS.match(k))
    overhead = wall - row["compute_s"]
    row.update(
        overhead_s=overhead, overhead_ms_per_candidate=1000 * overhead / n, ace_jobs_s=ace,
        overhead_without_ace_ms_per_candidate=1000 * (overhead - ace) / n,
        engine_s=wall - row["job_run_s"],
        launchpad_total_bytes=row["launchpad_bytes"] + row.get("launchpad_archive_bytes", 0),
        largest_launchpad_document_bytes=max(v["max_bytes"] for v in row["launchpad"].values()),
        largest_document_bytes=max([v["max_bytes"] for v in row["launchpad"].values()]
                                   + [row["jobstore"]["outputs"]["max_bytes"]]),
    )
    row["by_kind"] = dict(sorted(row["by_kind"].items(), key=lambda kv: -kv[1]["run_s"]))
    for key in ("wall_s", "compute_s", "job_run_s", "overhead_s", "ace_jobs_s", "engine_s", "peak_rss_mb",
                "peak_rss_children_mb"):
        row[key] = round(row[key], 2)
    for key in ("overhead_ms_per_candidate", "overhead_without_ace_ms_per_candidate"):
        row[key] = round(row[key], 3)
    for entry in row["by_kind"].values():
        entry["run_s"], entry["emt_s"] = round(entry["run_s"], 3), round(entry["emt_s"], 3)
    return row


RATIOS = ("wall_s", "overhead_ms_per_candidate", "largest_document_bytes", "largest_launchpad_document_bytes",
          "jobstore_outputs_max_bytes", "launchpad_total_bytes", "peak_rss_mb")


def _value(row: dict, key: str):
    if key == "jobstore_outputs_max_bytes":
        return row["jobstore"]["outputs"]["max_bytes"]
    return row.get(key)


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    for n in sorted({r["n_candidates"] for r in rows}):
        current = next((r for r in rows if r["n_candidates"] == n and r["variant"] == "current"), None)
        reference = next((r for r in rows if r["n_candidates"] == n and r["variant"] == "reference"), None)
        if not current or not reference:
            continue
        entry = {"n_candidates": n}
        if current.get("wall_s") is None:
            entry["note"] = "current did not complete"
        elif reference.get("wall_s") is None:
            entry["note"] = (f"reference {reference.get('reason')}: wall > {reference.get('time_reached_s')} s, "
                             f"ratio > {reference.get('time_reached_s', 0) / current['wall_s']:.2f}")
        else:
            entry.update({f"{k} (reference/current)": round(_value(reference, k) / _value(current, k), 2)
                          for k in RATIOS if _value(current, k)})
        out.append(entry)
    return out


def fireworks_growth(rows: list[dict]) -> list[dict]:
    """d log(fireworks of iteration 0) / d log N between consecutive sizes (< 1: sublinear)."""
    out = []
    for variant in ("current", "reference"):
        done = sorted((r for r in rows if r["variant"] == variant and r.get("fireworks_per_iteration")),
                      key=lambda r: r["n_candidates"])
        for a, b in itertools.pairwise(done):
            fa, fb = a["fireworks_per_iteration"].get("0"), b["fireworks_per_iteration"].get("0")
            if fa and fb:
                out.append({"variant": variant, "from_n": a["n_candidates"], "to_n": b["n_candidates"],
                            "fireworks_iteration_0": [fa, fb],
                            "exponent": round(math.log(fb / fa) / math.log(b["n_candidates"] / a["n_candidates"]), 3)})
    return out


def print_table(rows: list[dict]) -> None:
    header = ("design", "N", "done", "wall s", "EMT s", "ACE jobs s", "overhead s", "ms/cand", "ms/cand w/o ACE",
              "engine s", "FW/iter", "max FW kB", "max launch kB", "max wf kB", "max jobstore kB", "launchpad MB",
              "campaign MB", "RSS MB")
    lines = []
    for r in rows:
        if r.get("wall_s") is None:
            reached = r.get("progress") or {}
            lines.append((r["variant"], r["n_candidates"], (f"no ({r.get('reason')}; {reached.get('jobs', '?')} jobs, "
                          f"last {reached.get('last_job', '?')!r} at {reached.get('elapsed_s', '?')} s)")))
            continue
        lp = r["launchpad"]
        campaign = r.get("campaign")
        lines.append((
            r["variant"], r["n_candidates"], "yes" if r["completed"] else r.get("state"), r["wall_s"], r["compute_s"],
            round(r["ace_jobs_s"], 1), r["overhead_s"], r["overhead_ms_per_candidate"],
            r["overhead_without_ace_ms_per_candidate"], r["engine_s"],
            "/".join(str(v) for v in r["fireworks_per_iteration"].values()),
            round(lp["fireworks"]["max_bytes"] / 1e3, 1), round(lp["launches"]["max_bytes"] / 1e3, 1),
            round(lp["workflows"]["max_bytes"] / 1e3, 1), round(r["jobstore"]["outputs"]["max_bytes"] / 1e3, 1),
            f"{r['launchpad_bytes'] / 1e6:.2f}" + (f" (+{r['launchpad_archive_bytes'] / 1e6:.2f} archived)"
                                                   if r.get("launchpad_archive_bytes") else ""),
            "—" if campaign is None else round(campaign["bytes"] / 1e6, 2),
            round(r["peak_rss_mb"])))
    print(" | ".join(header))
    for line in lines:
        print(" | ".join(str(x) for x in line))


def print_targets(rows: list[dict], growth: list[dict]) -> None:
    print(f"\ntargets (issue 14): ≤ {TARGETS['overhead_ms_per_candidate']} ms workflow overhead per candidate at "
          f"10^5 (embedded default); largest document < {TARGETS['largest_document_bytes'] // 1000} kB; "
          "fireworks per iteration sublinear in N")
    for r in rows:
        if r["variant"] != "current" or r.get("wall_s") is None:
            continue
        big = r["largest_document_bytes"]
        print(f"  current N={r['n_candidates']}: {r['overhead_ms_per_candidate']} ms/candidate "
              f"({'meets' if r['overhead_ms_per_candidate'] <= 1 else 'misses'} ≤ 1 ms"
              f"{'' if r['n_candidates'] >= 100_000 else '; target is at 10^5'}), largest document "
              f"{big / 1e3:.1f} kB ({'meets' if big < TARGETS['largest_document_bytes'] else 'misses'} < 100 kB), "
              f"fireworks per iteration {r['fireworks_per_iteration']}")
    for g in growth:
        print(f"  {g['variant']}: fireworks of iteration 0 {g['fireworks_iteration_0'][0]} → "
              f"{g['fireworks_iteration_0'][1]} for N {g['from_n']} → {g['to_n']}: N^{g['exponent']} "
              f"({'sublinear' if g['exponent'] < 1 else 'not sublinear'})")


def profile_summary(path: Path, top: int = 25) -> dict:
    """Top functions by own and cumulative time; callers of the top own-time ones; the heaviest of uq_flows and
    of the workflow libraries (jobflow, maggma, montydb, FireWorks, monty, bson) by cumulative time."""
    import pstats

    stats = pstats.Stats(str(path)).stats

    def row(func, values):
        file, line, function = func
        _, ncalls, tottime, cumtime, _ = values
        return {"function": function, "where": f"{file}:{line}", "ncalls": ncalls, "tottime_s": round(tottime, 2),
                "cumtime_s": round(cumtime, 2)}

    by_own = sorted(stats.items(), key=lambda kv: -kv[1][2])
    by_cum = sorted(stats.items(), key=lambda kv: -kv[1][3])
    callers = {}
    for func, values in by_own[:10]:
        ranked = sorted(values[4].items(), key=lambda kv: -kv[1][3])[:4]
        callers[f"{func[2]} {func[0]}:{func[1]}"] = [
            {"caller": f"{c[2]} {c[0]}:{c[1]}", "ncalls": v[1], "cumtime_s": round(v[3], 2)} for c, v in ranked]
    libraries = re.compile(r"/(jobflow|maggma|montydb|fireworks|monty|bson)/")
    return {
        "tottime": [row(f, v) for f, v in by_own[:top]],
        "cumulative": [row(f, v) for f, v in by_cum[:top]],
        "callers_of_top_tottime": callers,
        "uq_flows_cumulative": [row(f, v) for f, v in by_cum if "/uq_flows/" in f[0]][:top],
        "workflow_libraries_cumulative": [row(f, v) for f, v in by_cum if libraries.search(f[0])][:top],
    }


def git(*args: str, check: bool = True, where: Path = REPO) -> str:
    return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, check=check).stdout.strip()


def code_state(root: Path) -> dict:
    """The commit a run imports uq_flows from, and its uncommitted changes to uq_flows/ (others edit it meanwhile)."""
    import hashlib

    diff = git("diff", "HEAD", "--", "uq_flows", where=root)
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "uq_flows", where=root).split()
    return {"head": git("rev-parse", "--short", "HEAD", where=root),
            "uncommitted": git("status", "--short", "--", "uq_flows", where=root).splitlines(),
            "diff_sha1": hashlib.sha1((diff + "".join(untracked)).encode()).hexdigest()[:12] if diff or untracked
            else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000],
                        help="Candidates per run (none: only --profile-size).")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="Time limit of one run (s).")
    parser.add_argument("--reference", default=REFERENCE, help="Commit of the previous design.")
    parser.add_argument("--no-reference", action="store_true", help="Measure the current design only.")
    parser.add_argument("--reference-max-n", type=int, default=None,
                        help="Run the previous design only up to this N (it took > 1200 s at 10,000 when measured).")
    parser.add_argument("--uc", type=float, default=0.12, help="eV/Å; ~8 %% of the rattled cells are above.")
    parser.add_argument("--dft-budget", type=int, default=20, help="convergence.dft_budget_per_iteration")
    parser.add_argument("--max-candidates", type=int, default=20, help="select.max_candidates")
    parser.add_argument("--profile-size", type=int, default=None,
                        help="Also run the current design once at this N under cProfile (its timings are not used).")
    parser.add_argument("--keep-profile", type=Path, default=None, help="Copy the cProfile stats file here.")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--code-root", "--config", "--result", "--progress", "--profile-out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    payload = {
        "benchmark": "campaign scale (issue 14): `uq-flows run` of a 2-iteration loop on N candidates, embedded "
                     "launchpad and JobStore, in-process rockets, near-free models",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "current": {"head": git("rev-parse", "HEAD"), "uncommitted": git("status", "--short", "--", "uq_flows").splitlines()},
        "reference": None if args.no_reference else {"commit": git("rev-parse", args.reference)},
        "candidates": "N rattled 4-atom Cu cells (workflow_overhead.rattled_cells), one extxyz",
        "config": loop_config(Path("candidates.extxyz"), args.uc, args.dft_budget, args.max_candidates),
        "targets": TARGETS, "max_seconds_per_run": args.max_seconds, "loadavg_start": os.getloadavg(),
        "notes": [
            "compute = time inside EMT.calculate (members, reference labels, teacher); overhead = wall - compute",
            ("ace_jobs_s = time in ACE fit-member, MD, QBC, descriptor and DIRECT jobs minus their EMT time; "
            "overhead_without_ace = overhead - ace_jobs_s"),
            "engine_s = wall - time inside jobflow Job.run (FireWorks, launchpad file, rockets)",
            ("fireworks per iteration: by spec._tasks.0.job.metadata.iteration; untagged fireworks (made at run time "
            "inside a stage) get the iteration of the newest tagged firework before them (fw_id order)"),
            ("largest documents: bson.encode of each document of the launchpad's fireworks (the spec), launches and "
            "workflows collections and of the JobStore's outputs (documents store) and data collections"),
            "peak_rss_mb: ru_maxrss of the run's fresh subprocess; peak_rss_children_mb: of its own subprocesses",
            "timings are noisy: other processes share the 2 cores (see loadavg per run)",
        ],
        "rows": [],
    }
    rows = payload["rows"]
    worktree = None
    try:
        if not args.no_reference:
            worktree = Path(tempfile.mkdtemp(prefix="uqf-ref-"))
            worktree.rmdir()
            git("worktree", "add", "--detach", str(worktree), args.reference)
        timed_out: set[str] = set()
        profile_sizes = {args.profile_size} if args.profile_size else set()
        for n in sorted(set(args.sizes) | profile_sizes):
            with tempfile.TemporaryDirectory(prefix=f"uqf-scale-input-{n}-") as tmp:
                structures, config = Path(tmp) / "candidates.extxyz", Path(tmp) / "loop.yaml"
                from ase.io import write

                write(structures, rattled_cells(n), format="extxyz")
                import yaml

                config.write_text(yaml.safe_dump(loop_config(structures, args.uc, args.dft_budget,
                                                             args.max_candidates)))
                with_reference = worktree and (args.reference_max_n is None or n <= args.reference_max_n)
                plan = [("current", REPO)] + ([("reference", worktree)] if with_reference else [])
                plan = plan if n in args.sizes else []
                for variant, root in plan:
                    if variant in timed_out:
                        rows.append({"variant": variant, "n_candidates": n, "completed": False,
                                     "reason": "skipped: a smaller N did not complete"})
                        continue
                    print(f"running {variant} N={n} ...", file=sys.stderr, flush=True)
                    row = run_once(variant, root, n, config, args.max_seconds)
                    rows.append(row)
                    if row.get("wall_s") is None:
                        timed_out.add(variant)
                    print(f"  {variant} N={n}: {row.get('wall_s', row.get('reason'))}"
                          f"{' s' if row.get('wall_s') is not None else ''}", file=sys.stderr, flush=True)
                if args.profile_size == n:
                    profile = Path(tmp) / "run.prof"
                    print(f"profiling current N={n} ...", file=sys.stderr, flush=True)
                    profiled = run_once("current", REPO, n, config, args.max_seconds, profile_out=profile)
                    if profile.exists():
                        if args.keep_profile:
                            shutil.copyfile(profile, args.keep_profile)
                        payload["profile"] = {"n_candidates": n, "wall_s_under_profiler": profiled.get("wall_s"),
                                              **profile_summary(profile)}
    finally:
        if worktree is not None:
            git("worktree", "remove", "--force", str(worktree), check=False)
            git("worktree", "prune", check=False)

    payload["ratios"] = ratios(rows)
    payload["fireworks_growth"] = fireworks_growth(rows)
    payload["loadavg_end"] = os.getloadavg()
    print_table(rows)
    print_targets(rows, payload["fireworks_growth"])
    if payload["ratios"]:
        print("\nreference / current:")
        for entry in payload["ratios"]:
            print(f"  N={entry['n_candidates']}: "
                  + ", ".join(f"{k} {v}" for k, v in entry.items() if k != "n_candidates"))
    if "profile" in payload:
        print(f"\ncProfile, current N={payload['profile']['n_candidates']} (top by own time):")
        for p in payload["profile"]["tottime"][:15]:
            print(f"  {p['tottime_s']:8.2f} s own {p['cumtime_s']:8.2f} s cum {p['ncalls']:>9} calls  "
                  f"{p['function']}  {p['where']}")
        print("callers of the top three:")
        for function, callers in list(payload["profile"]["callers_of_top_tottime"].items())[:3]:
            print(f"  {function}: " + "; ".join(f"{c['caller']} ({c['cumtime_s']} s)" for c in callers))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
