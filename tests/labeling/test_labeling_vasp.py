"""VASP labels through atomate2 with mocked VASP runs on real reference outputs (METHODS §9).

``atomate2.utils.testing.vasp.monkeypatch_vasp`` replaces ``run_vasp`` by a copy of
``tests/test_data/vasp/<case>/outputs`` after checking the job's inputs against
``<case>/inputs``. The references were made with MP/atomate2 input sets, so the mock checks the
INCAR keys they share with the paper defaults, and the tests check our own INCAR and KPOINTS
(captured before the mock replaces them with the reference files) explicitly.
"""

from __future__ import annotations

import gzip
import math
import shutil
import warnings
from pathlib import Path

import ase.io
import atomate2.vasp.jobs.base
import numpy as np
import pytest
from ase.build import bulk
from atomate2.utils.testing.vasp import monkeypatch_vasp
from custodian.custodian import NonRecoverableError
from custodian.vasp.handlers import UnconvergedErrorHandler
from jobflow import CURRENT_JOB, Flow, JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.vasp import Incar, Kpoints

from uq_flows.labeling.labels import Label
from uq_flows.labeling.vasp import (
    PAPER_INCAR,
    PAPER_KPOINT_SPACING,
    VaspRunFailure,
    diagnose_vasp_outputs,
    kpoint_mesh,
    kpoints_for_spacing,
    label_from_task_doc,
    record_to_structure,
    stress_kbar_to_ase,
)
from uq_flows.labeling.jobs import PaperStaticSetGenerator, VaspLabelMaker, VaspStaticMaker, dft_label_flow
from uq_flows.records import StructureRecord

VASP_DIR = Path(__file__).resolve().parents[1] / "test_data" / "vasp"
SI2, SI16, Y4O6 = "Si2_pbe_static", "Si16_pbe_static_perturbed", "Y4O6_pbe_static_unconverged"
REFERENCE_ENERGY = {SI2: -10.84060922, SI16: -86.76568662}
# INCAR keys on which the reference runs and the paper defaults agree
SHARED_INCAR = {SI2: ["NSW", "ISPIN", "ENCUT", "PREC", "LREAL"], SI16: ["NSW", "ISPIN", "ENCUT", "PREC"],
                Y4O6: ["NSW", "ISPIN"]}
CHECK_INPUTS = {SI2: ["incar", "kpoints", "poscar", "potcar"], SI16: ["incar", "kpoints", "poscar", "potcar"],
                Y4O6: ["incar", "poscar", "potcar"]}  # Y4O6 used KSPACING: no reference KPOINTS

pytestmark = pytest.mark.filterwarnings("ignore")


def reference_record(case: str) -> StructureRecord:
    structure = Structure.from_file(VASP_DIR / case / "inputs" / "POSCAR.gz") if case != Y4O6 else \
        Structure.from_file(VASP_DIR / case / "inputs" / "POSCAR")
    return StructureRecord.from_atoms(AseAtomsAdaptor.get_atoms(structure))


def reference_atoms(case: str):
    """The reference vasprun.xml as ASE reads it (energy, forces, stress in ASE units)."""
    with gzip.open(VASP_DIR / case / "outputs" / "vasprun.xml.gz", "rt") as handle:
        return ase.io.read(handle, format="vasp-xml", index=-1)


def new_store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


@pytest.fixture
def mock_vasp(monkeypatch, tmp_path):
    """monkeypatch_vasp plus a capture of the INCAR and KPOINTS each job wrote."""
    runner = monkeypatch_vasp(monkeypatch, VASP_DIR)
    register = next(runner)
    fake_run = atomate2.vasp.jobs.base.run_vasp
    written = {}

    def capture_then_fake(*args, **kwargs):
        written[CURRENT_JOB.job.name] = {
            "run_vasp_kwargs": kwargs,
            "incar": Incar.from_file("INCAR"),
            "kpoints": Kpoints.from_file("KPOINTS") if Path("KPOINTS").exists() else None,
        }
        return fake_run(*args, **kwargs)

    monkeypatch.setattr(atomate2.vasp.jobs.base, "run_vasp", capture_then_fake)
    monkeypatch.chdir(tmp_path)

    def use(jobs_to_cases: dict[str, str | Path]):
        kwargs = {}
        for name, case in jobs_to_cases.items():
            key = Path(case).name
            kwargs[name] = {"incar_settings": SHARED_INCAR.get(key, ["NSW"]),
                            "check_inputs": CHECK_INPUTS.get(key, ["poscar", "potcar"])}
        register(jobs_to_cases, kwargs)
        return written

    yield use
    next(runner, None)  # undo the patches and clear atomate2's reference-path registry


def run_flow(flow, tmp_path):
    store = new_store()
    responses = run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, log=False)
    return responses, store


def all_jobs(flow) -> list:
    """Every job of a (nested) flow, in order."""
    return [j for j, _ in flow.iterflow()]


def label_flow(records, **static) -> object:
    """The VASP label flow for ``records``, with ``static`` settings for the static Maker."""
    return dft_label_flow(VaspLabelMaker(static_maker=VaspStaticMaker(**static)), records)


def flow_labels(flow, responses) -> list[Label]:
    """The flow's output (list of labels) read from the local run's responses."""
    return [Label.model_validate(responses[ref.uuid][1].output) for ref in flow.output]


# ---------------------------------------------------------------- engine-free


def test_kpoint_mesh_cubic_by_hand():
    # |b| = 2π/a; spacing 2π × 0.03 Å⁻¹ → N = ceil(1 / (0.03 a))
    assert kpoint_mesh(np.eye(3) * 5.0) == (7, 7, 7)  # 1/0.15 = 6.67
    assert kpoint_mesh(np.eye(3) * (1 / 0.15)) == (5, 5, 5)  # exactly 5: not rounded up
    assert kpoint_mesh(np.diag([3.0, 5.0, 40.0])) == (12, 7, 1)  # 11.1, 6.67, 0.83 → max(1, ·)
    assert kpoint_mesh(np.eye(3) * 5.0, spacing=2 * math.pi * 0.1) == (2, 2, 2)
    with pytest.raises(ValueError):
        kpoint_mesh(np.eye(3), 0.0)


def test_kpoints_for_spacing_gamma_centred_for_ase_and_pymatgen():
    atoms = bulk("W", "bcc", a=3.17, cubic=True)  # 1/(0.03 × 3.17) = 10.5 → 11
    kpoints = kpoints_for_spacing(atoms)
    assert kpoints.style == Kpoints.supported_modes.Gamma
    assert tuple(kpoints.kpts[0]) == (11, 11, 11)
    same = kpoints_for_spacing(AseAtomsAdaptor.get_structure(atoms))
    assert tuple(same.kpts[0]) == (11, 11, 11)
    monkhorst = kpoints_for_spacing(atoms, gamma_centered=False)
    assert monkhorst.style == Kpoints.supported_modes.Monkhorst
    assert PAPER_KPOINT_SPACING == pytest.approx(0.188496, abs=1e-6)


def test_paper_generator_writes_paper_inputs():
    structure = record_to_structure(reference_record(SI2))
    inputs = PaperStaticSetGenerator().get_input_set(structure, potcar_spec=True)
    incar = inputs["INCAR"]
    for key, value in PAPER_INCAR.items():
        if value is None:
            assert key not in incar
        elif isinstance(value, str):
            assert incar[key].upper() == value.upper(), key  # pymatgen writes GGA = Pe
        else:
            assert incar[key] == value, key
    assert incar["ENCUT"] == 520 and incar["EDIFF"] == 1e-6
    assert incar["GGA"].upper() == "PE"  # PBE, not atomate2's PBEsol default
    assert (incar["NSW"], incar["IBRION"], incar["ISIF"]) == (0, -1, 2)
    assert (incar["ISMEAR"], incar["SIGMA"]) == (0, 0.05)
    assert "LMIXTAU" not in incar and incar["LCHARG"] is False
    # fcc primitive cell, a_conv = 3.868 √2 Å: |b| = 2π √3 / a_conv → 10.55 → 11
    assert tuple(inputs["KPOINTS"].kpts[0]) == (11, 11, 11)
    assert inputs["KPOINTS"].style == Kpoints.supported_modes.Gamma
    # user settings win, None removes, KSPACING replaces the mesh
    custom = PaperStaticSetGenerator(user_incar_settings={"ENCUT": 600, "ISIF": None, "KSPACING": 0.3})
    incar = custom.get_input_set(structure, potcar_spec=True)["INCAR"]
    assert incar["ENCUT"] == 600 and "ISIF" not in incar and incar["EDIFF"] == 1e-6
    assert custom.get_input_set(structure, potcar_spec=True)["KPOINTS"] is None


def test_stress_conversion_matches_ase():
    stress = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])  # kBar, VASP sign
    converted = stress_kbar_to_ase(stress)
    assert converted[0, 0] == pytest.approx(-1.0 * 0.1 * 0.006241509, rel=1e-6)  # 1 kBar = 0.1 GPa


@pytest.fixture(scope="module")
def si16_task_doc(tmp_path_factory):
    from atomate2.vasp.jobs.base import get_vasp_task_document

    folder = tmp_path_factory.mktemp("si16")
    for path in (VASP_DIR / SI16 / "outputs").iterdir():
        shutil.copy(path, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_vasp_task_document(folder)


def test_label_from_task_doc_values_and_provenance(si16_task_doc):
    record = reference_record(SI16)
    label = label_from_task_doc(si16_task_doc, record.id, structure=record.to_atoms(), iteration=2, loop="w")
    reference = reference_atoms(SI16)
    assert label.ok and label.kind == "dft" and label.source == "vasp"
    assert label.energy == pytest.approx(REFERENCE_ENERGY[SI16], abs=1e-8)
    np.testing.assert_allclose(label.forces, reference.get_forces(), atol=1e-8)
    np.testing.assert_allclose(label.stress, reference.get_stress(voigt=True), rtol=1e-6, atol=1e-10)
    assert np.max(np.abs(label.stress[3:])) > 1e-5  # off-diagonal terms are present and ordered yz, xz, xy
    assert (label.iteration, label.loop) == (2, "w")
    provenance = label.provenance
    assert provenance["vasp_version"] == "6.4.1" and provenance["potcar_symbols"] == ["Si"]
    assert provenance["incar"]["ENCUT"] == 520 and provenance["kpoints"]["mesh"] == [4, 4, 4]
    assert provenance["dir_name"]


def test_label_from_task_doc_reorders_atoms_to_the_submitted_order(si16_task_doc):
    atoms = reference_record(SI16).to_atoms()
    permutation = np.random.default_rng(0).permutation(len(atoms))
    shuffled = atoms[permutation]
    label = label_from_task_doc(si16_task_doc, "shuffled", structure=shuffled)
    np.testing.assert_allclose(label.forces, reference_atoms(SI16).get_forces()[permutation], atol=1e-8)
    moved = shuffled.copy()
    moved.positions[0] += 0.1
    mismatch = label_from_task_doc(si16_task_doc, "moved", structure=moved)
    assert mismatch.status == "failed" and "does not match" in mismatch.reason


def test_label_from_task_doc_failures(si16_task_doc):
    assert "no task document" in label_from_task_doc(None, "x").reason
    # an SCF that used all NELM steps (Si16 converged in 11 steps: pretend NELM was 11)
    unconverged = si16_task_doc.model_copy(deep=True)
    unconverged.calcs_reversed[0].input.parameters["NELM"] = 11
    label = label_from_task_doc(unconverged, "x")
    assert label.status == "failed" and label.reason.startswith("electronic SCF not converged")
    assert "NELM = 11" in label.reason and label.energy is None and label.provenance["vasp_version"] == "6.4.1"
    failed_state = si16_task_doc.model_copy(update={"state": "failed"})
    assert label_from_task_doc(failed_state, "x").reason.startswith("task state failed")
    failure = VaspRunFailure(reason="missing outputs: no vasprun.xml", error="RuntimeError: boom")
    label = label_from_task_doc(failure.model_dump(), "x")
    assert label.reason == "missing outputs: no vasprun.xml" and label.provenance["error"] == "RuntimeError: boom"


def test_diagnose_vasp_outputs(tmp_path):
    assert "no vasprun.xml" in diagnose_vasp_outputs(tmp_path)[0]
    with gzip.open(VASP_DIR / SI2 / "outputs" / "vasprun.xml.gz", "rt") as handle:
        text = handle.read()
    (tmp_path / "vasprun.xml").write_text(text[: len(text) // 2])  # a run killed mid-write
    problems = diagnose_vasp_outputs(tmp_path)
    assert "truncated or unreadable" in problems[0] and "missing outputs: OUTCAR, CONTCAR" in problems[1]
    (tmp_path / "vasprun.xml").unlink()
    shutil.copy(VASP_DIR / Y4O6 / "outputs" / "vasprun.xml.gz", tmp_path)
    problems = diagnose_vasp_outputs(tmp_path)
    assert problems[0].startswith("electronic SCF not converged: NELM = 200")


# ---------------------------------------------------------------- workflow layer


def test_flow_labels_si_references_with_paper_inputs(mock_vasp, tmp_path):
    records = [reference_record(SI2), reference_record(SI16)]
    maker = VaspLabelMaker(static_maker=VaspStaticMaker(incar_overrides={"NCORE": 4, "ALGO": "Normal"}))
    flow = Flow([maker.make(records[0], U=0.5), maker.make(records[1], U=2.0)])
    flow.output = [part.output for part in flow.jobs]
    statics = [j for j in all_jobs(flow) if j.name.startswith("vasp static")]
    written = mock_vasp({statics[0].name: SI2, statics[1].name: SI16})
    assert all(j.config.manager_config["_category"] == "cpu" for j in all_jobs(flow))

    responses, _ = run_flow(flow, tmp_path)
    labels = flow_labels(flow, responses)

    assert [label.id for label in labels] == [r.id for r in records]  # input order
    for label, case, expected_mesh in zip(labels, (SI2, SI16), ((11, 11, 11), (6, 6, 6))):
        assert label.ok, label.reason
        reference = reference_atoms(case)
        assert label.energy == pytest.approx(REFERENCE_ENERGY[case], abs=1e-8)
        assert np.shape(label.forces) == (len(reference), 3)
        np.testing.assert_allclose(label.forces, reference.get_forces(), atol=1e-8)
        np.testing.assert_allclose(label.stress, reference.get_stress(voigt=True), rtol=1e-6, atol=1e-10)
        assert label.provenance["potcar_symbols"] == ["Si"]
        # what our job wrote before the fake run replaced it: paper settings plus overrides
        inputs = written[statics[(SI2, SI16).index(case)].name]
        assert inputs["incar"]["ENCUT"] == 520 and inputs["incar"]["EDIFF"] == 1e-6
        assert inputs["incar"]["NCORE"] == 4 and inputs["incar"]["ALGO"] == "Normal"
        assert (inputs["incar"]["ISMEAR"], inputs["incar"]["ISIF"]) == (0, 2)
        assert tuple(inputs["kpoints"].kpts[0]) == expected_mesh
        assert inputs["kpoints"].style == Kpoints.supported_modes.Gamma
        # no handler/validator overrides: custodian runs atomate2's DEFAULT_HANDLERS and validators
        assert inputs["run_vasp_kwargs"] == {}
    assert labels[0].stress[0] == pytest.approx(0.21017247 * 0.1 * 0.006241509, rel=1e-5)  # −0.21 kBar → tensile
    assert (labels[0].U, labels[1].U) == (0.5, 2.0)


def test_kpoints_override_reaches_kpoints(mock_vasp, tmp_path):
    record = reference_record(SI2)
    flow = label_flow([record], kpoints_overrides=Kpoints.gamma_automatic((3, 3, 3)))
    static = all_jobs(flow)[0]
    written = mock_vasp({static.name: SI2})
    responses, _ = run_flow(flow, tmp_path)
    assert flow_labels(flow, responses)[0].ok
    assert tuple(written[static.name]["kpoints"].kpts[0]) == (3, 3, 3)


def test_unconverged_scf_gives_failed_label_and_flow_completes(mock_vasp, tmp_path):
    records = [reference_record(Y4O6), reference_record(SI2)]
    flow = label_flow(records)
    statics = [j for j in all_jobs(flow) if j.name.startswith("vasp static")]
    mock_vasp({statics[0].name: Y4O6, statics[1].name: SI2})
    responses, store = run_flow(flow, tmp_path)
    unconverged, converged = flow_labels(flow, responses)
    assert unconverged.status == "failed" and unconverged.energy is None
    assert "electronic SCF not converged" in unconverged.reason and "NELM = 200" in unconverged.reason
    assert converged.ok
    # every job completed and stored its output: nothing fizzled
    assert all(store.query_one({"uuid": j.uuid}) is not None for j in all_jobs(flow))


@pytest.mark.parametrize("failure", ["custodian", "no outputs"])
def test_vasp_job_that_raises_gives_failed_label(mock_vasp, monkeypatch, tmp_path, failure):
    record = reference_record(SI2)
    flow = label_flow([record])
    static, convert = all_jobs(flow)
    if failure == "custodian":
        def unrecoverable(*args, **kwargs):
            raise NonRecoverableError("Unrecoverable error for handler: UnconvergedErrorHandler", True,
                                      UnconvergedErrorHandler())
        mock_vasp({})
        monkeypatch.setattr(atomate2.vasp.jobs.base, "run_vasp", unrecoverable)
    else:  # VASP "ran" and wrote nothing
        case = tmp_path / "refs" / "empty"
        shutil.copytree(VASP_DIR / SI2 / "inputs", case / "inputs")
        (case / "outputs").mkdir()
        mock_vasp({static.name: case})
    responses, store = run_flow(flow, tmp_path)
    (label,) = flow_labels(flow, responses)
    assert label.status == "failed" and "missing outputs: no vasprun.xml" in label.reason
    # then the exception (emmet's parser fails on an empty folder with a TypeError)
    expected = "[job raised NonRecoverableError: Unrecoverable error" if failure == "custodian" else "[job raised "
    assert expected in label.reason
    assert store.query_one({"uuid": convert.uuid}) is not None


def test_dead_vasp_job_still_gives_failed_label(mock_vasp, monkeypatch, tmp_path):
    """With failures raised (atomate2's behaviour) the job errors; OnMissing.NONE labels it."""
    record = reference_record(SI2)
    flow = label_flow([record], return_failures=False)
    mock_vasp({})  # no reference folder for this job: the fake run raises

    responses, _ = run_flow(flow, tmp_path)
    assert all_jobs(flow)[0].uuid not in responses
    (label,) = flow_labels(flow, responses)
    assert label.status == "failed" and "did not complete" in label.reason and all_jobs(flow)[0].uuid in label.reason


def test_fireworks_workflow_has_categories_and_the_label_waits_for_the_static_retries():
    from jobflow.managers.fireworks import flow_to_workflow

    flow = label_flow([reference_record(SI2)])
    workflow = flow_to_workflow(flow)
    specs = {fw.name: fw.spec for fw in workflow.fws}
    static, label = (specs[j.name] for j in all_jobs(flow))
    assert static["_category"] == "cpu" and label["_category"] == "cpu"
    # the label job takes a dead static as a failed label, but only once resume has no retry left for it
    assert label["_allow_fizzled_parents"] is False and label["_uq_waits_for_retries"] is True
    assert not static.get("_allow_fizzled_parents")


def test_empty_structure_list_is_refused():
    with pytest.raises(ValueError, match="no structures to label"):
        label_flow([])


@pytest.mark.slow
def test_distillation_flow_with_vasp_labels_and_an_unconverged_run(mock_vasp, tmp_path):
    """score (real CHGNet members) → threshold → VASP labels (mocked) → assemble."""
    from tests.conftest import flow_output
    from uq_flows.ensemble.jobs import EnsembleScoreMaker
    from uq_flows.flows.distillation import DistillationFlowMaker
    from uq_flows.labeling.jobs import AssembleMaker, LabelStageMaker, ThresholdMaker

    records = [reference_record(case) for case in (SI2, SI16, Y4O6)]
    mock_vasp({f"vasp static {r.formula} {r.id}": case for r, case in zip(records, (SI2, SI16, Y4O6))})
    flow = DistillationFlowMaker(
        score_maker=EnsembleScoreMaker(members=["chgnet-0.3.0", "chgnet-0.2.0"]),
        threshold_maker=ThresholdMaker(uc=0.0),  # everything to DFT
        label_maker=LabelStageMaker(dft_maker=VaspLabelMaker(), teacher_maker=None,
                                    assemble_maker=AssembleMaker(min_success_fraction=0.6)),
    ).make(records)
    store = new_store()
    run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, log=False, ensure_success=True)
    dataset = flow_output(store, flow)
    status = {label.id: label for label in dataset.labels}
    si2, si16, y4o6 = (status[r.id] for r in records)
    assert si2.ok and si2.energy == pytest.approx(REFERENCE_ENERGY[SI2], abs=1e-8) and si2.source == "vasp"
    assert si16.ok and si16.energy == pytest.approx(REFERENCE_ENERGY[SI16], abs=1e-8)
    assert y4o6.status == "failed" and "electronic SCF not converged" in y4o6.reason
    assert dataset.summary.success_fraction["dft"] == pytest.approx(2 / 3)
    assert all(label.U is not None for label in dataset.labels)


def test_label_command_without_vasp_says_how_to_configure(tmp_path):
    from tests.cli_helpers import run

    ase.io.write(tmp_path / "POSCAR", bulk("Si"), format="vasp")
    result = run("label", tmp_path / "POSCAR", "--model", "vasp", expect=2)
    assert "VASP executable" in result.stderr and "ATOMATE2_VASP_CMD" in result.stderr


def test_label_command_with_vasp(mock_vasp, monkeypatch, tmp_path):
    from atomate2 import SETTINGS

    from tests.cli_helpers import run_json

    monkeypatch.setattr(SETTINGS, "VASP_CMD", "true")  # an executable that exists; the run is mocked
    record = reference_record(SI2)
    mock_vasp({f"vasp static {record.formula} {record.id}": SI2})
    ase.io.write(tmp_path / "POSCAR", record.to_atoms(), format="vasp")
    result = run_json("label", tmp_path / "POSCAR", "--model", "vasp", "--workdir", tmp_path / "runs")
    (label,) = result["labels"]
    assert label["status"] == "ok" and label["source"] == "vasp" and label["id"] == record.id
    assert label["energy"] == pytest.approx(REFERENCE_ENERGY[SI2], abs=1e-8)
