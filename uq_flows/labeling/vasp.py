"""VASP single points as DFT labels: paper defaults, k-mesh and TaskDoc → Label (METHODS §9).

Engine-free part of the VASP labeller (pymatgen and emmet only; the atomate2/jobflow Makers
are in ``vasp_jobs``). The defaults reproduce the DFT settings of papers 000 and 001: PBE with
the standard VASP PAW sets, ENCUT 520 eV, EDIFF 1e-6 eV and a k-mesh of resolution
2π × 0.03 Å⁻¹, as a single point with forces and the full stress tensor.

Failures are data (DESIGN.md, "Queues and resume"): an unconverged SCF, a run that did not
complete, missing outputs or a job that raised all become a failed ``Label`` with a precise
reason, never an exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ase.units import GPa
from pydantic import BaseModel, Field

from uq_flows.labeling.kpoints import PAPER_KPOINT_SPACING, kpoint_mesh
from uq_flows.labeling.labels import DFT, Label
from uq_flows.records import jsonable

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure
    from pymatgen.io.vasp import Kpoints

    from uq_flows.records import StructureRecord

SOURCE = "vasp"

#: k-point resolution of papers 000 and 001: 2π × 0.03 Å⁻¹ (|b_i| include the 2π).

#: INCAR of the paper single points, applied on top of atomate2's base VASP set (which keeps
#: PREC = Accurate, ALGO = Fast, ISPIN = 2 with its default MAGMOMs, LASPH, LORBIT = 11 and the
#: PBE_54 POTCAR choices). ``None`` removes a tag the base set would write.
PAPER_INCAR: dict[str, Any] = {
    # PBE (papers 000, 001). atomate2's base set uses PBEsol (GGA = PS), so this must be explicit.
    "GGA": "PE",
    # Plain PBE as in the papers: no MP-style +U on transition-metal oxides and fluorides
    # (atomate2's base set has LDAU = True; pass {"LDAU": True} to get MP-compatible GGA+U).
    "LDAU": False,
    "ENCUT": 520,  # eV, papers 000 and 001
    "EDIFF": 1e-6,  # eV, papers 000 and 001
    # Gaussian smearing with a small width is the VASP-recommended choice when it is not known
    # whether a structure is a metal or an insulator, and it gives variational, force-consistent
    # energies for both. atomate2's static set uses the tetrahedron method (ISMEAR = -5), whose
    # forces and stresses are not consistent with the energy in metals (W, MoNbTaW here) and
    # which needs at least 4 k-points; so labels for force fitting use ISMEAR = 0, SIGMA = 0.05.
    "ISMEAR": 0,
    "SIGMA": 0.05,  # eV
    # One self-consistent single point. IBRION and ISIF are written explicitly (pymatgen would
    # drop them for NSW = 0): ISIF = 2 makes VASP compute the full stress tensor without moving
    # ions or cell (ISIF = 0, VASP's default for hybrids, gives no stress).
    "NSW": 0,
    "IBRION": -1,
    "ISIF": 2,
    "NELM": 200,  # as atomate2/MP; custodian's handlers act when it is reached
    "LREAL": False,  # reciprocal-space projection: accurate forces in small cells
    # Labels need energies, forces and stress only: no charge density, wavefunctions,
    # all-electron charges or local potential files (they would also bloat the data store).
    "LCHARG": False,
    "LWAVE": False,
    "LAECHG": False,
    "LVTOT": False,
    "LMIXTAU": None,  # meta-GGA only; inherited from atomate2's (r2SCAN-derived) base set
}

_STRESS_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])  # xx, yy, zz, yz, xz, xy


def kpoints_for_spacing(
    structure: Structure | Atoms, spacing: float = PAPER_KPOINT_SPACING, gamma_centered: bool = True
) -> Kpoints:
    """KPOINTS with the mesh of :func:`kpoint_mesh` for ``structure`` (pymatgen or ASE).

    Γ-centred by default. For odd N_i it is the same grid as Monkhorst–Pack; for even N_i
    the Monkhorst–Pack grid is shifted by half a step, which breaks the symmetry of hexagonal
    cells and misses Γ. Γ-centred grids keep the full lattice symmetry, converge at the same
    rate and are what VASP recommends, so they are the default here;
    ``gamma_centered=False`` writes the original Monkhorst–Pack scheme named in the papers.
    """
    from pymatgen.io.vasp import Kpoints

    cell = structure.lattice.matrix if hasattr(structure, "lattice") else structure.cell.array
    mesh = kpoint_mesh(cell, spacing)
    make = Kpoints.gamma_automatic if gamma_centered else Kpoints.monkhorst_automatic
    kpoints = make(kpts=mesh)
    kpoints.comment = f"uq-flows: k-point spacing {spacing:.6f} 1/A (incl. 2pi), mesh {mesh[0]}x{mesh[1]}x{mesh[2]}"
    return kpoints


def record_to_structure(record: StructureRecord) -> Structure:
    """The pymatgen ``Structure`` of a record, atoms in the record's order, positions unwrapped."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(record.cell), record.numbers, record.positions, coords_are_cartesian=True)


def stress_kbar_to_ase(stress) -> np.ndarray:
    """VASP's 3×3 stress in kBar (positive = compressed) → ASE's eV/Å³ (positive = tensile)."""
    return -0.1 * GPa * np.asarray(stress, dtype=float).reshape(3, 3)


class VaspRunFailure(BaseModel):
    """What a VASP job that raised left behind; stands in for its TaskDoc (see ``vasp_jobs``)."""

    state: Literal["failed"] = "failed"
    reason: str = Field(description="Diagnosis of the run folder, then the exception.")
    error: str = Field(description="Exception type and message, e.g. custodian's NonRecoverableError.")
    dir_name: str | None = None
    task_label: str | None = None
    problems: list[str] = Field(default_factory=list, description="What diagnose_vasp_outputs found.")
    custodian_corrections: list[dict] = Field(default_factory=list)

    @classmethod
    def from_exception(cls, error: BaseException, directory: str | Path, task_label: str | None = None) -> VaspRunFailure:
        directory = Path(directory)
        problems = diagnose_vasp_outputs(directory)
        text = f"{type(error).__name__}: {_shorten(str(error))}"
        reason = "; ".join(problems) if problems else "VASP outputs look complete and converged"
        return cls(
            reason=f"{reason} [job raised {text}]", error=text, dir_name=str(directory.resolve()),
            task_label=task_label, problems=problems, custodian_corrections=_custodian_log(directory),
        )


def diagnose_vasp_outputs(directory: str | Path) -> list[str]:
    """Why the VASP run in ``directory`` cannot give a label, from its files (empty: no problem found).

    Checks, in order: vasprun.xml present; vasprun.xml complete and readable (a crashed or killed
    run leaves it truncated); electronic SCF converged (fewer than NELM steps); OUTCAR and
    CONTCAR present (the TaskDoc parser and custodian's VaspFilesValidator need them).
    """
    from pymatgen.io.vasp import Vasprun

    directory = Path(directory)
    vasprun_path = _find(directory, "vasprun.xml")
    if vasprun_path is None:
        return [f"missing outputs: no vasprun.xml in {directory} (VASP did not run or crashed before writing it)"]
    problems = []
    try:
        vasprun = Vasprun(
            str(vasprun_path), parse_dos=False, parse_eigen=False, parse_projected_eigen=False,
            parse_potcar_file=False,
        )
    except Exception as error:  # noqa: BLE001 - any parse error means an unusable file
        problems.append(f"VASP did not complete: {vasprun_path.name} is truncated or unreadable "
                        f"({type(error).__name__}: {_shorten(str(error), 200)})")
    else:
        steps = [step.get("electronic_steps", []) for step in vasprun.ionic_steps]
        nelm = int(vasprun.parameters.get("NELM", 60))
        ediff = float(vasprun.parameters.get("EDIFF", 1e-4))
        if not vasprun.ionic_steps:
            problems.append("VASP did not complete: vasprun.xml has no ionic step")
        elif not vasprun.converged_electronic:
            problems.append(_scf_message(steps[-1], nelm, ediff))
    missing = [name for name in ("OUTCAR", "CONTCAR") if _find(directory, name) is None]
    if missing:
        problems.append("missing outputs: " + ", ".join(missing))
    return problems


def label_from_task_doc(task_doc, structure_id: str, structure: Atoms | None = None, **fields) -> Label:
    """The label of one VASP single point from its atomate2 output.

    ``task_doc`` is an emmet ``TaskDoc`` (or its dict), a :class:`VaspRunFailure` or ``None``.
    ``ok`` labels have the final total (free, force-consistent) energy in eV, forces in eV/Å and
    the stress in eV/Å³ with ASE's sign, Voigt order xx, yy, zz, yz, xz, xy. With ``structure``
    (the structure that was submitted), the atoms are matched to VASP's (pymatgen sorts species)
    and forces are returned in the submitted order; a mismatch fails the label. Otherwise the
    reason names the failure: electronic SCF not converged (NELM reached), VASP did not complete,
    missing outputs, or task state failed. ``fields`` go to the Label (U, iteration, loop,
    provenance additions).
    """
    extra = fields.pop("provenance", {}) or {}

    def failed(reason: str, provenance: dict | None = None) -> Label:
        return Label.failed(structure_id, DFT, SOURCE, reason, provenance={**(provenance or {}), **extra}, **fields)

    if task_doc is None:
        return failed("VASP job did not complete: no task document")
    task_doc = _as_document(task_doc)
    if isinstance(task_doc, VaspRunFailure):
        return failed(task_doc.reason, {"code": SOURCE, "error": task_doc.error, "dir_name": task_doc.dir_name,
                                        "task_label": task_doc.task_label,
                                        "custodian_corrections": task_doc.custodian_corrections})
    provenance = vasp_provenance(task_doc)
    calcs = task_doc.calcs_reversed or []
    calc = calcs[0] if calcs else None
    if calc is None or calc.output is None or task_doc.output is None:
        return failed("missing outputs: the task document has no calculation output", provenance)
    ionic = calc.output.ionic_steps or []
    parameters = (calc.input.parameters if calc.input else None) or {}
    if ionic:
        nelm, ediff = int(parameters.get("NELM", 60)), float(parameters.get("EDIFF", 1e-4))
        electronic = [step.model_dump() if hasattr(step, "model_dump") else dict(step)
                      for step in (ionic[-1].electronic_steps or [])]
        if len(electronic) >= nelm:
            return failed(_scf_message(electronic, nelm, ediff), provenance)
    if _state(calc.has_vasp_completed) not in (None, "successful"):
        return failed("VASP did not complete: the run is not finished or not converged "
                      "(emmet has_vasp_completed = failed)", provenance)
    if _state(task_doc.state) != "successful":
        errors = "; ".join(task_doc.analysis.errors or []) if task_doc.analysis else ""
        return failed(f"task state {_state(task_doc.state)}" + (f": {errors}" if errors else ""), provenance)
    energy, forces, stress = task_doc.output.energy, task_doc.output.forces, task_doc.output.stress
    if energy is None or forces is None:
        missing = "energy" if energy is None else "forces"
        return failed(f"missing outputs: the task document has no {missing}", provenance)
    forces = np.asarray(forces, dtype=float)
    if structure is not None:
        vasp_structure = calc.input.structure if calc.input and calc.input.structure else task_doc.structure
        order, problem = match_atoms(structure, vasp_structure)
        if problem:
            return failed(f"VASP structure does not match structure {structure_id}: {problem}", provenance)
        forces = forces[order]
    stress = None if stress is None else stress_kbar_to_ase(stress)
    return Label.from_results(structure_id, DFT, SOURCE, energy, forces, stress,
                              provenance={**provenance, **extra}, **fields)


def match_atoms(atoms: Atoms, structure: Structure, tolerance: float = 1e-3) -> tuple[np.ndarray, str | None]:
    """For each atom of ``atoms``, the index of the same atom in ``structure`` (within ``tolerance`` Å).

    pymatgen input sets sort sites by electronegativity, so VASP's atom order can differ from
    the submitted one. Returns (order, None), or (identity, the problem) when cells, species or
    positions do not correspond one to one.
    """
    n = len(atoms)
    identity = np.arange(n)
    if len(structure) != n:
        return identity, f"{len(structure)} atoms in VASP, {n} submitted"
    cell, lattice = np.asarray(atoms.cell.array), structure.lattice
    if not np.allclose(cell, lattice.matrix, atol=tolerance):
        return identity, "the cells differ"
    distances = lattice.get_all_distances(lattice.get_fractional_coords(atoms.positions), structure.frac_coords)
    order = np.argmin(distances, axis=1)
    numbers = np.array([site.specie.Z for site in structure])
    if len(set(order.tolist())) != n or distances[identity, order].max() > tolerance:
        return identity, f"positions differ by up to {distances[identity, order].max():.3g} Å"
    if not np.array_equal(numbers[order], atoms.numbers):
        return identity, "the species differ"
    return order, None


def vasp_provenance(task_doc) -> dict:
    """Code, version, INCAR and KPOINTS used, POTCAR symbols, custodian corrections, folder."""
    calcs = task_doc.calcs_reversed or []
    calc = calcs[0] if calcs else None
    inputs = calc.input if calc is not None else None
    orig = task_doc.orig_inputs
    corrections = []
    for run in task_doc.custodian or []:
        for correction in getattr(run, "corrections", None) or []:
            corrections.append(correction if isinstance(correction, dict) else jsonable(correction))
    provenance = {
        "code": SOURCE,
        "vasp_version": task_doc.vasp_version or (calc.vasp_version if calc else None),
        "calc_type": _state(task_doc.calc_type),
        "incar": _plain_incar(inputs.incar if inputs else None),
        "incar_requested": _plain_incar(orig.incar if orig else None),
        "kpoints": _kpoints_summary(inputs.kpoints if inputs else None),
        "potcar_symbols": list(inputs.potcar) if inputs and inputs.potcar else None,
        "custodian_corrections": jsonable(corrections),
        "dir_name": task_doc.dir_name,
        "task_label": task_doc.task_label,
        "completed_at": str(task_doc.completed_at) if task_doc.completed_at else None,
    }
    return jsonable(provenance)


def _as_document(task_doc):
    """TaskDoc or VaspRunFailure from whatever a job store handed back."""
    if isinstance(task_doc, dict):
        if task_doc.get("@class") == VaspRunFailure.__name__ or ("error" in task_doc and "calcs_reversed" not in task_doc):
            return VaspRunFailure(**{k: v for k, v in task_doc.items() if not k.startswith("@")})
        from emmet.core.tasks import TaskDoc

        return TaskDoc(**{k: v for k, v in task_doc.items() if not k.startswith("@")})
    return task_doc


def _scf_message(electronic_steps: list[dict], nelm: int, ediff: float) -> str:
    message = f"electronic SCF not converged: NELM = {nelm} electronic steps reached"
    energies = [step.get("e_fr_energy") for step in electronic_steps if step.get("e_fr_energy") is not None]
    if len(energies) >= 2:
        message += f" (last |dE| = {abs(energies[-1] - energies[-2]):.2e} eV > EDIFF = {ediff:g} eV)"
    return message


def _state(value) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _plain_incar(incar) -> dict | None:
    if incar is None:
        return None
    return jsonable({k: v for k, v in dict(incar).items() if not str(k).startswith("@")})


def _kpoints_summary(kpoints) -> dict | None:
    if kpoints is None:
        return None
    if isinstance(kpoints, dict):
        from pymatgen.io.vasp import Kpoints

        kpoints = Kpoints.from_dict(kpoints)
    summary = {"style": getattr(kpoints.style, "name", str(kpoints.style))}
    if kpoints.num_kpts == 0 and len(kpoints.kpts) == 1:
        summary["mesh"] = [int(n) for n in kpoints.kpts[0]]
        summary["shift"] = [float(s) for s in kpoints.kpts_shift]
    else:
        summary["n_kpoints"] = len(kpoints.kpts)
    return summary


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (name, f"{name}.gz", f"{name}.GZ", f"{name}.bz2", f"{name}.xz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _custodian_log(directory: Path) -> list[dict]:
    """Errors and actions custodian recorded in custodian.json, if the run got that far."""
    path = _find(directory, "custodian.json")
    if path is None:
        return []
    try:
        from monty.serialization import loadfn

        runs = loadfn(str(path), cls=None)
    except Exception:  # noqa: BLE001 - an unreadable log is not worth a second failure
        return []
    corrections = []
    for run in runs if isinstance(runs, list) else []:
        for correction in run.get("corrections", []) if isinstance(run, dict) else []:
            corrections.append(jsonable({"errors": correction.get("errors"), "actions": correction.get("actions")}))
    return corrections


def _shorten(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
