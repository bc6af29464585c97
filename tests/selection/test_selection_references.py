"""Elemental reference energies for QBC's formation-energy pre-filter: relaxation, shifts, job."""

import dataclasses

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from jobflow import run_locally

from uq_flows.errors import InputError, MemberError
from uq_flows.ensemble.members import load_calculator, parse_member
from uq_flows.ensemble.predict import predict_member
from uq_flows.selection.jobs import ElementalReferenceDocument, ElementalReferenceMaker
from uq_flows.selection.qbc import QBCConfig, select_from_predictions
from uq_flows.selection.references import (
    elemental_reference_energies,
    reference_notes,
    relax_reference_crystal,
    relax_reference_crystals,
    shifted_references,
)

EMT_MEMBER = "ase:ase.calculators.emt:EMT"


class CountingEMT(Calculator):
    """EMT that counts its calls (to show that bad input stops before any work)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.calls = 0
        self._emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self._emt.calculate(self.atoms, properties, system_changes)
        self.results = dict(self._emt.results)


def _cells(element: str, scales, rattle: float = 0.02):
    out = []
    for k, scale in enumerate(scales):
        atoms = bulk(element, cubic=True)
        atoms.set_cell(atoms.cell * scale, scale_atoms=True)
        atoms.rattle(rattle, seed=k + 1)
        out.append(atoms)
    return out


# --------------------------------------------------------------------------- EMT: fast


def test_emt_relaxation_reaches_the_equation_of_state_minimum():
    """From ASE's experimental a = 3.61 Å to EMT's own minimum, found independently by an EOS fit."""
    reference = relax_reference_crystal("Cu", EMT())
    volumes, energies = [], []
    for scale in np.linspace(0.97, 1.02, 11):
        atoms = bulk("Cu", a=3.61 * scale)  # primitive, 1 atom
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, e0, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert reference.structure == "fcc" and reference.n_atoms == 1 and reference.converged
    assert reference.initial_a == pytest.approx(3.61)
    assert reference.volume_per_atom == pytest.approx(v0, rel=2e-3)
    assert reference.energy_per_atom == pytest.approx(e0, abs=1e-4)
    assert reference.a == pytest.approx((4 * v0) ** (1 / 3), rel=1e-3)
    assert abs(reference.a - 3.61) > 0.01  # it did move: EMT's Cu is smaller than experiment


def test_energies_mapping_plugs_into_qbc_config():
    energies = elemental_reference_energies(["Cu", "Al", "Cu"], EMT())
    assert list(energies) == ["Cu", "Al"]  # distinct, in order
    references = relax_reference_crystals(["Cu", "Al"], EMT())
    assert energies == {r.symbol: r.energy_per_atom for r in references}
    assert QBCConfig(elemental_references=energies).as_dict()["elemental_references"] == energies


def test_unconverged_relaxation_is_reported():
    cu = relax_reference_crystal("Cu", EMT(), fmax=1e-6, max_steps=1)
    assert not cu.converged and cu.steps == 1
    assert any("not converged" in note for note in reference_notes([cu]))


@pytest.mark.parametrize("symbol", ["O", "H", "Mn", "Se"])
def test_element_without_a_buildable_crystal_is_refused_before_any_work(symbol):
    calculator = CountingEMT()
    with pytest.raises(InputError, match=rf"{symbol}.*give elemental_references .* select\.qbc_config"):
        relax_reference_crystals(["Cu", symbol], calculator)
    assert calculator.calls == 0


@pytest.mark.parametrize("kwargs", [{"fmax": 0.0}, {"fmax": float("nan")}, {"max_steps": 0}])
def test_bad_relaxation_settings(kwargs):
    calculator = CountingEMT()
    with pytest.raises(InputError):
        relax_reference_crystals(["Cu"], calculator, **kwargs)
    assert calculator.calls == 0


# --------------------------------------------------------------------------- shifts


def test_shifted_references_add_the_alignment_shift():
    assert shifted_references({"Cu": -4.1, "Al": -3.7}, {"Cu": -0.5, "Al": 0.25, "Ni": 9.0}) == pytest.approx(
        {"Cu": -4.6, "Al": -3.45}
    )
    assert shifted_references({"Cu": -4.1}, None) == {"Cu": -4.1}  # labels are teacher energies
    with pytest.raises(InputError, match="no energy-alignment shift for Al"):
        shifted_references({"Cu": -4.1, "Al": -3.7}, {"Cu": -0.5})
    with pytest.raises(InputError, match="finite"):
        shifted_references({"Cu": float("nan")}, {"Cu": 0.0})


def test_committee_on_aligned_labels_needs_shifted_references():
    """A committee fitted on labels E_teacher + Σ n μ (the loop's ACE ensemble) gets the teacher's
    formation energies only with references ε + μ; with ε alone every E_f is off by μ."""
    mu = -3.0  # eV/atom, e.g. a DFT code's Cu reference against the teacher
    cells = _cells("Cu", [1.0, 0.85])
    numbers = [c.numbers for c in cells]
    teacher = elemental_reference_energies(["Cu"], EMT())
    members = [parse_member(EMT_MEMBER), parse_member("emt105=ase:uqf_selection_calculators:EMT105")]
    predictions = [predict_member(m, cells) for m in members]
    aligned = [dataclasses.replace(p, energies=p.energies + mu * p.n_atoms) for p in predictions]

    on_teacher_scale = select_from_predictions(predictions, numbers, QBCConfig(elemental_references=teacher))
    shifted_config = QBCConfig(elemental_references=shifted_references(teacher, {"Cu": mu}))
    shifted = select_from_predictions(aligned, numbers, shifted_config)
    unshifted = select_from_predictions(aligned, numbers, QBCConfig(elemental_references=teacher))

    assert on_teacher_scale.formation_energy[1] > 0.25  # the compressed cell is unphysical
    np.testing.assert_allclose(shifted.formation_energy, on_teacher_scale.formation_energy, atol=1e-9)
    np.testing.assert_array_equal(shifted.prefiltered, on_teacher_scale.prefiltered)
    np.testing.assert_allclose(unshifted.formation_energy, on_teacher_scale.formation_energy + mu, atol=1e-9)


# --------------------------------------------------------------------------- job


def test_maker_job_runs_and_records_the_teacher(job_store):
    maker = ElementalReferenceMaker(teacher=EMT_MEMBER)
    new_job = maker.make(["Cu", "Ni"])
    assert new_job.config.manager_config["_category"] == "gpu"
    responses = run_locally(new_job, store=job_store, ensure_success=True)
    document = responses[new_job.uuid][1].output
    assert isinstance(document, ElementalReferenceDocument)
    assert document.teacher == EMT_MEMBER and "ase" in document.version
    direct = relax_reference_crystals(["Cu", "Ni"], EMT())
    assert document.elemental_references == {r.symbol: r.energy_per_atom for r in direct}
    assert [r.a for r in document.references] == [r.a for r in direct]
    assert document.notes == []


@pytest.mark.parametrize(
    "kwargs, elements, match",
    [({}, ["Cu", "O"], "give elemental_references"), ({"teacher": "nope"}, ["Cu"], "unknown member"),
     ({"max_steps": 0}, ["Cu"], "max_steps")],
)
def test_maker_refuses_bad_input_before_any_job(kwargs, elements, match):
    with pytest.raises((InputError, MemberError), match=match):
        ElementalReferenceMaker(**kwargs).make(elements)


# --------------------------------------------------------------------------- real teacher: slow


@pytest.fixture(scope="module")
def chgnet_references():
    calculator = load_calculator(parse_member("chgnet-0.3.0"))
    return {r.symbol: r for r in relax_reference_crystals(["Si", "Cu"], calculator)}


@pytest.mark.slow
@pytest.mark.parametrize("symbol, structure, experiment", [("Si", "diamond", 5.43), ("Cu", "fcc", 3.61)])
def test_chgnet_references_near_experiment(chgnet_references, symbol, structure, experiment):
    reference = chgnet_references[symbol]
    assert reference.structure == structure and reference.converged
    assert np.isfinite(reference.energy_per_atom) and reference.energy_per_atom < -1.0
    assert reference.a == pytest.approx(experiment, rel=0.03)
    assert reference_notes([reference]) == []


@pytest.mark.slow
def test_qbc_prefilter_discards_compressed_silicon(chgnet_references):
    """Silicon compressed to 0.9× (V = 0.73 V0) is selected by QBC without references (the
    committee disagrees on it) but discarded by the formation-energy pre-filter with the
    teacher's references; a near-equilibrium cell passes the pre-filter."""
    cells = _cells("Si", [1.0, 0.9])
    numbers = [c.numbers for c in cells]
    predictions = [predict_member(parse_member(m), cells) for m in ("chgnet-0.3.0", "chgnet-0.2.0")]
    references = {"Si": chgnet_references["Si"].energy_per_atom}

    with_references = select_from_predictions(predictions, numbers, QBCConfig(elemental_references=references))
    near, compressed = with_references.formation_energy
    assert abs(near) < 0.05 and not with_references.prefiltered[0]
    assert compressed > 0.25 and with_references.prefiltered[1]
    assert with_references.prefilter_reasons[1].startswith("median formation energy")
    assert with_references.pressure[1] < 0.5  # the formation energy alone discards it
    assert not with_references.selected[1]

    without = select_from_predictions(predictions, numbers, QBCConfig())
    assert np.isnan(without.formation_energy).all() and without.selected[1]
