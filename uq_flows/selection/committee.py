"""The QBC committee: uMLIP ensemble members or ACE potential files, as ensemble member specs.

A committee member is anything that gives energies, forces and stresses for the candidates.
uMLIP members use the ensemble's forms (``chgnet-0.3.0``, ``mace:PATH``, ``NAME=SPEC``...);
an ACE potential file (``*.yaml`` B-basis, ``*.yace``/``*.ace`` C-tilde basis, optionally
``NAME=PATH``) becomes an ``ase`` member whose factory is ``ace_calculator``, so every
member runs through ``uq_flows.ensemble.predict_member`` with its per-structure statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from uq_flows.ensemble.members import (
    MemberSpec,
    file_digest,
    load_calculator,
    parse_member,
)
from uq_flows.ensemble.predict import MemberPredictions, predict_member
from uq_flows.errors import InputError, MemberError, UqFlowsError

ACE_SUFFIXES = (".yaml", ".yace")
ACE_FACTORY = "uq_flows.selection.committee:ace_calculator"


def ace_calculator(path: str) -> BaseCalculator:
    """An ACE potential file as an ASE calculator: the one place QBC loads ACE potentials.

    Uses ``uq_flows.ace``'s ``AceCalculator`` (total energies: the reference energies a
    pacemaker fit stores in the file are added back), or pyace's ``PyACECalculator`` where
    that module is not installed.
    """
    file = Path(path)
    if not file.is_file():
        raise MemberError(f"ACE potential {file} does not exist")
    try:
        from uq_flows.ace.potential import AceCalculator
    except ImportError:
        AceCalculator = None
    try:
        if AceCalculator is not None:
            return AceCalculator(file)
        from pyace.asecalc import PyACECalculator

        calculator = PyACECalculator(str(file))
        calculator.compute_projections = False  # QBC needs energies, forces and stresses only
        return calculator
    except UqFlowsError as exc:
        raise MemberError(str(exc)) from exc
    except Exception as exc:  # pyace raises RuntimeError/ValueError for bad files
        raise MemberError(f"cannot load ACE potential {file}: {type(exc).__name__}: {exc}") from exc


def is_ace_file(text: str) -> bool:
    return text.lower().endswith(ACE_SUFFIXES)


def parse_committee_member(text: str) -> MemberSpec:
    """A committee member: an ensemble member form, or an ACE potential file (``[NAME=]PATH``)."""
    if not isinstance(text, str) or not text.strip():
        raise MemberError("empty committee member")
    text = text.strip()
    if not is_ace_file(text):
        return parse_member(text)
    head, sep, tail = text.partition("=")
    if sep and not Path(text).expanduser().is_file():  # NAME=PATH
        name, path = head.strip(), Path(tail.strip()).expanduser()
    else:
        name, path = text, Path(text).expanduser()
    if not path.is_file():
        raise MemberError(f"committee member {text}: ACE potential file {path} does not exist")
    if not name or any(c.isspace() for c in name):
        raise MemberError(f"bad committee member name {name!r}")
    return MemberSpec(name, "ase", ACE_FACTORY, None, {"path": str(path.resolve())})


def parse_committee(members: Sequence[str | MemberSpec]) -> list[MemberSpec]:
    """Committee members from their forms (or specs), at least two, names unique."""
    if isinstance(members, str):
        raise InputError("the committee must be a list of members, not one string")
    specs = [m if isinstance(m, MemberSpec) else parse_committee_member(m) for m in members]
    if len(specs) < 2:
        raise InputError(f"a QBC committee needs at least two members, got {len(specs)}")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"committee members given more than once: {', '.join(duplicates)}")
    return specs


def member_version(spec: MemberSpec) -> str:
    """Provenance: package version and model; ACE files by content hash."""
    if spec.kind == "ase" and spec.model == ACE_FACTORY:
        path = str(spec.kwargs_dict()["path"])
        try:
            version = metadata.version("python-ace")
        except metadata.PackageNotFoundError:
            version = "(not installed)"
        return f"python-ace {version} / {path} (sha256 {file_digest(path)})"
    return spec.version


def committee_predictions(
    structures: Sequence[Atoms],
    committee: Sequence[MemberSpec],
    device: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[MemberPredictions]:
    """Every member's energies, forces and stresses on ``structures`` (statuses per structure)."""
    if not structures:
        raise InputError("no candidate structures for the committee")
    predictions = []
    for spec in committee:
        calculator = load_calculator(spec, device)
        step = (lambda k, name=spec.name: progress(name, k)) if progress else None
        predicted = predict_member(spec, structures, calculator=calculator, progress=step)
        predicted.version = member_version(spec)
        predictions.append(predicted)
    return predictions
