"""Ensemble members: which pretrained uMLIPs exist, how to name them, and how to load them.

A member is a pretrained universal MLIP used as one model of the heterogeneous ensemble of
paper 001 (Sec. 2, eq. 1). The built-in members run offline because their weights ship in
their PyPI wheels (CHGNet 0.2.0/0.3.0/r2scan in chgnet, SevenNet-0 and SevenNet-l3i5 in
sevenn); any MACE model file or ASE calculator can be added by the user.

Heavy packages (torch, chgnet, sevenn, mace) are imported only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from ase.calculators.calculator import BaseCalculator
from ase.data import atomic_numbers as _SYMBOL_TO_Z

from uq_flows.errors import MemberError
from uq_flows.settings import get_settings

logger = logging.getLogger(__name__)

KINDS = ("chgnet", "sevennet", "mace", "ase", "precomputed")
FUNCTIONALS = ("PBE", "r2SCAN")
_PACKAGE = {"chgnet": "chgnet", "sevennet": "sevenn", "mace": "mace-torch"}
ENERGY_CONVENTIONS = {"precomputed": "total", "precomputed-per-atom": "per-atom"}  # stored predictions' energies
_FORMS = (
    "a built-in name, 'mace:PATH' (a MACE model file), "
    "'ase:package.module:Attr' (an ASE Calculator class or zero-argument factory), "
    "'precomputed:PATH' or 'precomputed-per-atom:PATH' (stored predictions, total or per-atom energies), "
    "or 'NAME=SPEC' to name any of these"
)


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member: what to load and how it is called in files and reports.

    ``model`` is the CHGNet model name, the SevenNet model key (or checkpoint path), the
    MACE model file, the ``module.path:Attr`` import path of an ASE calculator, or the file
    of stored predictions (kind "precomputed", ``kwargs`` energy: total or per-atom).
    ``kwargs`` are extra constructor arguments (kinds "ase" and "mace"); a dict is accepted
    and stored as sorted pairs so the spec stays hashable.
    """

    name: str
    kind: str
    model: str
    functional: str | None
    kwargs: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise MemberError(f"member name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise MemberError(f"member {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.model, str) or not self.model:
            raise MemberError(f"member {self.name}: model must be a non-empty string")
        if self.functional is not None and self.functional not in FUNCTIONALS:
            raise MemberError(
                f"member {self.name}: functional {self.functional!r} is not one of "
                f"{', '.join(FUNCTIONALS)} or None (unknown)"
            )
        if self.kind == "ase":
            _split_import_path(self.model, self.name)
        kwargs = self.kwargs
        if isinstance(kwargs, dict):
            kwargs = tuple(sorted(kwargs.items()))
        try:
            kwargs = tuple((str(key), value) for key, value in kwargs)
        except (TypeError, ValueError) as exc:
            raise MemberError(f"member {self.name}: kwargs must be (name, value) pairs") from exc
        object.__setattr__(self, "kwargs", kwargs)

    @property
    def version(self) -> str:
        """Package version and model for provenance, e.g. ``"chgnet 0.4.2 / 0.3.0"``."""
        if self.kind == "ase":
            module = self.model.split(":", 1)[0]
            return f"{_module_version(module)} / {self.model}"
        if self.kind == "precomputed":
            digest = file_digest(self.model)
            return f"precomputed {Path(self.model).name}" + (f" (sha256 {digest})" if digest else "")
        package = _PACKAGE[self.kind]
        try:
            text = f"{package} {metadata.version(package)} / {self.model}"
        except metadata.PackageNotFoundError:
            text = f"{package} (not installed) / {self.model}"
        if self.kind == "mace":
            digest = file_digest(self.model)
            if digest:
                text += f" (sha256 {digest})"
        return text

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for job inputs); kwargs values must themselves be serialisable."""
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "functional": self.functional,
            "kwargs": [[key, value] for key, value in self.kwargs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberSpec:
        return cls(
            name=data["name"],
            kind=data["kind"],
            model=data["model"],
            functional=data.get("functional"),
            kwargs=tuple((key, value) for key, value in data.get("kwargs", ())),
        )


BUILTIN_MEMBERS: dict[str, MemberSpec] = {
    spec.name: spec
    for spec in (
        MemberSpec("chgnet-0.2.0", "chgnet", "0.2.0", "PBE"),
        MemberSpec("chgnet-0.3.0", "chgnet", "0.3.0", "PBE"),
        MemberSpec("chgnet-r2scan", "chgnet", "r2scan", "r2SCAN"),
        MemberSpec("sevennet-0-11jul2024", "sevennet", "7net-0_11July2024", "PBE"),
        MemberSpec("sevennet-0-22may2024", "sevennet", "7net-0_22May2024", "PBE"),
        MemberSpec("sevennet-l3i5", "sevennet", "7net-l3i5", "PBE"),
    )
}


def parse_member(text: str) -> MemberSpec:
    """A member from its command-line form (see ``_FORMS``); names are case-insensitive for built-ins."""
    if not isinstance(text, str) or not text.strip():
        raise MemberError(f"empty member; give {_FORMS}")
    text = text.strip()
    name = None
    head = text.split(":", 1)[0]
    if "=" in head:  # NAME=SPEC; an '=' after the first ':' belongs to a path
        name, text = (part.strip() for part in text.split("=", 1))
        if not name or any(c.isspace() for c in name) or ":" in name:
            raise MemberError(f"bad member name {name!r} in {name}={text}: no spaces or ':' allowed")
        if name.lower() in BUILTIN_MEMBERS and name.lower() != text.lower():
            raise MemberError(f"{name} is a built-in member name; choose another name for {text}")
        if "=" in text.split(":", 1)[0]:
            raise MemberError(f"member {name}={text}: only one NAME= prefix is allowed")
    spec = _parse_unnamed(text)
    if name is not None:
        spec = MemberSpec(name, spec.kind, spec.model, spec.functional, spec.kwargs)
    return spec


def _parse_unnamed(text: str) -> MemberSpec:
    builtin = BUILTIN_MEMBERS.get(text.lower())
    if builtin is not None:
        return builtin
    prefix, _, rest = text.partition(":")
    prefix = prefix.lower()
    if prefix == "mace" and rest:
        path = Path(rest).expanduser()
        if not path.is_file():
            raise MemberError(f"member {text}: MACE model file {path} does not exist")
        return MemberSpec(text, "mace", str(path.resolve()), None)
    if prefix == "ase" and rest:
        return MemberSpec(text, "ase", rest, None)
    if prefix in ENERGY_CONVENTIONS and rest:
        path = Path(rest).expanduser()
        if not path.exists():
            raise MemberError(f"member {text}: stored predictions {path} do not exist")
        # unnamed, it is called by its file's name (no paths in job names)
        return MemberSpec(path.name.split(".")[0] or text, "precomputed", str(path.resolve()), None,
                          {"energy": ENERGY_CONVENTIONS[prefix]})
    raise MemberError(
        f"unknown member {text!r}; built-in members: {', '.join(BUILTIN_MEMBERS)}; "
        f"or give {_FORMS}"
    )


def _split_import_path(path: str, name: str) -> tuple[str, str]:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise MemberError(f"member {name}: {path!r} is not an import path 'package.module:Attr'")
    return module, attr


# --------------------------------------------------------------------------- loading

_CACHE: dict[tuple, BaseCalculator] = {}


def load_calculator(spec: MemberSpec, device: str | None = None) -> BaseCalculator:
    """The member's ASE calculator, loaded once per (model, kwargs, device) in this process.

    ``device`` defaults to ``get_settings().device``; ASE members get no device (the
    calculator decides). Any loading failure becomes a MemberError naming the member.
    """
    device = device or get_settings().device
    key = (spec.kind, spec.model, repr(spec.kwargs), device if spec.kind != "ase" else None)
    calculator = _CACHE.get(key)
    if calculator is None:
        loader = {"chgnet": _load_chgnet, "sevennet": _load_sevennet, "mace": _load_mace, "ase": _load_ase,
                  "precomputed": _load_precomputed}
        try:
            # the packages print banners ("CHGNet will run on cpu"); keep stdout clean for --json
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
                warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support")
                calculator = loader[spec.kind](spec, device)
        except MemberError:
            raise
        except Exception as exc:
            raise MemberError(f"cannot load member {spec.name} ({spec.version}): {type(exc).__name__}: {exc}") from exc
        if not isinstance(calculator, BaseCalculator):
            raise MemberError(
                f"member {spec.name}: {spec.model} gave a {type(calculator).__name__}, not an ASE calculator"
            )
        _CACHE[key] = calculator
        logger.info("loaded member %s (%s) on %s", spec.name, spec.version, device)
    return calculator


def clear_calculator_cache() -> None:
    """Forget every loaded calculator (frees the models once nothing else holds them)."""
    _CACHE.clear()


def prepare_torch() -> None:
    """Allow-list ``slice`` for torch's weights-only loader before e3nn-based packages import.

    e3nn 0.4 (used by sevenn and mace) loads a constants file at import, which fails under
    torch >= 2.6 without this; it is harmless otherwise. Also sets the thread count.
    """
    import torch

    torch.serialization.add_safe_globals([slice])
    torch.set_num_threads(get_settings().torch_threads)


def _load_chgnet(spec: MemberSpec, device: str) -> BaseCalculator:
    prepare_torch()
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    model = CHGNet.load(model_name=spec.model, use_device=device, verbose=False)
    return CHGNetCalculator(model=model, use_device=device, **spec.kwargs_dict())


def _load_sevennet(spec: MemberSpec, device: str) -> BaseCalculator:
    prepare_torch()
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(model=spec.model, file_type="checkpoint", device=device, **spec.kwargs_dict())


def _load_mace(spec: MemberSpec, device: str) -> BaseCalculator:
    if not Path(spec.model).is_file():
        raise MemberError(f"member {spec.name}: MACE model file {spec.model} does not exist")
    prepare_torch()
    # note: importing mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the whole process,
    # so model files are unpickled in full: load only files you trust.
    from mace.calculators import MACECalculator

    kwargs = {"default_dtype": "float64", **spec.kwargs_dict()}
    return MACECalculator(model_paths=spec.model, device=device, **kwargs)


def _load_ase(spec: MemberSpec, device: str) -> BaseCalculator:
    module_name, attr = _split_import_path(spec.model, spec.name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MemberError(f"member {spec.name}: cannot import {module_name}: {exc}") from exc
    try:
        factory = getattr(module, attr)
    except AttributeError as exc:
        raise MemberError(f"member {spec.name}: {module_name} has no attribute {attr}") from exc
    if not callable(factory):
        raise MemberError(f"member {spec.name}: {spec.model} is not a class or factory")
    return factory(**spec.kwargs_dict())


# --------------------------------------------------------------------------- coverage


def _load_precomputed(spec: MemberSpec, device: str) -> BaseCalculator:
    from uq_flows.ensemble.stored import StoredPredictions

    return StoredPredictions(spec.model, spec.kwargs_dict()["energy"], get_settings().structure_id_decimals)


def with_base_folder(text: str, base: Path) -> str:
    """A member spec with its file path (``mace:``, ``precomputed:``, ``precomputed-per-atom:``)
    made absolute against ``base`` (the folder of the config file that names it)."""
    name, equals, rest = text.partition("=") if "=" in text.split(":", 1)[0] else ("", "", text)
    prefix, colon, path = rest.partition(":")
    if not colon or prefix.lower() not in ("mace", *ENERGY_CONVENTIONS) or Path(path).expanduser().is_absolute():
        return text
    return f"{name}{equals}{prefix}:{base / path}"


def supported_numbers(spec: MemberSpec, calculator: BaseCalculator) -> frozenset[int] | None:
    """Atomic numbers the member can evaluate, or None when this cannot be known (kind "ase").

    CHGNet: the size of the atom embedding (Z = 1..94); SevenNet: the chemical species in
    the checkpoint config (else its type map); MACE: the model's ``atomic_numbers``.
    """
    try:
        if spec.kind == "chgnet":
            n = calculator.model.atom_embedding.embedding.num_embeddings
            return frozenset(range(1, int(n) + 1))
        if spec.kind == "sevennet":
            config = getattr(calculator, "sevennet_config", None) or {}
            species = config.get("chemical_species")
            if isinstance(species, (list, tuple)) and species:
                return frozenset(_SYMBOL_TO_Z[str(s)] for s in species)
            return frozenset(int(z) for z in calculator.type_map)
        if spec.kind == "mace":
            return frozenset(int(z) for z in calculator.models[0].atomic_numbers)
    except (AttributeError, KeyError, IndexError, TypeError):
        logger.debug("cannot read the element coverage of %s", spec.name, exc_info=True)
    return None


# --------------------------------------------------------------------------- provenance


@lru_cache(maxsize=256)
def _module_version(module: str) -> str:
    top = module.split(".", 1)[0]
    for dist in _distributions().get(top, []):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{top} (unversioned)"


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed package: slow, cache it


def file_digest(path: str | Path) -> str | None:
    """First 12 hex digits of a file's SHA-256 (cached by size and mtime); None if unreadable."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
