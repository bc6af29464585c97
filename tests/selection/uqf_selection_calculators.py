"""ASE calculators for selection tests, importable as ase:uqf_selection_calculators:NAME."""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT


class _ScaledEMT(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    factor = 1.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self._emt
        self.results = {
            "energy": self.factor * work.get_potential_energy(),
            "free_energy": self.factor * work.get_potential_energy(),
            "forces": self.factor * work.get_forces(),
            "stress": self.factor * np.asarray(work.get_stress()),
        }


class EMT105(_ScaledEMT):
    """EMT with every output times 1.05: a committee member that disagrees mildly."""

    factor = 1.05


class Fails(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("this member always fails")
