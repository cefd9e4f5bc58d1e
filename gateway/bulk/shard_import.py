"""A batch of per-agent entities and locks written shard by shard (`ActorHost.write_rows`).

The import's write path for the sharded kinds: the batch's checkpoints, DMs and memories of
the agents of one shard are decided and written in one scope of the shard's transaction, each
agent's in a scope of its own (all of its rows of the batch, or none), with no activation and
one commit per shard and batch, where one turn per agent cost an activation and a commit each.
What the agent holds is read for all of its keys at once (one query per table), each entity is
decided with the caller's `decide` (newer wins, `gateway.bulk.versions`), and the written ones
go out in one prepared statement per table, their `_extra` side rows likewise.

Locks are only decided here (`decide_locks`): the rare lock that must be written moves the
actor's alarm and history, so it is written in a turn of its actor; an expired lock, or one the
actor already holds, costs no turn at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.actors.bulk_write import ShardWriter
from gateway.actors.tables import ShardTables
from gateway.do._sql import dumps
from gateway.do.agent_state import (
    CHECKPOINT_COLS,
    DM_COLS,
    MEM_COLS,
    checkpoint_from_row,
    checkpoint_values,
    dm_from_row,
    dm_values,
    memory_from_row,
    memory_values,
)
from gateway.do.replica import Decide, Outcome
from gateway.do.resource_lock import LOCK_COLS, lock_from_row
from gateway.domain.entities import Entity, EntityKey, Unreadable

__all__ = ["AGENT_DOMAINS", "decide_locks", "write_agents"]

_CHUNK: Final = 90  # ids bound per IN (...): under the table API's 100 bound parameters
_UNREADABLE: Final = (TypeError, ValueError, KeyError, IndexError, orjson.JSONDecodeError)


@dataclass(frozen=True, slots=True)
class _Spec:
    table: str
    cols: str
    conflict: str
    row: Callable[[str, Any], Entity]
    values: Callable[[Any], dict[str, Any]]


_SPECS: Final[dict[str, _Spec]] = {
    "checkpoint": _Spec("checkpoint", CHECKPOINT_COLS, "replace", checkpoint_from_row, checkpoint_values),
    "dm": _Spec("messages", DM_COLS, "update", lambda _a, r: dm_from_row(r), dm_values),
    "memory": _Spec("memory", MEM_COLS, "replace", lambda _a, r: memory_from_row(r), memory_values),
}
AGENT_DOMAINS: Final = frozenset(_SPECS)
"""The per-agent domains written here (their values; a deletion goes through a turn)."""

Group = tuple[str, list[tuple[EntityKey, Entity]]]
"""One actor's name and its items of the batch."""


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _extras(t: ShardTables, domain: str, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _chunks(ids):
        rows = t.select("_extra", "id, value", f"domain = ? AND id IN ({_marks(len(part))})", domain, *part)
        out.update((str(r[0]), str(r[1])) for r in rows)
    return out


def _with_extra(entity: Entity, text: str | None) -> Entity:
    if text is not None:
        value = orjson.loads(text)
        entity.extra = value if isinstance(value, dict) else {}
    return entity


def _current(
    t: ShardTables, agent: str, domain: str, keys: list[EntityKey]
) -> tuple[dict[str, Entity | Unreadable], dict[str, str]]:
    """What actor `agent` holds of `keys` (all of `domain`), by id (an absent one is not there),
    and the `_extra` rows of those it holds."""
    spec = _SPECS[domain]
    ids = [k.id for k in keys]
    rows: list[tuple[Any, ...]] = []
    if domain == "checkpoint":
        one = t.first(spec.table, spec.cols)
        rows = [] if one is None else [("", *tuple(one))]
    else:
        for part in _chunks(ids):
            rows += [tuple(r) for r in t.select(spec.table, spec.cols, f"id IN ({_marks(len(part))})", *part)]
    if not rows:
        return {}, {}
    extras = _extras(t, domain, ids)
    out: dict[str, Entity | Unreadable] = {}
    for r in rows:
        ident, cols = (str(r[0]), r[1:]) if domain == "checkpoint" else (str(r[0]), r)
        try:
            out[ident] = _with_extra(spec.row(agent, cols), extras.get(ident))
        except _UNREADABLE as e:
            out[ident] = Unreadable(EntityKey(domain, agent, ident), "", f"unreadable row: {e!r}")
    return out, extras


def _write_actor(
    t: ShardTables, agent: str, items: list[tuple[EntityKey, Entity]], decide: Decide, *, dry_run: bool
) -> list[Outcome]:
    by_domain: dict[str, list[EntityKey]] = {}
    for key, _v in items:
        by_domain.setdefault(key.domain, []).append(key)
    held = {d: _current(t, agent, d, ks) for d, ks in by_domain.items()}
    outcomes: list[Outcome] = []
    rows: dict[str, list[tuple[Any, ...]]] = {}
    cols: dict[str, tuple[str, ...]] = {}
    extra_rows: list[tuple[str, str, str]] = []
    extra_gone: list[tuple[str, str]] = []
    for key, value in items:
        entities, extras = held[key.domain]
        now = entities.get(key.id)
        outcome: Outcome = "skipped" if isinstance(now, Unreadable) else decide(key, now, value)
        outcomes.append(outcome)
        if outcome != "written" or dry_run:
            continue
        values = _SPECS[key.domain].values(value)
        cols.setdefault(key.domain, tuple(values))
        rows.setdefault(key.domain, []).append(tuple(values.values()))
        if value.extra:
            extra_rows.append((key.domain, key.id, dumps(value.extra)))
        elif key.id in extras:
            extra_gone.append((key.domain, key.id))
    for domain, part in rows.items():
        spec = _SPECS[domain]
        t.insert_many(spec.table, cols[domain], part, conflict=spec.conflict)  # type: ignore[arg-type]
    t.insert_many("_extra", ("domain", "id", "value"), extra_rows, conflict="replace")
    t.delete_many("_extra", "domain = ? AND id = ?", extra_gone)
    return outcomes


def write_agents(w: ShardWriter, groups: Sequence[Group], decide: Decide, *, dry_run: bool) -> list[Outcome]:
    """The `write_rows` work for one shard of agents: each group (an agent and its checkpoint,
    DM and memory items) in that agent's own scope; the outcomes in the groups' item order."""
    out: list[Outcome] = []
    for agent, items in groups:
        with w.actor(agent) as t:
            out += _write_actor(t, agent, items, decide, dry_run=dry_run)
    return out


def decide_locks(w: ShardWriter, items: Sequence[tuple[EntityKey, Entity]], decide: Decide) -> list[Outcome]:
    """What each lock item would do, from what the lock actors of one shard hold (read only)."""
    names = [k.id for k, _ in items]
    rows: dict[str, tuple[Any, ...]] = {}
    extras: dict[str, str] = {}
    for part in _chunks(names):
        marks = _marks(len(part))
        for r in w.select("current_lock", f"actor, {LOCK_COLS}", f"actor IN ({marks})", *part):
            rows[str(r[0])] = r[1:]
        for r in w.select("_extra", "actor, value", f"domain = ? AND actor IN ({marks})", "lock", *part):
            extras[str(r[0])] = str(r[1])
    out: list[Outcome] = []
    for key, value in items:
        row = rows.get(key.id)
        now: Entity | Unreadable | None = None
        if row is not None:
            try:
                now = _with_extra(lock_from_row(row), extras.get(key.id))  # type: ignore[arg-type]
            except _UNREADABLE as e:
                now = Unreadable(key, "", f"unreadable row: {e!r}")
        out.append("skipped" if isinstance(now, Unreadable) else decide(key, now, value))
    return out
