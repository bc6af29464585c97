"""Dimers and short-range configurations a user supplies reach the training set with DFT labels.

Paper 001's W set deliberately holds dimers and short-range configurations with huge forces,
labelled by DFT; paper 004's CAGO filters (0.75 Å, 30 eV/Å) are for CAGO output only (METHODS
§7). EMT stands in for DFT on Cu: its forces on these cells are a known truth.
"""

import json

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from tests.cli_helpers import run_json
from uq_flows.io import read_many
from uq_flows.labeling.assembly import assemble_dataset
from uq_flows.labeling.labels import DFT, Label
from uq_flows.labeling.routing import route_by_uncertainty
from uq_flows.labeling.source_screens import SourceScreens
from uq_flows.records import records_from_atoms
from uq_flows.screening import structure_problem

UC = 0.5  # eV/Å: the fcc cells score U < 0.05, the dimer and close pairs U ≈ 1–6 (chgnet-0.3.0 vs 0.2.0, measured)


def fcc_cu() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True)


def close_pair(distance: float) -> Atoms:
    """The 4-atom fcc cell with atom 1 moved along its bond to atom 0 until they are ``distance`` Å apart."""
    atoms = fcc_cu()
    bond = atoms.positions[1] - atoms.positions[0]
    atoms.positions[1] = atoms.positions[0] + bond / np.linalg.norm(bond) * distance
    return atoms


def candidates() -> dict[str, Atoms]:
    """Near-equilibrium fcc cells first (EMT and CHGNet differ there by one constant within ±7 meV/atom,
    measured), then a dimer in a 10 Å box, two short-range pairs and a broken 0.3 Å pair."""
    normal = {}
    for strain in (1.0, 0.99, 1.01):
        atoms = fcc_cu()
        atoms.set_cell(atoms.cell * strain, scale_atoms=True)
        normal[f"strained {strain}"] = atoms
    for seed in (1, 2, 3):
        atoms = fcc_cu()
        atoms.rattle(0.03, seed=seed)
        normal[f"rattled {seed}"] = atoms
    dimer = Atoms("Cu2", positions=[[5, 5, 5], [7, 5, 5]], cell=[10, 10, 10], pbc=True)
    return {**normal, "dimer": dimer, "pair 1.2": close_pair(1.2), "pair 1.4": close_pair(1.4),
            "pair 0.3": close_pair(0.3)}


def emt_forces(atoms: Atoms) -> np.ndarray:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_forces()


@pytest.mark.slow
def test_dimers_and_short_range_candidates_are_labelled_by_dft_not_screened(tmp_path):
    structures = candidates()
    write(tmp_path / "candidates.extxyz", list(structures.values()))
    # ids as the loop makes them: from the structures read back from the file
    ids = dict(zip(structures, (r.id for r in records_from_atoms(read_many([tmp_path / "candidates.extxyz"])))))
    config = {
        "name": "cu-screens", "elements": ["Cu"], "structures": ["candidates.extxyz"], "generate": None,
        "members": ["chgnet-0.3.0", "chgnet-0.2.0"], "uc": UC, "dft": {"labeller": "calculator"},
        # the random audit (3 of the 9 scorable candidates) with seed 2 is strained 1.0, strained 1.01 and
        # rattled 3: a dimer in the audit would make the one per-element shift fail its residual limit
        # (EMT vs CHGNet differ by ~1 eV/atom beyond a shift there, measured), and every teacher label would wait
        "audit": {"seed": 2},
        "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 3},
        "explore": {"n_seeds": 1, "md": {"steps": 20, "snapshot_every": 10}, "cago": None},
        "select": {"max_candidates": 4},
        "convergence": {"max_iterations": 1},
    }
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(config))

    (loop,) = run_json("run", tmp_path / "loop.yaml")["loops"]
    assert loop["state"] == "completed" and loop["fizzled"] == []
    (state,) = loop["iterations"]
    assert state["n_candidates"] == 10 and state["n_rejected"] == 1  # only the 0.3 Å pair
    assert state["n_audit"] == 3 and state["alignment"]["usable"] and state["n_waiting_alignment"] == 0
    assert state["n_dft_ok"] == 3 + 3 and state["n_teacher"] == 3  # audit + dimer + two pairs; the rest taught

    run_json("results", loop["id"], "--format", "json", "--out", tmp_path / "pool.json")
    exported = {r["id"]: r for r in json.loads((tmp_path / "pool.json").read_text())}
    assert ids["pair 0.3"] not in exported  # never DFT, never taught
    assert len(exported) == 9
    for name in ("dimer", "pair 1.2", "pair 1.4"):
        record = exported[ids[name]]
        assert record["source"] == "dft" and record["U"] >= UC
        # the reference forces, untouched: EMT's own, huge for the close pairs
        assert np.allclose(record["forces"], emt_forces(structures[name]), atol=1e-6)
    largest = {name: np.linalg.norm(exported[ids[name]]["forces"], axis=1).max() for name in ("pair 1.2", "pair 1.4")}
    assert min(largest.values()) > 30.0  # above paper 004's CAGO limit, and kept

    # the same structures from CAGO would be screened: the close pairs by force, a 0.6 Å pair by distance
    screens = SourceScreens()
    cago, supplied = screens.for_source("cago:iteration-0"), screens.for_source(str(tmp_path / "candidates.extxyz"))
    assert (cago.min_distance, cago.max_force) == (0.75, 30.0) and (supplied.min_distance, supplied.max_force) == (0.5, None)
    assert structure_problem(close_pair(0.6), cago.min_distance) and not structure_problem(close_pair(0.6), supplied.min_distance)
    pair = ids["pair 1.2"]
    as_cago = f"{pair}-cago"
    label = Label.from_results(pair, DFT, "emt", 0.0, exported[pair]["forces"])
    dataset = assemble_dataset(
        {pair: structures["pair 1.2"], as_cago: structures["pair 1.2"]},
        route_by_uncertainty([pair, as_cago], [6.0, 6.0], UC),
        [label, label.model_copy(update={"id": as_cago})], [],
        max_forces={pair: supplied.max_force, as_cago: cago.max_force}, align_energies=False,
    )
    kept, screened = dataset.labels
    assert kept.status == "ok" and screened.status == "rejected"
    assert screened.reason.startswith("largest force") and "exceeds the maximum 30 eV/Å" in screened.reason
