"""QBC metrics, element multipliers, pre-filters and statuses, checked against hand calculations."""

import math

import numpy as np
import pytest
from ase.data import atomic_numbers as Z

from uq_flows.ensemble.predict import MemberPredictions
from uq_flows.errors import InputError
from uq_flows.selection.qbc import (
    QBCConfig,
    committee_metrics,
    select_by_committee,
    select_from_predictions,
    threshold_scale,
)


def hand_committee():
    """3 models; structure 0 = Si2, structure 1 = He (one atom)."""
    energies = np.array([[2.0, 1.0], [2.2, 1.3], [1.8, 0.7]])
    forces = np.zeros((3, 3, 3))
    forces[1, 0] = [0.3, 0.0, 0.0]  # model 1, atom 0 of structure 0
    forces[1, 2] = [0.0, 0.2, 0.0]  # model 1, the He atom
    stresses = np.zeros((3, 2, 6))
    stresses[1, 0] = [0.3, 0, 0, 0, 0, 0.4]  # |Δs| = 0.5 against either other model
    numbers = [np.array([14, 14]), np.array([2])]
    return energies, forces, stresses, np.array([2, 1]), numbers


def test_metrics_match_a_hand_calculation():
    energies, forces, stresses, n_atoms, _ = hand_committee()
    m = committee_metrics(energies, forces, stresses, n_atoms)
    # population std of per-atom energies [1.0, 1.1, 0.9] and [1.0, 1.3, 0.7]
    assert m.energy == pytest.approx([math.sqrt(0.02 / 3), math.sqrt(0.06)])
    # pairs (0,1), (0,2), (1,2): sqrt(mean_i |ΔF_i|²) = sqrt(0.09/2), 0, sqrt(0.09/2) for Si2
    assert m.force == pytest.approx([2 * math.sqrt(0.045) / 3, 2 * 0.2 / 3])
    assert m.stress == pytest.approx([2 * 0.5 / 3, 0.0])


def test_selection_uses_scaled_thresholds_and_any_metric():
    energies, forces, stresses, n_atoms, numbers = hand_committee()
    result = select_by_committee(energies, forces, stresses, n_atoms, numbers)
    # Si2: scale sqrt(2)/sqrt(2) = 1; force 0.141 and stress 0.333 exceed 0.1
    assert result.thresholds[0] == pytest.approx([0.1, 0.1, 0.1])
    assert result.exceeds[0].tolist() == [False, True, True]
    # He: 5 (noble gas) × 3 (He) × sqrt(1)/sqrt(2) → thresholds 1.06: nothing exceeds
    assert result.scale[1] == pytest.approx(15 / math.sqrt(2))
    assert not result.exceeds[1].any()
    assert result.selected.tolist() == [True, False]
    # without multipliers He's energy std 0.245 exceeds 0.1/sqrt(2)
    plain = select_by_committee(energies, forces, stresses, n_atoms, numbers, QBCConfig(multipliers={}))
    assert plain.exceeds[1].tolist() == [True, True, False] and plain.selected.tolist() == [True, True]


@pytest.mark.parametrize(
    "symbols, factor",
    [
        (["Si"], 1),
        (["He"], 15),  # noble gas 5 × He 3
        (["Ne"], 10),  # noble gas 5 × Ne 2
        (["Ar"], 5), (["Kr"], 5), (["Xe"], 5), (["Rn"], 5), (["Og"], 5),
        (["Tc"], 4),
        (["Ac"], 4), (["U"], 4), (["Lr"], 4), (["Th", "Pa"], 4),  # any actinoid: once
        (["La"], 3), (["Ce"], 3), (["Lu"], 3),  # any lanthanoid
        (["Hf"], 1), (["Ra"], 1), (["Ba"], 1), (["Mo"], 1),  # neighbours of the groups: no factor
        (["He", "Tc"], 60),
        (["Ne", "U", "La"], 5 * 2 * 4 * 3),
        (["Ar", "Kr"], 5),  # two noble gases: the group factor once
    ],
)
def test_element_multipliers_by_hand(symbols, factor):
    config = QBCConfig(site_scaling=False)
    assert threshold_scale([[Z[s] for s in symbols]], config)[0] == pytest.approx(factor)


def test_site_scaling_and_custom_rules():
    assert threshold_scale([[14] * 8], QBCConfig())[0] == pytest.approx(2.0)  # sqrt(8)/sqrt(2)
    assert threshold_scale([[2] * 8], QBCConfig())[0] == pytest.approx(30.0)
    config = QBCConfig(multipliers={"Pu": 7, "noble_gas": 2}, site_scaling=False)
    assert threshold_scale([[94, 2]], config)[0] == pytest.approx(14)  # He rule gone, Pu rule added
    with pytest.raises(InputError, match="unknown threshold multiplier"):
        QBCConfig(multipliers={"halogen": 2})
    with pytest.raises(InputError, match="positive"):
        QBCConfig(multipliers={"Tc": 0})
    with pytest.raises(InputError, match="positive"):
        QBCConfig(force_threshold=-1)


def test_prefilters_use_medians_over_models():
    n = 4
    energies = np.full((3, n), -5.0)  # formation energy 0 with E(Si) = -5 eV/atom
    forces = np.zeros((3, n, 3))
    stresses = np.zeros((3, n, 6))
    numbers = [np.array([14])] * n
    forces[:2, 0, 0] = 60.0  # median of largest force 60 > 50: discarded
    forces[:1, 1, 0] = 60.0  # one model only: median 0, kept
    stresses[:, 2, :3] = -0.6  # pressure +0.6 eV/Å³ (compression) > 0.5: discarded
    energies[:, 3] = -4.5  # formation energy with E(Si) = -5 eV/atom: +0.5 > 0.25
    config = QBCConfig(elemental_references={"Si": -5.0})
    result = select_by_committee(energies, forces, stresses, np.ones(n, int), numbers, config)
    assert result.prefiltered.tolist() == [True, False, True, True]
    assert "largest atomic force 60" in result.prefilter_reasons[0]
    assert "|pressure| 0.6" in result.prefilter_reasons[2]
    assert "formation energy 0.5" in result.prefilter_reasons[3]
    assert not result.selected[[0, 2, 3]].any()  # force metric of 0 would select it otherwise
    no_references = select_by_committee(energies, forces, stresses, np.ones(n, int), numbers)
    assert no_references.prefiltered.tolist() == [True, False, True, False]
    off = QBCConfig(max_force=None, max_pressure=None, max_formation_energy=None, elemental_references={"Si": -5.0})
    assert not select_by_committee(energies, forces, stresses, np.ones(n, int), numbers, off).prefiltered.any()


def test_per_model_elemental_references():
    energies = np.array([[-4.5], [-4.9]])
    config = QBCConfig(elemental_references={"m0": {"Si": -5.0}, "m1": {"Si": -5.0}})
    args = (energies, np.zeros((2, 1, 3)), np.zeros((2, 1, 6)), [1], [[14]])
    result = select_by_committee(*args, config, members=["m0", "m1"])
    assert result.formation_energy[0] == pytest.approx(0.3)  # median of 0.5 and 0.1
    with pytest.raises(InputError, match="no elemental reference energies for m1"):
        select_by_committee(*args, QBCConfig(elemental_references={"m0": {"Si": -5.0}}), members=["m0", "m1"])
    with pytest.raises(InputError, match="no elemental reference energy for Si"):
        select_by_committee(*args, QBCConfig(elemental_references={"Cu": -3.0}))


def test_missing_stress_is_not_a_disagreement():
    energies, forces, stresses, n_atoms, numbers = hand_committee()
    stresses[2, 0] = np.nan  # one model has no stress for Si2 (e.g. a molecule)
    result = select_by_committee(energies, forces, stresses, n_atoms, numbers)
    assert math.isnan(result.metrics[0, 2]) and not result.exceeds[0, 2]
    assert result.selected[0]  # the force metric still selects it


def predictions(member, energies, forces, status=None, reasons=None):
    n = len(energies)
    return MemberPredictions(member, np.ones(n, int), energies, forces, np.zeros((n, 6)),
                             status or ["ok"] * n, reasons or [None] * n)


def test_a_failed_member_marks_the_structure_and_it_is_never_selected():
    a = predictions("a", [0.0, 0.0], np.zeros((2, 3)))
    b = predictions("b", [1.0, np.nan], [[1.0, 0, 0], [np.nan] * 3], status=["ok", "error"], reasons=[None, "boom"])
    result = select_from_predictions([a, b], [[14], [14]])
    assert result.status == ["ok", "error"] and result.reasons[1] == "b: boom"
    assert result.selected.tolist() == [True, False]
    assert np.isnan(result.metrics[1]).all()
    summary = result.summary()
    assert summary["n_failed"] == 1 and summary["n_selected"] == 1


def test_bad_committee_inputs_are_clear():
    with pytest.raises(InputError, match="at least two"):
        select_from_predictions([predictions("a", [0.0], np.zeros((1, 3)))], [[14]])
    with pytest.raises(InputError, match="more than once"):
        a = predictions("a", [0.0], np.zeros((1, 3)))
        select_from_predictions([a, a], [[14]])
    with pytest.raises(InputError, match="forces must have shape"):
        committee_metrics(np.zeros((2, 1)), np.zeros((2, 2, 3)), np.zeros((2, 1, 6)), [1])
    with pytest.raises(InputError, match="non-finite"):
        select_by_committee(np.array([[0.0], [np.nan]]), np.zeros((2, 1, 3)), np.zeros((2, 1, 6)), [1], [[14]])
    with pytest.raises(InputError, match="atomic numbers"):
        select_by_committee(np.zeros((2, 1)), np.zeros((2, 1, 3)), np.zeros((2, 1, 6)), [1], [[14, 14]])


def test_config_round_trips():
    config = QBCConfig(force_threshold=0.2, multipliers={"Tc": 2}, max_pressure=None)
    assert QBCConfig.from_dict(config.as_dict()) == config
    with pytest.raises(InputError, match="unknown QBC settings"):
        QBCConfig.from_dict({"force": 1})
