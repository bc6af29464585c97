"""k-point meshes for every DFT code: the papers' density (METHODS §9: 2π × 0.03 Å⁻¹), and
the Γ-centred mesh reduced by time reversal for codes given an explicit list (CP2K)."""

from __future__ import annotations

import math

import numpy as np

PAPER_KPOINT_SPACING = 2 * math.pi * 0.03  # Å⁻¹ including 2π, papers 000 and 001


def kpoint_mesh(cell, spacing: float = PAPER_KPOINT_SPACING) -> tuple[int, int, int]:
    """Subdivisions N_i = max(1, ceil(|b_i| / spacing)), b_i reciprocal vectors including 2π.

    This is how VASPKIT turns a k-point resolution into a mesh (papers 000 and 001); a ratio
    within 1e-9 of an integer is not rounded up.
    """
    if spacing <= 0:
        raise ValueError(f"k-point spacing must be positive, got {spacing}")
    reciprocal = 2 * math.pi * np.linalg.inv(np.asarray(cell, dtype=float)).T
    return tuple(max(1, math.ceil(np.linalg.norm(b) / spacing - 1e-9)) for b in reciprocal)


def gamma_centred_points(mesh: tuple[int, int, int]) -> np.ndarray:
    """Fractional coordinates (in reciprocal-lattice units, each in (-1/2, 1/2]) of the
    Γ-centred mesh, the convention of VASP's ``Gamma`` KPOINTS: k_i = j / N_i, j = 0..N_i-1.

    Unlike a Monkhorst-Pack mesh, which for even N_i is shifted off Γ, this grid keeps the
    crystal's point symmetry, so a perfect crystal gets zero forces without k-point symmetry.
    """
    axes = [np.array([(j / n + 0.5) % 1.0 - 0.5 for j in range(n)]) for n in mesh]
    axes = [np.where(np.isclose(a, -0.5), 0.5, a) for a in axes]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def time_reversal_reduced_points(mesh: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Γ-centred mesh with k and −k merged: (points, integer weights summing to N1·N2·N3).

    Without spin–orbit coupling, time reversal makes the Bloch states at −k the complex
    conjugates of those at k (ε(−k) = ε(k)), so both give the same density, energy, forces
    and stress whatever the atoms' positions; one of each pair is kept with weight 2. Points
    with k ≡ −k (Γ and zone-boundary points of even meshes) keep weight 1. This is the
    reduction CP2K itself applies to its Monkhorst-Pack meshes with ``SYMMETRY OFF`` and
    ``FULL_GRID OFF``, and leaves (N + n_self)/2 of the N points.
    """
    shape = np.array(mesh)
    indices = np.stack(np.meshgrid(*[np.arange(n) for n in mesh], indexing="ij"), axis=-1).reshape(-1, 3)
    flat = np.ravel_multi_index(indices.T, mesh)
    partner = np.ravel_multi_index(((-indices) % shape).T, mesh)
    keep = flat <= partner  # same order as gamma_centred_points
    weights = np.where(flat[keep] == partner[keep], 1, 2)
    return gamma_centred_points(mesh)[keep], weights
