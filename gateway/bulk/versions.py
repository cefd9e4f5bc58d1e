"""Which of two copies of an entity is the newer one, and what a bulk write does with it.

An import runs beside a live gateway (in `parallel` or `write-through` it writes both stores):
an entity the gateway changed after the import read its copy must not be overwritten with the
older value. Neither store keeps a write time per entity, so "newer" is decided from each
domain's own timestamps, the ones every change of it moves forward (docs/migrate.md lists them):

| domain | version |
|---|---|
| agent | `lastSeen` (every heartbeat, status or registration moves it) |
| task | `updatedAt` |
| handoff | the latest of `createdAt`, `claimedAt`, `completedAt` |
| checkpoint | `checkpointAt` |
| claim | `since` (a new claim of the `what`) |
| zone | `claimedAt` |
| lock | `lockedAt`, then `expiresAt` (a refresh moves the expiry) |
| dm | the `read` flag (a message is only ever marked read) |
| chat, memory | none: never changed once written, so the copies cannot disagree in age |

A copy is left alone when the store's version is strictly newer; equal versions with different
content are overwritten (the import's copy is then as recent as the store's).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.do.replica import Outcome
from gateway.domain.entities import Entity, EntityKey
from gateway.domain.jscompat import parse_js_date
from gateway.domain.model import Agent, Checkpoint, Claim, DirectMessage, Handoff, Lock, Task, Zone

__all__ = ["decide", "newer", "same", "version"]


def _ms(text: str | None) -> int:
    return (parse_js_date(text) or 0) if text else 0


def version(entity: Entity) -> tuple[int, ...]:  # noqa: PLR0911 - one exit per domain
    """The entity's version: compared as a tuple, greater is newer; () for immutable domains."""
    if isinstance(entity, Agent):
        return (_ms(entity.last_seen),)
    if isinstance(entity, Task):
        return (_ms(entity.updated_at),)
    if isinstance(entity, Handoff):
        return (max(_ms(entity.created_at), _ms(entity.claimed_at), _ms(entity.completed_at)),)
    if isinstance(entity, Checkpoint):
        return (_ms(entity.checkpoint_at),)
    if isinstance(entity, Claim):
        return (_ms(entity.since),)
    if isinstance(entity, Zone):
        return (_ms(entity.claimed_at),)
    if isinstance(entity, Lock):
        return (_ms(entity.locked_at), entity.expires_ms)
    if isinstance(entity, DirectMessage):
        return (int(entity.read),)
    return ()


def newer(current: Entity, incoming: Entity) -> bool:
    """True when the stored `current` is strictly newer than the `incoming` copy."""
    return version(current) > version(incoming)


def _plain(entity: Any) -> Any:
    return replace(entity, stale=False) if isinstance(entity, Claim) else entity  # stale is computed


def same(a: Entity | None, b: Entity | None) -> bool:
    """Equal entities (every field and the carried `extra`; a claim's computed `stale` aside)."""
    if a is None or b is None:
        return a is b
    return bool(_plain(a) == _plain(b))


def decide(_key: EntityKey, current: Entity | None, incoming: Entity | None) -> Outcome:
    """What a bulk write does with `incoming` given the store's `current` copy."""
    if same(current, incoming):
        return "unchanged"
    if current is not None and incoming is not None and newer(current, incoming):
        return "skipped"
    return "written"
