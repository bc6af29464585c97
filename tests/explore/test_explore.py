"""Starting-set generators and MD exploration (EMT Cu: fast, real dynamics)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from uq_flows.errors import InputError
from uq_flows.explore.generators import dimers, short_range_pairs, starting_set, strained_rattled, surfaces
from uq_flows.explore.md import MDSettings, run_md, schedule
from uq_flows.screening import min_interatomic_distance


def test_generators_make_what_they_say():
    strained = strained_rattled("Cu", 3, max_atoms=16, max_strain=0.05, seed=1)
    assert len(strained) == 3 and all(len(a) <= 16 for a in strained)
    assert len({round(a.get_volume(), 6) for a in strained}) == 3
    pairs = dimers(["Cu", "Al"], distances=[1.0, 2.5])
    assert len(pairs) == 6 and pairs[0].get_distance(0, 1) == pytest.approx(1.0)
    (squeezed,) = short_range_pairs("Cu", 1, fraction=0.6, seed=0)
    nearest = 3.61 / np.sqrt(2)  # ASE's Cu lattice constant 3.61 Å
    assert min_interatomic_distance(squeezed) == pytest.approx(0.6 * nearest, rel=1e-6)
    assert all(a.pbc.all() and a.cell.lengths()[2] > 10 for a in surfaces("Cu"))
    again = starting_set(["Cu"], n=2, seed=3)
    assert [a.positions.tolist() for a in again] == [a.positions.tolist() for a in starting_set(["Cu"], n=2, seed=3)]
    with pytest.raises(InputError, match="unknown element"):
        starting_set(["Xx"])
    with pytest.raises(InputError, match="unknown generator"):
        starting_set(["Cu"], kinds=["melt"])


def _plane_heights(atoms: Atoms) -> np.ndarray:
    z = np.sort(atoms.positions[:, 2])
    return z[np.concatenate([[True], np.diff(z) > 1e-3])]


def _nearest_neighbour_bonds(atoms: Atoms, atom: int, cutoff: float) -> np.ndarray:
    first, vectors = neighbor_list("iD", atoms, cutoff)
    return vectors[first == atom]


# Interplanar spacings of the atomic planes in units of the cubic lattice constant a (pattern repeats
# from the bottom plane): fcc d(100) = a/2, d(110) = a/(2√2), d(111) = a/√3; bcc d(100) = a/2,
# d(110) = a/√2, d(111) = a/(2√3); diamond d(100) = a/4, d(110) = a/(2√2) and (111) bilayers
# a√3/12 apart, a√3/4 between bilayers.
@pytest.mark.parametrize("element, hkl, spacings", [
    ("Cu", (1, 0, 0), [1 / 2]), ("Cu", (1, 1, 0), [1 / (2 * np.sqrt(2))]), ("Cu", (1, 1, 1), [1 / np.sqrt(3)]),
    ("W", (1, 0, 0), [1 / 2]), ("W", (1, 1, 0), [1 / np.sqrt(2)]), ("W", (1, 1, 1), [1 / (2 * np.sqrt(3))]),
    ("Si", (1, 0, 0), [1 / 4]), ("Si", (1, 1, 0), [1 / (2 * np.sqrt(2))]),
    ("Si", (1, 1, 1), [np.sqrt(3) / 12, np.sqrt(3) / 4]),
])
def test_surfaces_are_the_labelled_planes(element, hkl, spacings):
    (slab,) = surfaces(element, [hkl], layers=7, max_atoms=64)
    crystal = bulk(element, cubic=True)
    a = crystal.cell[0, 0]
    assert slab.info["generator"] == f"surface {hkl}, 7 layers"
    heights = _plane_heights(slab)
    assert len(heights) == 7
    assert np.diff(heights) == pytest.approx(a * np.resize(spacings, 6), abs=1e-6)
    # A middle-plane atom sees the bulk's nearest neighbours with z along [hkl] of the cubic cell:
    # the bonds' components along the slab normal are those of the bulk bonds along hkl/|hkl|.
    shells = np.unique(np.round(neighbor_list("d", crystal, 1.1 * a), 4))
    cutoff = (shells[0] + shells[1]) / 2
    middle = int(np.flatnonzero(np.abs(slab.positions[:, 2] - heights[3]) < 1e-3)[0])
    along_normal = np.sort(_nearest_neighbour_bonds(slab, middle, cutoff)[:, 2])
    bulk_along_hkl = _nearest_neighbour_bonds(crystal, 0, cutoff) @ (np.array(hkl) / np.linalg.norm(hkl))
    assert len(along_normal) == len(bulk_along_hkl)
    assert any(np.allclose(along_normal, np.sort(sign * bulk_along_hkl), atol=1e-6) for sign in (1, -1))


def test_surfaces_stay_within_max_atoms():
    for element in ("Cu", "W", "Si", "Ti"):
        for slab in surfaces(element, layers=6, max_atoms=8):
            layers = int(slab.info["generator"].split(", ")[-1].split()[0])
            assert len(slab) <= 8 and len(_plane_heights(slab)) == layers >= 2
    assert max(len(a) for a in starting_set(["Si"], n=2, max_atoms=6, kinds=["surfaces"])) <= 6
    with pytest.raises(InputError, match="Miller indices"):
        surfaces("Cu", [(0, 0, 0)])


def test_schedule_is_piecewise_linear():
    assert schedule([300], 50, 100) == 300
    assert schedule([300, 900], 50, 100) == pytest.approx(600)
    assert schedule([0, 10, 0], 25, 100) == pytest.approx(5)


def test_nvt_follows_the_temperature_ramp_and_samples_snapshots():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    result = run_md(atoms, EMT(), MDSettings(steps=400, snapshot_every=100, temperatures=[100, 1500], seed=2))
    assert result.stable and result.steps_done == 400 and len(result.snapshots) == 4
    temperatures = [s.info["md_temperature"] for s in result.snapshots]
    assert temperatures[-1] > 3 * temperatures[0]
    assert [s.info["md_step"] for s in result.snapshots] == [100, 200, 300, 400]


def test_npt_compresses_under_pressure():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    result = run_md(atoms, EMT(), MDSettings(ensemble="npt", steps=300, snapshot_every=300, pressures=[20.0]))
    assert result.snapshots[-1].get_volume() < 0.98 * atoms.get_volume()
    with pytest.raises(InputError, match="periodic"):
        run_md(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), EMT(), MDSettings(ensemble="npt"))


class Collapse(Calculator):
    """Pulls every atom towards the first: a potential that makes MD unstable."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pull = self.atoms.positions[0] - self.atoms.positions
        self.results = {"energy": 0.5 * float(np.sum(pull**2)), "forces": 50.0 * pull}


def test_unstable_run_stops_with_a_reason():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    result = run_md(atoms, Collapse(), MDSettings(steps=2000, snapshot_every=5, check_every=5))
    assert not result.stable and "apart (minimum 0.4 Å)" in result.reason and result.steps_done < 2000
