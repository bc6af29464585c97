"""Committee uncertainties and adaptive thresholds (paper 000) on hand-computed cases."""

import numpy as np
import pytest

from uq_flows.errors import InputError
from uq_flows.uncertainty import (
    adaptive_threshold,
    atom_force_committee_uncertainty,
    config_force_committee_uncertainty,
    energy_committee_uncertainty,
)


def test_energy_committee_uncertainty():
    # config 0: energies 1, 2, 6 -> mean 3, |dev| 2, 1, 3 -> 3
    # config 1: energies 10, 10, 13 -> mean 11, |dev| 1, 1, 2 -> 2
    energies = np.array([[1.0, 10.0], [2.0, 10.0], [6.0, 13.0]])
    np.testing.assert_allclose(energy_committee_uncertainty(energies), [3.0, 2.0])


def test_atom_and_config_force_committee(hand_forces, hand_n_atoms):
    # per-atom deviations (see conftest): atom 0 (2, 1, 1), atom 1 (2, 4, 2), atom 2 (5, 5, 0)
    np.testing.assert_allclose(atom_force_committee_uncertainty(hand_forces), [2.0, 4.0, 5.0])
    np.testing.assert_allclose(config_force_committee_uncertainty(hand_forces, hand_n_atoms), [4.0, 5.0])


def test_adaptive_threshold_one_to_eight():
    # linear percentiles of 1..8: Q1 at position 0.25*7 = 1.75 -> 2.75; Q3 at 5.25 -> 6.25
    # IQR = 3.5; epsilon = 6.25 + 1.5*3.5 = 11.5
    assert adaptive_threshold(np.arange(1, 9)) == pytest.approx(11.5)
    assert adaptive_threshold(np.arange(8, 0, -1).reshape(2, 4)) == pytest.approx(11.5)


def test_adaptive_threshold_constant():
    assert adaptive_threshold([2.0, 2.0, 2.0]) == 2.0


@pytest.mark.parametrize("values", [[], [1.0, np.nan], [np.inf, 1.0]])
def test_adaptive_threshold_rejects(values):
    with pytest.raises(InputError):
        adaptive_threshold(values)


def test_committee_rejections(hand_forces):
    with pytest.raises(InputError, match="at least 2"):
        energy_committee_uncertainty(np.ones((1, 4)))
    with pytest.raises(InputError, match="2 dimension"):
        energy_committee_uncertainty(np.ones(4))
    with pytest.raises(InputError, match="NaN"):
        energy_committee_uncertainty([[1.0, np.nan], [1.0, 2.0]])
    with pytest.raises(InputError, match="at least 2"):
        atom_force_committee_uncertainty(hand_forces[:1])
    with pytest.raises(InputError, match="sums to"):
        config_force_committee_uncertainty(hand_forces, [1, 1])
    with pytest.raises(InputError, match="at least one atom"):
        config_force_committee_uncertainty(hand_forces, [3, 0])
