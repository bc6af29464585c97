"""The loop's training pool: every ok label so far, one energy zero (METHODS §2).

Teacher labels are stored *unaligned*. The pairs of structures labelled by both DFT and the
teacher accumulate over iterations, and the loop's single current alignment (fitted on the
random audit pairs, high-U pairs only as a flagged fallback) is applied when a training set is
drawn from the pool, so every teacher energy in a fit sits on the DFT energy zero. Teacher
labels the alignment cannot place (an element or composition the pairs do not determine, or a
fit refused for its residual) wait in the pool, with the reason, until a later audit can.

The audit sample of the newest iteration is held out of that iteration's fit: it is the
unbiased test set on which the fit, ρ(U, error) and the CAGO calibration are measured, and it
joins the training set from the next iteration on.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from uq_flows.labeling.alignment import DEFAULT_MAX_RESIDUAL, AlignmentPair, EnergyAlignment, fit_from_pairs
from uq_flows.labeling.labels import DFT, TEACHER, Label
from uq_flows.records import StructureRecord

AUDIT_KEY = "audit"  # label provenance flag of audit-sample labels


class TrainingPool(BaseModel):
    """Every labelled structure of the loop so far (ok labels only, teacher energies unaligned)."""

    structures: list[StructureRecord] = Field(default_factory=list)
    labels: list[Label] = Field(default_factory=list)
    pairs: list[AlignmentPair] = Field(default_factory=list, description="Structures labelled by both sources.")
    align_energies: bool = True
    max_residual: float = DEFAULT_MAX_RESIDUAL
    alignment: EnergyAlignment | None = Field(None, description="The loop's current alignment (all pairs so far).")
    teacher_references: dict[str, float] | None = Field(
        None, description="Elemental reference energies from the teacher (eV/atom, unaligned), for QBC's pre-filter."
    )

    def merged(self, structures: Sequence[StructureRecord], labels: Sequence[Label],
               pairs: Sequence[AlignmentPair]) -> TrainingPool:
        """The pool plus new ok labels (an id labelled before is not added twice) and pairs; alignment refitted."""
        known = {s.id for s in self.structures}
        by_id = {s.id: s for s in structures}
        new = [label for label in labels if label.ok and label.id not in known and label.id in by_id]
        have = {p.id for p in self.pairs}
        all_pairs = [*self.pairs, *(p for p in pairs if p.id not in have)]
        alignment = fit_from_pairs(all_pairs, self.max_residual) if self.align_energies else None
        return self.model_copy(update={
            "structures": [*self.structures, *(by_id[x.id] for x in new)],
            "labels": [*self.labels, *new],
            "pairs": all_pairs,
            "alignment": alignment,
        })

    def training_split(self, held_out_iteration: int | None = None) -> TrainingSplit:
        """Aligned labels to fit on, the held-out audit labels to test on, and teacher labels that wait."""
        by_id = {s.id: s for s in self.structures}
        train, test, waiting = [], [], []
        for label in self.labels:
            if label.kind == DFT and label.provenance.get(AUDIT_KEY) and label.iteration == held_out_iteration \
                    and held_out_iteration is not None:
                test.append(label)
                continue
            if label.kind == TEACHER and self.align_energies:
                aligned = self._aligned(label, by_id[label.id])
                if isinstance(aligned, str):
                    waiting.append(label.model_copy(update={"reason": aligned}))
                    continue
                label = aligned
            train.append(label)
        return TrainingSplit(
            train_structures=[by_id[x.id] for x in train], train_labels=train,
            test_structures=[by_id[x.id] for x in test], test_labels=test,
            n_waiting=len(waiting), waiting_reason=waiting[0].reason if waiting else None,
        )

    def _aligned(self, label: Label, structure: StructureRecord) -> Label | str:
        if self.alignment is None:
            return ("no energy alignment yet: no structure has both a DFT and a teacher label "
                    "(the next iteration's audit sample provides them)")
        problem = self.alignment.problem(structure.numbers)
        if problem:
            return problem
        shift = self.alignment.shift(structure.numbers)
        provenance = {**label.provenance, "energy_shift": shift, "unaligned_energy": label.energy,
                      "alignment_sample": self.alignment.sample}
        return label.model_copy(update={"energy": label.energy + shift, "provenance": provenance})


class TrainingSplit(BaseModel):
    """What one fit is trained and tested on."""

    train_structures: list[StructureRecord]
    train_labels: list[Label]
    test_structures: list[StructureRecord]
    test_labels: list[Label] = Field(description="This iteration's audit DFT labels (a random sample), held out.")
    n_waiting: int = Field(0, description="Teacher labels not yet alignable to the DFT energy zero.")
    waiting_reason: str | None = None
