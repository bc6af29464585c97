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


def row_weights(n_atoms: np.ndarray, kappa: float) -> np.ndarray:
    """Sample weights of the energy rows then the force-component rows (sum 1 + 2κ)."""
    n_configs, n_total = len(n_atoms), int(np.sum(n_atoms))
    return np.concatenate([np.full(n_configs, (1 - kappa) / n_configs), np.full(3 * n_total, kappa / n_total)])


def fit_linear_ace(training: TrainingSet, reference: dict[str, float], options: AceFitOptions,
                   elements: list[str] | None = None, workers: int = 1):
    """Fit linear ACE coefficients; returns the B-basis configuration with them set."""
    from pyace.linearacefit import LinearACEDataset, LinearACEFit
    from sklearn.linear_model import Ridge

    if not options.linear:
        raise ValueError("fit_linear_ace needs options.backend == 'linear'")
    elements = elements or training.elements
    basis = create_basis(elements, options)
    dataset = LinearACEDataset(basis, fit_frame(training, reference))
    design = dataset.get_design_matrix(max_workers=max(1, min(workers, len(training))))
    if not np.all(np.isfinite(design)):
        raise InputError("the ACE design matrix has non-finite entries (overlapping atoms?)")
    model = Ridge(alpha=options.l2, fit_intercept=False, solver="auto")
    fit = LinearACEFit(model, dataset)
    fit.fit(sample_weight=row_weights(training.n_atoms, options.kappa))
    return fit.get_bbasis().to_BBasisConfiguration()
