"""Read and write structures: extxyz, pacemaker pickles and folders of POSCAR/CIF files.

Every reader returns ASE ``Atoms`` with ``info["uq_source"] = "file:index"``; labels found in
the file (energy, forces, stress) are attached as a ``SinglePointCalculator``. A structure
without atoms or with non-finite positions or cell is an InputError naming file and index.
Writers go through a temporary file and ``os.replace``, so a failed write never leaves a
partial file.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ase.io
import numpy as np
import pandas as pd
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from uq_flows.errors import InputError
from uq_flows.screening import non_finite_problem

EnergyConvention = Literal["total", "per-atom"]

EXTXYZ_SUFFIXES = (".xyz", ".extxyz")
PACEMAKER_SUFFIXES = (".pkl", ".pckl", ".pkl.gz", ".pckl.gz", ".pkl.gzip", ".pckl.gzip")
POSCAR_PREFIXES = ("POSCAR", "CONTCAR")
POSCAR_SUFFIXES = (".vasp", ".poscar")
CIF_SUFFIXES = (".cif",)
PACEMAKER_COLUMNS = ("ase_atoms", "energy", "forces", "energy_corrected")


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_single_structure_file(path: Path) -> bool:
    return path.name.startswith(POSCAR_PREFIXES) or _has_suffix(path, POSCAR_SUFFIXES + CIF_SUFFIXES)


def read_structures(path: str | Path) -> list[Atoms]:
    """All structures in one file or folder, in file order (folders: sorted file names)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_single_structure_file(p))
        if not files:
            raise InputError(f"{path}: folder holds no POSCAR, CONTCAR, *.vasp or *.cif files")
        return [atoms for file in files for atoms in read_structures(file)]
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if _has_suffix(path, PACEMAKER_SUFFIXES):
        structures = _read_pacemaker(path)
    elif _has_suffix(path, EXTXYZ_SUFFIXES):
        structures = _read_ase(path, "extxyz")
    elif _has_suffix(path, CIF_SUFFIXES):
        structures = _read_ase(path, "cif")
    elif _is_single_structure_file(path):
        structures = _read_ase(path, "vasp")
    else:
        raise InputError(
            f"{path}: unknown structure format; use .xyz/.extxyz, a pacemaker pickle "
            f"({', '.join(PACEMAKER_SUFFIXES)}), POSCAR/CONTCAR/*.vasp, *.cif or a folder of those"
        )
    if not structures:
        raise InputError(f"{path}: no structures in file")
    for index, atoms in enumerate(structures):
        if len(atoms) == 0:
            raise InputError(f"{path}:{index}: structure has no atoms")
        problem = non_finite_problem(atoms)
        if problem:
            raise InputError(f"{path}: structure {index} has {problem}")
        atoms.info["uq_source"] = f"{path}:{index}"
    return structures


def read_many(paths: Sequence[str | Path]) -> list[Atoms]:
    """Structures of several files and folders, concatenated in the order given."""
    if not paths:
        raise InputError("no structure files given")
    return [atoms for path in paths for atoms in read_structures(path)]


def _read_ase(path: Path, fmt: str) -> list[Atoms]:
    try:
        return list(ase.io.read(path, index=":", format=fmt))
    except Exception as error:  # ase raises many types for malformed files
        raise InputError(f"{path}: cannot read as {fmt}: {error}") from error


def _read_pacemaker(path: Path) -> list[Atoms]:
    with path.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    try:
        frame = pd.read_pickle(path, compression="gzip" if compressed else None)
    except Exception as error:
        raise InputError(f"{path}: cannot read as a pacemaker pickle: {error}") from error
    if not isinstance(frame, pd.DataFrame) or "ase_atoms" not in frame:
        raise InputError(f"{path}: a pacemaker pickle must be a DataFrame with an 'ase_atoms' column")
    structures = []
    for row in frame.itertuples(index=False):
        atoms = row.ase_atoms.copy()
        results = {}
        if "energy" in frame and _is_number(row.energy):
            results["energy"] = float(row.energy)
        if "forces" in frame and row.forces is not None:
            results["forces"] = np.asarray(row.forces, dtype=float).reshape(len(atoms), 3)
        for column in frame.columns:
            value = getattr(row, column)
            if column not in PACEMAKER_COLUMNS and isinstance(value, (str, int, float, bool, np.generic)):
                atoms.info[column] = value.item() if isinstance(value, np.generic) else value
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        structures.append(atoms)
    return structures


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and np.isfinite(value)


@dataclass(frozen=True)
class Labels:
    """Energies (total, eV), forces (ragged-concatenated, eV/Å) and atom counts."""

    energies: np.ndarray
    forces: np.ndarray
    n_atoms: np.ndarray


def read_labels(structures: Sequence[Atoms], convention: EnergyConvention = "total", name: str = "") -> Labels:
    """Energy and forces stored with each structure; per-atom energies become totals."""
    energies, forces = [], []
    where = f"{name}: " if name else ""
    for index, atoms in enumerate(structures):
        results = atoms.calc.results if atoms.calc is not None else {}
        energy = results.get("energy", atoms.info.get("energy"))
        force = results.get("forces", atoms.arrays.get("forces"))
        if energy is None or force is None:
            missing = "energy" if energy is None else "forces"
            raise InputError(f"{where}structure {index} has no {missing}")
        force = np.asarray(force, dtype=float)
        if force.shape != (len(atoms), 3):
            raise InputError(f"{where}structure {index}: forces of shape {force.shape}, expected ({len(atoms)}, 3)")
        energy = float(energy) * (len(atoms) if convention == "per-atom" else 1)
        if not np.isfinite(energy) or not np.all(np.isfinite(force)):
            raise InputError(f"{where}structure {index} has a non-finite energy or force")
        energies.append(energy)
        forces.append(force)
    if not energies:
        raise InputError(f"{where}no structures")
    n_atoms = np.array([len(atoms) for atoms in structures])
    return Labels(np.array(energies), np.concatenate(forces), n_atoms)


def with_labels(atoms: Atoms, energy: float, forces: np.ndarray, **info: object) -> Atoms:
    """A copy of ``atoms`` carrying the given labels (and extra ``info`` entries)."""
    labelled = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    labelled.info.update({k: v for k, v in atoms.info.items() if k != "uq_source"})
    labelled.info.update(info)
    labelled.calc = SinglePointCalculator(labelled, energy=float(energy), forces=np.asarray(forces, float))
    return labelled


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file here: 0o666 less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds; the file gets
    ``mode`` (e.g. 0o600 for a file holding credentials), else what ``open()`` would give it."""
    path = Path(path)
    if not path.parent.exists():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a folder: name a file")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, new_file_mode() if mode is None else mode)  # mkstemp makes 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_extxyz(path: str | Path, structures: Sequence[Atoms]) -> None:
    """Write structures with their labels and ``info`` to extxyz, atomically."""
    with atomic_path(path) as temporary:
        ase.io.write(temporary, list(structures), format="extxyz")


def write_pacemaker(path: str | Path, structures: Sequence[Atoms], **columns: Sequence[object]) -> None:
    """Write labelled structures as a gzip-pickled pacemaker DataFrame, atomically.

    Columns: ``ase_atoms``, ``energy`` (total, eV), ``forces`` (N×3), ``energy_corrected``
    (equal to ``energy``: no reference energies subtracted) and any extra ``columns``.
    """
    labels = read_labels(structures)
    offsets = np.cumsum(labels.n_atoms)[:-1]
    frame = pd.DataFrame(
        {
            "ase_atoms": [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in structures],
            "energy": labels.energies,
            "forces": list(np.split(labels.forces, offsets)),
            "energy_corrected": labels.energies,
            **{name: list(values) for name, values in columns.items()},
        }
    )
    # pandas 3 writes string columns (and the column index) with a StringDtype that
    # pacemaker's pandas < 3 cannot unpickle: keep them as plain object columns
    for name in frame.columns:
        if pd.api.types.is_string_dtype(frame[name].dtype) and frame[name].dtype != object:
            frame[name] = frame[name].astype(object)
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    with atomic_path(path) as temporary:
        with gzip.open(temporary, "wb") as handle:
            frame.to_pickle(handle)


def write_structures(path: str | Path, structures: Sequence[Atoms], **columns: Sequence[object]) -> None:
    """Write to extxyz or a pacemaker pickle, chosen by the file name.

    ``columns`` become DataFrame columns, or ``info`` entries in extxyz (where empty strings
    and None are left out, and values must be scalars).
    """
    path = Path(path)
    if _has_suffix(path, PACEMAKER_SUFFIXES):
        write_pacemaker(path, structures, **columns)
    elif _has_suffix(path, EXTXYZ_SUFFIXES):
        tagged = []
        for index, atoms in enumerate(structures):
            copy = atoms.copy()
            copy.calc = atoms.calc
            # ASE's extxyz cannot round-trip empty strings or None: such entries are left out
            copy.info.update({
                name: values[index] for name, values in columns.items() if values[index] not in ("", None)
            })
            tagged.append(copy)
        write_extxyz(path, tagged)
    else:
        raise InputError(f"{path}: output must end in .xyz, .extxyz or a pacemaker suffix ({', '.join(PACEMAKER_SUFFIXES)})")
