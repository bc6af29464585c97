"""Elements' reference crystals as ASE knows them (``ase.data.reference_states``).

Shared by the structure generators (``explore.generators``) and the elemental reference
energies of QBC's pre-filter (``selection.references``).
"""

from __future__ import annotations

from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, reference_states

from uq_flows.errors import InputError

CRYSTALS = ("fcc", "bcc", "hcp", "diamond", "sc")


def ground_state(element: str, cubic: bool = True) -> Atoms:
    """ASE's reference crystal of ``element`` (fcc, bcc, hcp, diamond, sc); cubic cell unless hcp."""
    if element not in atomic_numbers:
        raise InputError(f"unknown element {element!r}")
    state = reference_states[atomic_numbers[element]]
    if state is None or state.get("symmetry") not in CRYSTALS:
        raise InputError(f"{element} has no simple reference crystal in ASE; give structures instead")
    use_cubic = cubic and state["symmetry"] != "hcp"
    return bulk(element, cubic=use_cubic)
