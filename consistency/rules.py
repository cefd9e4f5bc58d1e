"""The differences between the two stores that docs/mapping.md allows, each under the rule that
allows it. The checker reports them apart, and they do not make a report unclean.

Each rule is an anchor in docs/mapping.md ("Differences the checker expects"); a test keeps the
two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.legacy.keys import CHAT_MAX

MAPPING_DOC: Final = "docs/mapping.md"

CHAT_WINDOW: Final = "chat-window"
"""Chat older than the legacy list's newest 1,000 messages is only in the actors."""
EXPIRED_LOCKS: Final = "expired-locks"
"""An expired lock may be gone from one store and not yet from the other."""
CARRIED_FIELDS: Final = "carried-fields"
"""Fields the legacy API does not model, dropped by its full-overwrite writers."""
CLAIM_CONFLICTS: Final = "claim-conflicts"
"""Several legacy claims on one `what`: the DO holds the winner, the others are known conflicts."""
UNREADABLE_LEGACY: Final = "unreadable-legacy"
"""A legacy value that cannot be decoded, which the actors never received."""
ACTOR_ONLY: Final = "actor-only"
"""Domains the legacy store has no place for."""

RULES: Final[dict[str, str]] = {
    CHAT_WINDOW: "chat older than the legacy window of the newest 1,000 messages",
    EXPIRED_LOCKS: "an expired lock, removed by one store and not yet by the other",
    CARRIED_FIELDS: "fields the legacy API does not model, dropped by its full-overwrite writers",
    CLAIM_CONFLICTS: "a legacy claim that lost to a newer claim on the same `what`",
    UNREADABLE_LEGACY: "a legacy value that cannot be decoded (left in Redis, not in the actors)",
    ACTOR_ONLY: "a domain the legacy store does not hold",
}
"""rule -> what it allows, in a few words (the report's legend)."""

CARRIED: Final[dict[str, frozenset[str]]] = {
    "agent": frozenset({"capabilities", "offers", "needs"}),  # POST /api/agents overwrites
    "checkpoint": frozenset({"accomplishments", "filesEdited"}),  # save-checkpoint overwrites
}
"""domain -> the canonical fields a legacy full-overwrite writer drops (they read back as `[]`)."""


def rule_ref(rule: str) -> str:
    """Where the rule is written down: `docs/mapping.md#chat-window`."""
    return f"{MAPPING_DOC}#{rule}"


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the comparison needs to know besides the two values of an entity.

    `chat_oldest_ms`: the timestamp of the oldest message in the legacy chat list when the list
    is full (`chat_window` messages or more), else None (nothing was trimmed). `claim_conflicts`:
    the (what, by) of every legacy claim that is not its `what`'s winner. `actor_only`: domains
    that live in the actors alone.
    """

    now_ms: int
    chat_oldest_ms: int | None = None
    chat_window: int = CHAT_MAX
    claim_conflicts: tuple[tuple[str, str], ...] = ()
    actor_only: frozenset[str] = field(default_factory=frozenset)
