"""Fixtures of the selection tests (helpers in uqf_selection_data, calculators in uqf_selection_calculators)."""

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # makes uqf_selection_data and ase:uqf_selection_calculators:... importable
    sys.path.insert(0, HERE)

from uqf_selection_data import make_ace_potential, n_coefficients


@pytest.fixture(scope="session")
def ace_files(tmp_path_factory):
    """Three ACE potentials: a, b (= a plus small changes) and c (unrelated)."""
    folder = tmp_path_factory.mktemp("ace")
    base = np.random.default_rng(1).normal(size=n_coefficients()) * 0.1
    a = make_ace_potential(folder / "a.yaml", seed=11, scale=0.0, base=base)
    b = make_ace_potential(folder / "b.yaml", seed=12, scale=0.002, base=base)
    c = make_ace_potential(folder / "c.yaml", seed=13, scale=0.1)
    return {"a": a, "b": b, "c": c}


