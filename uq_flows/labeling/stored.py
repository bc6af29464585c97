"""Labels in the campaign database: one small row per label (``campaign_labels``), forces and
stress in array chunks (DESIGN.md, "The campaign data plane")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uq_flows.campaign import Campaign
from uq_flows.labeling.labels import Label
from uq_flows.labeling.pool import AUDIT_KEY


def label_row(label: Label, n_atoms: int) -> dict:
    """The small document of a label (its forces and stress go to a chunk)."""
    return {"id": label.id, "kind": label.kind, "source": label.source, "status": label.status,
            "reason": label.reason, "energy": label.energy, "n_atoms": n_atoms, "U": label.U,
            "audit": bool(label.provenance.get(AUDIT_KEY)), "provenance": label.provenance}


def label_of(row: Mapping, forces: np.ndarray | None, stress: np.ndarray | None) -> Label:
    return Label(id=row["id"], status=row["status"], kind=row["kind"], source=row["source"], energy=row.get("energy"),
                 forces=None if forces is None else forces.reshape(-1, 3).tolist(),
                 stress=None if stress is None else stress.tolist(), reason=row.get("reason"),
                 provenance=row.get("provenance") or {}, U=row.get("U"), iteration=row["iteration"], loop=row["loop"])


def store_labels(campaign: Campaign, loop: str, iteration: int, labels: Sequence[Label],
                 n_atoms: Mapping[str, int]) -> None:
    """An iteration's final labels (replacing any stored before) with their forces and stresses."""
    campaign.add_labels(loop, iteration, [label_row(x, n_atoms[x.id]) for x in labels],
                        [None if x.forces is None else np.asarray(x.forces, float) for x in labels],
                        [None if x.stress is None else np.asarray(x.stress, float) for x in labels])


def stored_labels(campaign: Campaign, query: Mapping) -> list[Label]:
    """Labels matching a ``campaign_labels`` query, with their forces."""
    return [label_of(row, forces, stress) for row, forces, stress in campaign.labels({**query})]
