"""Small EMT-labelled structures for the ACE tests (all ≤ 16 atoms); made here, nothing read from outside the repository."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from uq_flows.io import with_labels


def labelled(atoms: Atoms, **info) -> Atoms:
    atoms.calc = EMT()
    return with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(), **info)


def cu_bulk(n: int, seed: int, rattle=(0.02, 0.12), strain=0.03) -> list[Atoms]:
    """fcc Cu cells of 4 and 8 atoms, strained by up to ±3 % and rattled."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(1 - strain, 1 + strain), cubic=True)
        if j % 2:
            atoms = atoms * (2, 1, 1)
        atoms.rattle(rng.uniform(*rattle), seed=int(rng.integers(1 << 30)))
        out.append(labelled(atoms, config_type="bulk"))
    return out


def cu_al(n: int, seed: int) -> list[Atoms]:
    """fcc Cu/Al cells of 8 atoms with random occupation, rattled."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(1.0, 1.06), cubic=True) * (2, 1, 1)
        atoms.numbers = np.where(rng.random(len(atoms)) < 0.4, 13, 29)
        atoms.rattle(rng.uniform(0.02, 0.08), seed=int(rng.integers(1 << 30)))
        out.append(labelled(atoms))
    return out


def cu_clusters(n: int, seed: int) -> list[Atoms]:
    """Rattled 13-atom Cu icosahedra in a periodic box with 6 Å of vacuum."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = Icosahedron("Cu", 2, latticeconstant=3.61 * rng.uniform(0.97, 1.03))
        atoms.center(vacuum=6.0)
        atoms.pbc = True
        atoms.rattle(rng.uniform(0.02, 0.08), seed=int(rng.integers(1 << 30)))
        out.append(labelled(atoms, config_type="cluster"))
    return out


def cu_vacancies(n: int, seed: int) -> list[Atoms]:
    """15-atom fcc Cu cells with one vacancy: a kind of structure absent from the training sets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
        del atoms[int(rng.integers(len(atoms)))]
        atoms.rattle(0.03, seed=int(rng.integers(1 << 30)))
        out.append(labelled(atoms, config_type="vacancy"))
    return out


def out_of_distribution() -> list[Atoms]:
    """Clearly out-of-distribution Cu: free dimers at 2.0 and 2.4 Å, a pair squeezed to 1.6 Å in bulk."""
    dimers = [Atoms("Cu2", positions=[[0, 0, 0], [0, 0, d]], cell=[12, 12, 12], pbc=True) for d in (2.0, 2.4)]
    squeezed = bulk("Cu", "fcc", a=3.61, cubic=True)
    squeezed.positions[1] = squeezed.positions[0] + [1.6, 0.0, 0.0]
    return [*dimers, squeezed]
