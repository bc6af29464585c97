"""Reference calculators for loop tests (importable as ase:tests.flows.calculators:NAME)."""

from ase.calculators.emt import EMT


class FailsOnOddCells(EMT):
    """EMT, but every structure with an odd number of atoms (a vacancy cell) fails for good."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if len(atoms) % 2:
            raise RuntimeError(f"reference code crashed on {atoms.get_chemical_formula()}")
        super().calculate(atoms, properties, system_changes or ["positions"])
