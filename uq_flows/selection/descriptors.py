"""Structure descriptors for DIRECT, chosen by name, cached on disk.

- ``chgnet-0.3.0`` (any CHGNet member form): CHGNet's crystal feature, the pooled atom
  features its energy readout sees (64 numbers for 0.3.0; ``return_crystal_feas``).
- ``sevennet-0-11jul2024`` (any SevenNet member form): the mean over atoms of SevenNet's
  invariant node features entering its readout (128 numbers; the ``x`` fed to
  ``reduce_input_to_hidden``). These are the uMLIP analogues of MP-ALOE's M3GNet readout.
- ``ace:PATH.yaml``: the ACE B-basis projections of every atom (pyace, the linear basis
  values of a B-basis potential or basis file) averaged per species present in the basis,
  concatenated in the basis's element order (zeros for an absent species), followed by the
  fraction of atoms of each species. Needs a B-basis ``.yaml``; ``.yace`` files hold no
  B-basis. The projections depend on the basis functions, not on fitted coefficients, so
  any potential (or an unfitted basis) with the same basis gives the same descriptor.

Every vector is cached under ``settings.home / "cache" / "descriptors.sqlite"``, keyed by
the descriptor's identity (name, package version, model; ACE files by content hash) and
the structure id (content hash at ``structure_id_decimals``), so a structure met again in a
later iteration is not featurised twice. A structure a descriptor cannot handle (element
not covered, no 3D cell for CHGNet...) gets status "error" and a reason, never a guess.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from uq_flows.ensemble.members import (
    MemberSpec,
    file_digest,
    load_calculator,
    parse_member,
    supported_numbers,
)
from uq_flows.errors import InputError, MemberError, UqFlowsError
from uq_flows.records import structure_id
from uq_flows.settings import get_settings

logger = logging.getLogger(__name__)

DESCRIPTOR_FORMS = (
    "a CHGNet or SevenNet member (e.g. chgnet-0.3.0, sevennet-0-11jul2024: its structure embedding) "
    "or ace:PATH.yaml (per-species mean ACE B-basis projections of a B-basis potential or basis file)"
)
DEFAULT_DESCRIPTOR = "chgnet-0.3.0"
CACHE_FILE = "descriptors.sqlite"
_MAX_REASON = 500


@dataclass(frozen=True)
class DescriptorSpec:
    """Which descriptor: ``kind`` is chgnet, sevennet or ace; ``model`` the member or file."""

    name: str
    kind: str
    model: str
    member: MemberSpec | None = None

    @property
    def version(self) -> str:
        if self.kind == "ace":
            try:
                version = metadata.version("python-ace")
            except metadata.PackageNotFoundError:
                version = "(not installed)"
            return f"ace-projections v1 / python-ace {version} / sha256 {file_digest(self.model)}"
        return f"{self.kind}-embedding v1 / {self.member.version}"

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(self.version.encode()).hexdigest()[:24]


def parse_descriptor(text: str | None) -> DescriptorSpec:
    """A descriptor from its name (see ``DESCRIPTOR_FORMS``); None gives the default."""
    text = (text or DEFAULT_DESCRIPTOR).strip()
    if text.lower().startswith("ace:"):
        path = Path(text[4:]).expanduser()
        if not path.is_file():
            raise InputError(f"descriptor {text}: ACE file {path} does not exist")
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise InputError(f"descriptor {text}: the ACE descriptor needs a B-basis .yaml file, not {path.suffix}")
        return DescriptorSpec(text, "ace", str(path.resolve()))
    try:
        member = parse_member(text)
    except MemberError as exc:
        raise InputError(f"unknown descriptor {text!r}: give {DESCRIPTOR_FORMS}") from exc
    if member.kind not in ("chgnet", "sevennet"):
        raise InputError(f"descriptor {text!r}: only CHGNet and SevenNet members have a structure embedding here; give {DESCRIPTOR_FORMS}")
    return DescriptorSpec(text, member.kind, member.model, member)


@dataclass
class Descriptors:
    """One feature row per structure (NaN rows where ``status`` is not "ok")."""

    name: str
    version: str
    ids: list[str]
    features: np.ndarray
    status: list[str]
    reasons: list[str | None]
    n_cached: int = 0

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)


# --------------------------------------------------------------------------- cache


class DescriptorCache:
    """Feature vectors on disk (SQLite), keyed by (descriptor key, structure id)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else get_settings().home.expanduser() / "cache" / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS features (descriptor TEXT, id TEXT, vector BLOB, PRIMARY KEY (descriptor, id))"
        )
        return connection

    def get(self, descriptor: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(ids))
        with contextlib.closing(self._connect()) as connection:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT id, vector FROM features WHERE descriptor = ? AND id IN ({marks})", [descriptor, *chunk]
                )
                for structure, blob in rows:
                    found[structure] = np.frombuffer(blob, dtype="<f8")
        return found

    def put(self, descriptor: str, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        with contextlib.closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT OR REPLACE INTO features (descriptor, id, vector) VALUES (?, ?, ?)",
                [(descriptor, key, np.asarray(v, dtype="<f8").tobytes()) for key, v in items.items()],
            )


# --------------------------------------------------------------------------- featurisers


class _Featurizer:
    """Computes feature vectors of a batch; raising means "try the structures one by one"."""

    def __init__(self, spec: DescriptorSpec, device: str | None):
        self.spec = spec
        self.device = device

    def check(self, atoms: Atoms) -> str | None:
        return None

    def batch(self, structures: Sequence[Atoms]) -> list[np.ndarray]:
        raise NotImplementedError


class _CHGNetFeaturizer(_Featurizer):
    def __init__(self, spec, device):
        super().__init__(spec, device)
        self.calculator = load_calculator(spec.member, device)
        self.model = self.calculator.model
        self.covered = supported_numbers(spec.member, self.calculator)

    def check(self, atoms):
        if not (atoms.pbc.all() and atoms.cell.rank == 3):
            return "CHGNet embeddings need a 3D-periodic cell"
        missing = sorted({int(z) for z in atoms.numbers} - (self.covered or set()))
        if self.covered is not None and missing:
            return f"{self.spec.name} does not cover Z={missing}"
        return None

    def batch(self, structures):
        from pymatgen.io.ase import AseAtomsAdaptor

        pmg = [AseAtomsAdaptor.get_structure(a) for a in structures]
        with _quiet():
            out = self.model.predict_structure(pmg, task="e", return_crystal_feas=True, batch_size=len(pmg))
        if isinstance(out, dict):
            out = [out]
        return [np.asarray(o["crystal_fea"], dtype=float).reshape(-1) for o in out]


class _SevenNetFeaturizer(_Featurizer):
    READOUT = "reduce_input_to_hidden"

    def __init__(self, spec, device):
        super().__init__(spec, device)
        self.calculator = load_calculator(spec.member, device)
        self.model = self.calculator.model
        self.covered = supported_numbers(spec.member, self.calculator)
        readout = self.model._modules.get(self.READOUT)
        irreps = getattr(getattr(readout, "linear", None), "irreps_in", None)
        if readout is None or irreps is None or getattr(irreps, "lmax", 1) != 0:
            raise MemberError(f"{spec.name}: cannot find SevenNet's invariant readout input ({self.READOUT})")

    def check(self, atoms):
        missing = sorted({int(z) for z in atoms.numbers} - (self.covered or set()))
        if self.covered is not None and missing:
            return f"{self.spec.name} does not cover Z={missing}"
        return None

    def batch(self, structures):
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        out = []
        model = self.model
        for atoms in structures:
            data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self.calculator.cutoff))
            data.to(self.calculator.device)
            with torch.no_grad(), _quiet():
                if model.eval_type_map:
                    data[model.key_node_feature] = model._atomic_numbers_to_onehot(data[model.key_atomic_numbers])
                for name, module in model._modules.items():
                    if name == self.READOUT:
                        break
                    data = module(data)
                features = data[model.key_node_feature]
            out.append(features.detach().cpu().numpy().astype(float).mean(axis=0))
        return out


class _ACEFeaturizer(_Featurizer):
    def __init__(self, spec, device):
        super().__init__(spec, device)
        from pyace.activelearning import compute_number_of_functions
        from pyace.asecalc import PyACECalculator

        self.calculator = PyACECalculator(spec.model)  # projections on; energies are not used
        basis = self.calculator.basis
        self.elements = [str(e) for e in basis.elements_name]  # species-type order of pyace
        self.n_functions = [int(n) for n in compute_number_of_functions(basis)]
        self.offsets = np.concatenate([[0], np.cumsum(self.n_functions)])
        from ase.data import atomic_numbers

        self.type_of = {atomic_numbers[e]: t for t, e in enumerate(self.elements)}

    def check(self, atoms):
        missing = sorted({int(z) for z in atoms.numbers} - set(self.type_of))
        if missing:
            return f"ACE basis {Path(self.spec.model).name} has no species Z={missing} (has {', '.join(self.elements)})"
        return None

    def batch(self, structures):
        out = []
        n_types = len(self.elements)
        for atoms in structures:
            work = atoms.copy()
            work.calc = self.calculator
            work.get_potential_energy()
            projections = self.calculator.projections
            types = np.array([self.type_of[int(z)] for z in atoms.numbers])
            vector = np.zeros(int(self.offsets[-1]) + n_types)
            for t in range(n_types):
                rows = np.flatnonzero(types == t)
                if not len(rows):
                    continue
                block = np.stack([np.asarray(projections[i], dtype=float).reshape(-1) for i in rows])
                if block.shape[1] != self.n_functions[t]:
                    raise InputError(f"ACE projections of {self.elements[t]}: {block.shape[1]} values, expected {self.n_functions[t]}")
                vector[self.offsets[t] : self.offsets[t + 1]] = block.mean(axis=0)
                vector[int(self.offsets[-1]) + t] = len(rows) / len(atoms)
            out.append(vector)
        return out


_FEATURIZERS = {"chgnet": _CHGNetFeaturizer, "sevennet": _SevenNetFeaturizer, "ace": _ACEFeaturizer}


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support")
        yield


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def compute_descriptors(
    structures: Sequence[Atoms],
    descriptor: str | DescriptorSpec | None = None,
    cache: bool | DescriptorCache = True,
    device: str | None = None,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Descriptors:
    """Feature rows of ``structures`` with one descriptor (cached); failures as statuses."""
    structures = list(structures)
    if not structures:
        raise InputError("no structures to describe")
    for i, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise InputError(f"structure {i} is a {type(atoms).__name__}, not an ase.Atoms")
        if len(atoms) == 0:
            raise InputError(f"structure {i} has no atoms")
    spec = descriptor if isinstance(descriptor, DescriptorSpec) else parse_descriptor(descriptor)
    version = spec.version
    decimals = get_settings().structure_id_decimals
    ids = [structure_id(atoms, decimals) for atoms in structures]
    store = cache if isinstance(cache, DescriptorCache) else (DescriptorCache() if cache else None)
    found = store.get(spec.cache_key, ids) if store is not None else {}
    vectors: dict[int, np.ndarray] = {j: found[i] for j, i in enumerate(ids) if i in found}
    status = ["ok"] * len(structures)
    reasons: list[str | None] = [None] * len(structures)
    todo = [j for j in range(len(structures)) if j not in vectors]
    done = len(structures) - len(todo)
    if progress is not None and done:
        progress(done)
    if todo:
        try:  # uMLIP loading sets torch's thread count from the settings
            featurizer = _FEATURIZERS[spec.kind](spec, device)
        except UqFlowsError:
            raise
        except Exception as exc:
            raise MemberError(f"cannot load descriptor {spec.name}: {_reason(exc)}") from exc
        computable = []
        for j in todo:
            problem = featurizer.check(structures[j])
            if problem:
                status[j], reasons[j] = "error", problem
            else:
                computable.append(j)
        new: dict[str, np.ndarray] = {}
        for start in range(0, len(computable), batch_size):
            chunk = computable[start : start + batch_size]
            try:
                rows = featurizer.batch([structures[j] for j in chunk])
            except Exception:  # find the structure that failed
                rows = []
                for j in chunk:
                    try:
                        rows.append(featurizer.batch([structures[j]])[0])
                    except Exception as exc:
                        logger.debug("descriptor %s failed on structure %d", spec.name, j, exc_info=True)
                        status[j], reasons[j] = "error", _reason(exc)
                        rows.append(None)
            for j, row in zip(chunk, rows):
                if row is None:
                    continue
                if not np.isfinite(row).all():
                    status[j], reasons[j] = "non_finite", f"{spec.name} gave non-finite features"
                    continue
                vectors[j] = row
                new[ids[j]] = row
            done += len(chunk)
            if progress is not None:
                progress(done)
        if store is not None:
            store.put(spec.cache_key, new)
    widths = {len(v) for v in vectors.values()}
    if len(widths) > 1:
        raise InputError(f"descriptor {spec.name} gave vectors of different lengths {sorted(widths)}; clear the cache {store.path if store else ''}")
    width = widths.pop() if widths else 0
    features = np.full((len(structures), width), np.nan)
    for j, row in vectors.items():
        features[j] = row
    n_failed = sum(s != "ok" for s in status)
    if n_failed:
        logger.warning("descriptor %s: %d of %d structures not described", spec.name, n_failed, len(structures))
    return Descriptors(spec.name, version, ids, features, status, reasons, n_cached=len(found))


def descriptor_info(spec: DescriptorSpec) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "version": spec.version}
