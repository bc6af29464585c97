"""Linear ACE fitted in the main environment with pyace's ``LinearACEDataset``/``LinearACEFit`` (paper 000).

The design matrix holds, per configuration, the per-atom mean of every basis function (energy
row) and their negative gradients (three force rows per atom); the target is
(E − Σ ē)/N and the forces. Rows are weighted as in pacemaker's loss with uniform weights,
L = (1 − κ)/n_configs Σ_j ΔE_j²/N_j² + κ/N_atoms Σ_i ‖ΔF_i‖², and solved by ridge regression
with α = ``options.l2`` (the radial functions stay at pacemaker's initial "delta" values).
"""

from __future__ import annotations

import numpy as np

from uq_flows.ace.basis import AceFitOptions, create_basis
from uq_flows.ace.data import TrainingSet, fit_frame
from uq_flows.errors import InputError


def row_weights(n_atoms: np.ndarray, kappa: float, counts: np.ndarray | None = None) -> np.ndarray:
    """Sample weights of the energy rows then the force-component rows (sum 1 + 2κ).

    ``counts``: times each configuration is drawn (a bootstrap sample); a configuration drawn k
    times weighs as k copies of it, so the loss is that of the sample, normalised by its size.
    """
    n_atoms = np.asarray(n_atoms)
    counts = np.ones(len(n_atoms)) if counts is None else np.asarray(counts, dtype=float)
    n_configs, n_total = counts.sum(), float(np.sum(counts * n_atoms))
    return np.concatenate([counts * (1 - kappa) / n_configs, np.repeat(counts, 3 * n_atoms) * kappa / n_total])


def fit_linear_ace(training: TrainingSet, reference: dict[str, float], options: AceFitOptions,
                   elements: list[str] | None = None, workers: int = 1, sample: np.ndarray | None = None):
    """Fit linear ACE coefficients on ``sample`` (indices into ``training``, repeats allowed; all by
    default); returns the B-basis configuration with them set, and its total energies (eV) and
    forces (eV/Å) on every training structure, read off the design matrix (no second pass)."""
    from pyace.linearacefit import LinearACEDataset
    from sklearn.linear_model import Ridge

    if not options.linear:
        raise ValueError("fit_linear_ace needs options.backend == 'linear'")
    elements = elements or training.elements
    frame = fit_frame(training, reference)
    dataset = LinearACEDataset(create_basis(elements, options), frame)
    design = dataset.get_design_matrix(max_workers=max(1, min(workers, len(training))))
    if not np.all(np.isfinite(design)):
        raise InputError("the ACE design matrix has non-finite entries (overlapping atoms?)")
    n_atoms = training.n_atoms
    counts = None if sample is None else np.bincount(np.asarray(sample, dtype=int), minlength=len(training))
    model = Ridge(alpha=options.l2, fit_intercept=False, solver="auto")
    model.fit(design, dataset.get_target_vector(), sample_weight=row_weights(n_atoms, options.kappa, counts))
    predicted = design @ model.coef_
    energies = predicted[:len(training)] * n_atoms + (frame["energy"] - frame["energy_corrected"]).to_numpy()
    forces = np.split(predicted[len(training):].reshape(-1, 3), np.cumsum(n_atoms)[:-1])
    return dataset.get_bbasis(model).to_BBasisConfiguration(), energies, forces
