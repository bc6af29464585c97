"""Query by committee with MP-ALOE's disagreement metrics and thresholds (paper 003; METHODS §6).

For a committee of K models (an ACE ensemble, or pretrained uMLIPs in the first round) and
structure j with N_j sites:

- energy metric: population standard deviation over models of the energy per atom;
- force metric: for each model pair (a, b), sqrt(mean_i ||F_i^a - F_i^b||^2); mean over pairs;
- stress metric: for each model pair, ||s^a - s^b|| of the 6-component Voigt stress; mean
  over pairs (needs every model's stress; non-periodic cells have none).

Thresholds (0.1 eV/atom, 0.1 eV/Å, 0.1 eV/Å³ by default) are multiplied per structure by
the element multipliers of every rule the structure triggers (5 any noble gas, 3 He, 2 Ne,
4 Tc, 4 any actinoid, 3 any lanthanoid; a rule keyed by an element symbol triggers when the
element is present, a group rule when any member of the group is) and by sqrt(N_j)/sqrt(2).
A structure is selected when any metric exceeds its threshold, unless a pre-filter discards
it as unphysical: median over models of the formation energy > 0.25 eV/atom (only when
elemental reference energies are given), of the largest atomic force > 50 eV/Å, or of
|pressure| > 0.5 eV/Å³. Every number is configurable through ``QBCConfig``.

A structure some model could not predict gets that model's status and reason and is never
selected from a silently smaller committee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z
from ase.data import chemical_symbols

from uq_flows.errors import InputError

# Element groups as pymatgen defines them (Element.is_noble_gas, is_actinoid, is_lanthanoid).
NOBLE_GASES = frozenset({2, 10, 18, 36, 54, 86, 118})
LANTHANOIDS = frozenset(range(57, 72))  # La..Lu
ACTINOIDS = frozenset(range(89, 104))  # Ac..Lr
GROUPS: dict[str, frozenset[int]] = {"noble_gas": NOBLE_GASES, "lanthanoid": LANTHANOIDS, "actinoid": ACTINOIDS}

DEFAULT_MULTIPLIERS: dict[str, float] = {
    "noble_gas": 5.0,
    "He": 3.0,
    "Ne": 2.0,
    "Tc": 4.0,
    "actinoid": 4.0,
    "lanthanoid": 3.0,
}
METRICS = ("energy", "force", "stress")
UNITS = {"energy": "eV/atom", "force": "eV/Å", "stress": "eV/Å³"}
OK = "ok"


def _rule_numbers(rule: str) -> frozenset[int]:
    if rule in GROUPS:
        return GROUPS[rule]
    if rule in SYMBOL_TO_Z and rule != "X":
        return frozenset({SYMBOL_TO_Z[rule]})
    raise InputError(
        f"unknown threshold multiplier {rule!r}: use an element symbol (e.g. Tc) or one of {', '.join(GROUPS)}"
    )


def _optional_limit(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number or None, got {value!r}") from None
    if not value > 0 or math.isnan(value):
        raise InputError(f"{name} must be positive (or None to switch the pre-filter off), got {value}")
    return value


@dataclass(frozen=True)
class QBCConfig:
    """Thresholds, multipliers and pre-filters of query by committee (defaults: MP-ALOE)."""

    energy_threshold: float = 0.1  # eV/atom
    force_threshold: float = 0.1  # eV/Å
    stress_threshold: float = 0.1  # eV/Å³
    multipliers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))
    site_scaling: bool = True  # multiply thresholds by sqrt(N_sites)/sqrt(2)
    max_formation_energy: float | None = 0.25  # eV/atom; needs elemental_references
    max_force: float | None = 50.0  # eV/Å
    max_pressure: float | None = 0.5  # eV/Å³
    # {symbol: eV/atom} for every model, or {model: {symbol: eV/atom}}
    elemental_references: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("energy_threshold", "force_threshold", "stress_threshold"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{name} must be a number, got {value!r}") from None
            if not value > 0 or math.isinf(value):
                raise InputError(f"{name} must be a positive finite number, got {value}")
            object.__setattr__(self, name, value)
        multipliers = {}
        for rule, factor in dict(self.multipliers).items():
            _rule_numbers(rule)
            try:
                factor = float(factor)
            except (TypeError, ValueError):
                raise InputError(f"multiplier {rule} must be a number, got {factor!r}") from None
            if not factor > 0 or math.isinf(factor):
                raise InputError(f"multiplier {rule} must be a positive finite number, got {factor}")
            multipliers[rule] = factor
        object.__setattr__(self, "multipliers", multipliers)
        for name in ("max_formation_energy", "max_force", "max_pressure"):
            object.__setattr__(self, name, _optional_limit(getattr(self, name), name))
        if self.elemental_references is not None and not isinstance(self.elemental_references, Mapping):
            raise InputError("elemental_references must be a mapping {symbol: eV/atom} or {model: {symbol: eV/atom}}")

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([self.energy_threshold, self.force_threshold, self.stress_threshold])

    def as_dict(self) -> dict[str, Any]:
        return {
            "energy_threshold": self.energy_threshold,
            "force_threshold": self.force_threshold,
            "stress_threshold": self.stress_threshold,
            "multipliers": dict(self.multipliers),
            "site_scaling": self.site_scaling,
            "max_formation_energy": self.max_formation_energy,
            "max_force": self.max_force,
            "max_pressure": self.max_pressure,
            "elemental_references": None if self.elemental_references is None else dict(self.elemental_references),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> QBCConfig:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown QBC settings: {', '.join(sorted(unknown))}")
        return cls(**data)


# --------------------------------------------------------------------------- thresholds


def threshold_scale(numbers: Sequence[Sequence[int]], config: QBCConfig | None = None) -> np.ndarray:
    """Per-structure factor on every threshold: the product of the triggered element
    multipliers, times sqrt(N_sites)/sqrt(2) when ``config.site_scaling`` is on."""
    config = config or QBCConfig()
    rules = [(_rule_numbers(rule), factor) for rule, factor in config.multipliers.items()]
    scale = np.ones(len(numbers))
    for j, z in enumerate(numbers):
        present = {int(x) for x in np.asarray(z).reshape(-1)}
        if not present:
            raise InputError(f"structure {j} has no atoms")
        for members, factor in rules:
            if present & members:
                scale[j] *= factor
        if config.site_scaling:
            scale[j] *= math.sqrt(len(z)) / math.sqrt(2)
    return scale


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class CommitteeMetrics:
    """Disagreement per structure; NaN where a model gave no number (stress of a molecule)."""

    energy: np.ndarray  # eV/atom
    force: np.ndarray  # eV/Å
    stress: np.ndarray  # eV/Å³

    def stacked(self) -> np.ndarray:
        return np.stack([self.energy, self.force, self.stress], axis=1)


def _check_committee(energies, forces, stresses, n_atoms) -> tuple[np.ndarray, ...]:
    n_atoms = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
    energies = np.asarray(energies, dtype=float)
    forces = np.asarray(forces, dtype=float)
    stresses = np.asarray(stresses, dtype=float)
    if energies.ndim != 2:
        raise InputError(f"energies must have shape (K, n_structures), got {energies.shape}")
    k, n = energies.shape
    if k < 2:
        raise InputError(f"a committee needs at least two models, got {k}")
    if len(n_atoms) != n:
        raise InputError(f"{n} structures in energies but {len(n_atoms)} atom counts")
    if np.any(n_atoms < 1):
        raise InputError("every structure needs at least one atom")
    if forces.shape != (k, int(n_atoms.sum()), 3):
        raise InputError(f"forces must have shape (K={k}, N_total={int(n_atoms.sum())}, 3), got {forces.shape}")
    if stresses.shape != (k, n, 6):
        raise InputError(f"stresses must have shape (K={k}, n={n}, 6) in Voigt order, got {stresses.shape}")
    return energies, forces, stresses, n_atoms


def committee_metrics(energies, forces, stresses, n_atoms) -> CommitteeMetrics:
    """MP-ALOE's three metrics from energies (K, n) in eV, forces (K, N_total, 3) in eV/Å
    (structures concatenated in order) and Voigt stresses (K, n, 6) in eV/Å³.

    A structure gets NaN for a metric when any model's value for it is not finite.
    """
    energies, forces, stresses, n_atoms = _check_committee(energies, forces, stresses, n_atoms)
    k, n = energies.shape
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    energy = np.std(energies / n_atoms, axis=0)  # population std (ddof=0)
    energy[~np.isfinite(energies).all(axis=0)] = np.nan

    pairs = list(combinations(range(k), 2))
    force = np.zeros(n)
    stress = np.zeros(n)
    for a, b in pairs:
        diff = forces[a] - forces[b]
        squared = np.einsum("ij,ij->i", diff, diff)
        force += np.sqrt(np.add.reduceat(squared, starts) / n_atoms)
        stress += np.linalg.norm(stresses[a] - stresses[b], axis=1)
    force /= len(pairs)
    stress /= len(pairs)
    return CommitteeMetrics(energy=energy, force=force, stress=stress)


def median_properties(energies, forces, stresses, n_atoms, numbers, config: QBCConfig, members: Sequence[str] | None = None):
    """Medians over models of formation energy (eV/atom; NaN without references), largest
    atomic force (eV/Å) and |pressure| (eV/Å³, NaN without stress) per structure."""
    energies, forces, stresses, n_atoms = _check_committee(energies, forces, stresses, n_atoms)
    k, n = energies.shape
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    max_force = np.maximum.reduceat(np.linalg.norm(forces, axis=2), starts, axis=1)
    pressure = np.abs(stresses[:, :, :3].mean(axis=2))  # ASE sign: p = -trace(s)/3
    formation = np.full((k, n), np.nan)
    references = _references_per_model(config.elemental_references, members, k)
    if references is not None:
        for m, table in enumerate(references):
            for j, z in enumerate(numbers):
                formation[m, j] = (energies[m, j] - _reference_sum(table, z, j)) / n_atoms[j]
    with np.errstate(all="ignore"):
        return (
            _nanmedian(formation),
            _nanmedian(max_force),
            _nanmedian(pressure),
        )


def _nanmedian(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[1], np.nan)
    has = np.isfinite(values).any(axis=0)
    if has.any():
        out[has] = np.nanmedian(values[:, has], axis=0)
    return out


def _references_per_model(references, members, k: int) -> list[Mapping[str, float]] | None:
    if not references:
        return None
    values = list(references.values())
    if all(isinstance(v, Mapping) for v in values):  # {model: {symbol: energy}}
        if members is None:
            raise InputError("per-model elemental references need the model names")
        missing = [m for m in members if m not in references]
        if missing:
            raise InputError(f"no elemental reference energies for {', '.join(missing)}")
        return [references[m] for m in members]
    if any(isinstance(v, Mapping) for v in values):
        raise InputError("elemental references mix per-model tables and per-element numbers")
    return [references] * k


def _reference_sum(table: Mapping[str, float], numbers, j: int) -> float:
    total = 0.0
    for z in np.asarray(numbers).reshape(-1):
        symbol = chemical_symbols[int(z)]
        if symbol not in table:
            raise InputError(f"structure {j}: no elemental reference energy for {symbol}")
        total += float(table[symbol])
    return total


# --------------------------------------------------------------------------- selection


@dataclass
class QBCResult:
    """Per structure: metrics, scaled thresholds, pre-filter verdicts and the selection."""

    members: list[str]
    n_atoms: np.ndarray
    metrics: np.ndarray  # (n, 3): energy, force, stress; NaN where unavailable
    thresholds: np.ndarray  # (n, 3) after multipliers and site scaling
    scale: np.ndarray  # (n,)
    exceeds: np.ndarray  # (n, 3) bool
    formation_energy: np.ndarray
    max_force: np.ndarray
    pressure: np.ndarray
    prefiltered: np.ndarray  # (n,) bool: discarded as unphysical
    prefilter_reasons: list[str | None]
    status: list[str]
    reasons: list[str | None]
    selected: np.ndarray  # (n,) bool
    config: QBCConfig

    @property
    def n_structures(self) -> int:
        return len(self.n_atoms)

    @property
    def selected_indices(self) -> np.ndarray:
        return np.flatnonzero(self.selected)

    @property
    def failed(self) -> np.ndarray:
        return np.array([s != OK for s in self.status], dtype=bool)

    def summary(self) -> dict[str, Any]:
        ok = ~self.failed
        return {
            "members": list(self.members),
            "n_structures": self.n_structures,
            "n_failed": int(self.failed.sum()),
            "n_prefiltered": int(self.prefiltered.sum()),
            "n_exceeding": {m: int(self.exceeds[ok & ~self.prefiltered, i].sum()) for i, m in enumerate(METRICS)},
            "n_selected": int(self.selected.sum()),
            "config": self.config.as_dict(),
        }

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for j in range(self.n_structures):
            rows.append(
                {
                    "status": self.status[j],
                    "reason": self.reasons[j],
                    "n_atoms": int(self.n_atoms[j]),
                    "metrics": {m: _num(self.metrics[j, i]) for i, m in enumerate(METRICS)},
                    "thresholds": {m: _num(self.thresholds[j, i]) for i, m in enumerate(METRICS)},
                    "prefiltered": bool(self.prefiltered[j]),
                    "prefilter_reason": self.prefilter_reasons[j],
                    "selected": bool(self.selected[j]),
                }
            )
        return rows


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def select_by_committee(
    energies,
    forces,
    stresses,
    n_atoms,
    numbers: Sequence[Sequence[int]],
    config: QBCConfig | None = None,
    members: Sequence[str] | None = None,
    status: Sequence[str] | None = None,
    reasons: Sequence[str | None] | None = None,
) -> QBCResult:
    """QBC on committee arrays (see ``committee_metrics`` for shapes and units).

    ``numbers`` are the atomic numbers of each structure (for the element multipliers);
    ``status``/``reasons`` mark structures some model could not predict: they are never
    selected. Non-finite energies or forces of an "ok" structure are an input error.
    """
    config = config or QBCConfig()
    energies, forces, stresses, n_atoms = _check_committee(energies, forces, stresses, n_atoms)
    k, n = energies.shape
    members = list(members) if members is not None else [f"model {i}" for i in range(k)]
    if len(members) != k:
        raise InputError(f"{k} models but {len(members)} names")
    if len(numbers) != n:
        raise InputError(f"{n} structures but atomic numbers for {len(numbers)}")
    for j, z in enumerate(numbers):
        if len(z) != n_atoms[j]:
            raise InputError(f"structure {j}: {len(z)} atomic numbers for {n_atoms[j]} atoms")
    status = list(status) if status is not None else [OK] * n
    reasons = list(reasons) if reasons is not None else [None] * n
    if len(status) != n or len(reasons) != n:
        raise InputError(f"{n} structures but {len(status)} statuses and {len(reasons)} reasons")
    ok = np.array([s == OK for s in status], dtype=bool)
    atom_ok = np.repeat(ok, n_atoms)
    if not np.isfinite(energies[:, ok]).all() or not np.isfinite(forces[:, atom_ok]).all():
        bad = [j for j in np.flatnonzero(ok) if not np.isfinite(energies[:, j]).all()]
        raise InputError(
            "non-finite energies or forces for structures marked ok"
            + (f" (e.g. structure {bad[0]})" if bad else "")
            + "; give them a failure status"
        )
    clean_f = np.where(atom_ok[None, :, None], forces, 0.0)
    clean_e = np.where(ok[None, :], energies, 0.0)
    metrics = committee_metrics(clean_e, clean_f, stresses, n_atoms).stacked()
    metrics[~ok] = np.nan
    scale = threshold_scale(numbers, config)
    thresholds = scale[:, None] * config.thresholds[None, :]
    with np.errstate(invalid="ignore"):
        exceeds = np.isfinite(metrics) & (metrics > thresholds)
    formation, max_force, pressure = median_properties(clean_e, clean_f, stresses, n_atoms, numbers, config, members)
    formation[~ok] = max_force[~ok] = pressure[~ok] = np.nan
    prefiltered = np.zeros(n, dtype=bool)
    prefilter_reasons: list[str | None] = [None] * n
    checks = (
        ("formation energy", formation, config.max_formation_energy, "eV/atom"),
        ("largest atomic force", max_force, config.max_force, "eV/Å"),
        ("|pressure|", pressure, config.max_pressure, "eV/Å³"),
    )
    for label, values, limit, unit in checks:
        if limit is None:
            continue
        with np.errstate(invalid="ignore"):
            hit = np.isfinite(values) & (values > limit)
        for j in np.flatnonzero(hit):
            text = f"median {label} {values[j]:.4g} {unit} > {limit:g}"
            prefilter_reasons[j] = text if prefilter_reasons[j] is None else f"{prefilter_reasons[j]}; {text}"
        prefiltered |= hit
    selected = ok & ~prefiltered & exceeds.any(axis=1)
    return QBCResult(
        members=members,
        n_atoms=n_atoms,
        metrics=metrics,
        thresholds=thresholds,
        scale=scale,
        exceeds=exceeds,
        formation_energy=formation,
        max_force=max_force,
        pressure=pressure,
        prefiltered=prefiltered,
        prefilter_reasons=prefilter_reasons,
        status=status,
        reasons=reasons,
        selected=selected,
        config=config,
    )


def select_from_predictions(predictions: Sequence[Any], numbers: Sequence[Sequence[int]], config: QBCConfig | None = None) -> QBCResult:
    """QBC on the ``MemberPredictions`` of every committee member (same structures, same order).

    A structure any member could not predict keeps that member's status and reason.
    """
    predictions = list(predictions)
    if len(predictions) < 2:
        raise InputError(f"a committee needs at least two members, got {len(predictions)}")
    names = [p.member for p in predictions]
    if len(set(names)) != len(names):
        raise InputError(f"committee members given more than once: {names}")
    n_atoms = predictions[0].n_atoms
    for p in predictions[1:]:
        if not np.array_equal(p.n_atoms, n_atoms):
            raise InputError(f"{p.member} predicted other structures than {names[0]} (atom counts differ)")
    n = len(n_atoms)
    status, reasons = [OK] * n, [None] * n
    for p in predictions:
        for j, (s, reason) in enumerate(zip(p.status, p.reasons)):
            if s == OK:
                continue
            text = f"{p.member}: {reason}" if reason else p.member
            if status[j] == OK:
                status[j], reasons[j] = s, text
            else:
                reasons[j] = f"{reasons[j]}; {text}"
    return select_by_committee(
        np.stack([p.energies for p in predictions]),
        np.stack([p.forces for p in predictions]),
        np.stack([p.stresses for p in predictions]),
        n_atoms,
        numbers,
        config,
        members=names,
        status=status,
        reasons=reasons,
    )
