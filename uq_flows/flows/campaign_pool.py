"""The loop's training pool in the campaign database (DESIGN.md, "The campaign data plane").

An iteration's outcome is written once, by its record job: the structures' rows get their U,
route, status and reason; every final label (ok, failed, rejected) becomes a row with its
forces in a chunk; the alignment pairs and the teacher's elemental references are stored.
(The assembly of a stored candidate set writes the labels itself, with their forces.) The fit
draws its training set from there (``load_pool``), so no job carries the pool.
"""

from __future__ import annotations

from uq_flows.campaign import Campaign
from uq_flows.ensemble.jobs import UncertaintyDocument
from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL, AlignmentPair
from uq_flows.labeling.assembly import DistilledDataset
from uq_flows.labeling.jobs import RoutingDocument
from uq_flows.labeling.labels import OK
from uq_flows.labeling.pool import TrainingPool
from uq_flows.labeling.stored import label_of, store_labels

POOL = "pool"  # campaign_loops kind of the pool's small facts (teacher references)


def store_iteration(campaign: Campaign, loop: str, iteration: int, uncertainty: UncertaintyDocument,
                    routing: RoutingDocument | None, dataset: DistilledDataset | None,
                    teacher_references: dict[str, float] | None = None, align_energies: bool = True,
                    max_residual: float = DEFAULT_MAX_RESIDUAL) -> None:
    """Write an iteration's scores, routes and labels into the campaign collections."""
    updates: dict[str, dict] = {s.id: {"stage": "scored", "U": s.U, "status": s.status, "reason": s.reason}
                                for s in uncertainty.structures}
    for route in routing.routes if routing else ():
        updates[route.id].update(stage="routed", route=route.route, audit=route.audit)
    n_atoms = {s.id: s.n_atoms for s in uncertainty.structures}
    labels = dataset.labels if dataset else []
    for label in labels:
        updates[label.id].update(stage="labelled", status=label.status, reason=label.reason,
                                 label_kind=label.kind, label_source=label.source)
    campaign.update_structures(loop, iteration, updates)
    if dataset is None or not dataset.forces_stored:  # else the assembly stored them, with every force
        store_labels(campaign, loop, iteration, labels, n_atoms)
    campaign.add_pairs(loop, iteration, [p.model_dump() for p in (dataset.pairs if dataset else [])])
    campaign.put_loop_document(loop, iteration, POOL, {"teacher_references": teacher_references,
                                                       "align_energies": align_energies, "max_residual": max_residual})


def load_pool(campaign: Campaign, loop: str, up_to: int | None = None) -> TrainingPool:
    """Every ok label of iterations ≤ ``up_to`` (all when None; the first label of an id wins), pairs and references."""
    facts = [d for d in campaign.loop_documents(loop, POOL) if up_to is None or d["iteration"] <= up_to]
    if not facts:
        raise KeyError(f"loop {loop!r} has no recorded iteration" + ("" if up_to is None else f" up to {up_to}"))
    up_to = facts[-1]["iteration"] if up_to is None else up_to
    rows = campaign.labels({"loop": loop, "status": OK, "iteration": {"$lte": up_to}})
    rows.sort(key=lambda item: item[0]["iteration"])
    labels, seen = [], set()
    for row, forces, stress in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            labels.append(label_of(row, forces, stress))
    structures = campaign.structures_by_id(loop, seen)
    references = next((d["teacher_references"] for d in reversed(facts) if d.get("teacher_references")), None)
    pool = TrainingPool(align_energies=facts[-1]["align_energies"], max_residual=facts[-1]["max_residual"],
                        teacher_references=references)
    pairs = [AlignmentPair.model_validate({k: v for k, v in p.items() if k != "loop"})
             for p in campaign.pairs(loop, up_to)]
    return pool.merged([structures[x.id] for x in labels], labels, pairs)
