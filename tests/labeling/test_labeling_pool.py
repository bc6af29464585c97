"""The loop's labelled data, engine-free: audit routing, alignment pairs, one energy zero per pool, screens by source."""

import numpy as np
import pytest
from ase import Atoms
from ase.data import atomic_numbers

from uq_flows.flows.config import AuditConfig, LoopConfig
from uq_flows.labeling.alignment import AUDIT, HIGH_U, AlignmentPair
from uq_flows.labeling.assembly import assemble_dataset
from uq_flows.labeling.labels import DFT, TEACHER, Label
from uq_flows.labeling.pool import AUDIT_KEY, TrainingPool
from uq_flows.labeling.routing import audit_sample, route_by_uncertainty
from uq_flows.records import chemical_system
from uq_flows.labeling.source_screens import SourceScreens
from uq_flows.records import StructureRecord

MU = {"Mo": -0.8, "W": 2.5}  # eV/atom: DFT − teacher per element (the truth the alignment must find)


def record(symbols: str, n: int, tag: int) -> StructureRecord:
    atoms = Atoms(symbols * n, cell=np.eye(3) * 30, pbc=True)
    atoms.positions = np.arange(3 * len(atoms)).reshape(-1, 3) * 1.7 + tag * 0.01
    return StructureRecord.from_atoms(atoms)


def shift_of(structure: StructureRecord) -> float:
    return sum(MU[s] for s in Atoms(numbers=structure.numbers).get_chemical_symbols())


def labels_for(structure: StructureRecord, iteration: int, teacher_error: float = 0.0, audit: bool = False):
    """A DFT label and a teacher label whose energy is DFT − Σ μ + error."""
    n = structure.n_atoms
    forces = np.zeros((n, 3)).tolist()
    dft_energy = -10.0 * n
    dft = Label(id=structure.id, status="ok", kind=DFT, source="cp2k", energy=dft_energy, forces=forces,
                iteration=iteration, provenance={AUDIT_KEY: True} if audit else {})
    teacher = Label(id=structure.id, status="ok", kind=TEACHER, source="chgnet", forces=forces, iteration=iteration,
                    energy=dft_energy - shift_of(structure) + teacher_error)
    return dft, teacher


def pair(structure, dft, teacher, sample, iteration=0):
    return AlignmentPair.of(structure.id, structure.numbers, dft.energy, teacher.energy, sample, iteration)


def test_audit_pairs_win_over_biased_high_u_pairs():
    """W-like case (METHODS §2): the teacher is far off on high-U structures; the audit is not."""
    rng = np.random.default_rng(0)
    structures = [record("W", 1 + k % 4, k) for k in range(30)]
    pairs = []
    for k, s in enumerate(structures):
        audit = k < 10
        error = rng.normal(0, 0.002) * s.n_atoms if audit else -0.4 * s.n_atoms  # high U: 0.4 eV/atom off
        dft, teacher = labels_for(s, 0, error, audit)
        pairs.append(pair(s, dft, teacher, AUDIT if audit else HIGH_U))
    pool = TrainingPool().merged(structures, [], pairs)
    assert pool.alignment.sample == AUDIT and pool.alignment.n_structures == 10 and pool.alignment.warning is None
    assert pool.alignment.shifts["W"] == pytest.approx(MU["W"], abs=0.003)
    biased = TrainingPool().merged(structures, [], [p for p in pairs if p.sample == HIGH_U]).alignment
    assert biased.shifts["W"] == pytest.approx(MU["W"] + 0.4, abs=1e-6)  # 400 meV/atom off: why audits exist
    assert "high-U" in biased.warning


def test_one_energy_zero_across_iterations_and_rank_deficient_compositions_wait():
    mow = [record("MoW", 1, k) for k in range(3)]
    mo = record("Mo", 2, 7)
    # iteration 0: audit pairs only on equiatomic MoW; a pure-Mo teacher label cannot be placed
    first = [labels_for(s, 0, audit=True) for s in mow]
    mo_teacher = labels_for(mo, 0)[1]
    taught_mow = labels_for(record("MoW", 2, 9), 0)[1]
    pool = TrainingPool().merged(
        [*mow, mo, record("MoW", 2, 9)], [*(d for d, _ in first), mo_teacher, taught_mow],
        [pair(s, d, t, AUDIT) for s, (d, t) in zip(mow, first)])
    assert pool.alignment.rank_deficient and pool.alignment.usable
    split = pool.training_split(held_out_iteration=None)
    assert split.n_waiting == 1 and "rank-deficient" in split.waiting_reason
    (aligned_mow,) = [x for x in split.train_labels if x.kind == TEACHER]
    assert aligned_mow.energy == pytest.approx(-10.0 * 4)  # MoW is determined: back on the DFT zero
    assert aligned_mow.provenance["unaligned_energy"] == taught_mow.energy
    # iteration 1 audits pure Mo: the waiting label joins, with the same alignment as everything else
    mo_w = [record("Mo", 3, 10), record("W", 3, 11)]
    more = [labels_for(s, 1, audit=True) for s in mo_w]
    pool = pool.merged(mo_w, [d for d, _ in more], [pair(s, d, t, AUDIT, 1) for s, (d, t) in zip(mo_w, more)])
    assert not pool.alignment.rank_deficient and pool.alignment.n_structures == 5
    split = pool.training_split(held_out_iteration=1)
    assert split.n_waiting == 0
    teacher = {x.id: x for x in split.train_labels if x.kind == TEACHER}
    assert teacher[mo.id].energy == pytest.approx(-20.0) and teacher[aligned_mow.id].energy == pytest.approx(-40.0)
    # the newest audit is held out as the test set; earlier audits train
    assert {x.id for x in split.test_labels} == {s.id for s in mo_w}
    assert {s.id for s in mow} <= {x.id for x in split.train_labels}


def test_a_residual_beyond_the_limit_holds_every_teacher_label_back():
    structures = [record("W", 2, k) for k in range(6)]
    rng = np.random.default_rng(1)
    both = [labels_for(s, 0, rng.normal(0, 0.2) * s.n_atoms, audit=True) for s in structures]
    pool = TrainingPool(max_residual=0.02).merged(
        structures, [t for _, t in both], [pair(s, d, t, AUDIT) for s, (d, t) in zip(structures, both)])
    assert not pool.alignment.usable and "residual" in pool.alignment.refused
    split = pool.training_split()
    assert split.train_labels == [] and split.n_waiting == 6
    same_zero = TrainingPool(align_energies=False).merged(structures, [t for _, t in both], [])
    assert len(same_zero.training_split().train_labels) == 6  # same labeller: nothing to align


def test_assembly_records_pairs_by_sample_and_screens_by_source():
    cells = {name: Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 1.3]], cell=np.eye(3) * 12, pbc=True) for name in "abcd"}
    for k, atoms in enumerate(cells.values()):
        atoms.positions[1, 2] += 0.01 * k
    routes = route_by_uncertainty(list(cells), [0.1, 2.0, 3.0, None], uc=1.0, audit=["a"],
                                  rejected={"d": "atoms 0.300 Å apart"})
    assert [(r.route, r.audit) for r in routes] == [("dft", True), ("dft", False), ("dft", False), ("rejected", False)]
    huge = [[0.0, 0.0, -60.0], [0.0, 0.0, 60.0]]  # a short pair: 60 eV/Å, as in paper 001's W set
    dft = [Label(id=i, status="ok", kind=DFT, source="cp2k", energy=-5.0, forces=huge) for i in "abc"]
    teacher = [Label(id=i, status="ok", kind=TEACHER, source="chgnet", energy=-3.0, forces=huge) for i in "abc"]
    screens = SourceScreens()
    max_forces = {"a": screens.for_source("file:0").max_force, "b": screens.for_source("md:x:3").max_force,
                  "c": screens.for_source("cago:seed").max_force}
    dataset = assemble_dataset(cells, routes, dft, teacher, max_forces=max_forces, align_energies=False,
                               min_success_fraction=0.0)
    status = {x.id: x.status for x in dataset.labels}
    assert status == {"a": "ok", "b": "ok", "c": "rejected", "d": "rejected"}  # CAGO output gets paper 004's 30 eV/Å
    assert {(p.id, p.sample) for p in dataset.pairs} == {("a", AUDIT), ("b", HIGH_U), ("c", HIGH_U)}
    assert dataset.summary.n_pairs == {AUDIT: 1, HIGH_U: 2}
    assert dataset.labels[0].provenance[AUDIT_KEY] and AUDIT_KEY not in dataset.labels[1].provenance
    assert all(x.energy == -5.0 for x in dataset.ok_labels())  # stored unaligned in the loop
    single_shot = assemble_dataset(cells, routes[:3], dft, teacher, max_force=None, min_success_fraction=0.0)
    assert single_shot.summary.alignment.sample == AUDIT and single_shot.summary.alignment.n_structures == 1


def test_audit_and_alignment_defaults_follow_the_labellers():
    base = {"name": "x", "elements": ["Cu"], "members": ["chgnet-0.3.0", "chgnet-0.2.0"]}
    emt = "emt=ase:ase.calculators.emt:EMT"
    same = LoopConfig(**base, dft={"labeller": "calculator", "calculator": emt}, teacher={"energy_from": emt},
                      explore={"cago": None})
    assert not same.aligns_energies and not same.audits
    assert LoopConfig(**base, dft={"labeller": "calculator", "calculator": emt}, teacher={"energy_from": emt}).audits
    assert LoopConfig(**base).aligns_energies and LoopConfig(**base).audits  # CP2K vs CHGNet
    assert AuditConfig().size_for(100) == 10 and AuditConfig().size_for(12) == 3 and AuditConfig().size_for(2) == 2
    assert AuditConfig(size=7).size_for(100) == 7
    with pytest.raises(ValueError, match="needs audit"):
        LoopConfig(**base, target_force_rmse=0.1, audit={"enabled": "off"})
    assert atomic_numbers["Mo"] == 42  # the MoW fixtures above are real elements


def test_the_audit_covers_every_chemical_system_before_repeating_one():
    """An alignment fitted on Ge and SiGe only would extrapolate pure Si through the mixing energy."""
    ids = [f"s{k}" for k in range(12)]
    groups = ["Ge"] * 8 + ["Ge-Si"] * 3 + ["Si"]
    for seed in range(20):
        sample = audit_sample(ids, 3, seed, groups)
        assert {groups[ids.index(i)] for i in sample} == {"Ge", "Ge-Si", "Si"}
        assert sample == sorted(sample, key=ids.index) and sample == audit_sample(ids, 3, seed, groups)
    assert len(audit_sample(ids, 5, 0, groups)) == 5 and len(set(audit_sample(ids, 12, 0, groups))) == 12
    assert audit_sample(ids, 3, 4, ["Cu"] * 12) == audit_sample(ids, 3, 4)  # one system: a plain random sample
    assert chemical_system([32, 14, 14]) == "Ge-Si"
