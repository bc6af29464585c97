"""Heterogeneous uMLIP ensemble members: registry, loading, batched prediction, RMSEs (paper 001).

Engine-free: no jobflow or FireWorks here (the Makers live in ``jobs.py``).
"""

from uq_flows.ensemble.members import (
    BUILTIN_MEMBERS,
    MemberSpec,
    clear_calculator_cache,
    load_calculator,
    parse_member,
    supported_numbers,
)
from uq_flows.ensemble.predict import MemberPredictions, predict_member
from uq_flows.ensemble.rmse import (
    measure_force_rmse,
    paper_force_rmse,
    read_rmse_file,
    write_rmse_file,
)

__all__ = [
    "BUILTIN_MEMBERS",
    "MemberPredictions",
    "MemberSpec",
    "clear_calculator_cache",
    "load_calculator",
    "measure_force_rmse",
    "paper_force_rmse",
    "parse_member",
    "predict_member",
    "read_rmse_file",
    "supported_numbers",
    "write_rmse_file",
]
