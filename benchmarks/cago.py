"""CAGO against a known truth, and the cost of a CAGO step (paper 004, Figs. 2-3).

Truth: EMT copper. Committee: a linear-ACE ensemble fitted (bootstrap) to EMT-labelled Cu
cells. Calibration: all members on EMT-labelled MD snapshots at 300-1300 K (paper 004
calibrates with ≈ 10 members on MD-derived test data; randomly rattled cells calibrate
poorly for CAGO's structures, whose error grows faster than the bootstrap spread).
CAGO: a few members from held-out seeds at δ, calibrated and uncalibrated. True error of a
generated structure: sqrt(mean over atoms of σ²_rmse,i), σ_rmse,i the RMS force error of the
CAGO members on atom i against EMT (eq. 1). Then the cost of one CAGO gradient for finite
differences one by one and batched, with ACE members and with CHGNet members (which batch).

Run: .venv/bin/python benchmarks/cago.py [--quick]; writes benchmarks/results/cago.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT

from uq_flows.ace.basis import AceFitOptions
from uq_flows.ace.data import training_set
from uq_flows.ace.fit import fit_ace
from uq_flows.cago.adversarial import adversarial_structures
from uq_flows.cago.calibration import PowerLawCalibration
from uq_flows.cago.committee import committee_errors, load_committee, member_force_rmse
from uq_flows.cago.optimizer import CagoSettings
from uq_flows.explore.generators import ground_state, strained_rattled, supercell
from uq_flows.explore.md import MDSettings, run_md
from uq_flows.io import with_labels

RESULTS = Path(__file__).resolve().parent / "results" / "cago.json"


def emt_cells(n: int, seed: int, rattle: float, max_strain: float = 0.03, max_atoms: int = 8):
    out = []
    for atoms in strained_rattled("Cu", n, max_atoms=max_atoms, max_strain=max_strain, rattle=rattle, seed=seed):
        atoms.calc = EMT()
        out.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


def emt_md_snapshots(temperatures, seed: int, per_run: int = 7, max_atoms: int = 8):
    """EMT-labelled snapshots of EMT MD runs of a Cu supercell, one run per temperature."""
    out = []
    for k, temperature in enumerate(temperatures):
        run = run_md(supercell(ground_state("Cu"), max_atoms), EMT(),
                     MDSettings(temperatures=[temperature], steps=20 * per_run, snapshot_every=20, seed=seed + k))
        for atoms in run.snapshots:
            atoms.calc = EMT()
            out.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return out


def true_errors(structures, members) -> list[float]:
    """Per structure: sqrt(mean_i σ²_rmse,i) of the members against EMT (paper 004, eq. 1)."""
    errors = []
    for atoms in structures:
        reference = atoms.copy()
        reference.calc = EMT()
        forces = members.forces([atoms])[:, 0]
        errors.append(float(np.sqrt(np.mean(member_force_rmse(forces, reference.get_forces()) ** 2))))
    return errors


def run_validation(target: float = 0.1, n_members: int = 10, n_cago: int = 4, n_seeds: int = 8,
                   n_functions: int = 12, max_steps: int = 40, workdir: str | Path | None = None) -> dict:
    """Fit, calibrate, run CAGO calibrated and uncalibrated; return errors and timings."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="uq-cago-"))
    timings = {}
    start = time.perf_counter()
    train = emt_cells(30, seed=1, rattle=0.05) + emt_cells(30, seed=2, rattle=0.12)
    options = AceFitOptions(backend="linear", n_functions=n_functions, ensemble_size=n_members, seed=0)
    fit = fit_ace(training_set(train, "EMT Cu"), options, workdir / "ace")
    timings["fit_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    validation = emt_md_snapshots([300, 800, 1300], seed=30)
    everyone = load_committee(fit.potentials)
    sigma_hat, errors = committee_errors(everyone, validation, [a.get_forces() for a in validation])
    calibration = PowerLawCalibration.fit(sigma_hat, errors, n_members=n_members)
    timings["calibration_seconds"] = time.perf_counter() - start

    seeds = emt_cells(n_seeds, seed=5, rattle=0.05)
    members = load_committee(fit.potentials[:n_cago])
    settings = CagoSettings(target=target, max_steps=max_steps)
    outcome = {}
    for name, cal in (("calibrated", calibration), ("uncalibrated", PowerLawCalibration.identity())):
        start = time.perf_counter()
        results = adversarial_structures(seeds, members, cal, settings)
        timings[f"cago_{name}_seconds"] = time.perf_counter() - start
        kept = [r.result.atoms for r in results if r.kept]
        outcome[name] = {"errors": true_errors(kept, members), "converged": sum(r.result.converged for r in results),
                         "steps": [len(r.result.trace) - 1 for r in results]}
    return {
        "target": target,
        "calibrated_mean_error": float(np.mean(outcome["calibrated"]["errors"])),
        "uncalibrated_mean_error": float(np.mean(outcome["uncalibrated"]["errors"])),
        "n_structures": len(outcome["calibrated"]["errors"]),
        "n_structures_uncalibrated": len(outcome["uncalibrated"]["errors"]),
        "calibration": {"a": calibration.a, "b": calibration.b, **calibration.fitted.model_dump()},
        "committee": {"members_calibration": n_members, "members_cago": n_cago, "functions": n_functions,
                      "train_force_rmse": fit.metrics.train_force_rmse},
        "outcome": outcome,
        "timings": timings,
    }


def step_costs(atoms, committee, repeats: int = 2) -> dict:
    """Committee evaluations and wall time of one CAGO gradient, one by one and batched."""
    from uq_flows.cago.optimizer import cago

    out = {}
    for batched in (False, True):
        settings = CagoSettings(max_steps=1, batched=batched, tolerance=1e-9)
        seconds = []
        for _ in range(repeats):
            committee.n_evaluations = 0
            start = time.perf_counter()
            result = cago(atoms, committee, PowerLawCalibration.identity(), settings)
            seconds.append((time.perf_counter() - start) / len(result.trace))
        out["batched" if batched else "one_by_one"] = {
            "seconds_per_gradient": min(seconds),
            "evaluations_per_gradient": committee.n_evaluations // len(result.trace),
        }
    out["speedup_batched"] = out["one_by_one"]["seconds_per_gradient"] / out["batched"]["seconds_per_gradient"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and steps")
    args = parser.parse_args()
    result = run_validation(n_seeds=4 if args.quick else 8, max_steps=25 if args.quick else 40)
    seed = emt_cells(1, seed=9, rattle=0.05)[0]
    with tempfile.TemporaryDirectory() as folder:
        ace_members = fit_ace(training_set(emt_cells(40, seed=1, rattle=0.08)),
                              AceFitOptions(backend="linear", n_functions=12, ensemble_size=3), folder).potentials
        result["step_cost_ace"] = step_costs(seed, load_committee(ace_members))
    result["step_cost_chgnet"] = step_costs(seed, load_committee(["chgnet-0.3.0", "chgnet-0.2.0", "chgnet-r2scan"]))
    result["autograd"] = "not implemented: finite differences only (see README)"
    result["environment"] = {"python": platform.python_version(), "machine": platform.machine()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    rows = [
        ("target δ (eV/Å)", result["target"]),
        ("calibrated: mean true error (eV/Å)", result["calibrated_mean_error"]),
        ("uncalibrated: mean true error (eV/Å)", result["uncalibrated_mean_error"]),
        ("structures (calibrated / uncalibrated)", f"{result['n_structures']} / {result['n_structures_uncalibrated']}"),
        ("calibration a, b", f"{result['calibration']['a']:.3g}, {result['calibration']['b']:.3g}"),
    ]
    for name in ("step_cost_ace", "step_cost_chgnet"):
        cost = result[name]
        rows.append((f"{name}: s/gradient one-by-one → batched",
                     f"{cost['one_by_one']['seconds_per_gradient']:.3f} → {cost['batched']['seconds_per_gradient']:.3f} "
                     f"(×{cost['speedup_batched']:.2f}, {cost['batched']['evaluations_per_gradient']} evaluations)"))
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value if isinstance(value, str) else f'{value:.4g}'}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
