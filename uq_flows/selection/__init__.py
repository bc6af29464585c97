"""Candidate selection: query by committee (MP-ALOE metrics) and DIRECT down-sampling (METHODS §6).

Engine-free: numpy, scikit-learn, ASE, pyace and the ensemble's uMLIP members; no jobflow
or FireWorks here (the Makers live in ``jobs.py``).
"""

from uq_flows.selection.committee import (
    ace_calculator,
    committee_predictions,
    parse_committee,
    parse_committee_member,
)
from uq_flows.selection.coverage import feature_coverage, plot_selection
from uq_flows.selection.descriptors import (
    DEFAULT_DESCRIPTOR,
    DescriptorCache,
    Descriptors,
    DescriptorSpec,
    compute_descriptors,
    parse_descriptor,
)
from uq_flows.selection.direct import (
    DirectConfig,
    DirectResult,
    check_features,
    direct_sample,
)
from uq_flows.selection.pipeline import SelectionResult, select_candidates
from uq_flows.selection.qbc import (
    DEFAULT_MULTIPLIERS,
    CommitteeMetrics,
    QBCConfig,
    QBCResult,
    committee_metrics,
    select_by_committee,
    select_from_predictions,
    threshold_scale,
)

__all__ = [
    "DEFAULT_DESCRIPTOR",
    "DEFAULT_MULTIPLIERS",
    "CommitteeMetrics",
    "DescriptorCache",
    "DescriptorSpec",
    "Descriptors",
    "DirectConfig",
    "DirectResult",
    "QBCConfig",
    "QBCResult",
    "SelectionResult",
    "ace_calculator",
    "check_features",
    "committee_metrics",
    "committee_predictions",
    "compute_descriptors",
    "direct_sample",
    "feature_coverage",
    "parse_committee",
    "parse_committee_member",
    "parse_descriptor",
    "plot_selection",
    "select_by_committee",
    "select_candidates",
    "select_from_predictions",
    "threshold_scale",
]
