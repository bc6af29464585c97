"""CP2K k-point convergence: energy per atom, forces and stress against the densest mesh.

Real CP2K single points (the labeller's production settings: PBE, DZVP-MOLOPT-SR-GTH, 400 Ry,
Fermi–Dirac 300 K, Γ-centred meshes reduced by time reversal) on small distorted cells, one
run per distinct mesh of each k-point spacing (Å⁻¹ including 2π, given as multiples of 2π).
The densest spacing is the reference; a spacing meets the tolerance when every structure's
|ΔE| per atom and largest force-vector difference are within --energy-tol and --force-tol.
Time per SCF step is the median of CP2K's own SCF-step times; CP2K runs with 1 OpenMP thread.
With --time-reversal-check (default) each structure also runs the papers' mesh with every point
listed, to show what merging k with −k saves and that it changes nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cp2k_kpoints.py [--spacings 0.03 0.05 0.08]
        [--structures si2 si8] [--energy-tol 1.0] [--force-tol 0.01]

Prints a table and writes benchmarks/results/cp2k_kpoints.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.units import GPa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from uq_flows.labeling.cp2k import OUTPUT_NAME, Cp2kLabeller, Cp2kSettings  # noqa: E402
from uq_flows.labeling.kpoints import PAPER_KPOINT_SPACING  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "cp2k_kpoints.json"
SPACINGS = (0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.10, 0.125, 0.2)  # × 2π Å⁻¹; 0.03 is the papers'


def si2_primitive():
    """2-atom primitive diamond Si (a = 5.43 Å), one atom displaced and the cell sheared."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[1] += [0.06, 0.0, 0.03]
    atoms.set_cell(atoms.cell.array @ np.array([[1.01, 0.01, 0.0], [0.0, 0.99, 0.0], [0.0, 0.02, 1.0]]), scale_atoms=True)
    return atoms


def si8_cubic():
    """8-atom conventional diamond Si (a = 5.43 Å), rattled by 0.05 Å."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


STRUCTURES = {"si2": si2_primitive, "si8": si8_cubic}


def scf_step_seconds(output: str) -> list[float]:
    """The time column of CP2K's SCF table (one value per SCF step)."""
    return [float(t) for t in re.findall(r"^\s+\d+\s+\S+/\S+\s+\S+\s+(\d+\.\d+)\s+\S+\s+\S+", output, flags=re.M)]


def run(atoms, settings: Cp2kSettings, workdir: Path, name: str, labeller_options: dict) -> dict:
    labeller = Cp2kLabeller(settings, **labeller_options)
    start = time.perf_counter()
    label = labeller.label(atoms, name, workdir)
    wall = time.perf_counter() - start
    if label.status != "ok":
        raise SystemExit(f"{name}: CP2K {label.status}: {label.reason}")
    steps = scf_step_seconds((workdir / f"cp2k-{name}" / OUTPUT_NAME).read_text())
    return {
        "mesh": label.provenance["kpoints"], "n_kpoints": label.provenance["n_kpoints"],
        "energy_per_atom": label.energy / len(atoms), "forces": label.forces, "stress": label.stress,
        "cp2k_version": label.provenance["version"], "scf_steps": label.provenance["scf_steps"], "scf_step_s": statistics.median(steps), "wall_s": round(wall, 2),
    }


def compare(rows: list[dict]) -> None:
    """Differences to the densest mesh (the first row), in meV/atom, eV/Å and GPa."""
    reference = rows[0]
    f_ref, s_ref = np.array(reference["forces"]), np.array(reference["stress"])
    for row in rows:
        row["dE_meV_per_atom"] = abs(row["energy_per_atom"] - reference["energy_per_atom"]) * 1000
        row["dF_max_eV_per_A"] = float(np.linalg.norm(np.array(row["forces"]) - f_ref, axis=1).max())
        row["dstress_max_GPa"] = float(np.abs(np.array(row["stress"]) - s_ref).max() / GPa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacings", type=float, nargs="+", default=SPACINGS, help="k-point spacings in units of 2π Å⁻¹.")
    parser.add_argument("--structures", nargs="+", choices=sorted(STRUCTURES), default=sorted(STRUCTURES))
    parser.add_argument("--energy-tol", type=float, default=1.0, help="meV/atom")
    parser.add_argument("--force-tol", type=float, default=0.01, help="eV/Å")
    parser.add_argument("--time-reversal-check", action=argparse.BooleanOptionalAction, default=True,
                        help="Also run the papers' mesh with every k-point listed (no time reversal).")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from uq_flows.settings import get_settings

    s = get_settings()
    options = {"command": s.cp2k_command, "data_dir": s.cp2k_data_dir, "threads": 1, "timeout": 3600.0}
    spacings = sorted(set(args.spacings))
    results: dict[str, list[dict]] = {}
    full_grid: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="uq-cp2k-kpoints-") as scratch:
        for key in args.structures:
            atoms, rows, done = STRUCTURES[key](), [], {}
            for spacing in spacings:  # densest first: the reference
                settings = Cp2kSettings(kpoint_spacing=2 * math.pi * spacing)
                mesh = tuple(settings.mesh(atoms))
                if mesh not in done:
                    done[mesh] = run(atoms, settings, Path(scratch), f"{key}-{spacing:g}", options)
                    print(f"  {key} 2π×{spacing:g}: {mesh} done in {done[mesh]['wall_s']} s", file=sys.stderr, flush=True)
                rows.append({"spacing_2pi": spacing, **done[mesh]})
            compare(rows)
            results[key] = rows
            if args.time_reversal_check:  # the papers' mesh with every point listed, against the halved list
                paper = next(row for row in rows if math.isclose(2 * math.pi * row["spacing_2pi"], PAPER_KPOINT_SPACING))
                full = run(atoms, Cp2kSettings(time_reversal=False, kpoint_spacing=PAPER_KPOINT_SPACING),
                           Path(scratch), f"{key}-full", options)
                print(f"  {key} full grid: done in {full['wall_s']} s", file=sys.stderr, flush=True)
                compare([dict(paper), full])  # a copy: the paper row keeps its difference to the densest mesh
                full_grid[key] = {"mesh": full["mesh"], "n_listed": [full["n_kpoints"], paper["n_kpoints"]],
                                  "scf_step_s": [full["scf_step_s"], paper["scf_step_s"]],
                                  "wall_s": [full["wall_s"], paper["wall_s"]], "dE_meV_per_atom": full["dE_meV_per_atom"],
                                  "dF_max_eV_per_A": full["dF_max_eV_per_A"]}

    meets = {
        spacing: all(
            row["dE_meV_per_atom"] <= args.energy_tol and row["dF_max_eV_per_A"] <= args.force_tol
            for rows in results.values() for row in rows if row["spacing_2pi"] == spacing
        )
        for spacing in spacings
    }
    coarsest = max((sp for sp in spacings if all(meets[t] for t in spacings if t <= sp)), default=None)
    print(f"{'structure':9} {'2π×Å⁻¹':>7} {'mesh':>8} {'pts':>4} {'ΔE meV/at':>9} {'ΔF eV/Å':>8} {'Δσ GPa':>7} "
          f"{'s/SCF':>6} {'SCF':>3} {'wall s':>6}")
    for key, rows in results.items():
        for row in rows:
            print(f"{key:9} {row['spacing_2pi']:7g} {'×'.join(map(str, row['mesh'])):>8} {row['n_kpoints']:4d} "
                  f"{row['dE_meV_per_atom']:9.3f} {row['dF_max_eV_per_A']:8.4f} {row['dstress_max_GPa']:7.3f} "
                  f"{row['scf_step_s']:6.2f} {row['scf_steps']:3d} {row['wall_s']:6.1f}")
    for key, check in full_grid.items():
        print(f"{key} {'×'.join(map(str, check['mesh']))}: {check['n_listed'][0]} points listed → "
              f"{check['n_listed'][1]} with k and −k merged: {check['scf_step_s'][0]:.2f} → {check['scf_step_s'][1]:.2f} s/SCF, "
              f"{check['wall_s'][0]:.1f} → {check['wall_s'][1]:.1f} s wall; |ΔE| {check['dE_meV_per_atom']:.1e} meV/atom, "
              f"|ΔF| {check['dF_max_eV_per_A']:.1e} eV/Å")
    default = Cp2kSettings().kpoint_spacing / (2 * math.pi)
    print(f"coarsest spacing meeting {args.energy_tol:g} meV/atom and {args.force_tol:g} eV/Å (and every denser one): "
          f"2π × {coarsest:g} Å⁻¹" if coarsest else "no spacing meets the tolerance")
    print(f"labeller default: 2π × {default:g} Å⁻¹ ({'meets' if meets.get(round(default, 6)) else 'not checked or fails'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "cp2k_kpoints", "machine": platform.node(), "python": platform.python_version(),
        "cp2k_command": s.cp2k_command, "cp2k_version": next(iter(results.values()))[0]["cp2k_version"], "omp_threads": 1, "settings": Cp2kSettings().model_dump(),
        "paper_spacing": PAPER_KPOINT_SPACING, "energy_tol_meV_per_atom": args.energy_tol,
        "force_tol_eV_per_A": args.force_tol, "meets": {str(k): v for k, v in meets.items()},
        "coarsest_meeting_spacing_2pi": coarsest, "default_spacing_2pi": default, "results": results,
        "time_reversal_check": full_grid,
    }, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
