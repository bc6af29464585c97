"""The campaign data plane: the loop's state as database rows and array chunks (DESIGN.md)."""

from uq_flows.campaign.store import LABELS, LOOPS, PAIRS, POOL_ITERATION, POOL_STAGE, STRUCTURES, TEACH, Campaign, LabelledSet, StructureSet, records_of, stored_shortest, structure_ids

__all__ = ["LABELS", "LOOPS", "PAIRS", "POOL_ITERATION", "POOL_STAGE", "STRUCTURES", "TEACH", "Campaign", "LabelledSet", "StructureSet", "records_of", "stored_shortest", "structure_ids"]
