"""Shared fixtures: small labelled datasets made on the fly (nothing read from outside the repository)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from uq_flows.io import with_labels, write_extxyz
from uq_flows.settings import get_settings


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Each test gets its own UQ_FLOWS_HOME, so no user config leaks in."""
    monkeypatch.setenv("UQ_FLOWS_HOME", str(tmp_path / "uq-home"))
    monkeypatch.setenv("UQ_FLOWS_CP2K_THREADS", "1")  # OpenMP CP2K beside other work on 2 cores: ~30x slower
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def emt_dataset(n_configs: int = 12, seed: int = 0):
    """Cu cells of 4 and 8 atoms rattled by growing amplitudes, labelled by EMT."""
    rng = np.random.default_rng(seed)
    structures = []
    for j in range(n_configs):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        if j % 2:
            atoms = atoms * (2, 1, 1)
        atoms.rattle(0.01 + 0.03 * j, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        structures.append(with_labels(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return structures


def perturbed(structures, scale: float, seed: int, energy_shift: float = 0.0):
    """A fake member: reference labels plus noise that grows with the configuration index.

    The disagreement between such members grows along the dataset, so U and the error of
    their mean are correlated by construction.
    """
    rng = np.random.default_rng(seed)
    out = []
    for j, atoms in enumerate(structures):
        noise = scale * (1 + j) * rng.normal(size=(len(atoms), 3))
        forces = atoms.get_forces() + noise
        energy = atoms.get_potential_energy() + energy_shift + scale * (1 + j) * rng.normal()
        out.append(with_labels(atoms, energy, forces))
    return out


@pytest.fixture
def labelled_set(tmp_path):
    """Reference file and three member prediction files on the same 12 configurations."""
    reference = emt_dataset()
    paths = {"ref": tmp_path / "reference.extxyz"}
    write_extxyz(paths["ref"], reference)
    for name, scale, seed in (("good", 0.01, 1), ("fair", 0.02, 2), ("poor", 0.08, 3)):
        paths[name] = tmp_path / f"{name}.extxyz"
        write_extxyz(paths[name], perturbed(reference, scale, seed))
    return reference, paths


@pytest.fixture
def job_store(tmp_path):
    """The embedded default JobStore (SQLite documents and data store) in a fresh folder."""
    from uq_flows.manager.stores import embedded_jobstore

    return embedded_jobstore(tmp_path / "db")


def flow_output(store, flow):
    """A flow's final output from the JobStore (follows jobs that replaced themselves)."""
    from monty.json import MontyDecoder

    with store:  # get_output decodes MSON objects only when it resolved references
        return MontyDecoder().process_decoded(store.get_output(flow.output.uuid, which="last", load=True))


REPLAY_CONFIG = {  # one iteration over pool.extxyz: stored members a and b, teacher a, the pool's labels as DFT
    "name": "replay", "elements": ["Cu"], "structures": ["pool.extxyz"], "generate": None,
    "members": ["a=precomputed:a.extxyz", "b=precomputed:b.extxyz"], "teacher": {"energy_from": "a"},
    "uc": 0.15, "dft": {"labeller": "dataset", "dataset": "pool.extxyz"},
    "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 2},
    "explore": {"n_seeds": 1, "md": {"steps": 20, "snapshot_every": 10}, "cago": None, "n_cago_members": 2},
    "select": {"max_candidates": 4, "formation_energy_prefilter": False},
    "convergence": {"max_iterations": 1},
}


def write_replay(folder, pool, /, per_atom: bool = False, energy_shift: float = 0.0, **changes):
    """``pool.extxyz``, the stored predictions of two fake members (``a``, ``b``: the pool's labels
    plus growing noise; energies total or per atom) and ``loop.yaml`` (REPLAY_CONFIG with
    ``changes``) in ``folder``; the config's path."""
    import yaml

    write_extxyz(folder / "pool.extxyz", pool)
    for name, scale, seed in (("a", 0.02, 1), ("b", 0.04, 2)):
        predicted = perturbed(pool, scale, seed, energy_shift)
        if per_atom:
            predicted = [with_labels(x, x.get_potential_energy() / len(x), x.get_forces()) for x in predicted]
        write_extxyz(folder / f"{name}.extxyz", predicted)
    kind = "precomputed-per-atom" if per_atom else "precomputed"
    config = {**REPLAY_CONFIG, "members": [f"a={kind}:a.extxyz", f"b={kind}:b.extxyz"], **changes}
    (folder / "loop.yaml").write_text(yaml.safe_dump(config))
    return folder / "loop.yaml"
