"""A loop whose DFT code (CP2K) has another energy zero than its teacher (CHGNet) trains on one scale.

Two elements, each pure and mixed (Si, Ge, zincblende SiGe: 2-atom cells near equilibrium), real
CP2K for the high-U structures and the random audit, CHGNet teaching the rest. The loop's one
per-element alignment (METHODS §2), fitted per atom on the audit pairs of all iterations so far,
must put every teacher energy it trains on within the alignment residual of what CP2K itself gives
for that structure, in every iteration; the test runs CP2K on each teacher-labelled structure.
"""

import json

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.io import write

from tests.cli_helpers import run_json
from tests.labeling.cp2k_support import FAST, ensure_cp2k
from uq_flows.campaign import Campaign
from uq_flows.flows.campaign_pool import load_pool
from uq_flows.labeling.cp2k import Cp2kLabeller
from uq_flows.labeling.labels import DFT, TEACHER
from uq_flows.labeling.pool import AUDIT_KEY
from uq_flows.settings import get_settings

# CHGNet vs CP2K (PBE, DZVP-MOLOPT-SR-GTH, FAST's 3×3×3 mesh and 300 Ry) on these 12 cells
# (equilibrium, ±1 % strain, 0.03 Å rattle per composition), measured: the best per-element shifts
# leave 37 meV/atom RMSE, 35 without the rattled cells. That is not a missing shift: zincblende SiGe
# mixes at +42 meV/atom in CP2K and −29 in CHGNet, a 70 meV/atom difference no shift per element
# can absorb (SiC the same way: −0.29 vs −0.33 eV/atom, and 80 meV/atom apart at 5×5×5 and 400 Ry).
# The default limit (20 meV/atom) would hold every teacher label back; 60 meV/atom lets this fit
# through and still refuses a teacher far from CP2K.
MAX_RESIDUAL = 0.06
UC = 0.08  # eV/Å: symmetric cells score U ≈ 0, the rattled ones 0.09–0.13, MD snapshots ≈ 0.02–0.06 (measured)


def candidates():
    """Per composition: equilibrium (CP2K's and CHGNet's lattice constants agree within 1 %),
    1 % compressed and rattled by 0.03 Å; pure Si, pure Ge, then SiGe."""
    cells = []
    for formula, structure, a in (("Si", "diamond", 5.47), ("Ge", "diamond", 5.76), ("SiGe", "zincblende", 5.62)):
        base = bulk(formula, structure, a=a)
        compressed = base.copy()
        compressed.set_cell(base.cell * 0.99, scale_atoms=True)
        rattled = base.copy()
        rattled.rattle(0.03, seed=1)
        cells += [base, compressed, rattled]
    return cells


def loop_config() -> dict:
    return {
        "name": "sige-cp2k", "elements": ["Si", "Ge"], "structures": ["candidates.extxyz"], "generate": None,
        "members": ["chgnet-0.3.0", "sevennet-0-11jul2024"], "teacher": {"energy_from": "chgnet-0.3.0"},
        "uc": UC, "align_max_residual": MAX_RESIDUAL,
        # 3 of the 9 candidates, stratified by chemical system: one each of Si, Ge and SiGe. A plain random
        # draw can miss pure Si (Ge, Ge, SiGe): its fit leaves a 7.9 meV/atom residual, yet shifts pure-Si
        # teacher energies ~0.15 eV/atom off CP2K, the mixing-energy difference above extrapolated
        "audit": {"size": 3},
        "dft": {"labeller": "cp2k", "cp2k": {"kpoints": list(FAST.kpoints), "cutoff": FAST.cutoff}},
        "fit": {"backend": "linear", "n_functions": 6, "ensemble_size": 3},
        # short, cold MD keeps the next candidates near equilibrium, where a shift per element holds
        "explore": {"n_seeds": 2, "md": {"steps": 40, "snapshot_every": 10, "temperatures": [50.0]}, "cago": None},
        "select": {"qbc": False, "n_clusters": 4, "max_candidates": 4},
        "convergence": {"max_iterations": 2},
    }


def training_pools(loop: str, iterations=(0, 1)) -> dict:
    """The loop's training pool after each iteration, from the campaign database."""
    with Campaign.open() as campaign:
        return {k: load_pool(campaign, loop, k) for k in iterations}


def per_atom_fit(pairs):
    """Shifts μ_el and residual RMSE by least squares on (E_DFT − E_teacher)/N = Σ_el (n_el/N) μ_el."""
    elements = sorted({el for p in pairs for el in p.counts})
    n = np.array([[p.counts.get(el, 0) for el in elements] for p in pairs], float)
    atoms = n.sum(axis=1)
    difference = np.array([p.reference_energy - p.teacher_energy for p in pairs]) / atoms
    mu = np.linalg.lstsq(n / atoms[:, None], difference, rcond=None)[0]
    return dict(zip(elements, mu)), float(np.sqrt(np.mean((difference - n / atoms[:, None] @ mu) ** 2)))


@pytest.mark.slow
def test_teacher_energies_sit_on_the_cp2k_scale_in_every_iteration(tmp_path, monkeypatch):
    ensure_cp2k()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("UQ_FLOWS_CP2K_THREADS", "1")  # the loop's CP2K jobs: one thread beside the uMLIPs
    get_settings.cache_clear()
    write(tmp_path / "candidates.extxyz", candidates())
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(loop_config()))

    (loop,) = run_json("run", tmp_path / "loop.yaml")["loops"]
    assert loop["state"] == "completed" and loop["fizzled"] == [] and len(loop["iterations"]) == 2
    first = loop["iterations"][0]
    assert (first["n_candidates"], first["n_audit"]) == (9, 3) and first["n_dft_ok"] + first["n_teacher"] == 9
    assert first["n_dft_ok"] > first["n_audit"] and first["n_teacher"] >= 3  # both routes and the audit occur

    pools = training_pools(loop["id"])
    cp2k = Cp2kLabeller(FAST, threads=1)
    cp2k_energy = {}  # CP2K's own energy of each teacher-labelled structure, run here

    n_audit_so_far = 0
    for state in loop["iterations"]:
        k = state["iteration"]
        n_audit_so_far += state["n_audit"]
        alignment, pool = state["alignment"], pools[k]
        assert alignment is not None and alignment["usable"] and alignment["sample"] == "audit"
        assert alignment["warning"] is None and state["n_waiting_alignment"] == 0 and state["warnings"] == []
        # fitted on the audit pairs of every iteration so far, per atom, nothing else
        audit_ids = {x.id for x in pool.labels if x.kind == DFT and x.provenance.get(AUDIT_KEY)}
        audit_pairs = [p for p in pool.pairs if p.sample == "audit"]
        assert {p.id for p in audit_pairs} == audit_ids and len(audit_ids) == alignment["n_structures"] == n_audit_so_far
        shifts, rmse = per_atom_fit(audit_pairs)
        assert alignment["shifts"] == pool.alignment.shifts and shifts == pytest.approx(alignment["shifts"], abs=1e-6)
        residual = alignment["residual_rmse_per_atom"]
        assert rmse == pytest.approx(residual, abs=1e-9) and residual <= MAX_RESIDUAL
        if k == 0:  # every composition is in the first audit: no shift is extrapolated
            assert {tuple(sorted(p.counts)) for p in audit_pairs} == {("Si",), ("Ge",), ("Ge", "Si")}
        for pair in (p for p in audit_pairs if p.iteration == k):
            n = sum(pair.counts.values())
            aligned = pair.teacher_energy + sum(c * shifts[el] for el, c in pair.counts.items())
            assert abs(aligned - pair.reference_energy) / n <= 3 * residual + 1e-3

        # the fit of iteration k: every teacher energy within 3 × the residual of CP2K's for that structure
        split = pool.training_split(k)
        structures = {s.id: s for s in split.train_structures}
        taught = [x for x in split.train_labels if x.kind == TEACHER]
        assert split.n_waiting == 0 and len(taught) == sum(s["n_teacher"] for s in loop["iterations"][: k + 1])
        for label in taught:
            atoms = structures[label.id].to_atoms()
            if label.id not in cp2k_energy:
                reference = cp2k.label(atoms, label.id, tmp_path / "cp2k-check")
                assert reference.status == "ok", reference.reason
                cp2k_energy[label.id] = reference.energy
            shift = sum(alignment["shifts"][el] for el in atoms.get_chemical_symbols())
            assert label.provenance["energy_shift"] == pytest.approx(shift)
            assert abs(label.energy - cp2k_energy[label.id]) / len(atoms) <= 3 * residual, label.id

    # what `uq-flows results` exports: the newest pool, teacher energies on CP2K's scale
    exported = run_json("results", loop["id"], "--format", "json", "--out", tmp_path / "pool.json")
    records = json.loads((tmp_path / "pool.json").read_text())
    last = loop["iterations"][-1]
    final_structures = {s.id: s.to_atoms() for s in pools[last["iteration"]].structures}
    teacher_records = [r for r in records if r["source"] == "teacher"]
    assert exported["by_source"]["teacher"] == len(teacher_records) == sum(s["n_teacher"] for s in loop["iterations"])
    assert {r["id"] for r in teacher_records} <= set(cp2k_energy)
    for record in records:  # CP2K Si and Ge sit near −107 eV/atom, CHGNet's near −5
        assert record["energy"] / len(final_structures[record["id"]]) < -100
    for record in teacher_records:
        n = len(final_structures[record["id"]])
        assert abs(record["energy"] - cp2k_energy[record["id"]]) / n <= 3 * last["alignment"]["residual_rmse_per_atom"]
