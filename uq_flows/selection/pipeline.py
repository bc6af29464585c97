"""Candidate selection end to end: QBC → descriptors → DIRECT → coverage (METHODS §6).

Used by ``uq-flows select`` and by the Makers; every index it reports refers to the input
order of the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from ase import Atoms

from uq_flows.ensemble.members import MemberSpec
from uq_flows.errors import InputError
from uq_flows.selection.committee import committee_predictions, parse_committee
from uq_flows.selection.coverage import feature_coverage
from uq_flows.selection.descriptors import Descriptors, compute_descriptors
from uq_flows.selection.direct import (
    DirectConfig,
    DirectResult,
    check_features,
    direct_sample,
)
from uq_flows.selection.qbc import QBCConfig, QBCResult, select_from_predictions


@dataclass
class SelectionResult:
    """What was selected, and how many candidates each stage kept."""

    n_candidates: int
    selected: np.ndarray  # indices into the input, ascending
    after_qbc: np.ndarray  # indices passing QBC (every candidate without QBC)
    described: np.ndarray  # indices DIRECT clustered (after QBC, with features)
    qbc: QBCResult | None = None
    descriptors: Descriptors | None = None
    direct: DirectResult | None = None
    coverage: dict[str, Any] | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """Cluster of every candidate (-1 where not clustered)."""
        labels = np.full(self.n_candidates, -1, dtype=np.int64)
        if self.direct is not None:
            labels[self.described] = self.direct.labels
        return labels

    def summary(self) -> dict[str, Any]:
        return {
            "selected": [int(i) for i in self.selected],
            "n_candidates": self.n_candidates,
            "n_after_qbc": len(self.after_qbc),
            "n_described": len(self.described),
            "n_selected": len(self.selected),
            "n_clusters": self.direct.n_clusters if self.direct is not None else 0,
            "coverage": self.coverage,
            "qbc": self.qbc.summary() if self.qbc is not None else None,
            "descriptor": None if self.descriptors is None else {
                "name": self.descriptors.name,
                "version": self.descriptors.version,
                "n_features": int(self.descriptors.features.shape[1]),
                "n_cached": self.descriptors.n_cached,
            },
            "direct": self.direct.summary() if self.direct is not None else None,
            "n_failed": len(self.failed),
            "failed": list(self.failed),
            "notes": list(self.notes),
        }


def select_candidates(
    structures: Sequence[Atoms] | None = None,
    *,
    committee: Sequence[str | MemberSpec] | None = None,
    qbc_config: QBCConfig | None = None,
    descriptor: str | None = None,
    features: np.ndarray | None = None,
    direct_config: DirectConfig | None = None,
    cache: bool = True,
    device: str | None = None,
    n_bins: int = 50,
    progress: Callable[[str, int, int], None] | None = None,
) -> SelectionResult:
    """QBC with ``committee`` (skipped when None), then DIRECT on ``features`` (rows aligned
    with ``structures``) or on descriptor ``descriptor`` of the QBC-selected structures.

    ``progress(stage, done, total)`` reports committee members and descriptor batches.
    Candidates a committee member or the descriptor could not handle are listed in
    ``failed`` and never selected.
    """
    direct_config = direct_config or DirectConfig()
    structures = list(structures) if structures is not None else None
    if structures is None and features is None:
        raise InputError("no candidates: give structures, features, or both")
    if features is not None:
        features = check_features(features, len(structures) if structures is not None else None)
    n = len(structures) if structures is not None else len(features)
    if n == 0:
        raise InputError("no candidates: the candidate set is empty")
    if direct_config.n_clusters is not None and direct_config.n_clusters > n:  # before any model runs
        raise InputError(f"{direct_config.n_clusters} clusters requested for only {n} candidates")
    notes: list[str] = []
    failed: list[dict[str, Any]] = []
    n_sites = np.array([len(a) for a in structures]) if structures is not None else None

    qbc = None
    after = np.arange(n)
    if committee is not None:
        if structures is None:
            raise InputError("QBC needs the candidate structures, not only features")
        specs = parse_committee(committee)
        predictions = committee_predictions(
            structures, specs, device,
            progress=(lambda name, k: progress(f"committee {name}", k, n)) if progress else None,
        )
        qbc = select_from_predictions(predictions, [a.numbers for a in structures], qbc_config)
        for j in np.flatnonzero(qbc.failed):
            failed.append({"index": int(j), "stage": "qbc", "status": qbc.status[j], "reason": qbc.reasons[j]})
        after = qbc.selected_indices
    result = SelectionResult(n_candidates=n, selected=np.zeros(0, dtype=np.int64), after_qbc=after,
                             described=np.zeros(0, dtype=np.int64), qbc=qbc, failed=failed, notes=notes)
    if len(after) == 0:
        notes.append("QBC selected no candidate: the committee agrees within the thresholds everywhere")
        return result

    if features is not None:
        rows = features[after]
        described = after
    else:
        descriptors = compute_descriptors(
            [structures[j] for j in after], descriptor, cache=cache, device=device,
            progress=(lambda k: progress("descriptors", k, len(after))) if progress else None,
        )
        result.descriptors = descriptors
        ok = descriptors.ok
        for local in np.flatnonzero(~ok):
            failed.append({"index": int(after[local]), "stage": "descriptor",
                           "status": descriptors.status[local], "reason": descriptors.reasons[local]})
        described = after[ok]
        rows = descriptors.features[ok]
        if len(described) == 0:
            notes.append("the descriptor failed on every candidate left")
            return result
    distinct = len(np.unique(rows, axis=0))
    if direct_config.n_clusters is not None and direct_config.n_clusters > distinct:
        notes.append(f"{len(described)} of {n} candidates left after QBC and the descriptor ({distinct} distinct), "
                     f"fewer than the {direct_config.n_clusters} clusters requested: one cluster each")
        direct_config = replace(direct_config, n_clusters=distinct)
    direct = direct_sample(rows, direct_config, None if n_sites is None else n_sites[described])
    result.direct = direct
    result.described = described
    result.selected = described[direct.selected]
    result.coverage = feature_coverage(direct.scores, direct.selected, n_bins=n_bins, seed=direct_config.seed)
    notes.extend(direct.notes)
    return result
