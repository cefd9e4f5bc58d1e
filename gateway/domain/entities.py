"""Entity keys: how the phase router, the repair queue and the checker name one piece of data.

Both stores hold the same entities under different layouts; an `EntityKey` names one entity
independently of either layout: its domain, the actor scope it lives in (an agent id for
per-agent data, empty for the coordinator's, the resource path for a lock) and its id within
that scope.

`OWNERS` tables which of the three DO actor kinds holds each domain, once: the actor store finds
the actor of an entity through it, and the phase router serialises the replication of the
entities one actor holds through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.domain.progress_records import CredentialRecord, ProgressRecord

__all__ = [
    "ACTOR_ONLY",
    "COORDINATOR_NAME",
    "DOMAINS",
    "LEGACY_DOMAINS",
    "OWNERS",
    "PER_AGENT",
    "Entity",
    "EntityKey",
    "Owner",
    "Unreadable",
    "actor_only",
    "is_actor_only",
]

Entity = (
    Agent
    | GroupMessage
    | Task
    | Zone
    | Claim
    | Handoff
    | Checkpoint
    | DirectMessage
    | Memory
    | Lock
    | ProgressRecord
    | CredentialRecord
)
"""Every entity an `EntityKey` can name (what a replica reads and writes)."""


class Owner(StrEnum):
    """The DO actor kind that holds an entity (the actor kinds' own names)."""

    COORDINATOR = "coordinator"  # the singleton `main`
    AGENT = "agent"  # one per agent id: the key's scope
    LOCK = "lock"  # one per resource path: the key's id


OWNERS: Final[dict[str, Owner]] = {
    "agent": Owner.COORDINATOR,
    "chat": Owner.COORDINATOR,
    "task": Owner.COORDINATOR,
    "zone": Owner.COORDINATOR,
    "claim": Owner.COORDINATOR,
    "handoff": Owner.COORDINATOR,
    "checkpoint": Owner.AGENT,
    "dm": Owner.AGENT,
    "memory": Owner.AGENT,
    "lock": Owner.LOCK,
    # actor-only (do-api.md 7.5, issue 14): not in LEGACY_DOMAINS
    "soul": Owner.AGENT,
    "trace": Owner.AGENT,  # a trace with its steps and escalations
    "heartbeat": Owner.AGENT,
    "shadow": Owner.AGENT,
    "goal": Owner.AGENT,
    "credential": Owner.AGENT,  # carried as ciphertext only
}
"""domain -> the actor kind that holds its entities."""

DOMAINS: Final[tuple[str, ...]] = tuple(OWNERS)
"""Every domain, in the order tools stream them (bulk scans, export files, the checker)."""

LEGACY_DOMAINS: Final[frozenset[str]] = frozenset(
    {"agent", "chat", "task", "zone", "claim", "handoff", "checkpoint", "dm", "memory", "lock"}
)
"""The domains the legacy Redis layout also holds. A domain of `OWNERS` missing here is
actor-only (issue 14's soul, traces, goals ...): the migration tool carries it between data
directories, lists it as not carried to Redis, and the checker lists it as actor-only."""

PER_AGENT: Final[frozenset[str]] = frozenset(d for d, o in OWNERS.items() if o is Owner.AGENT)
"""Domains scoped by an agent id (the key's scope)."""


def actor_only(domain: str) -> bool:
    """True for a domain without a legacy Redis counterpart."""
    return domain not in LEGACY_DOMAINS


ACTOR_ONLY: Final[dict[str, Owner]] = {d: o for d, o in OWNERS.items() if d not in LEGACY_DOMAINS}
"""domain -> owner of the actor-only domains (issue 14's soul, trace, heartbeat, shadow, goal,
credential): no legacy counterpart, served by the actors in every phase and never mirrored.
`gateway.do.progress_tables.TABLES` names the agent actor tables holding each (docs/mapping.md)."""


def is_actor_only(domain: str) -> bool:
    """Is `domain` one of the actor-only domains of ACTOR_ONLY?"""
    return domain in ACTOR_ONLY


COORDINATOR_NAME: Final = "main"
"""The singleton coordinator's actor name (upstream `idFromName('main')`)."""


@dataclass(frozen=True, slots=True)
class EntityKey:
    """One entity, named independently of either store's layout."""

    domain: str
    scope: str
    id: str

    def __str__(self) -> str:
        return f"{self.domain}:{self.scope}:{self.id}" if self.scope else f"{self.domain}:{self.id}"

    @property
    def owner(self) -> Owner:
        """The actor kind holding the entity; ValueError for an unknown domain."""
        owner = OWNERS.get(self.domain)
        if owner is None:
            raise ValueError(f"unknown entity domain {self.domain!r}")
        return owner

    @property
    def owner_name(self) -> str:
        """The name of the actor holding the entity: `main`, the agent id or the resource path."""
        owner = self.owner
        if owner is Owner.COORDINATOR:
            return COORDINATOR_NAME
        return self.scope if owner is Owner.AGENT else self.id


def storable(text: str) -> bool:
    """Whether SQLite can hold `text`: a legacy field name that is not UTF-8 arrives as the
    client decodes it (surrogateescape: lone surrogates), which no actor holds as an id."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored value that the mapping (or a row mapper) cannot read: corrupt JSON, wrong types.

    Bulk readers return it in place of the entity, so tools can quarantine it and go on; the
    stored value itself is never changed.
    """

    key: EntityKey
    raw: str
    reason: str
