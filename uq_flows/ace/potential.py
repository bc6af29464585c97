"""ACE potential files and the ASE calculator the rest of the pipeline uses.

Files of one fitted potential, side by side in a folder:

- ``potential.yaml``: pacemaker's B-basis. pyace evaluates it without any per-element
  reference energy, so the reference ē (``uq_flows.ace.data``) is stored in its metadata
  under pacemaker's own key ``reference_energy`` as JSON ``{"Cu": ē, "shift": 0}``, and
  ``AceCalculator`` adds Σ_i ē_{Z_i} − shift·N back. Potentials fitted by pacemaker itself
  with ``reference_energy: auto`` or a dict carry the same key and get the same treatment.
- ``potential.yace``: the C̃-basis for LAMMPS ``pair_style pace``; the reference is written
  into its per-element ``E0`` entries, so LAMMPS energies are total energies too.
- ``potential.asi``: the active set inverse for D-optimality (``uq_flows.ace.activeset``).
- ``potential.lasi``: per-cluster active sets for local D-optimality (``uq_flows.ace.local``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from uq_flows.errors import InputError
from uq_flows.io import atomic_path

REFERENCE_KEY = "reference_energy"
ACTIVE_SET_SUFFIX = ".asi"
LOCAL_ACTIVE_SET_SUFFIX = ".lasi"
_E0_LINE = re.compile(r"^E0:.*$", re.MULTILINE)


def read_reference(metadata) -> dict[str, float]:
    """The reference energies stored in a B-basis' metadata ({} if none)."""
    text = dict(metadata).get(REFERENCE_KEY, "")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}  # pacemaker writes some presets by name; nothing numeric to add back
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def save_potential(basis_configuration, path: str | Path, reference: dict[str, float], **metadata: str) -> Path:
    """Write a B-basis ``.yaml`` with the reference energies (and extra metadata) stored in it."""
    path = Path(path)
    basis_configuration.metadata[REFERENCE_KEY] = json.dumps({**reference, "shift": reference.get("shift", 0.0)})
    for key, value in metadata.items():
        basis_configuration.metadata[key] = str(value)
    with atomic_path(path) as temporary:
        basis_configuration.save(str(temporary))
    return path


def write_yace(yaml_path: str | Path, yace_path: str | Path | None = None) -> Path:
    """Convert a B-basis ``.yaml`` to a ``.yace`` (as ``pace_yaml2yace``), with E0 = ē per element."""
    from pyace import ACEBBasisSet

    yaml_path = Path(yaml_path)
    yace_path = Path(yace_path) if yace_path is not None else yaml_path.with_suffix(".yace")
    basis = ACEBBasisSet(str(yaml_path))
    reference = read_reference(basis.metadata)
    with atomic_path(yace_path) as temporary:
        basis.to_ACECTildeBasisSet().save_yaml(str(temporary))
        if reference:
            shift = reference.get("shift", 0.0)
            e0 = [reference.get(element, 0.0) - shift for element in basis.elements_name]
            text = temporary.read_text()
            text, n = _E0_LINE.subn("E0: [" + ", ".join(repr(float(v)) for v in e0) + "]", text, count=1)
            if n != 1:
                raise RuntimeError(f"{yace_path}: no E0 entry written by pyace; cannot store reference energies")
            temporary.write_text(text)
    return yace_path


def beside(potential: str | Path, suffix: str) -> Path | None:
    """The file with ``suffix`` next to a potential (``potential.asi`` for ``potential.yaml``)."""
    candidate = Path(potential).with_suffix(suffix)
    return candidate if candidate.exists() else None


class AceCalculator(Calculator):
    """ASE calculator for an ACE potential: total energies and, with an active set, γ per atom.

    ``results``: ``energy``, ``free_energy``, ``energies`` (per atom, reference included),
    ``forces``, ``stress`` (periodic cells), and ``gamma`` (per-atom extrapolation grade,
    paper 000 eq. 12) when an active set is loaded. Elements the potential does not know
    raise ``InputError``.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "gamma"]

    def __init__(self, potential: str | Path, active_set: str | Path | None = None, **kwargs):
        super().__init__(**kwargs)
        from pyace import PyACECalculator

        self.potential = Path(potential)
        if not self.potential.exists():
            raise InputError(f"{self.potential}: potential file not found")
        suffix = self.potential.suffix.lower()
        if suffix not in (".yaml", ".yace"):
            raise InputError(f"{self.potential}: an ACE potential must be a .yaml (B-basis) or .yace file")
        try:
            self._ace = PyACECalculator(str(self.potential))
        except Exception as error:  # pyace raises RuntimeError/ValueError for malformed files
            raise InputError(f"{self.potential}: cannot load as an ACE potential: {error}") from error
        self.elements = [e.decode() if isinstance(e, bytes) else str(e) for e in self._ace.basis.elements_name]
        # .yace files carry ē in E0 already; B-basis files carry it in metadata
        self.reference = read_reference(self._ace.basis.metadata) if suffix != ".yace" else {}
        self.active_set = None
        if active_set is not None:
            self.load_active_set(active_set)

    def load_active_set(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: active set file not found")
        if self.potential.suffix.lower() == ".yace":
            raise InputError(f"{self.potential}: γ needs the B-basis .yaml potential, not the .yace")
        try:
            self._ace.set_active_set(str(path))
        except Exception as error:
            raise InputError(f"{path}: cannot load as the active set of {self.potential.name}: {error}") from error
        self.active_set = path

    def check_elements(self, atoms: Atoms) -> None:
        """Raise ``InputError`` for elements the potential lacks or a cell pyace cannot handle."""
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.elements))
        if unknown:
            raise InputError(
                f"element(s) {', '.join(unknown)} not in the potential {self.potential.name} "
                f"(elements: {', '.join(self.elements)})"
            )
        check_periodicity(atoms)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.check_elements(self.atoms)
        self._ace.calculate(self.atoms.copy(), properties, system_changes)
        ace = self._ace.results
        per_atom_reference = self._per_atom_reference(self.atoms)
        self.results = {
            "energy": float(ace["energy"] + per_atom_reference.sum()),
            "free_energy": float(ace["energy"] + per_atom_reference.sum()),
            "energies": np.asarray(ace["energies"], dtype=float) + per_atom_reference,
            "forces": np.asarray(ace["forces"], dtype=float),
        }
        if "stress" in ace:
            self.results["stress"] = np.asarray(ace["stress"], dtype=float)
        if self.active_set is not None:
            self.results["gamma"] = np.asarray(ace["gamma"], dtype=float)

    def projections(self) -> list[np.ndarray]:
        """Per-atom B-basis projections of the last calculation (one vector per atom)."""
        projections = self._ace.projections
        return [np.asarray(p, dtype=float).ravel() for p in projections]

    def _per_atom_reference(self, atoms: Atoms) -> np.ndarray:
        if not self.reference:
            return np.zeros(len(atoms))
        shift = self.reference.get("shift", 0.0)
        return np.array([self.reference.get(s, 0.0) - shift for s in atoms.get_chemical_symbols()])


def check_periodicity(atoms: Atoms, where: str = "") -> None:
    """pyace handles fully periodic cells (three lattice vectors) or fully open structures only."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise InputError(
            f"{where}periodic along {pbc.astype(int).tolist()} only: ACE (pyace) needs a fully periodic or a fully "
            "open structure; make slabs periodic in all directions with vacuum wider than the cutoff"
        )
    if pbc.all() and atoms.cell.rank < 3:
        raise InputError(f"{where}periodic but its cell is not three-dimensional")


def predict(calculator: AceCalculator, structures) -> tuple[np.ndarray, list[np.ndarray]]:
    """Total energies (eV) and forces (eV/Å) of every structure, in order."""
    energies, forces = [], []
    for atoms in structures:
        copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.calc = calculator
        energies.append(copy.get_potential_energy())
        forces.append(copy.get_forces())
    return np.array(energies), forces


def evaluate_each(calculator: AceCalculator, structures: Sequence[Atoms]):
    """Yield (atoms, results) per structure, after checking every structure's elements first."""
    for index, atoms in enumerate(structures):  # fail before any work on an unknown element
        try:
            calculator.check_elements(atoms)
        except InputError as error:
            raise InputError(f"{atoms.info.get('uq_source', f'structure {index}')}: {error}") from None
    for atoms in structures:
        copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.calc = calculator
        copy.get_potential_energy()
        yield copy, calculator.results
