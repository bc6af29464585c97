"""Starting structures for an element set: strained and rattled supercells, vacancies,
surfaces, dimers and short-range pairs (the kinds of configurations paper 001's W set and
paper 000's Cu sets contain). Every generator is deterministic under its seed and tags each
structure with ``info["generator"]`` saying how it was made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.build import surface
from ase.data import atomic_numbers, covalent_radii

from uq_flows.errors import InputError
from uq_flows.reference_crystals import ground_state


def _tag(atoms: Atoms, text: str) -> Atoms:
    atoms.info["generator"] = text
    return atoms


def supercell(atoms: Atoms, max_atoms: int) -> Atoms:
    """The repetition with the most atoms ≤ ``max_atoms`` (at least the cell itself),
    the most nearly cubic among equals (shortest longest edge)."""
    limit = max(1, max_atoms // len(atoms))
    lengths = atoms.cell.lengths()
    best = min(
        ((a, b, c) for a in range(1, limit + 1) for b in range(1, limit + 1) for c in range(1, limit + 1)
         if a * b * c <= limit),
        key=lambda r: (-r[0] * r[1] * r[2], max(r * lengths)),
    )
    return atoms.repeat(best)


def strained_rattled(
    element: str, n: int, max_atoms: int = 16, max_strain: float = 0.05, rattle: float = 0.05, seed: int = 0
) -> list[Atoms]:
    """``n`` supercells under random symmetric strains (|ε| ≤ max_strain) and rattled (Å)."""
    rng = np.random.default_rng(seed)
    base = supercell(ground_state(element), max_atoms)
    out = []
    for k in range(n):
        e = rng.uniform(-max_strain, max_strain, 6)
        strain = np.array([[e[0], e[5] / 2, e[4] / 2], [e[5] / 2, e[1], e[3] / 2], [e[4] / 2, e[3] / 2, e[2]]])
        atoms = base.copy()
        atoms.set_cell(base.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        out.append(_tag(atoms, f"strained-rattled {k}: strain ≤ {max_strain:g}, rattle {rattle:g} Å"))
    return out


def vacancies(element: str, n: int, max_atoms: int = 16, rattle: float = 0.02, seed: int = 0) -> list[Atoms]:
    """Supercells with one atom removed (a different site each time) and a small rattle."""
    rng = np.random.default_rng(seed)
    base = supercell(ground_state(element), max_atoms + 1)
    out = []
    for k in range(n):
        atoms = base.copy()
        del atoms[int(rng.integers(len(atoms)))]
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        out.append(_tag(atoms, f"vacancy {k}"))
    return out


def _miller_in_cell(hkl: Sequence[int], conventional: np.ndarray, cell: np.ndarray) -> tuple[int, int, int]:
    """Miller indices, relative to ``cell``, of the plane family (hkl) of the ``conventional`` cell
    (both in one Cartesian frame): h'_i = a'_i · G with G = Σ_j h_j b_j the reciprocal-lattice
    vector of (hkl), reduced to coprime integers (Ashcroft & Mermin, Solid State Physics, ch. 5)."""
    indices = cell @ np.linalg.solve(conventional, np.asarray(hkl, dtype=float))
    for multiple in range(1, 13):
        scaled = multiple * indices
        if np.allclose(scaled, np.round(scaled), atol=1e-6):
            integers = np.round(scaled).astype(int)
            return tuple(int(i) for i in integers // np.gcd.reduce(integers))
    raise InputError(f"({', '.join(map(str, hkl))}) has no integer Miller indices in the primitive cell")


def _atomic_planes(atoms: Atoms, tol: float = 1e-3) -> list[np.ndarray]:
    """Indices of the atoms in each plane normal to z, bottom to top (planes closer than ``tol`` Å merge)."""
    order = np.argsort(atoms.positions[:, 2], kind="stable")
    z = atoms.positions[order, 2]
    return np.split(order, np.flatnonzero(np.diff(z) > tol) + 1)


def surface_slab(element: str, hkl: Sequence[int], layers: int = 4, vacuum: float = 6.0) -> Atoms:
    """``layers`` atomic planes of the (hkl) surface of ``element``'s reference crystal, normal along z,
    ``vacuum`` Å each side. (hkl) refers to the conventional cell (cubic for fcc, bcc, diamond and sc;
    hexagonal for hcp); the slab is cut from the primitive cell with the equivalent indices, so the
    in-plane cell is the smallest one of that surface."""
    if len(hkl) != 3 or not all(float(i).is_integer() for i in hkl) or not any(hkl):
        raise InputError(f"Miller indices must be three integers, not all zero; got {tuple(hkl)}")
    if layers < 1:
        raise InputError(f"a slab needs at least one atomic layer; got {layers}")
    conventional, primitive = ground_state(element), ground_state(element, cubic=False)
    indices = _miller_in_cell(hkl, conventional.cell.array, primitive.cell.array)
    planes_per_cell = len(_atomic_planes(surface(primitive, indices, 1)))
    stack = surface(primitive, indices, -(-layers // planes_per_cell) + 1)
    planes = _atomic_planes(stack)
    heights = [stack.positions[p[0], 2] for p in planes]
    # Cut across the widest gap between planes (fewest broken bonds: e.g. Si(111) ends in bilayers).
    start = max(range(1, planes_per_cell + 1), key=lambda k: round(heights[k] - heights[k - 1], 6))
    slab = stack[np.sort(np.concatenate(planes[start:start + layers]))]
    slab.center(vacuum, axis=2)
    slab.pbc = True
    return slab


def surfaces(element: str, miller: Sequence[tuple[int, int, int]] = ((1, 0, 0), (1, 1, 0), (1, 1, 1)),
             layers: int = 4, vacuum: float = 6.0, max_atoms: int = 16) -> list[Atoms]:
    """Slabs of low-index surfaces (periodic in-plane, vacuum along z), Miller indices of the
    conventional cell; each has ``layers`` atomic planes, fewer (down to two) to stay within
    ``max_atoms``."""
    out = []
    for hkl in miller:
        slab = surface_slab(element, hkl, layers, vacuum)
        planes = _atomic_planes(slab)
        kept = len(planes)
        while kept > 2 and sum(len(p) for p in planes[:kept]) > max_atoms:
            kept -= 1
        if kept < len(planes):
            slab = surface_slab(element, hkl, kept, vacuum)
        out.append(_tag(slab, f"surface {tuple(int(i) for i in hkl)}, {kept} layers"))
    return out


def dimers(elements: Sequence[str], distances: Sequence[float] | None = None, box: float = 12.0) -> list[Atoms]:
    """Isolated pairs of every element combination at several separations (in a large box)."""
    out = []
    for i, a in enumerate(elements):
        for b in elements[i:]:
            bond = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
            for d in distances if distances is not None else bond * np.linspace(0.6, 2.0, 8):
                atoms = Atoms(f"{a}{b}", positions=[[0, 0, 0], [0, 0, d]], cell=[box] * 3, pbc=True)
                atoms.center()
                out.append(_tag(atoms, f"dimer {a}-{b} at {d:.3f} Å"))
    return out


def short_range_pairs(element: str, n: int, max_atoms: int = 16, fraction: float = 0.65, seed: int = 0) -> list[Atoms]:
    """Supercells in which one atom is pushed towards a neighbour to ``fraction`` of the bond."""
    rng = np.random.default_rng(seed)
    base = supercell(ground_state(element), max_atoms)
    out = []
    for k in range(n):
        atoms = base.copy()
        i = int(rng.integers(len(atoms)))
        distances = atoms.get_distances(i, range(len(atoms)), mic=True, vector=True)
        lengths = np.linalg.norm(distances, axis=1)
        lengths[i] = np.inf
        j = int(np.argmin(lengths))
        atoms.positions[i] += (1 - fraction) * distances[j]
        out.append(_tag(atoms, f"short pair {k}: {fraction:.2f} × nearest-neighbour distance"))
    return out


GENERATORS = ("strained", "vacancies", "surfaces", "dimers", "pairs")


def starting_set(elements: Sequence[str], n: int = 4, max_atoms: int = 16, seed: int = 0,
                 kinds: Sequence[str] = GENERATORS) -> list[Atoms]:
    """A mixed starting set for each element (pairs of elements for dimers)."""
    unknown = sorted(set(kinds) - set(GENERATORS))
    if unknown:
        raise InputError(f"unknown generator(s) {unknown}; choose from {', '.join(GENERATORS)}")
    if not elements:
        raise InputError("give at least one element")
    out = []
    for k, element in enumerate(elements):
        if "strained" in kinds:
            out += strained_rattled(element, n, max_atoms, seed=seed + k)
        if "vacancies" in kinds:
            out += vacancies(element, max(1, n // 2), max_atoms, seed=seed + k)
        if "surfaces" in kinds:
            out += surfaces(element, max_atoms=max_atoms)
        if "pairs" in kinds:
            out += short_range_pairs(element, max(1, n // 2), max_atoms, seed=seed + k)
    if "dimers" in kinds:
        out += dimers(list(elements))
    return out
