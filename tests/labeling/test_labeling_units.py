"""Engine-free labelling pieces: routing, audit threshold, screens, alignment, assembly, CP2K parsing."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import Bohr, GPa, Hartree

from uq_flows.errors import InputError
from uq_flows.labeling.alignment import fit_energy_alignment
from uq_flows.labeling.assembly import LabellingFailed, assemble_dataset
from uq_flows.labeling.cp2k import (
    Cp2kLabeller,
    Cp2kSettings,
    kpoint_mesh,
    parse_output,
    write_input,
)
from uq_flows.labeling.kpoints import gamma_centred_points
from uq_flows.labeling.labels import Label
from uq_flows.labeling.routing import (
    audit_sample,
    count_routes,
    route_by_uncertainty,
    uc_for_target_rmse,
)
from uq_flows.screening import (
    force_problem,
    min_interatomic_distance,
    structure_problem,
)


def test_routes_threshold_unknown_u_and_reasons():
    routes = route_by_uncertainty(["a", "b", "c", "d"], [0.2, 1.0, None, 3.0], uc=1.0)
    assert [r.route for r in routes] == ["teacher", "dft", "dft", "dft"]
    assert routes[1].reason == "U = 1 ≥ U_c = 1 eV/Å"  # at the threshold: DFT
    assert "not every member" in routes[2].reason and routes[2].U is None


def test_budget_keeps_forced_then_unknown_then_highest_u():
    ids, u = ["a", "b", "c", "d", "e"], [5.0, 2.0, float("nan"), 9.0, 0.1]
    routes = route_by_uncertainty(ids, u, uc=1.0, dft_budget=2, audit=["b"])
    assert [r.route for r in routes] == ["deferred", "dft", "dft", "deferred", "teacher"]
    assert "rank 4 by U exceeds the DFT budget of 2" in routes[0].reason
    assert count_routes(routes) == {"dft": 2, "teacher": 1, "deferred": 2, "rejected": 0}
    assert [r.route for r in route_by_uncertainty(ids, u, dft_budget=0)].count("dft") == 0


def test_routing_rejects_bad_arguments():
    with pytest.raises(InputError, match="2 ids but 1"):
        route_by_uncertainty(["a", "b"], [1.0])
    with pytest.raises(InputError, match="non-negative"):
        route_by_uncertainty(["a"], [1.0], uc=float("nan"))


def test_audit_sample_is_reproducible_and_ordered():
    ids = [f"s{k}" for k in range(50)]
    first, second = audit_sample(ids, 7, seed=3), audit_sample(ids, 7, seed=3)
    assert first == second and len(set(first)) == 7 and first == sorted(first, key=ids.index)
    assert audit_sample(ids[:3], 10) == ids[:3]


def test_uc_from_audit_by_hand():
    # three 1-atom configurations; teacher force errors 0.1, 0.2, 1.0 along x; U = 0.5, 1.5, 4
    dft = np.zeros((3, 3))
    teacher = np.array([[0.1, 0, 0], [0.2, 0, 0], [1.0, 0, 0]])
    # keeping U < 4: RMSE over 6 components... per component: sqrt((0.01 + 0.04) / 6) = 0.0913
    assert uc_for_target_rmse([0.5, 1.5, 4.0], teacher, dft, [1, 1, 1], 0.1) == 4.0
    # target 0.05: only the first (sqrt(0.01/3) = 0.0577) fails too → smallest U
    assert uc_for_target_rmse([0.5, 1.5, 4.0], teacher, dft, [1, 1, 1], 0.05) == 0.5
    assert math.isinf(uc_for_target_rmse([0.5, 1.5, 4.0], teacher, dft, [1, 1, 1], 1.0))


def test_screens():
    atoms = bulk("Cu", "fcc", a=3.61)
    assert min_interatomic_distance(atoms) == pytest.approx(3.61 / math.sqrt(2))
    squeezed = Atoms("Cu2", positions=[[0, 0, 0], [0.5, 0, 0]], cell=[8, 8, 8], pbc=True)
    assert "0.500 Å apart" in structure_problem(squeezed)
    assert structure_problem(atoms) is None
    assert force_problem(np.array([[0, 0, 40.0]])) == "largest force 40 eV/Å exceeds the maximum 30 eV/Å"
    assert force_problem(np.ones((2, 3))) is None


def test_alignment_recovers_per_element_shifts():
    rng = np.random.default_rng(0)
    numbers = [rng.choice([14, 8], size=rng.integers(2, 9)) for _ in range(12)]
    teacher = rng.normal(size=12)
    dft = [t + np.sum(np.where(z == 14, -1.25, 0.5)) for t, z in zip(teacher, numbers)]
    alignment = fit_energy_alignment(numbers, dft, teacher)
    assert alignment.shifts == pytest.approx({"O": 0.5, "Si": -1.25})
    assert alignment.residual_rmse_per_atom < 1e-10 and not alignment.rank_deficient
    assert alignment.shift([14, 14, 8]) == pytest.approx(-2.0)
    with pytest.raises(InputError, match="no energy alignment for Cu"):
        alignment.shift([29])
    ratio_only = fit_energy_alignment([[14, 8, 8], [14, 14, 8, 8, 8, 8]], [1.0, 2.0], [0.0, 0.0])
    assert ratio_only.rank_deficient  # SiO2 in both: the shifts are not separable


def test_alignment_weighs_structures_per_atom():
    # Si2 and Si64 whose per-atom differences are 1.00 and 1.10 eV: each counts once, so μ is their
    # mean; a fit on total energies would follow the 64-atom structure (μ ≈ 1.0998)
    alignment = fit_energy_alignment([[14] * 2, [14] * 64], [2 * 1.00, 64 * 1.10], [0.0, 0.0], max_residual=1.0)
    assert alignment.shifts["Si"] == pytest.approx(1.05)
    assert alignment.residual_rmse_per_atom == pytest.approx(0.05)


def test_alignment_refuses_compositions_the_pairs_do_not_span():
    # only equiatomic MoW pairs: μ_Mo + μ_W is fixed (-5 eV per formula unit), μ_Mo alone is not
    numbers = [[42, 74] * k for k in (1, 2, 4, 8)]
    dft = [k * (-2.0 - 3.0) + 0.001 * (-1) ** k for k in (1, 2, 4, 8)]
    alignment = fit_energy_alignment(numbers, dft, [0.0] * 4)
    assert alignment.rank_deficient and alignment.usable
    assert alignment.shift([42, 74]) == pytest.approx(-5.0, abs=0.01)
    assert alignment.shift([74, 42, 42, 74]) == pytest.approx(-10.0, abs=0.02)
    for unspanned in ([42], [42, 42, 74]):
        assert "rank-deficient" in alignment.problem(unspanned)
        with pytest.raises(InputError, match="cannot determine the shift of"):
            alignment.shift(unspanned)
    assert "Mo2W" in alignment.problem([42, 42, 74])
    single = fit_energy_alignment([[42, 74]], [-5.0], [0.0])  # fewer pairs than elements
    assert single.shift([42, 74]) == pytest.approx(-5.0) and "rank-deficient" in single.problem([74])


def test_alignment_refused_when_a_constant_per_element_does_not_explain_the_difference():
    rng = np.random.default_rng(3)
    numbers = [rng.choice([42, 74], size=rng.integers(2, 17)) for _ in range(20)]
    dft = [len(z) * rng.normal(scale=0.1) for z in numbers]  # 0.1 eV/atom scatter, no common shift
    refused = fit_energy_alignment(numbers, dft, [0.0] * 20)
    assert not refused.usable and refused.residual_rmse_per_atom > 0.02
    assert "refused" in refused.problem([42]) and "exceeds 20 meV/atom" in refused.refused
    with pytest.raises(InputError, match="energy alignment refused"):
        refused.shift([42, 74])
    assert fit_energy_alignment(numbers, dft, [0.0] * 20, max_residual=0.5).usable


def label(id, kind, energy=-1.0, forces=((0, 0, 0.1),), status="ok"):
    if status != "ok":
        return Label.failed(id, kind, "x", "broke")
    return Label.from_results(id, kind, "x", energy, np.array(forces))


def test_assembly_aligns_rejects_counts_and_keeps_missing_as_failed():
    structures = {k: Atoms("Si", cell=[3, 3, 3], pbc=True) for k in "abcde"}
    routes = route_by_uncertainty(list("abcde"), [3.0, 2.0, 0.1, 0.2, 5.0], uc=1.0)
    dft = [label("a", "dft", -5.0), None, label("e", "dft", -5.0, forces=((0, 0, 99),))]
    teacher = [label("a", "teacher", -4.0), label("c", "teacher", -4.2), label("d", "teacher", -3.9)]
    dataset = assemble_dataset(structures, routes, dft, teacher, min_success_fraction=0.5, iteration=3)
    final = {x.id: x for x in dataset.labels}
    assert final["b"].status == "failed" and "produced no output" in final["b"].reason
    assert final["e"].status == "rejected" and "99" in final["e"].reason
    assert final["c"].energy == pytest.approx(-5.2) and final["c"].provenance["unaligned_energy"] == -4.0 - 0.2
    assert final["c"].iteration == 3 and final["c"].U == 0.1 and "U = 0.1 < U_c" in final["c"].provenance["route"]
    s = dataset.summary
    assert (s.n_dft, s.n_teacher, s.n_failed, s.n_rejected) == (1, 2, 1, 1)
    assert s.success_fraction == {"dft": 0.5, "teacher": 1.0}
    assert s.dft_config_fraction == pytest.approx(1 / 3)
    with pytest.raises(LabellingFailed, match="only 50% of dft labels succeeded"):
        assemble_dataset(structures, routes, dft, teacher, min_success_fraction=0.8)


def test_kpoint_mesh_by_hand():
    # cubic a = 5 Å: |b| = 2π/5 = 1.2566 Å⁻¹; spacing 2π·0.03 = 0.18850 → ceil(6.667) = 7
    assert kpoint_mesh(np.eye(3) * 5.0, 2 * math.pi * 0.03) == (7, 7, 7)
    assert kpoint_mesh(np.diag([5.0, 10.0, 40.0]), 2 * math.pi * 0.03) == (7, 4, 1)


def test_gamma_centred_points_include_gamma_for_even_and_odd_meshes():
    even = gamma_centred_points((2, 2, 1))
    assert sorted(map(tuple, even)) == [(0, 0, 0), (0, 0.5, 0), (0.5, 0, 0), (0.5, 0.5, 0)]
    odd = gamma_centred_points((3, 1, 1))
    assert np.allclose(sorted(odd[:, 0]), [-1 / 3, 0, 1 / 3]) and len(gamma_centred_points((5, 5, 3))) == 75


def test_cp2k_input_has_the_settings():
    text = write_input(bulk("Si", "diamond", a=5.43), Cp2kSettings(kpoints=(2, 3, 3), max_scf=7))
    assert "SCHEME GENERAL" in text and "MAX_SCF 7" in text and "&XC_FUNCTIONAL PBE" in text
    assert text.count("      KPOINT ") == 10 and "KPOINT 0.000000000000 0.000000000000 0.000000000000 1.0" in text
    assert "STRESS_TENSOR ANALYTICAL" in text and "&KIND Si" in text
    with pytest.raises(Exception, match="3D-periodic"):
        write_input(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), Cp2kSettings())


CP2K_OUTPUT = """ CP2K| version string:                                        CP2K version 2023.1
  *** SCF run converged in     8 steps ***
 ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:               -7.872377887108357
 ATOMIC FORCES in [a.u.]

 # Atom   Kind   Element          X              Y              Z
      1      1      Si          0.01000000    -0.00200000     0.00000000
      2      1      Si         -0.01000000     0.00200000     0.00000000
 SUM OF ATOMIC FORCES           0.00000000     0.00000000     0.00000000     0.00000000

 STRESS| Analytical stress tensor [GPa]
 STRESS|                        x                   y                   z
 STRESS|      x        1.00000000000E+00   2.00000000000E-01   0.00000000000E+00
 STRESS|      y        2.00000000000E-01   3.00000000000E+00   0.00000000000E+00
 STRESS|      z        0.00000000000E+00   0.00000000000E+00   5.00000000000E+00
  **** **** ******  **  PROGRAM ENDED AT                 2026-11-24 05:52:34.000
"""


def test_cp2k_output_parsing_and_units():
    out = parse_output(CP2K_OUTPUT, 2)
    assert out.version == "CP2K version 2023.1" and out.scf_converged and out.scf_steps == 8 and out.completed
    assert out.energy == pytest.approx(-7.872377887108357 * Hartree)
    assert out.forces[0] == pytest.approx([0.01 * Hartree / Bohr, -0.002 * Hartree / Bohr, 0])
    # CP2K prints compression as positive; ASE's Voigt stress (xx yy zz yz xz xy) is its negative
    assert out.stress == pytest.approx(-np.array([1.0, 3.0, 5.0, 0.0, 0.0, 0.2]) * GPa)
    unconverged = parse_output(CP2K_OUTPUT.replace("SCF run converged in     8 steps", "SCF run NOT converged"), 2)
    assert unconverged.scf_converged is False
    assert parse_output(CP2K_OUTPUT, 3).forces is None  # atom count mismatch: no forces rather than wrong ones


def test_an_old_output_in_the_folder_is_never_read_as_this_run(tmp_path):
    stale = tmp_path / "cp2k-uq-old"
    stale.mkdir()
    (stale / "uq.out").write_text(CP2K_OUTPUT)  # a finished run of an earlier attempt
    crashing = tmp_path / "crash-cp2k"
    crashing.write_text("#!/bin/sh\nexit 139\n")
    crashing.chmod(0o755)
    label = Cp2kLabeller(Cp2kSettings(), command=str(crashing)).label(bulk("Si", "diamond", a=5.43), "uq-old", tmp_path)
    assert label.status == "failed" and "wrote no output (exit code 139)" in label.reason


def test_dataset_export_keeps_labels_and_provenance(tmp_path):
    from uq_flows.io import read_labels, read_structures
    from uq_flows.labeling.assembly import write_dataset

    structures = {k: Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]], cell=[5, 5, 5], pbc=True) for k in "ab"}
    routes = route_by_uncertainty(["a", "b"], [2.0, 0.1])
    dft = [label("a", "dft", -9.0, forces=((0, 0, 0.5), (0, 0, -0.5)))]
    teacher = [label("a", "teacher", -8.0, forces=((0, 0, 1), (0, 0, -1))), label("b", "teacher", -8.5, forces=((0, 0, 0), (0, 0, 0)))]
    dataset = assemble_dataset(structures, routes, dft, teacher, iteration=2, loop="L")
    for name in ("d.pkl.gz", "d.extxyz"):
        assert write_dataset(tmp_path / name, dataset, structures) == 2
        back = read_structures(tmp_path / name)
        assert [a.info["label_source"] for a in back] == ["dft", "teacher"]
        assert list(read_labels(back).energies) == pytest.approx([-9.0, -9.5])  # teacher aligned by −1 eV per 2 Si
        assert [a.info["iteration"] for a in back] == [2, 2] and back[1].info["U"] == pytest.approx(0.1)
    assert back[0].info["uq_id"] == "a"
    import pandas as pd

    frame = pd.read_pickle(tmp_path / "d.pkl.gz", compression="gzip")
    assert frame.provenance[1]["energy_shift"] == pytest.approx(-1.0)
