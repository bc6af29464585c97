"""Shared hand-made ensemble: K = 3 members, configuration A (atoms 0, 1), B (atom 2).

Member forces (eV/A), chosen so every deviation has an integer or simple norm:

    atom 0: m0 (3, 0, 0)   m1 (0, 0, 0)    m2 (0, 0, 0)    plain mean (1, 0, 0)
    atom 1: m0 (0, 0, 0)   m1 (0, 6, 0)    m2 (0, 0, 0)    plain mean (0, 2, 0)
    atom 2: m0 (3, 4, 0)   m1 (-3, -4, 0)  m2 (0, 0, 0)    plain mean (0, 0, 0)
"""

import numpy as np
import pytest


@pytest.fixture
def hand_forces() -> np.ndarray:
    forces = np.zeros((3, 3, 3))
    forces[0, 0] = [3, 0, 0]
    forces[1, 1] = [0, 6, 0]
    forces[0, 2] = [3, 4, 0]
    forces[1, 2] = [-3, -4, 0]
    return forces


@pytest.fixture
def hand_n_atoms() -> np.ndarray:
    return np.array([2, 1])
