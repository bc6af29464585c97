"""Which physical screens apply to a structure, by where it came from (METHODS §7).

Paper 004 discards CAGO structures whose atoms come closer than 0.75 Å or whose reference
forces exceed 30 eV/Å: an adversarial optimiser must not be rewarded for pushing atoms
together. Those filters are not for candidates a user supplies or a generator makes: paper
001's W set deliberately contains dimers and short-range configurations with huge forces,
labelled by DFT. Those get only the hard minimum distance (0.5 Å), below which a structure is
broken rather than informative.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from uq_flows.screening import DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE, HARD_MIN_DISTANCE

SOURCE_KINDS = ("candidates", "md", "cago")


class Screen(BaseModel):
    """Thresholds for one source of structures."""

    model_config = ConfigDict(extra="forbid")

    min_distance: float = Field(HARD_MIN_DISTANCE, ge=0, allow_inf_nan=False,
                                description="Å: closer atoms → rejected before labelling.")
    max_force: float | None = Field(None, gt=0, description="eV/Å: a reference label with a larger force is "
                                                             "rejected (None: no force screen).")


class SourceScreens(BaseModel):
    """Screens for user-supplied or generated candidates, MD snapshots and CAGO structures."""

    model_config = ConfigDict(extra="forbid")

    candidates: Screen = Field(default_factory=Screen)
    md: Screen = Field(default_factory=Screen)
    cago: Screen = Field(default_factory=lambda: Screen(min_distance=DEFAULT_MIN_DISTANCE, max_force=DEFAULT_MAX_FORCE))

    def for_source(self, source: str | None) -> Screen:
        """The screen of a structure whose record source is ``source`` (``md:...``, ``cago:...``, a file, ...)."""
        kind = (source or "").split(":", 1)[0]
        return getattr(self, kind) if kind in ("md", "cago") else self.candidates
