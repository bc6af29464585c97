import gzip
import pickle

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write

from uq_flows.errors import InputError
from uq_flows.io import read_labels, read_many, read_structures, with_labels, write_structures


def labelled(n=3):
    out = []
    for j in range(n):
        atoms = bulk("Si", "diamond", a=5.43) * (1, 1, j + 1)
        out.append(with_labels(atoms, -5.0 * len(atoms), np.full((len(atoms), 3), 0.1 * j)))
    return out


@pytest.mark.parametrize("name", ["set.xyz", "set.extxyz", "set.pkl.gz", "set.pckl.gzip"])
def test_round_trip_keeps_labels_and_columns(tmp_path, name):
    structures = labelled()
    write_structures(tmp_path / name, structures, U=[0.1, 0.2, 0.3], label_source=["dft", "teacher", "dft"])
    back = read_structures(tmp_path / name)
    labels = read_labels(back)
    assert list(labels.n_atoms) == [2, 4, 6]
    assert np.allclose(labels.energies, [-10, -20, -30])
    assert np.allclose(labels.forces[-6:], 0.2)
    assert [a.info["label_source"] for a in back] == ["dft", "teacher", "dft"]
    assert back[1].info["uq_source"].endswith(f"{name}:1")


def test_pacemaker_pickle_has_pacemaker_columns(tmp_path):
    write_structures(tmp_path / "d.pkl.gz", labelled())
    with gzip.open(tmp_path / "d.pkl.gz") as handle:
        frame = pickle.load(handle)
    assert isinstance(frame, pd.DataFrame)
    assert {"ase_atoms", "energy", "forces", "energy_corrected"} <= set(frame.columns)
    assert frame.forces[2].shape == (6, 3)


def test_folder_of_poscar_and_cif_in_name_order(tmp_path):
    write(tmp_path / "POSCAR_b", bulk("Cu", "fcc", a=3.6), format="vasp")
    write(tmp_path / "a.cif", bulk("NaCl", "rocksalt", a=5.6), format="cif")
    (tmp_path / "notes.txt").write_text("ignored")
    structures = read_structures(tmp_path)
    assert [a.get_chemical_formula() for a in structures] == ["Cu", "ClNa"]  # byte order: upper case first
    assert len(read_many([tmp_path, tmp_path / "POSCAR_b"])) == 3


def test_per_atom_energy_convention_gives_totals():
    structures = labelled()
    for atoms in structures:
        atoms.calc.results["energy"] /= len(atoms)
    assert np.allclose(read_labels(structures, "per-atom").energies, [-10, -20, -30])


@pytest.mark.parametrize(
    "content, name, message",
    [("", "empty.xyz", "empty"), ("x", "data.csv", "unknown structure format"), ("garbage\n", "bad.xyz", "cannot read")],
)
def test_bad_files_give_clear_errors(tmp_path, content, name, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        read_structures(tmp_path / name)


def test_missing_and_nan_labels_are_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_structures(tmp_path / "missing.xyz")
    plain = bulk("Si")
    with pytest.raises(InputError, match="no energy"):
        read_labels([plain])
    bad = labelled(1)
    bad[0].calc.results["forces"][0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        read_labels(bad)


def _write_set(path, structures, kind):
    if kind == "pacemaker":
        pd.DataFrame({"ase_atoms": structures}).to_pickle(path, compression="gzip")
    elif kind == "folder":  # one POSCAR per structure
        path.mkdir()
        for index, atoms in enumerate(structures):
            write(path / f"POSCAR_{index}", atoms, format="vasp")
    else:
        write(path, structures, format="extxyz")


@pytest.mark.parametrize(
    "kind, name, where",
    [("extxyz", "set.extxyz", "set.extxyz: structure 1"), ("pacemaker", "set.pkl.gz", "set.pkl.gz: structure 1"),
     ("folder", "poscars", "POSCAR_1: structure 0")],
)
def test_non_finite_positions_or_cell_name_file_and_structure(tmp_path, kind, name, where):
    good = bulk("Cu", "fcc", a=3.61, cubic=True)
    nan_position = good.copy()
    nan_position.positions[2] = [np.nan, 0.0, 0.0]
    _write_set(tmp_path / name, [good, nan_position], kind)
    with pytest.raises(InputError, match=rf"{where} has non-finite positions on atoms \[2\]"):
        read_many([tmp_path / name])

    infinite_cell = good.copy()
    infinite_cell.cell[1, 1] = np.inf
    (tmp_path / "cells").mkdir()
    _write_set(tmp_path / "cells" / name, [good, infinite_cell], kind)
    with pytest.raises(InputError, match=rf"{where} has a non-finite cell"):
        read_structures(tmp_path / "cells" / name)


def test_failed_write_leaves_no_file(tmp_path):
    unlabelled = [bulk("Si")]
    with pytest.raises(InputError):
        write_structures(tmp_path / "out.pkl.gz", unlabelled)
    assert list(tmp_path.iterdir()) == []


def test_pacemaker_pickles_open_in_the_fit_environment(tmp_path):
    """pacemaker runs with pandas < 3: our pandas-3 pickles must not use its StringDtype."""
    import subprocess
    from pathlib import Path

    python = Path(__file__).resolve().parents[1] / ".venv-fit" / "bin" / "python"
    if not python.exists():
        pytest.skip("the fit environment .venv-fit is not built (make fit-env)")
    write_structures(tmp_path / "d.pkl.gz", labelled(2), label_source=["dft", "teacher"], provenance=[{"a": 1}, {}])
    script = "import pandas as pd, sys; f = pd.read_pickle(sys.argv[1], compression='gzip'); print(list(f.label_source))"
    out = subprocess.run([str(python), "-c", script, str(tmp_path / "d.pkl.gz")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['dft', 'teacher']"
