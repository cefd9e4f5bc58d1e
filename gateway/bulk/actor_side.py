"""The actor store as an entity source and sink, through the host's APIs only.

Actors are found by `ActorHost.list_actors(kind)` and read and written in turns of each actor
(`ActorReplica.scan`, `read_many`, `write_many`), never by opening their files: the on-disk
layout is the host's business. Within a domain the actors are visited in name order and each
one's rows in id order, which is the scan order of `gateway.bulk.items`.

Run it on a host of one's own only when no gateway owns the data directory (`open_actor_side`
decides); beside a running gateway the same class runs inside the gateway, behind the admin
API (`gateway.bulk.admin_service`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gateway.actors import ActorRef
from gateway.bulk.items import Item, Selection, WriteResult, order_key, parse_cursor
from gateway.bulk.versions import decide
from gateway.do import owner_ref
from gateway.do.replica import ActorReplica, Outcome
from gateway.domain.entities import COORDINATOR_NAME, OWNERS, Entity, EntityKey, Owner, Unreadable
from gateway.domain.model import Lock
from gateway.domain.rules import lock_expired

__all__ = ["ActorSide"]


def _owner_of(key: EntityKey) -> str:
    return key.owner_name


class ActorSide:
    """Streams, reads and writes the entities the actors hold."""

    name = "actors"

    def __init__(self, replica: ActorReplica) -> None:
        self.replica = replica

    def _owners(self, domain: str, selection: Selection) -> list[str]:
        kind = OWNERS[domain]
        if kind is Owner.COORDINATOR:
            return [COORDINATOR_NAME]
        return selection.owner_names(domain, sorted(self.replica.names(kind.value)))

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        after = None if start_after is None else parse_cursor(start_after)
        buf: list[Item] = []
        for domain in selection.domains:
            if after is not None and order_key(EntityKey(domain, "\U0010ffff", "")) <= order_key(after):
                continue
            kind = OWNERS[domain]
            resume_owner = None if after is None or after.domain != domain else _owner_of(after)
            for name in self._owners(domain, selection):
                if resume_owner is not None and name < resume_owner:
                    continue
                ident = after.id if after is not None and name == resume_owner else None
                ref = ActorRef(kind.value, name)
                while True:
                    rows = await self.replica.scan(ref, domain, ident, batch)
                    buf.extend(it for it in rows if selection.wants_scope(domain, it[0].scope, it[0].id))
                    while len(buf) >= batch:
                        yield buf[:batch]
                        buf = buf[batch:]
                    if len(rows) < batch:
                        break
                    ident = rows[-1][0].id
        if buf:
            yield buf

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity | Unreadable | None]:
        by_owner: dict[ActorRef, list[EntityKey]] = {}
        for k in keys:
            by_owner.setdefault(owner_ref(k), []).append(k)
        out: dict[EntityKey, Entity | Unreadable | None] = {}
        for ref, ks in by_owner.items():
            if ref.kind != Owner.COORDINATOR.value and ref.name not in self._known(ref.kind):
                out.update(dict.fromkeys(ks))  # never activated: holds nothing (and is not created)
                continue
            out.update(await self.replica.read_many(ref, ks))
        return out

    def _known(self, kind: str) -> set[str]:
        return set(self.replica.names(kind))

    async def count(self, selection: Selection) -> dict[str, int] | None:
        """The actors of each per-agent and lock domain (a lower bound); None with an agent filter."""
        if selection.agents is not None:
            return None
        out: dict[str, int] = {}
        for domain in selection.domains:
            if domain in ("checkpoint", "lock"):
                out[domain] = len(self.replica.names(OWNERS[domain].value))
        return out

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        by_owner: dict[ActorRef, list[tuple[EntityKey, Entity | None]]] = {}
        for key, value in items:
            by_owner.setdefault(owner_ref(key), []).append((key, value))
        result = WriteResult()
        now = self.replica.host.clock.now_ms()

        def decide_now(key: EntityKey, current: Entity | None, incoming: Entity | None) -> Outcome:
            # an expired lock is no lock (the actor's alarm would remove it at once): not carried
            if isinstance(incoming, Lock) and current is None and lock_expired(incoming, now):
                return "unchanged"
            return decide(key, current, incoming)

        for ref, group in sorted(by_owner.items(), key=lambda kv: order_key(kv[1][0][0])):
            outcomes: list[Outcome]
            if dry_run:
                current = await self.read_many([k for k, _ in group])
                outcomes = [
                    decide_now(k, None if isinstance(current[k], Unreadable) else current[k], v)  # type: ignore[arg-type]
                    for k, v in group
                ]
            else:
                outcomes = await self.replica.write_many(ref, group, decide_now)
            for (key, _v), outcome in zip(group, outcomes, strict=True):
                result.add(key, outcome)
        return result
