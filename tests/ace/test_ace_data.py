"""Training data for ACE: labelled structures from files and labels, clear errors, pacemaker frames."""

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk

from tests.ace.ace_data import cu_bulk
from uq_flows.ace.data import (
    bootstrap_indices,
    corrected_energies,
    fit_reference_energies,
    labelled_structures,
    read_training_set,
    write_fit_frame,
)
from uq_flows.errors import InputError
from uq_flows.io import write_extxyz, write_pacemaker
from uq_flows.labeling.labels import Label
from uq_flows.records import records_from_atoms


def test_reads_extxyz_and_pacemaker_pickles_in_order(tmp_path):
    first, second = cu_bulk(3, seed=0), cu_bulk(2, seed=1)
    write_extxyz(tmp_path / "a.extxyz", first)
    write_pacemaker(tmp_path / "b.pkl.gz", second)
    training = read_training_set([tmp_path / "a.extxyz", tmp_path / "b.pkl.gz"])
    assert len(training) == 5 and training.elements == ["Cu"]
    expected = [a.get_potential_energy() for a in first + second]
    assert training.energies == pytest.approx(expected)
    assert np.allclose(training.forces[4], second[1].get_forces())


def test_empty_file_missing_forces_and_no_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.extxyz: file is empty"):
        read_training_set([empty])
    unlabelled = tmp_path / "unlabelled.extxyz"
    write_extxyz(unlabelled, [bulk("Cu", "fcc", a=3.61)])
    with pytest.raises(InputError, match="unlabelled.extxyz: structure 0 has no energy"):
        read_training_set([unlabelled])
    energy_only = tmp_path / "energy_only.extxyz"
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.info["energy"] = -3.5
    write_extxyz(energy_only, [atoms])
    with pytest.raises(InputError, match="energy_only.extxyz: structure 0 has no forces"):
        read_training_set([energy_only])
    with pytest.raises(InputError, match="no training files"):
        read_training_set([])


def test_fit_frame_is_readable_without_pandas_string_columns(tmp_path):
    training = read_training_set_from(cu_bulk(4, seed=0), tmp_path)
    reference = fit_reference_energies(training)
    path = tmp_path / "frame.pkl.gzip"
    write_fit_frame(path, training, reference)
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    frame = pickle.loads(raw)
    assert frame.columns.dtype == object  # pandas < 3 in the fit environment cannot read a str index
    assert list(frame.columns) == ["ase_atoms", "energy", "forces", "energy_corrected"]
    assert frame["energy_corrected"].to_numpy() == pytest.approx(corrected_energies(training, reference))
    # ē is the mean energy per atom for one element, so corrected energies average to ~0 per atom
    assert abs(np.mean(frame["energy_corrected"] / frame["ase_atoms"].map(len))) < 0.05
    assert isinstance(frame, pd.DataFrame) and frame["ase_atoms"][0].calc is None


def read_training_set_from(structures, folder):
    write_extxyz(folder / "train.extxyz", structures)
    return read_training_set([folder / "train.extxyz"])


def test_labelled_structures_take_ok_labels_of_the_labelling_stage():
    structures = cu_bulk(3, seed=2)
    records = records_from_atoms(structures)
    labels = [
        Label.from_results(records[0].id, "dft", "emt", structures[0].get_potential_energy(), structures[0].get_forces()),
        Label.failed(records[1].id, "dft", "emt", "crashed"),
        Label.from_results(records[2].id, "teacher", "emt", structures[2].get_potential_energy(), structures[2].get_forces()),
    ]
    atoms = labelled_structures(records, labels)
    assert [a.info["uq_id"] for a in atoms] == [records[0].id, records[2].id]
    assert atoms[1].get_potential_energy() == pytest.approx(structures[2].get_potential_energy())
    with pytest.raises(InputError, match="no successful labels"):
        labelled_structures(records, labels[1:2])


def test_bootstrap_is_seeded_and_draws_with_replacement():
    first, again, other = bootstrap_indices(50, 3), bootstrap_indices(50, 3), bootstrap_indices(50, 4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(first) == 50 and len(set(first)) < 50 and first.min() >= 0 and first.max() < 50
