"""Shared structures for the ensemble tests (all ≤ 16 atoms)."""

import sys
from pathlib import Path

import pytest
from ase.build import bulk

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # makes ase:uqf_ensemble_calculators:... importable
    sys.path.insert(0, HERE)


@pytest.fixture
def si_perfect():
    return bulk("Si", "diamond", a=5.43, cubic=True)  # 8 atoms


@pytest.fixture
def si_rattled():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=7)
    return atoms


@pytest.fixture
def cu_rattled():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def si_with_og(si_rattled):
    atoms = si_rattled.copy()
    atoms.numbers[2] = 118
    return atoms
