"""Committee UQ on a linear ACE ensemble (bootstrap members): CBE, CBF, ABF, thresholds (paper 000)."""

from pathlib import Path

import numpy as np
import pytest

from tests.ace.ace_data import out_of_distribution
from uq_flows.ace import AceFitOptions, committee_uncertainty, fit_ace, member_predictions
from uq_flows.ace.potential import AceCalculator, predict
from uq_flows.errors import InputError
from uq_flows.uncertainty.committee import adaptive_threshold


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, cu_training, cu_test):
    options = AceFitOptions(backend="linear", n_functions=20, ensemble_size=4, outlier_filter="none")
    return fit_ace(cu_training, options, tmp_path_factory.mktemp("ensemble"), cu_test)


def test_ensemble_members_are_bootstrap_fits_in_their_own_folders(ensemble, cu_training):
    assert ensemble.options.use_bootstrap() and [m.seed for m in ensemble.members] == [42, 43, 44, 45]
    assert [Path(p).parent.name for p in ensemble.potentials] == ["member-0", "member-1", "member-2", "member-3"]
    assert all(Path(m.active_set).exists() for m in ensemble.members)
    energies = [predict(AceCalculator(p), cu_training.structures[:2])[0] for p in ensemble.potentials]
    assert np.ptp(np.array(energies), axis=0).max() > 1e-6  # different data → different members
    assert ensemble.metrics_of == "ensemble mean"
    assert ensemble.metrics.test_force_rmse < 0.02


def test_thresholds_are_q3_plus_1p5_iqr_of_the_training_committee(ensemble, cu_training):
    energies, forces = member_predictions(ensemble.potentials, cu_training.structures)
    training = committee_uncertainty(energies, forces, cu_training.n_atoms)
    thresholds = ensemble.committee_thresholds
    assert thresholds.energy == pytest.approx(adaptive_threshold(training.energy))
    assert thresholds.force_config == pytest.approx(adaptive_threshold(training.force_config))
    assert thresholds.force_atom == pytest.approx(adaptive_threshold(training.force_atom))
    assert 0 < thresholds.force_atom <= thresholds.force_config
    # CBF is the worst atom of each configuration (paper 000, eq. 3)
    blocks = training.atom_blocks(training.force_atom)
    assert training.force_config == pytest.approx([b.max() for b in blocks])


def test_out_of_distribution_structures_are_novel(ensemble, cu_test):
    structures = out_of_distribution()
    energies, forces = member_predictions(ensemble.potentials, structures)
    result = committee_uncertainty(energies, forces, [len(a) for a in structures], ensemble.committee_thresholds)
    assert result.novel_configs.all()
    assert result.force_config.min() > 5 * ensemble.committee_thresholds.force_config
    energies, forces = member_predictions(ensemble.potentials, cu_test.structures)
    in_domain = committee_uncertainty(energies, forces, cu_test.n_atoms, ensemble.committee_thresholds)
    assert in_domain.novel_configs.mean() <= 0.25  # held-out cells of the training kind stay mostly in-domain


def test_one_member_is_not_a_committee(ensemble, cu_test):
    with pytest.raises(InputError, match="at least two ensemble members"):
        member_predictions(ensemble.potentials[:1], cu_test.structures)


def test_pacemaker_ensembles_do_not_bootstrap_by_default():
    assert not AceFitOptions(backend="pacemaker", ensemble_size=5).use_bootstrap()
    assert AceFitOptions(backend="pacemaker", ensemble_size=5, bootstrap=True).use_bootstrap()
    assert not AceFitOptions(backend="linear", ensemble_size=1).use_bootstrap()
