"""Reference calculators for loop tests (importable as ase:tests.flows.calculators:NAME)."""

from ase.calculators.emt import EMT


class FailsOnOddCells(EMT):
    """EMT, but every structure with an odd number of atoms (a vacancy cell) fails for good."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if len(atoms) % 2:
            raise RuntimeError(f"reference code crashed on {atoms.get_chemical_formula()}")
        super().calculate(atoms, properties, system_changes or ["positions"])


class BreakableEMT(EMT):
    """EMT that fails on odd-atom cells while $UQ_TEST_BREAK is set, and logs every call.

    Each successful or failed calculation appends "<formula> <n_atoms> <ok|failed>" and a
    position hash to $UQ_TEST_CALLS, so tests can count how often a structure was labelled.
    """

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        import hashlib
        import os

        key = hashlib.sha256(atoms.positions.round(6).tobytes()).hexdigest()[:16]
        broken = bool(os.environ.get("UQ_TEST_BREAK")) and len(atoms) % 2 == 1
        with open(os.environ["UQ_TEST_CALLS"], "a") as log:
            log.write(f"{key} {'failed' if broken else 'ok'}\n")
        if broken:
            raise RuntimeError("reference code broken (UQ_TEST_BREAK)")
        super().calculate(atoms, properties, system_changes or ["positions"])
