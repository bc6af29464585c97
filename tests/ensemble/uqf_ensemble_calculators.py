"""Small ASE calculators that misbehave on purpose, loaded as ``ase:uqf_ensemble_calculators:NAME``.

The conftest puts this folder on sys.path so the import path works in any pytest import mode.
"""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT


class NaNForces(Calculator):
    """Finite energy, NaN force on atom 1 (and atom 3 when there is one)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(self.atoms), 3))
        forces[1 : 4 : 2] = np.nan
        self.results = {"energy": -1.0, "forces": forces}


class NaNEnergy(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float("inf"), "forces": np.zeros((len(self.atoms), 3))}


class FailsOnCopper(EMT):
    """EMT, but raises for any structure containing Cu (to mix failures into a batch)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if 29 in atoms.numbers:
            raise RuntimeError("boom: copper is not allowed here")
        super().calculate(atoms, properties, system_changes)


class NoStress(EMT):
    """EMT without stress."""

    implemented_properties = ["energy", "forces"]


class WrongShape(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms) + 1, 3))}


class ScaledEMT(EMT):
    """EMT with a constructor argument (tests MemberSpec.kwargs)."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {key: value * self.scale for key, value in self.results.items()}


def make_emt():
    """A zero-argument factory."""
    return EMT()


def not_a_calculator():
    return {"energy": 0.0}


class BrokenInit(Calculator):
    """Fails while loading, like a model whose weights are missing."""

    def __init__(self, **kwargs):
        raise OSError("weights file not found")
