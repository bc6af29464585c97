"""evaluate and mix on precomputed predictions (EMT reference, perturbed fake members): pairing by
identity, and mix's per-element energy alignment against a reference on another energy scale."""

import json
import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from tests.cli_helpers import run, run_json
from tests.conftest import emt_dataset, perturbed
from uq_flows.io import read_labels, read_structures, with_labels, write_extxyz
from uq_flows.records import structure_id


def predictions(paths, *names):
    return [arg for name in names for arg in ("--prediction", f"{name}={paths[name]}")]


def test_evaluate_ranks_members_and_counts_thresholds(labelled_set):
    reference, paths = labelled_set
    result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(paths, "poor", "good", "fair"),
        "--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=0.8", "--top-n", "2",
        "--uc", "0", "--uc", "inf", "--uc", "0.15",
    )
    assert result["n_configs"] == 12 and result["n_atoms"] == sum(len(a) for a in reference)
    assert [m["name"] for m in result["members"]] == ["good", "fair"]
    assert [m["rank"] for m in result["members"]] == [1, 2]
    assert np.allclose([m["weight"] for m in result["members"]], [2 / 3, 1 / 3])
    assert result["spearman"] > 0.8  # member spread and error both grow along the set
    none, everything, middle = result["thresholds"]
    assert none["n_below"] == 0 and none["dft_atom_fraction"] == 1 and math.isnan(none["force_rmse_below"] or math.nan)
    assert everything["n_below"] == 12 and everything["dft_atom_fraction"] == 0
    assert everything["force_rmse_below"] == pytest.approx(result["force_rmse"])
    assert 0 < middle["n_below"] < 12
    assert middle["dft_atom_fraction"] == pytest.approx(1 - middle["n_atoms_below"] / result["n_atoms"])


def test_evaluate_equal_weights_by_default_for_unknown_members(labelled_set):
    _, paths = labelled_set
    result = run_json("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair"))
    assert result["weights_source"] == "equal"
    assert [m["weight"] for m in result["members"]] == [0.5, 0.5]


def test_variant_zero_ignores_rmse(labelled_set):
    _, paths = labelled_set
    # three members: with two, both deviate equally from the plain mean and weights cannot matter
    common = ("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"))
    rmse = ("--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=1.0")
    weighted = run_json(*common, *rmse, "--variant", "1")
    equal0 = run_json(*common, *rmse, "--variant", "0")
    equal1 = run_json(*common, "--variant", "1", "--weights", "equal")
    assert equal0["u"] == pytest.approx(equal1["u"])
    assert weighted["u"]["max"] != pytest.approx(equal0["u"]["max"])


def test_per_atom_prediction_energies(labelled_set, tmp_path):
    reference, paths = labelled_set
    per_atom = []
    for atoms in read_structures(paths["good"]):
        per_atom.append(with_labels(atoms, atoms.get_potential_energy() / len(atoms), atoms.get_forces()))
    write_extxyz(tmp_path / "good_pa.extxyz", per_atom)
    total = run_json("evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair"))
    mixed_conv = run_json(
        "evaluate", "--reference", paths["ref"], "--prediction", f"good={tmp_path / 'good_pa.extxyz'}",
        "--prediction", f"fair={paths['fair']}", "--prediction-energy", "per-atom",
    )
    # fair is stored as totals: reading it as per-atom multiplies its energies by N
    assert mixed_conv["energy_rmse_per_atom"] > 10 * total["energy_rmse_per_atom"]
    both = paths.copy()
    write_extxyz(tmp_path / "fair_pa.extxyz", [
        with_labels(a, a.get_potential_energy() / len(a), a.get_forces()) for a in read_structures(paths["fair"])
    ])
    both["good"], both["fair"] = tmp_path / "good_pa.extxyz", tmp_path / "fair_pa.extxyz"
    per_atom_result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(both, "good", "fair"), "--prediction-energy", "per-atom"
    )
    assert per_atom_result["energy_rmse_per_atom"] == pytest.approx(total["energy_rmse_per_atom"])


def test_evaluate_plots_and_target(labelled_set, tmp_path):
    _, paths = labelled_set
    result = run_json(
        "evaluate", "--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"),
        "--plot", tmp_path / "figs", "--target-rmse", "0.05",
    )
    for png in result["plots"]:
        with open(png, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["uc_for_target_rmse"]["uc"] > 0


def test_mix_takes_energy_and_forces_from_chosen_members(labelled_set, tmp_path):
    reference, paths = labelled_set
    common = ("--reference", paths["ref"], *predictions(paths, "good", "fair", "poor"),
              "--rmse", "good=0.1", "--rmse", "fair=0.2", "--rmse", "poor=0.8", "--top-n", "2")
    evaluation = run_json("evaluate", *common, "--uc", "0.15")
    out = tmp_path / "mixed.pkl.gz"
    result = run_json("mix", *common, "--uc", "0.15", "--energy-from", "poor", "--forces-from", "fair", "--out", out)

    threshold = evaluation["thresholds"][0]
    assert result["n_teacher"] == threshold["n_below"]
    assert result["dft_atom_fraction"] == pytest.approx(threshold["dft_atom_fraction"])
    assert result["dft_config_fraction"] == pytest.approx(threshold["dft_config_fraction"])

    mixed = read_structures(out)
    poor, fair = read_structures(paths["poor"]), read_structures(paths["fair"])
    sq_energy, sq_force = [], []
    for j, atoms in enumerate(mixed):
        teacher = atoms.info["label_source"] == "teacher"
        assert teacher == (atoms.info["U"] < 0.15)
        expected_e = (poor if teacher else reference)[j].get_potential_energy()
        expected_f = (fair if teacher else reference)[j].get_forces()
        assert atoms.get_potential_energy() == pytest.approx(expected_e)
        assert np.allclose(atoms.get_forces(), expected_f)
        sq_energy.append(((expected_e - reference[j].get_potential_energy()) / len(atoms)) ** 2)
        sq_force.extend(((expected_f - reference[j].get_forces()) ** 2).ravel())
    assert result["energy_rmse_per_atom"] == pytest.approx(np.sqrt(np.mean(sq_energy)))
    assert result["force_rmse"] == pytest.approx(np.sqrt(np.mean(sq_force)))


def test_mix_writes_extxyz_with_provenance(labelled_set, tmp_path):
    _, paths = labelled_set
    out = tmp_path / "mixed.extxyz"
    result = run_json("mix", "--reference", paths["ref"], *predictions(paths, "good", "fair"), "--uc", "inf",
                      "--energy-from", "good", "--forces-from", "good", "--out", out)
    assert result["dft_atom_fraction"] == 0
    structures = read_structures(out)
    assert {a.info["energy_source"] for a in structures} == {"good"}
    assert all(a.info["uq_id"].startswith("uq-") for a in structures)


@pytest.mark.parametrize("problem", ["fewer", "atoms", "nan", "elements"])
def test_mismatched_predictions_are_rejected_without_output(labelled_set, tmp_path, problem):
    reference, paths = labelled_set
    bad = perturbed(reference, 0.01, 9)
    if problem == "fewer":
        bad = bad[:-1]
    elif problem == "atoms":
        bad[3] = bad[3][:-1]
    elif problem == "nan":
        bad[2].calc.results["forces"][0, 1] = np.nan
    else:
        bad[0].numbers[0] = 29 + 18  # Ag instead of Cu
    write_extxyz(tmp_path / "bad.extxyz", bad)
    out = tmp_path / "out.pkl.gz"
    result = run("mix", "--reference", paths["ref"], "--prediction", f"good={paths['good']}",
                 "--prediction", f"bad={tmp_path / 'bad.extxyz'}", "--uc", "1",
                 "--energy-from", "good", "--forces-from", "good", "--out", out, expect=2)
    assert "error" in result.stderr
    assert not out.exists()


def test_usage_errors(labelled_set, tmp_path):
    _, paths = labelled_set
    base = ("--reference", paths["ref"], *predictions(paths, "good", "fair"))
    assert "no --prediction of that name" in run("mix", *base, "--uc", "1", "--energy-from", "nope",
                                                 "--forces-from", "good", "--out", tmp_path / "o.xyz", expect=2).stderr
    assert "must end in" in run("mix", *base, "--uc", "1", "--energy-from", "good", "--forces-from", "good",
                                "--out", tmp_path / "o.txt", expect=2).stderr
    assert "--top-n ranks members by RMSE" in run("evaluate", *base, "--top-n", "1", expect=2).stderr
    assert "NAME=VALUE" in run("evaluate", "--reference", paths["ref"], "--prediction", str(paths["good"]), expect=2).stderr
    assert "--rmse for" in run("evaluate", *base, "--rmse", "x=1", expect=2).stderr
    for command, extra in (("evaluate", ()), ("mix", ("--energy-from", "good", "--out", tmp_path / "o.xyz"))):
        refused = run(command, *base, "--uc", "-0.5", *extra, "--json", expect=2)  # before any file is read
        assert json.loads(refused.stdout)["error"] == {
            "kind": "bad_input", "message": "Invalid value for '--uc': Input should be greater than or equal to 0"}
    assert list(tmp_path.glob("o.*")) == []


# --- pairing by identity --------------------------------------------------------------------


def _mix(paths, out, *extra, files=None, expect=0):
    files = files or paths
    args = ("mix", "--reference", files["ref"], *predictions(files, "good", "fair"), "--uc", "0.15",
            "--energy-from", "good", "--forces-from", "fair", "--out", out, *extra)
    return run_json(*args, expect=expect) if expect == 0 else run(*args, expect=expect)


def _dataset(path):
    structures = read_structures(path)
    labels = read_labels(structures)
    return labels, [(a.info["uq_id"], a.info["U"], a.info["label_source"], a.info["energy_shift"]) for a in structures]


def _with_ids(structures):
    return [with_labels(a, a.get_potential_energy(), a.get_forces(), uq_id=structure_id(a)) for a in structures]


@pytest.mark.parametrize("ids", ["content id", "uq_id"])
def test_reordered_predictions_are_matched_by_id_and_give_the_same_dataset(labelled_set, tmp_path, ids):
    reference, paths = labelled_set
    files = dict(paths)
    if ids == "uq_id":  # every file stores uq_id, as `score --predictions` writes them
        for name in ("ref", "good", "fair"):
            files[name] = tmp_path / f"{name}_ids.extxyz"
            write_extxyz(files[name], _with_ids(read_structures(paths[name])))
    order = np.random.default_rng(4).permutation(len(reference))
    shuffled = dict(files)
    for name in ("good", "fair"):
        shuffled[name] = tmp_path / f"{name}_shuffled.extxyz"
        write_extxyz(shuffled[name], [read_structures(files[name])[j] for j in order])

    ordered = _mix(files, tmp_path / "ordered.extxyz")
    matched = _mix(files, tmp_path / "matched.extxyz", files=shuffled)
    assert ordered["matched_by"] == matched["matched_by"] == ids
    assert ordered["reordered"] == [] and matched["reordered"] == ["good", "fair"]
    assert matched["alignment"]["applied"] is False  # same energy zero: auto leaves energies alone
    (a, rows_a), (b, rows_b) = _dataset(tmp_path / "ordered.extxyz"), _dataset(tmp_path / "matched.extxyz")
    assert rows_a == rows_b and 0 < matched["n_teacher"] < len(reference)
    assert np.array_equal(a.energies, b.energies) and np.array_equal(a.forces, b.forces)
    text = run("evaluate", "--reference", files["ref"], *predictions(shuffled, "good", "fair")).stderr
    assert f"matched to reference configurations by {ids}; re-ordered to the reference: good, fair" in text


def test_a_replaced_structure_is_named_and_nothing_written(labelled_set, tmp_path):
    reference, paths = labelled_set
    good = read_structures(paths["good"])
    stranger = good[5].copy()
    stranger.positions[0] += 0.05  # same formula and atom count, another structure
    good[5] = with_labels(stranger, good[5].get_potential_energy(), good[5].get_forces())
    write_extxyz(tmp_path / "good.extxyz", good)
    files = {**paths, "good": tmp_path / "good.extxyz"}
    out = tmp_path / "out.extxyz"
    message = _mix(files, out, files=files, expect=2).stderr
    formula = reference[5].get_chemical_formula()
    assert (f"good.extxyz: configuration 5 ({formula}, {structure_id(good[5])}) is not in "
            f"{paths['ref']}; position 5 there holds {formula} ({structure_id(reference[5])}), with a cell or "
            "positions 0.05 Å away") in message
    assert not out.exists()


@pytest.mark.parametrize("problem", ["duplicate", "stale uq_id"])
def test_duplicated_or_stale_ids_are_refused(labelled_set, tmp_path, problem):
    _, paths = labelled_set
    files = dict(paths)
    good = read_structures(paths["good"])
    if problem == "duplicate":
        good[7] = good[3]
        expected = "are the same structure"
    else:  # every file has uq_id, but two prediction ids are swapped: labels would land on the wrong structure
        for name in ("ref", "fair"):
            files[name] = tmp_path / f"{name}_ids.extxyz"
            write_extxyz(files[name], _with_ids(read_structures(paths[name])))
        good = _with_ids(good)
        good[2].info["uq_id"], good[4].info["uq_id"] = good[4].info["uq_id"], good[2].info["uq_id"]
        expected = "configuration 2 (Cu4, uq-"  # has the uq_id of configuration 4 ... not the same structure
    files["good"] = tmp_path / "good_bad.extxyz"
    write_extxyz(files["good"], good)
    message = _mix(files, tmp_path / "out.extxyz", files=files, expect=2).stderr
    assert expected in message
    if problem == "stale uq_id":
        assert "has the uq_id of configuration 4" in message and "not the same structure" in message
    assert not (tmp_path / "out.extxyz").exists()


def test_content_ids_survive_a_file_round_trip_at_a_rounding_boundary(labelled_set, tmp_path):
    """structure_id rounds positions to 1e-4 Å; extxyz keeps 8 decimals, so a coordinate just past
    a rounding boundary hashes differently once written. Pairing must still find it."""
    reference, paths = labelled_set
    edge = [with_labels(a, a.get_potential_energy(), a.get_forces()) for a in reference]
    # a coordinate 2e-9 Å below a rounding boundary: extxyz stores it on the boundary, which rounds up
    edge[6].positions[1, 0] = next(
        x for x in 1.00005 + 1e-4 * np.arange(100) - 2e-9 if np.round(float(f"{x:.8f}"), 4) != np.round(x, 4)
    )
    write_extxyz(tmp_path / "edge.extxyz", edge)
    round_trip = read_structures(tmp_path / "edge.extxyz")
    assert structure_id(round_trip[6]) != structure_id(edge[6])  # the premise: the id does not survive
    assert all(structure_id(a) == structure_id(b) for j, (a, b) in enumerate(zip(edge, round_trip)) if j != 6)

    from uq_flows.io import write_pacemaker

    write_pacemaker(tmp_path / "ref.pkl.gz", edge)  # full precision
    files = {"ref": tmp_path / "ref.pkl.gz"}
    for name in ("good", "fair"):  # the members' labels in extxyz, in reverse order
        members = read_structures(paths[name])
        files[name] = tmp_path / f"{name}_reversed.extxyz"
        write_extxyz(files[name], [
            with_labels(edge[j], members[j].get_potential_energy(), members[j].get_forces()) for j in range(12)
        ][::-1])
    result = _mix(files, tmp_path / "mixed.extxyz", "--uc", "inf", files=files)
    assert result["matched_by"] == "content id" and result["n_teacher"] == 12
    mixed = read_structures(tmp_path / "mixed.extxyz")
    good = read_structures(paths["good"])
    assert [a.get_potential_energy() for a in mixed] == pytest.approx([a.get_potential_energy() for a in good])


# --- energy alignment ----------------------------------------------------------------------

SHIFT = {"Cu": -3.0, "Au": 1.5}  # eV/atom added to every EMT energy by the "reference code"


def cuau_dataset(n_configs, seed, compositions=None):
    """Rattled 4- and 8-atom fcc Cu–Au cells labelled by EMT (energy zero of EMT)."""
    rng = np.random.default_rng(seed)
    structures = []
    for j in range(n_configs):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * ((2, 1, 1) if j % 3 == 0 else (1, 1, 1))
        n_au = compositions[j] if compositions is not None else int(rng.integers(1, len(atoms)))
        atoms.numbers[rng.permutation(len(atoms))[:n_au]] = 79
        atoms.set_cell(atoms.cell * (1 + 0.13 * n_au / len(atoms)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        structures.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return structures


def shifted_reference(structures, noise_per_atom=0.0, seed=0):
    """The same labels on another energy scale: + Σ_el n_el SHIFT[el] (+ per-structure noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for atoms in structures:
        symbols = atoms.get_chemical_symbols()
        energy = atoms.get_potential_energy() + sum(SHIFT[s] for s in symbols)
        out.append(with_labels(atoms, energy + noise_per_atom * len(atoms) * rng.normal(), atoms.get_forces()))
    return out


def alignment_files(tmp_path, emt, reference):
    """Reference file and two teacher prediction files (EMT plus ~1 meV/atom energy noise)."""
    paths = {"ref": tmp_path / "ref.extxyz"}
    write_extxyz(paths["ref"], reference)
    for name, seed in (("a", 1), ("b", 2)):
        rng = np.random.default_rng(seed)
        paths[name] = tmp_path / f"{name}.extxyz"
        write_extxyz(paths[name], [
            with_labels(x, x.get_potential_energy() + 0.001 * len(x) * rng.normal(),
                        x.get_forces() + 0.01 * rng.normal(size=(len(x), 3)))
            for x in emt
        ])
    return paths


def mix_aligned(paths, out, *extra, expect=0):
    args = ("mix", "--reference", paths["ref"], "--prediction", f"a={paths['a']}", "--prediction", f"b={paths['b']}",
            "--uc", "inf", "--energy-from", "a", "--forces-from", "b", "--out", out, *extra)
    return run_json(*args, expect=expect) if expect == 0 else run(*args, expect=expect)


def test_mix_aligns_teacher_energies_to_a_reference_with_another_zero(tmp_path):
    emt = cuau_dataset(24, seed=0)
    reference = shifted_reference(emt)
    paths = alignment_files(tmp_path, emt, reference)
    result = mix_aligned(paths, tmp_path / "mixed.pkl.gz")
    alignment = result["alignment"]
    assert alignment["applied"] and alignment["mode"] == "auto" and alignment["mean_difference_per_atom"] < -0.1
    assert alignment["n_sample"] == 20 and alignment["sample"] == "random" and len(alignment["sample_indices"]) == 20
    assert alignment["shifts"] == pytest.approx(SHIFT, abs=0.005)
    assert alignment["residual_rmse_per_atom"] < 0.002 and alignment["n_unalignable"] == 0
    assert result["n_teacher"] == 24 and result["dft_atom_fraction"] == 0
    n_atoms = np.array([len(x) for x in reference])  # the 20 sampled configurations needed reference labels
    assert result["dft_atom_fraction_with_alignment_sample"] == pytest.approx(
        n_atoms[alignment["sample_indices"]].sum() / n_atoms.sum())

    mixed = read_structures(tmp_path / "mixed.pkl.gz")
    teacher = read_structures(paths["a"])
    per_atom = []
    for atoms, ref, t in zip(mixed, reference, teacher):
        expected_shift = sum(alignment["shifts"][s] for s in atoms.get_chemical_symbols())
        assert atoms.info["energy_shift"] == pytest.approx(expected_shift)
        assert atoms.get_potential_energy() == pytest.approx(t.get_potential_energy() + expected_shift)
        per_atom.append((atoms.get_potential_energy() - ref.get_potential_energy()) / len(atoms))
    per_atom = np.array(per_atom)
    assert np.abs(per_atom).max() < 0.005  # on the reference scale within the noise (1 meV/atom)
    assert result["energy_rmse_per_atom"] == pytest.approx(np.sqrt(np.mean(per_atom**2)))
    assert result["label_errors"]["teacher"]["energy_rmse_per_atom"] == pytest.approx(result["energy_rmse_per_atom"])

    unaligned = mix_aligned(paths, tmp_path / "unaligned.extxyz", "--align-energies", "off")
    assert not unaligned["alignment"]["applied"] and unaligned["energy_rmse_per_atom"] > 0.5
    text = run("mix", "--reference", paths["ref"], "--prediction", f"a={paths['a']}", "--prediction", f"b={paths['b']}",
               "--uc", "inf", "--energy-from", "a", "--forces-from", "b", "--out", tmp_path / "again.extxyz").stderr
    assert "shifts Cu -3.000" in text and "Au +1.500" in text and "fitted on 20 random configurations" in text
    assert "of atoms with the alignment sample" in text
    assert "labels vs reference over all 24 configurations" in text and "meV/atom after alignment" in text
    assert "over the 24 teacher-labelled configurations" in text


def test_rank_deficient_sample_keeps_reference_labels_where_undetermined(tmp_path):
    from uq_flows.labeling.mixing import alignment_sample

    pure_cu = {21, 22, 23}
    compositions = [0 if j in pure_cu else (4 if j % 3 == 0 else 2) for j in range(24)]  # else equiatomic CuAu
    emt = cuau_dataset(24, seed=1, compositions=compositions)
    reference = shifted_reference(emt)
    paths = alignment_files(tmp_path, emt, reference)
    seed = next(s for s in range(100) if not pure_cu & set(alignment_sample(24, 8, s).tolist()))
    out = tmp_path / "mixed.extxyz"
    result = mix_aligned(paths, out, "--align-sample", "8", "--seed", seed)
    alignment = result["alignment"]
    assert alignment["rank_deficient"] and alignment["n_unalignable"] == 3
    assert alignment["sample_indices"] == alignment_sample(24, 8, seed).tolist()
    assert "rank-deficient" in alignment["unalignable_reasons"][0] and "Cu4" in alignment["unalignable_reasons"][0]
    assert result["n_teacher"] == 21 and result["n_dft"] == 3
    for j, (atoms, ref) in enumerate(zip(read_structures(out), reference)):
        if j in pure_cu:
            assert atoms.info["label_source"] == "dft" and atoms.info["energy_shift"] == 0
            assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        else:
            assert atoms.info["label_source"] == "teacher"
            assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) / len(atoms) < 0.005


def test_a_difference_no_per_element_constant_explains_is_refused(tmp_path):
    emt = cuau_dataset(24, seed=2)
    paths = alignment_files(tmp_path, emt, shifted_reference(emt, noise_per_atom=0.3))
    out = tmp_path / "mixed.extxyz"
    message = mix_aligned(paths, out, expect=2).stderr
    assert "energy alignment refused" in message and "exceeds 20 meV/atom" in message
    assert "--align-sample" in message and "--align-energies off" in message
    assert not out.exists()
    assert "--align-energies must be one of" in mix_aligned(paths, out, "--align-energies", "maybe", expect=2).stderr
    assert mix_aligned(paths, out, "--align-energies", "off")["alignment"]["applied"] is False  # the user's call


def test_measure_rmse_refuses_a_structure_given_twice_across_files(labelled_set, tmp_path):
    reference, paths = labelled_set
    write_extxyz(tmp_path / "more.extxyz", [reference[3]])
    out = tmp_path / "rmse.json"
    emt = "emt=ase:ase.calculators.emt:EMT"
    more = tmp_path / "more.extxyz"
    message = run("measure-rmse", paths["ref"], more, "--model", emt, "--out", out, expect=2).stderr
    assert f"configuration {paths['ref']}:3 and configuration {more}:0 are the same structure" in message
    assert not out.exists()
    write_extxyz(tmp_path / "other.extxyz", emt_dataset(3, seed=5))
    result = run_json("measure-rmse", paths["ref"], tmp_path / "other.extxyz", "--model", emt, "--out", out)
    assert result["n_structures"] == 15 and result["rmse"]["emt"] == pytest.approx(0, abs=1e-6)  # EMT labels
