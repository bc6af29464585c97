"""MD exploration with any ASE calculator (ACE or a uMLIP): seeds for CAGO and the loop.

NVT with a Langevin thermostat or NPT with Berendsen temperature and pressure coupling;
temperature and pressure follow piecewise-linear schedules over the run. Every
``check_every`` steps the run is checked for stability as in paper 004 ("Methods"): the
shortest interatomic distance must stay ≥ 0.4 Å and the density within [0.25, 2] × the
initial density. An unstable run stops there; the snapshots taken before stay usable.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from pydantic import BaseModel, ConfigDict, Field

from uq_flows.errors import InputError
from uq_flows.screening import min_interatomic_distance


class MDSettings(BaseModel):
    """Ensemble, schedules (values spread evenly over the run, linear in between), sampling."""

    model_config = ConfigDict(frozen=True)

    ensemble: Literal["nvt", "npt"] = "nvt"
    temperatures: list[Annotated[float, Field(gt=0)]] = Field([300.0], min_length=1,
                                                             description="K; one value or a schedule.")
    pressures: list[float] = Field([0.0], min_length=1, description="GPa (NPT only); one value or a schedule.")
    timestep: float = Field(1.0, gt=0, description="fs")
    steps: int = Field(1000, ge=1)
    snapshot_every: int = Field(50, ge=1)
    friction: float = Field(0.01, gt=0, description="Langevin friction, 1/fs.")
    taut: float = Field(100.0, gt=0, description="Berendsen thermostat time, fs.")
    taup: float = Field(1000.0, gt=0, description="Berendsen barostat time, fs.")
    compressibility: float = Field(0.01, gt=0, description="Barostat compressibility, 1/GPa.")
    check_every: int = Field(10, ge=1)
    min_distance: float = Field(0.4, ge=0, description="Å; closer atoms mean an unstable run.")
    density_bounds: tuple[float, float] = Field((0.25, 2.0), description="× initial density.")
    seed: int = 0


class MDResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    snapshots: list[Atoms]
    stable: bool
    reason: str | None = None
    steps_done: int


def schedule(values: list[float], step: int, steps: int) -> float:
    """Piecewise-linear value at ``step`` of ``steps`` through evenly spaced ``values``."""
    if len(values) == 1:
        return float(values[0])
    return float(np.interp(step / max(steps, 1), np.linspace(0, 1, len(values)), values))


def stability_problem(atoms: Atoms, initial_density: float, settings: MDSettings) -> str | None:
    shortest = min_interatomic_distance(atoms, cutoff=max(2.0, 2 * settings.min_distance))
    if shortest < settings.min_distance:
        return f"atoms {shortest:.3f} Å apart (minimum {settings.min_distance:g} Å)"
    if atoms.pbc.all():
        ratio = (len(atoms) / atoms.get_volume()) / initial_density
        low, high = settings.density_bounds
        if not low <= ratio <= high:
            return f"density {ratio:.3g} × initial, outside [{low:g}, {high:g}]"
    return None


def run_md(atoms: Atoms, calculator, settings: MDSettings | None = None) -> MDResult:
    """Sample snapshots every ``snapshot_every`` steps until ``steps`` or instability."""
    settings = settings or MDSettings()
    if settings.ensemble == "npt" and not atoms.pbc.all():
        raise InputError("NPT needs a structure periodic in all three directions")
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(settings.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperatures[0], rng=rng)
    Stationary(atoms)
    initial_density = len(atoms) / atoms.get_volume() if atoms.pbc.all() else 0.0
    dt = settings.timestep * units.fs
    if settings.ensemble == "nvt":
        atoms.set_constraint(FixCom())
        dynamics = Langevin(atoms, dt, temperature_K=settings.temperatures[0],
                            friction=settings.friction / units.fs, fixcm=False, rng=rng)
    else:
        dynamics = NPTBerendsen(atoms, dt, temperature_K=settings.temperatures[0], taut=settings.taut * units.fs,
                                pressure_au=settings.pressures[0] * units.GPa, taup=settings.taup * units.fs,
                                compressibility_au=settings.compressibility / units.GPa)
    snapshots: list[Atoms] = []
    done = 0
    while done < settings.steps:
        chunk = min(settings.check_every, settings.steps - done)
        dynamics.set_temperature(temperature_K=schedule(settings.temperatures, done, settings.steps))
        if settings.ensemble == "npt":  # ASE 3.29's set_pressure is broken; this is the attribute it sets
            dynamics.pressure = schedule(settings.pressures, done, settings.steps) * units.GPa
        try:
            dynamics.run(chunk)
        except Exception as error:  # a model that blows up is an unstable run, not a crash
            return MDResult(snapshots=snapshots, stable=False, reason=f"MD failed at step {done}: {error}", steps_done=done)
        done += chunk
        problem = stability_problem(atoms, initial_density, settings)
        if problem:
            return MDResult(snapshots=snapshots, stable=False, reason=f"unstable at step {done}: {problem}", steps_done=done)
        if done % settings.snapshot_every < chunk or done == settings.steps:
            snapshot = atoms.copy()
            snapshot.calc = None
            snapshot.set_constraint()
            snapshot.info.update(md_step=done, md_temperature=atoms.get_temperature())
            snapshots.append(snapshot)
    return MDResult(snapshots=snapshots, stable=True, steps_done=done)
