"""Inputs for the selection tests: feature blobs, small ACE potentials, small cells (≤ 16 atoms)."""

from pathlib import Path

import numpy as np
from ase.build import bulk


def blobs(sizes=(40, 40, 40, 40, 40), n_features=12, spread=0.05, seed=0):
    """Gaussian blobs far apart in a 2-D latent space, embedded linearly in n_features
    dimensions with a little noise; returns features and the true blob of every row."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 20], [20, 5], [-10, 5], [15, -10]], float)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    latent = centres[truth] + rng.normal(size=(len(truth), 2)) * spread * 10
    mixing = rng.normal(size=(2, n_features))
    features = latent @ mixing + rng.normal(size=(len(truth), n_features)) * spread
    order = rng.permutation(len(truth))  # rows not grouped by blob
    return features[order], truth[order]


def make_ace_potential(path: Path, seed: int, scale: float = 0.1, base: np.ndarray | None = None) -> Path:
    """A small Si–Cu B-basis potential with random function coefficients (pyace)."""
    from pyace import create_multispecies_basis_config

    config = {
        "deltaSplineBins": 0.001,
        "elements": ["Cu", "Si"],
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1], "ndensity": 1}},
        "bonds": {"ALL": {"radbase": "SBessel", "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01,
                          "NameOfCutoffFunction": "cos"}},
        "functions": {"ALL": {"nradmax_by_orders": [5, 2, 1], "lmax_by_orders": [0, 2, 1]}},
    }
    basis = create_multispecies_basis_config(config)
    n = len(basis.get_func_coeffs())
    coefficients = np.random.default_rng(seed).normal(size=n) * scale
    if base is not None:
        coefficients = base + coefficients
    basis.set_func_coeffs(coefficients)
    basis.save(str(path))
    return path


def n_coefficients() -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = make_ace_potential(Path(folder) / "x.yaml", seed=0)
        from pyace import BBasisConfiguration

        return len(BBasisConfiguration(str(path)).get_func_coeffs())


def small_cells(n: int = 8):
    """Si and Cu cells of 2–8 atoms, rattled by growing amplitudes."""
    out = []
    for j in range(n):
        if j % 2:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms
        else:
            atoms = bulk("Si", "diamond", a=5.43, cubic=True)  # 8 atoms
        atoms.rattle(0.01 + 0.04 * j, seed=j)
        out.append(atoms)
    return out
