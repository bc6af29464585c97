"""Benchmark: a pool (replay) campaign of ≥ 1,000 structures on the embedded default.

The data are made here, once, and kept under ``--data``: Cu cells of ≤ 8 atoms from the
package's generators (strained and rattled cells, vacancies, surfaces, short pairs), labelled
by EMT (the stand-in "DFT" of this benchmark: it differs from the members, so U and the
teacher's errors are real) and by the offline uMLIP members, whose predictions are stored
(``NAME=precomputed:PATH``). The loop then replays the pool in batches (DIRECT first, QBC +
DIRECT after) with the EMT labels as the dataset labeller and a fixed test set, and reports per
iteration the DFT atoms used and the ACE ensemble's RMSEs on the test set.

Not yet here (issue 15): the comparison at equal DFT budgets with paper 001's single-shot
threshold, random DFT selection and all-DFT, and their learning curves.

    .venv/bin/python benchmarks/campaigns.py [--n 500] [--batch 100] [--iterations 5] [--data DIR]
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

import yaml
from ase.calculators.emt import EMT

from uq_flows.ensemble.members import parse_member
from uq_flows.ensemble.predict import predict_member
from uq_flows.explore.generators import starting_set
from uq_flows.io import with_labels, write_extxyz
from uq_flows.records import structure_id

RESULTS = Path(__file__).resolve().parent / "results" / "campaigns.json"
MEMBERS = ("chgnet-0.3.0", "sevennet-0-11jul2024", "chgnet-0.2.0")


def make_data(folder: Path, n: int, seed: int) -> dict:
    """Pool and test cells, their EMT labels and every member's stored predictions (once)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "made.json"
    if done.exists() and json.loads(done.read_text()).get("made_with") == {"n": n, "seed": seed}:
        return json.loads(done.read_text())
    started = time.perf_counter()
    sets = {"pool": starting_set(["Cu"], n, max_atoms=8, seed=seed),
            "test": starting_set(["Cu"], max(20, n // 10), max_atoms=8, seed=seed + 1)}
    for atoms in (a for structures in sets.values() for a in structures):
        atoms.info["uq_id"] = structure_id(atoms)
    for name, structures in sets.items():
        labelled = []
        for atoms in structures:
            atoms.calc = EMT()
            labelled.append(with_labels(atoms.copy(), atoms.get_potential_energy(), atoms.get_forces()))
            atoms.calc = None
        write_extxyz(folder / f"{name}.extxyz", labelled)
    seconds = {}
    for member in MEMBERS:
        begin = time.perf_counter()
        predicted = predict_member(parse_member(member), sets["pool"])
        structures = [with_labels(atoms.copy(), predicted.energies[k], predicted.structure_forces(k))
                      for k, atoms in enumerate(sets["pool"]) if predicted.status[k] == "ok"]
        write_extxyz(folder / f"{member}.extxyz", structures)
        seconds[member] = round(time.perf_counter() - begin, 1)
    made = {"made_with": {"n": n, "seed": seed}, "n_pool": len(sets["pool"]), "n_test": len(sets["test"]),
            "pool_atoms": int(sum(len(a) for a in sets["pool"])), "member_seconds": seconds,
            "seconds": round(time.perf_counter() - started, 1)}
    done.write_text(json.dumps(made, indent=1))
    return made


def run_campaign(data: Path, work: Path, batch: int, iterations: int) -> dict:
    config = {
        "name": "replay-cu", "elements": ["Cu"],
        "pool": {"structures": [str(data / "pool.extxyz")], "batch": batch},
        "test": [str(data / "test.extxyz")],
        # stored predictions are members of their own (a built-in name means the live model)
        "members": [f"stored-{m}=precomputed:{data / f'{m}.extxyz'}" for m in MEMBERS],
        "teacher": {"energy_from": f"stored-{MEMBERS[0]}"}, "uc": 0.3,
        "dft": {"labeller": "dataset", "dataset": str(data / "pool.extxyz")},
        "fit": {"backend": "linear", "n_functions": 20, "ensemble_size": 3},
        "select": {"formation_energy_prefilter": False},
        "convergence": {"max_iterations": iterations},
    }
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
    rows = [{"iteration": it["iteration"], "candidates": it["n_candidates"], "dft": it["n_dft_ok"],
             "teacher": it["n_teacher"], "dft_atoms_total": it["dft_atoms_total"], "pool_left": it["pool_left"],
             "test_energy_mev_per_atom": _mev(it["fixed_test"]["energy_rmse_per_atom"]),
             "test_force_ev_per_a": round(it["fixed_test"]["force_rmse"], 4), "reason": it["reason"]}
            for it in loop["iterations"]]
    return {"state": loop["state"], "wall_s": round(wall, 1), "iterations": rows}


def _mev(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="Generator rounds (about 2 structures each)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "uq-flows-campaign-data")
    args = parser.parse_args()
    made = make_data(args.data, args.n, args.seed)
    with tempfile.TemporaryDirectory(prefix="uq-campaign-") as scratch:
        result = run_campaign(args.data, Path(scratch), args.batch, args.iterations)
    print(f"pool {made['n_pool']} structures ({made['pool_atoms']} atoms), test {made['n_test']}; "
          f"campaign {result['state']} in {result['wall_s']} s")
    print(f"{'iter':>4} {'cand':>5} {'DFT':>5} {'teach':>5} {'DFT atoms':>9} {'left':>6} {'E meV/at':>9} {'F eV/Å':>7}")
    for row in result["iterations"]:
        print(f"{row['iteration']:>4} {row['candidates']:>5} {row['dft']:>5} {row['teacher']:>5} "
              f"{row['dft_atoms_total']:>9} {row['pool_left']:>6} {row['test_energy_mev_per_atom']:>9} "
              f"{row['test_force_ev_per_a']:>7}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"when": datetime.now(timezone.utc).isoformat(), "machine": platform.node(),
                                   "cpus": os.cpu_count(), "data": made, **result,
                                   "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0 if result["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
