"""Uncertainty-aware model distillation as one flow (paper 001, UAMD; METHODS §1-2).

score (members × chunks) → threshold (U_c or audit) → label (DFT per structure, teacher in
one job) → assemble (alignment, screens, success fraction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobflow import Flow, Maker

from uq_flows.ensemble.jobs import EnsembleScoreMaker
from uq_flows.labeling.jobs import LabelStageMaker, ThresholdMaker
from uq_flows.records import StructureRecord


@dataclass
class DistillationFlowMaker(Maker):
    """Label structures with DFT where U ≥ U_c and with a teacher elsewhere."""

    name: str = "distillation"
    score_maker: EnsembleScoreMaker = field(default_factory=EnsembleScoreMaker)
    threshold_maker: ThresholdMaker = field(default_factory=ThresholdMaker)
    label_maker: LabelStageMaker = field(default_factory=LabelStageMaker)

    def make(self, structures: list[StructureRecord]) -> Flow:
        score = self.score_maker.make(structures)
        threshold = self.threshold_maker.make(structures, score.output)
        label = self.label_maker.make(structures, threshold.output)
        return Flow([score, threshold, label], output=label.output, name=self.name)
