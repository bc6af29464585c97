"""The CAGO optimiser (paper 004, eq. 8 and "Methods"; METHODS §7).

Minimise L(x) = Σ_i [(σ_cal,Fi(x) − δ)² + l_bias |F̄_i(x)|²] over atomic positions (in the
reference cell's scaled coordinates) and the cell (a symmetric strain), with SciPy's
L-BFGS-B and two-point finite-difference gradients: the 3N + 6 displaced structures and the
current one are evaluated as one committee batch per gradient. Bounds keep displacements
within ``max_displacement`` Å and strains within ``max_strain`` of the start, which keeps
the first quasi-Newton steps physical. The committee is model-agnostic: anything that
returns member forces for a list of structures.

Defaults (the paper publishes no code): δ = 0.1 eV/Å, l_bias = 0, finite-difference step
1e-3 Å (and 1e-3 × L_cell for strains), at most 50 L-BFGS iterations, stop when the mean
|σ_cal − δ| over atoms is below 5 % of δ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field
from scipy.optimize import minimize

from uq_flows.cago.calibration import PowerLawCalibration, committee_force_sigma
from uq_flows.errors import InputError
from uq_flows.screening import min_interatomic_distance


class Committee(Protocol):
    """Member forces (M, S, N, 3) of S structures with the same atoms."""

    n_members: int

    def forces(self, structures: Sequence[Atoms]) -> np.ndarray: ...


@dataclass
class CalculatorCommittee:
    """A committee of ASE calculators, evaluated structure by structure (any model works).

    ``member_batch`` optionally gives, per member, a function evaluating many structures at
    once (e.g. a GPU-batched model); otherwise each structure is a separate calculation.
    """

    calculators: list
    member_batch: list[Callable[[Sequence[Atoms]], np.ndarray]] | None = None
    n_evaluations: int = 0

    @property
    def n_members(self) -> int:
        return len(self.calculators)

    def forces(self, structures: Sequence[Atoms]) -> np.ndarray:
        self.n_evaluations += len(structures) * self.n_members
        if self.member_batch is not None:
            return np.stack([np.asarray(batch(structures)) for batch in self.member_batch])
        out = np.empty((self.n_members, len(structures), len(structures[0]), 3))
        for m, calculator in enumerate(self.calculators):
            for s, atoms in enumerate(structures):
                copy = atoms.copy()
                copy.calc = calculator
                out[m, s] = copy.get_forces()
        return out


class CagoSettings(BaseModel):
    """Targets and numerics of one CAGO run."""

    target: float = Field(0.1, gt=0, description="δ, eV/Å (paper: 0.1-0.2, calibration reliable to ≈ 0.2).")
    bias: float = Field(0.0, ge=0, description="l_bias on |F̄_i|² (eq. 8).")
    optimize_cell: bool = Field(True, description="Also vary the cell (periodic structures only).")
    fd_step: float = Field(1e-3, gt=0, description="Finite-difference step, Å.")
    max_steps: int = Field(50, ge=1, description="L-BFGS iterations at most.")
    tolerance: float = Field(0.05, gt=0, description="Stop when mean |σ_cal − δ| < tolerance·δ.")
    max_displacement: float = Field(1.0, gt=0, description="Bound on each atom's displacement, Å.")
    max_strain: float = Field(0.15, gt=0, description="Bound on each strain component.")
    initial_step: float = Field(
        0.05, gt=0, description="Å moved by a unit step of the optimiser's variables (its first step's scale)."
    )
    batched: bool = Field(True, description="Evaluate the finite-difference structures as one batch.")


class CagoStep(BaseModel):
    step: int
    fitness: float
    mean_sigma_cal: float
    max_sigma_cal: float
    max_force: float = Field(description="Largest committee-mean force, eV/Å.")
    min_distance: float
    evaluations: int = Field(description="Committee structure evaluations so far (× members).")


class CagoResult(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    atoms: Atoms
    sigma_cal: list[float]
    converged: bool
    message: str
    trace: list[CagoStep]


@dataclass
class _Geometry:
    """x = (displacements in Å along the reference cell's scaled axes, strain × L) ↔ Atoms."""

    reference: Atoms
    optimize_cell: bool
    scaled: np.ndarray = field(init=False)
    length: float = field(init=False)

    def __post_init__(self) -> None:
        self.scaled = self.reference.get_scaled_positions(wrap=False)
        self.length = float(np.mean(self.reference.cell.lengths())) if self.reference.pbc.any() else 1.0

    @property
    def size(self) -> int:
        return 3 * len(self.reference) + (6 if self.optimize_cell else 0)

    def atoms(self, x: np.ndarray) -> Atoms:
        n = len(self.reference)
        cell0 = self.reference.cell.array
        displacement = x[: 3 * n].reshape(n, 3)
        strain = np.zeros((3, 3))
        if self.optimize_cell:
            e = x[3 * n :] / self.length
            strain = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])
        atoms = self.reference.copy()
        atoms.calc = None
        if self.reference.pbc.any():
            cell = cell0 @ (np.eye(3) + strain)
            scaled = self.scaled + displacement @ np.linalg.inv(cell0)
            atoms.set_cell(cell, scale_atoms=False)
            atoms.positions = scaled @ cell
        else:
            atoms.positions = self.reference.positions + displacement
        return atoms


def cago(atoms: Atoms, committee: Committee, calibration: PowerLawCalibration, settings: CagoSettings | None = None) -> CagoResult:
    """Move ``atoms`` until the calibrated committee uncertainty of each atom's force is ≈ δ."""
    settings = settings or CagoSettings()
    if committee.n_members < 2:
        raise InputError("CAGO needs a committee of at least two members")
    geometry = _Geometry(atoms, settings.optimize_cell and bool(atoms.pbc.any()))
    n = len(atoms)
    steps = np.full(geometry.size, settings.fd_step)
    steps[3 * n :] *= geometry.length
    trace: list[CagoStep] = []
    last: dict = {}

    def terms(forces: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        sigma = calibration(committee_force_sigma(forces))  # forces: (M, N, 3)
        mean_force = np.linalg.norm(forces.mean(axis=0), axis=-1)
        return float(np.sum((sigma - settings.target) ** 2 + settings.bias * mean_force**2)), sigma, mean_force

    def fitness_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        displaced = [x] + [x + steps[k] * np.eye(geometry.size)[k] for k in range(geometry.size)]
        structures = [geometry.atoms(y) for y in displaced]
        if settings.batched:
            forces = committee.forces(structures)
        else:
            forces = np.concatenate([committee.forces([s]) for s in structures], axis=1)
        values = [terms(forces[:, k]) for k in range(len(structures))]
        f0, sigma, mean_force = values[0]
        gradient = np.array([(values[k + 1][0] - f0) / steps[k] for k in range(geometry.size)])
        last.update(x=x.copy(), f=f0, sigma=sigma, mean_force=mean_force, atoms=structures[0])
        return f0, gradient

    def record(x: np.ndarray) -> None:
        if not np.array_equal(x, last["x"]):  # the last evaluation was a line-search trial
            fitness_and_gradient(x)
        sigma, atoms_now = last["sigma"], last["atoms"]
        trace.append(CagoStep(
            step=len(trace), fitness=last["f"], mean_sigma_cal=float(sigma.mean()), max_sigma_cal=float(sigma.max()),
            max_force=float(last["mean_force"].max()), min_distance=min_interatomic_distance(atoms_now),
            evaluations=getattr(committee, "n_evaluations", 0),
        ))
        if np.mean(np.abs(sigma - settings.target)) < settings.tolerance * settings.target:
            raise _Converged

    # L-BFGS-B's first step has unit length in its variables: scale them so that is a small move
    scale = settings.initial_step
    bounds = [(-settings.max_displacement / scale, settings.max_displacement / scale)] * (3 * n)
    bounds += [(-settings.max_strain * geometry.length / scale, settings.max_strain * geometry.length / scale)] * (
        geometry.size - 3 * n
    )

    def scaled_objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = fitness_and_gradient(z * scale)
        if not np.isfinite(value):  # e.g. atoms pushed onto each other: a wall, not a crash
            return 1e12, np.zeros_like(z)
        return value, gradient * scale

    x0 = np.zeros(geometry.size)
    converged = False
    try:
        fitness_and_gradient(x0)
        record(x0)
        result = minimize(scaled_objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                          callback=lambda z: record(z * scale),
                          options={"maxiter": settings.max_steps, "ftol": 1e-12, "gtol": 1e-10})
        message = f"L-BFGS stopped: {result.message}"
        if not np.array_equal(result.x * scale, last["x"]):
            record(result.x * scale)
    except _Converged:
        converged, message = True, f"mean |σ_cal − δ| below {settings.tolerance:.0%} of δ"
    return CagoResult(atoms=last["atoms"], sigma_cal=last["sigma"].tolist(), converged=converged, message=message, trace=trace)


class _Converged(Exception):
    """Raised from the L-BFGS callback to stop at the target."""
