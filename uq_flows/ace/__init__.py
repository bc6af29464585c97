"""ACE potentials and their uncertainty (papers 000, 001; METHODS §3-§5).

Engine-free (pyace, numpy, ASE, scikit-learn; the Makers live in ``jobs.py``):

- ``data``: training sets from labelled structures, per-element reference energies, pacemaker frames;
- ``basis``: fit options (paper-001 defaults) and the ACE basis they define;
- ``linear`` / ``pacemaker``: the two fit backends (pyace ridge; pacemaker of the fit environment);
- ``fit``: members, ensembles, active sets, RMSEs, ``fit.json``;
- ``potential``: potential files and ``AceCalculator`` (total energies, γ per atom);
- ``activeset``: MaxVol active sets and γ (D-optimality);
- ``local``: clustering-enhanced local D-optimality;
- ``committee``: CBE/CBF/ABF on ACE ensembles with Q3 + 1.5·IQR thresholds.
"""

from uq_flows.ace.activeset import build_active_set, extrapolation_grades
from uq_flows.ace.basis import AceFitOptions
from uq_flows.ace.committee import (
    CommitteeThresholds,
    committee_thresholds,
    committee_uncertainty,
    member_predictions,
)
from uq_flows.ace.data import (
    TrainingSet,
    fit_reference_energies,
    labelled_structures,
    read_training_set,
    training_set,
)
from uq_flows.ace.fit import AceFitResult, FitMetrics, MemberFit, fit_ace, read_summary
from uq_flows.ace.local import (
    LocalActiveSet,
    build_local_active_set,
    local_extrapolation_grades,
)
from uq_flows.ace.pacemaker import PacemakerError, pacemaker_command
from uq_flows.ace.potential import AceCalculator, write_yace

__all__ = [
    "AceCalculator",
    "AceFitOptions",
    "AceFitResult",
    "CommitteeThresholds",
    "FitMetrics",
    "LocalActiveSet",
    "MemberFit",
    "PacemakerError",
    "TrainingSet",
    "build_active_set",
    "build_local_active_set",
    "committee_thresholds",
    "committee_uncertainty",
    "extrapolation_grades",
    "fit_ace",
    "fit_reference_energies",
    "labelled_structures",
    "local_extrapolation_grades",
    "member_predictions",
    "pacemaker_command",
    "read_summary",
    "read_training_set",
    "training_set",
    "write_yace",
]
