"""Elemental reference energies for QBC's formation-energy pre-filter (MP-ALOE, paper 003; METHODS §6).

MP-ALOE (paper 003, Methods "Query By Committee"; the limits are in the authors' ``qbc.py``,
METHODS §6) discards a candidate as unphysical when the median over committee models of its
formation energy exceeds 0.25 eV/atom (``uq_flows.selection.qbc.select_by_committee``),

    E_f = (E − Σ_el n_el ε_el) / N,

with ε_el the energy per atom of element el in its ground-state crystal. Here ε_el comes from
the loop's teacher: ASE's reference crystal of the element (``ase.data.reference_states``:
fcc, bcc, hcp, diamond, sc), positions and cell relaxed with the teacher
(``FrechetCellFilter`` + BFGS), energy per atom of the relaxed cell. Elements whose ASE
reference state is a molecule or atom (H, N, O, F, He), a structure ASE's ``bulk`` cannot
build as it is (Mn, P, S, Cl, Ga, B, As, Sb, Bi, Sn, Pu, ...), or has none, are refused: give
``elemental_references`` in the loop's ``select.qbc_config`` for them. Se and Te are refused
too: ASE lists their trigonal chain crystals as "hcp", which ``bulk`` builds as a two-atom hcp
cell. C is built as diamond (ASE's reference), ~0.1 eV/atom above graphite in PBE, which
makes its reference slightly high and the pre-filter slightly lenient for carbon.

Energy scale: in the loop the QBC committee is the ACE ensemble, fitted on labels on the DFT
scale: teacher energies shifted per element by the loop's energy alignment μ_el
(``uq_flows.labeling.alignment``), E_ACE ≈ E_teacher + Σ_el n_el μ_el. The references for ACE
predictions are therefore ε_el + μ_el (``shifted_references``), so that E_f of an ACE
prediction equals the teacher's formation energy. A committee of teachers (uMLIPs) takes ε_el
as they are.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import atomic_numbers, reference_states
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from pydantic import BaseModel, Field

from uq_flows.ensemble.predict import _quiet_known_warnings
from uq_flows.errors import InputError, MemberError
from uq_flows.reference_crystals import ground_state

logger = logging.getLogger(__name__)

DEFAULT_FMAX = 0.01  # eV/Å on atoms; the filter's cell forces are virial components / N (eV)
DEFAULT_MAX_STEPS = 200
LATTICE_CHANGE_NOTE = 0.10  # relaxed a this far from experiment is worth a note
# atoms in the conventional cubic cell: a = (n · V_atom)^(1/3)
ATOMS_PER_CUBIC_CELL = {"sc": 1, "bcc": 2, "fcc": 4, "diamond": 8}
BUILDABLE = (*ATOMS_PER_CUBIC_CELL, "hcp")
# ASE lists these as "hcp", but their ground states are trigonal chains (3 atoms per cell)
NOT_HCP = frozenset({"Se", "Te"})


class ElementalReference(BaseModel):
    """One element's reference crystal relaxed with a calculator."""

    symbol: str
    structure: str = Field(description="ASE reference-state symmetry: fcc, bcc, hcp, diamond or sc.")
    n_atoms: int = Field(description="Atoms in the relaxed (primitive) cell.")
    energy_per_atom: float = Field(description="eV/atom of the relaxed cell.")
    volume_per_atom: float = Field(description="Å³/atom of the relaxed cell.")
    a: float = Field(description="Lattice constant after relaxation (Å): conventional cubic a, or hexagonal a.")
    c: float | None = Field(None, description="hcp: c after relaxation (Å); None for cubic crystals.")
    initial_a: float = Field(description="ASE's experimental lattice constant the relaxation started from (Å).")
    converged: bool = Field(description="Largest atom/cell force below fmax within max_steps.")
    steps: int
    fmax: float


def reference_problem(symbol: str) -> str | None:
    """Why no reference crystal of ``symbol`` can be built and relaxed here, or None."""
    if symbol not in atomic_numbers or symbol == "X":
        return f"unknown element {symbol!r}"
    state = reference_states[atomic_numbers[symbol]]
    symmetry = None if state is None else state.get("symmetry")
    if symmetry in BUILDABLE and symbol not in NOT_HCP:
        return None
    what = (
        "no reference state" if symmetry is None
        else f"a {symmetry} reference state (a molecule or atom)" if symmetry in ("diatom", "atom")
        else f"a {symmetry} reference state ASE's bulk() does not build as the real crystal"
    )
    return (
        f"cannot compute the elemental reference energy of {symbol}: ASE gives {what}; "
        f"give elemental_references (eV/atom for {symbol}) in the loop's select.qbc_config"
    )


def check_reference_elements(elements: Sequence[str]) -> list[str]:
    """The distinct elements in order; InputError naming every one without a buildable reference crystal."""
    if isinstance(elements, str) or not elements:
        raise InputError(f"elements must be a non-empty list of symbols, got {elements!r}")
    unique = list(dict.fromkeys(str(e) for e in elements))
    problems = [p for p in (reference_problem(e) for e in unique) if p]
    if problems:
        raise InputError("; ".join(problems))
    return unique


def check_relaxation_settings(fmax: float, max_steps: int) -> None:
    """InputError unless fmax (eV/Å) is positive and finite and max_steps a positive integer."""
    if isinstance(fmax, bool) or not isinstance(fmax, (int, float)) or not (fmax > 0 and math.isfinite(fmax)):
        raise InputError(f"fmax must be a positive number (eV/Å), got {fmax!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise InputError(f"max_steps must be a positive integer, got {max_steps!r}")


def relax_reference_crystal(
    symbol: str, calculator: BaseCalculator, fmax: float = DEFAULT_FMAX, max_steps: int = DEFAULT_MAX_STEPS
) -> ElementalReference:
    """Relax the positions and cell of ``symbol``'s primitive reference crystal with ``calculator``."""
    check_reference_elements([symbol])
    check_relaxation_settings(fmax, max_steps)
    structure = reference_states[atomic_numbers[symbol]]["symmetry"]
    atoms: Atoms = ground_state(symbol, cubic=False)
    initial_a = float(reference_states[atomic_numbers[symbol]]["a"])
    if hasattr(calculator, "reset"):
        calculator.reset()
    atoms.calc = calculator
    try:
        with warnings.catch_warnings():
            _quiet_known_warnings()
            optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
            converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
            energy = float(atoms.get_potential_energy()) / len(atoms)
    finally:
        atoms.calc = None
    if not math.isfinite(energy):
        raise MemberError(f"the calculator gave a non-finite energy for the relaxed {symbol} {structure} cell")
    volume = atoms.get_volume() / len(atoms)
    lengths = atoms.cell.lengths()
    if structure == "hcp":
        a, c = float((lengths[0] + lengths[1]) / 2), float(lengths[2])
    else:
        a, c = float((ATOMS_PER_CUBIC_CELL[structure] * volume) ** (1 / 3)), None
    if not converged:
        logger.warning("%s %s reference not converged to fmax %g in %d steps", symbol, structure, fmax, max_steps)
    return ElementalReference(
        symbol=symbol, structure=structure, n_atoms=len(atoms), energy_per_atom=energy, volume_per_atom=float(volume),
        a=a, c=c, initial_a=initial_a, converged=converged, steps=int(optimizer.nsteps), fmax=float(fmax),
    )


def relax_reference_crystals(
    elements: Sequence[str], calculator: BaseCalculator, fmax: float = DEFAULT_FMAX, max_steps: int = DEFAULT_MAX_STEPS
) -> list[ElementalReference]:
    """``relax_reference_crystal`` for every distinct element; all elements are checked before any relaxation."""
    symbols = check_reference_elements(elements)
    check_relaxation_settings(fmax, max_steps)
    return [relax_reference_crystal(e, calculator, fmax, max_steps) for e in symbols]


def reference_energies(references: Sequence[ElementalReference]) -> dict[str, float]:
    """{symbol: eV/atom}: the form ``QBCConfig.elemental_references`` takes (one table for every model)."""
    return {r.symbol: r.energy_per_atom for r in references}


def elemental_reference_energies(
    elements: Sequence[str], calculator: BaseCalculator, fmax: float = DEFAULT_FMAX, max_steps: int = DEFAULT_MAX_STEPS
) -> dict[str, float]:
    """{symbol: eV/atom} of the relaxed reference crystals (``relax_reference_crystals``), for
    ``QBCConfig.elemental_references``; MP-ALOE's formation-energy pre-filter (paper 003)."""
    return reference_energies(relax_reference_crystals(elements, calculator, fmax, max_steps))


def reference_notes(
    references: Sequence[ElementalReference], max_lattice_change: float = LATTICE_CHANGE_NOTE
) -> list[str]:
    """What a user should check: relaxations that did not converge, and lattice constants that moved
    more than ``max_lattice_change`` (fraction) from ASE's experimental value (a model poor for that element)."""
    notes = []
    for r in references:
        if not r.converged:
            notes.append(f"{r.symbol} {r.structure}: relaxation not converged to fmax {r.fmax:g} in {r.steps} steps")
        change = r.a / r.initial_a - 1
        if abs(change) > max_lattice_change:
            notes.append(f"{r.symbol} {r.structure}: relaxed a = {r.a:.3f} Å is {change:+.0%} from experiment "
                         f"({r.initial_a:g} Å); check the reference energy {r.energy_per_atom:.3f} eV/atom")
    return notes


def shifted_references(references: Mapping[str, float], shifts: Mapping[str, float] | None) -> dict[str, float]:
    """Teacher references ε_el moved to the scale of labels aligned by μ_el: {el: ε_el + μ_el}.

    ``shifts`` are ``EnergyAlignment.shifts`` (eV/atom) of a usable alignment; None means the
    labels are teacher energies (no alignment) and the references are returned unchanged.
    Every element needs a shift: a missing one would leave that reference on the wrong scale.
    """
    table = {}
    for symbol, value in dict(references).items():
        table[symbol] = _finite(value, f"elemental reference of {symbol}")
    if shifts is None:
        return table
    missing = sorted(set(table) - set(shifts))
    if missing:
        raise InputError(
            f"no energy-alignment shift for {', '.join(missing)}: the references cannot be put on the labels' scale; "
            "give elemental_references in the loop's select.qbc_config"
        )
    return {symbol: value + _finite(shifts[symbol], f"energy-alignment shift of {symbol}")
            for symbol, value in table.items()}


def _finite(value, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number (eV/atom), got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{what} must be finite, got {value}")
    return value
