"""Engine-free uncertainty metrics (numpy + scipy only).

- ``ensemble``: heterogeneous-ensemble force uncertainty U and its error (paper 001, eqs. 1-5);
- ``committee``: committee max-deviation uncertainties, adaptive thresholds (paper 000);
- ``coverage``: accuracy-coverage curves and U_c threshold summaries (paper 001);
- ``calibration``: Spearman rho, alpha^2, ENCE, miscalibration area, NLL (paper 002).

Forces are (K, N_total, 3) with all configurations' atoms concatenated and ``n_atoms``
(n_configs,) giving the split; energies are (K, n_configs).
"""

from uq_flows.uncertainty.calibration import (
    ence,
    gaussian_nll,
    global_scaling,
    miscalibration_area,
    spearman,
    z_score_stats,
)
from uq_flows.uncertainty.committee import (
    adaptive_threshold,
    atom_force_committee_uncertainty,
    config_force_committee_uncertainty,
    energy_committee_uncertainty,
)
from uq_flows.uncertainty.coverage import (
    CoverageCurve,
    ReferenceErrors,
    ThresholdSummary,
    accuracy_coverage,
    force_error_terms,
    summarize_thresholds,
    threshold_for_target_force_rmse,
)
from uq_flows.uncertainty.ensemble import (
    ensemble_mean_force_error,
    force_uncertainty,
    inverse_rmse_weights,
    member_max_deviation,
    per_atom_deviation,
    top_n_members,
)

__all__ = [
    "CoverageCurve",
    "ReferenceErrors",
    "ThresholdSummary",
    "accuracy_coverage",
    "adaptive_threshold",
    "atom_force_committee_uncertainty",
    "config_force_committee_uncertainty",
    "ence",
    "energy_committee_uncertainty",
    "ensemble_mean_force_error",
    "force_error_terms",
    "force_uncertainty",
    "gaussian_nll",
    "global_scaling",
    "inverse_rmse_weights",
    "member_max_deviation",
    "miscalibration_area",
    "per_atom_deviation",
    "spearman",
    "summarize_thresholds",
    "threshold_for_target_force_rmse",
    "top_n_members",
    "z_score_stats",
]
