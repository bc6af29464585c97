"""A slow stand-in reference labeller for the kill/resume loop test.

``ase:tests.flows.slow_calculators:SlowEMT`` is EMT that sleeps ``UQ_TEST_SLOW_SECONDS``
(default 4) before each new structure, and appends ``{"event": "start"|"done", "pid",
"formula", "positions_sum"}`` lines to the JSON-lines file ``UQ_TEST_LABEL_EFFECTS`` (if
set), so a test can count how often a label was started and how often it was finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
from ase.calculators.emt import EMT


def _key(atoms) -> str:
    """The structure's identity: positions and cell, rounded."""
    data = np.concatenate([np.round(atoms.positions, 5).ravel(), np.round(np.asarray(atoms.cell), 5).ravel()])
    return hashlib.sha1((data + 0.0).tobytes()).hexdigest()[:16]


def _record(event: str, atoms) -> None:
    path = os.environ.get("UQ_TEST_LABEL_EFFECTS")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "formula": atoms.get_chemical_formula(),
                       "key": _key(atoms), "n": len(atoms)})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class SlowEMT(EMT):
    """EMT, slowed down by a sleep before every new calculation (a stand-in for a DFT run)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        _record("start", atoms)
        time.sleep(float(os.environ.get("UQ_TEST_SLOW_SECONDS", "4")))
        super().calculate(atoms, properties, system_changes or ["positions"])
        _record("done", atoms)


class StretchedEMT(EMT):
    """EMT with energies and forces scaled by 1.1: a cheap second ensemble member that disagrees with EMT
    in proportion to the forces (``ase:tests.flows.slow_calculators:StretchedEMT``)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes or ["positions"])
        self.results = {key: value * 1.1 for key, value in self.results.items()}
