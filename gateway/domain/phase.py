"""The four migration phases, once: which store serves, and how the other one is written.

    phase          serves (reads, first write)   the other store
    parallel       legacy                         written in the background, best effort
    write-through  legacy                         written before the reply; failures repaired
    read-switch    actors                         written before the reply; failures repaired
    cutover        actors                         not written

The settings, the persisted phase control, the guards, the phase router and the admin status
all take their words from this one value (migration.md, "Phases").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

__all__ = ["PHASES", "Phase", "StoreName"]

StoreName = Literal["legacy", "actors"]


class Phase(StrEnum):
    """One migration phase; equal to its name (`Phase.CUTOVER == "cutover"`)."""

    PARALLEL = "parallel"
    WRITE_THROUGH = "write-through"
    READ_SWITCH = "read-switch"
    CUTOVER = "cutover"

    @property
    def serves(self) -> StoreName:
        """The authoritative store: it serves reads and runs every command first."""
        return "legacy" if self in (Phase.PARALLEL, Phase.WRITE_THROUGH) else "actors"

    @property
    def other(self) -> StoreName | None:
        """The store that receives the changed entities afterwards; None when none is written."""
        if self is Phase.CUTOVER:
            return None
        return "actors" if self.serves == "legacy" else "legacy"

    @property
    def mirrors_in_background(self) -> bool:
        """Is the other store written after the reply, best effort and never repaired?"""
        return self is Phase.PARALLEL

    @property
    def order(self) -> int:
        """The position in the rollout order (parallel = 0 ... cutover = 3)."""
        return PHASES.index(self)

    @property
    def writes(self) -> str:
        """Where writes go, in words (the admin status)."""
        return _WRITES[self]


_WRITES: Final = {
    Phase.PARALLEL: "legacy, then actors in the background (best effort)",
    Phase.WRITE_THROUGH: "legacy, then actors (failures queued for repair)",
    Phase.READ_SWITCH: "actors, then legacy (failures queued for repair)",
    Phase.CUTOVER: "actors only",
}

PHASES: Final[tuple[Phase, ...]] = tuple(Phase)
"""The phases in rollout order."""
