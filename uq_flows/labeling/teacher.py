"""Teacher labels from uMLIP members or any ASE calculator (paper 001, UAMD).

Energy and forces may come from different members, as in the paper (eqV2-31M-OAM energies,
eqV2-31M-omat forces). A structure the teacher cannot predict gets a failed label with the
member's reason; one screened out before the model runs (non-finite positions or cell, atoms
closer than ``min_distance``) gets a rejected label with the screen's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ase import Atoms

from uq_flows.ensemble.members import MemberSpec
from uq_flows.ensemble.predict import STRUCTURE_STATUSES, MemberPredictions, predict_member
from uq_flows.labeling.labels import REJECTED, TEACHER, Label
from uq_flows.screening import HARD_MIN_DISTANCE


def teacher_source(energy_from: MemberSpec, forces_from: MemberSpec) -> str:
    if energy_from.name == forces_from.name:
        return energy_from.name
    return f"energy:{energy_from.name},forces:{forces_from.name}"


def teacher_labels(
    structures: Sequence[Atoms],
    ids: Sequence[str],
    energy_from: MemberSpec,
    forces_from: MemberSpec | None = None,
    device: str | None = None,
    min_distance: float = HARD_MIN_DISTANCE,
    progress: Callable[[str, int], None] | None = None,
) -> list[Label]:
    """One label per structure: energy (and stress) from ``energy_from``, forces from ``forces_from``
    (``progress(member, structures done)`` as each model goes)."""
    forces_from = forces_from or energy_from

    def step(spec):
        return (lambda k: progress(spec.name, k)) if progress else None

    energy = predict_member(energy_from, structures, device=device, min_distance=min_distance, progress=step(energy_from))
    forces = energy if forces_from.name == energy_from.name else predict_member(
        forces_from, structures, device=device, min_distance=min_distance, progress=step(forces_from)
    )
    return labels_from_predictions(list(enumerate(ids)), energy, forces, energy_from, forces_from)


def labels_from_predictions(picks: Sequence[tuple[int, str]], energy: MemberPredictions, forces: MemberPredictions,
                            energy_from: MemberSpec, forces_from: MemberSpec | None = None) -> list[Label]:
    """Teacher labels of the structures at ``picks`` (index in the predictions, id) from predictions
    already made: the scoring stage's, when the teacher is an ensemble member (no second model pass)."""
    forces_from = forces_from or energy_from
    source = teacher_source(energy_from, forces_from)
    provenance = {
        "energy_from": energy_from.name, "energy_version": energy_from.version,
        "forces_from": forces_from.name, "forces_version": forces_from.version,
        "functional": energy_from.functional,
    }
    return [_label(j, structure_id, energy, forces, source, provenance) for j, structure_id in picks]


def _label(j: int, structure_id: str, energy: MemberPredictions, forces: MemberPredictions, source, provenance) -> Label:
    if energy.status[j] in STRUCTURE_STATUSES:  # screened: no model saw it
        reason = f"{energy.status[j]}: {energy.reasons[j]}"
        return Label(id=structure_id, status=REJECTED, kind=TEACHER, source=source, reason=reason,
                     provenance=provenance)
    for predictions in (energy, forces):
        if predictions.status[j] != "ok":
            reason = f"{predictions.member}: {predictions.status[j]}: {predictions.reasons[j]}"
            return Label.failed(structure_id, TEACHER, source, reason, provenance=provenance)
    stress = energy.stresses[j]
    return Label.from_results(
        structure_id, TEACHER, source, energy.energies[j], forces.structure_forces(j),
        None if not all(stress == stress) else stress, provenance=provenance,
    )
