"""Fitted linear ACE potentials shared by the ACE tests (fits take about a second)."""

from __future__ import annotations

import pytest

from tests.ace.ace_data import cu_bulk
from uq_flows.ace import AceFitOptions, fit_ace, training_set


@pytest.fixture(scope="session")
def cu_training():
    return training_set(cu_bulk(24, seed=0))


@pytest.fixture(scope="session")
def cu_test():
    return training_set(cu_bulk(8, seed=1))


@pytest.fixture(scope="session")
def cu_linear(tmp_path_factory, cu_training, cu_test):
    """One linear ACE of 20 functions with its active set (all atoms in MaxVol)."""
    options = AceFitOptions(backend="linear", n_functions=20, outlier_filter="none")
    return fit_ace(cu_training, options, tmp_path_factory.mktemp("cu-linear"), cu_test)
