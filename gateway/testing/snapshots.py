"""Both stores read directly, behind the gateway's back, as whole entities in one comparable form.

`legacy_snapshot` reads the legacy Redis keys with a synchronous redis-py client and maps every
value through `gateway.legacy.mapping`; `actor_snapshot` opens the actor SQLite files read-only
(committed data only, as another process sees it), maps every row through the actor row mappers
(`gateway.do`) and then through the mapping to the legacy value and back, so a difference the
mapping defines (a handoff to `any` is an open handoff in Redis) is not a difference. Both
bring each entity to its canonical form (`mapping.canonical`: the whole read-back entity,
canonical timestamps, no `extra`), keyed by domain and id, so

    legacy_snapshot(r) == actor_snapshot(data_dir)

says both stores hold the same entities, field by field. The per-agent entities carry their
agent (`"agent"`: a DM's recipient, a memory's owner), which their JSON does not.

Given `now_ms`, a lock expired by then counts as no lock (an expired lock is free in both
stores, and the actors' alarm removes it where Redis keeps it until the next check), and claim
staleness is judged at that time; without it, every lock counts and no claim is stale.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import redis.exceptions

from gateway.actors.layout import host_index_path, shard_files
from gateway.actors.tables import physical_name
from gateway.do.agent_state import (
    CHECKPOINT_COLS,
    DM_COLS,
    MEM_COLS,
    checkpoint_from_row,
    dm_from_row,
    memory_from_row,
)
from gateway.do.coordinator import (
    AGENT_COLS,
    CLAIM_COLS,
    HANDOFF_COLS,
    MSG_COLS,
    TASK_COLS,
    ZONE_COLS,
    agent_from_row,
    claim_from_row,
    handoff_from_row,
    message_from_row,
    task_from_row,
    zone_from_row,
)
from gateway.do.resource_lock import LOCK_COLS, lock_from_row
from gateway.domain import rules
from gateway.domain.entities import DOMAINS
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
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.codec import Corrupt, decode
from gateway.legacy.records import LegacyRecords

__all__ = ["Snapshot", "actor_snapshot", "empty_snapshot", "legacy_snapshot"]

Json = dict[str, Any]
Snapshot = dict[str, dict[str, Json]]
"""domain -> entity id -> the entity's canonical form."""


def empty_snapshot() -> Snapshot:
    """A snapshot of two empty stores."""
    return {d: {} for d in DOMAINS}


def _canonical(entity: Any, agent: str | None = None) -> Json:
    out = m.canonical(entity)
    if agent is not None:
        out["agent"] = agent
    return out


def _live(lock: Lock, now_ms: int | None) -> bool:
    return now_ms is None or not rules.lock_expired(lock, now_ms)


# -- the legacy Redis ----------------------------------------------------------------------------------


def legacy_snapshot(r: redis.Redis, now_ms: int | None = None) -> Snapshot:  # noqa: PLR0912 - a loop per key
    """Every entity the legacy keys hold (unreadable values, and keys of another type, are left
    out, as the store leaves them out)."""

    def hash_of(key: str, kind: type = dict) -> dict[str, Any]:
        """The fields of a hash whose values decode to `kind` (objects; arrays for DMs)."""
        try:
            found: dict[str, str] = r.hgetall(key)  # type: ignore[assignment]
        except redis.exceptions.ResponseError:  # WRONGTYPE: the store serves nothing from it
            return {}
        decoded = {f: decode(v, key=key, field=f) for f, v in found.items()}
        return {f: v for f, v in decoded.items() if not isinstance(v, Corrupt) and isinstance(v, kind)}

    snap = empty_snapshot()
    for i, v in hash_of(keys.ACTIVE_AGENTS).items():
        snap["agent"][i] = _canonical(m.agent_from_legacy(i, v))
    try:
        chat: list[str] = r.lrange(keys.MESSAGES, 0, -1)  # type: ignore[assignment]
    except redis.exceptions.ResponseError:
        chat = []
    for text in chat:
        value = decode(text, key=keys.MESSAGES)
        if isinstance(value, dict):
            msg = m.chat_from_legacy(value)
            snap["chat"][msg.id] = _canonical(msg)
    for i, v in hash_of(keys.TASKS).items():
        snap["task"][i] = _canonical(m.task_from_legacy(v))
    for i, v in hash_of(keys.ZONES).items():
        snap["zone"][i] = _canonical(m.zone_from_legacy(i, v))
    by_what: dict[str, list[tuple[str, Claim]]] = {}
    for f, v in hash_of(keys.CLAIMS).items():
        claim = m.claim_from_legacy(v, now_ms=now_ms if now_ms is not None else 0)
        by_what.setdefault(claim.what, []).append((f, claim))
    for what, group in by_what.items():  # the DO claim of each `what`, as the store serves it
        snap["claim"][what] = _canonical(LegacyRecords.winner(group))
    for i, v in hash_of(keys.HANDOFFS).items():
        snap["handoff"][i] = _canonical(m.handoff_from_legacy(v))
    for i, v in hash_of(keys.CHECKPOINTS).items():
        snap["checkpoint"][i] = _canonical(m.checkpoint_from_legacy(i, v), i)
    for conversation in hash_of(keys.DM_MESSAGES, list).values():
        for x in (x for x in conversation if isinstance(x, dict)):
            dm = m.dm_from_legacy(x)
            snap["dm"][dm.id] = _canonical(dm, str(x.get("to")))
    for v in hash_of(keys.SHARED_MEMORY).values():
        mem = m.memory_from_legacy(v)
        snap["memory"][mem.id] = _canonical(mem, m.memory_owner(mem))
    for path, v in hash_of(keys.LOCKS).items():
        lock = m.lock_from_legacy(path, v)
        if _live(lock, now_ms):
            snap["lock"][path] = _canonical(lock)
    return snap


# -- the actor SQLite files ----------------------------------------------------------------------------


def _as_legacy(entity: Any, agent: str | None, now_ms: int) -> Any:  # noqa: PLR0911 - one per type
    """`entity` as Redis would hold it: written through the mapping and read back."""
    if isinstance(entity, Agent):
        return m.agent_from_legacy(entity.agent_id, m.agent_to_legacy(entity))
    if isinstance(entity, GroupMessage):
        return m.chat_from_legacy(m.chat_to_legacy(entity))
    if isinstance(entity, Task):
        return m.task_from_legacy(m.task_to_legacy(entity))
    if isinstance(entity, Zone):
        return m.zone_from_legacy(entity.zone_id, m.zone_to_legacy(entity))
    if isinstance(entity, Claim):
        return m.claim_from_legacy(m.claim_to_legacy(entity), now_ms=now_ms)
    if isinstance(entity, Handoff):
        return m.handoff_from_legacy(m.handoff_to_legacy(entity))
    if isinstance(entity, Checkpoint):
        return m.checkpoint_from_legacy(entity.agent_id, m.checkpoint_to_legacy(entity))
    if isinstance(entity, DirectMessage):
        return m.dm_from_legacy(m.dm_to_legacy(entity, str(agent)))
    if isinstance(entity, Memory):
        return m.memory_from_legacy(m.memory_to_legacy(entity, str(agent)))
    if isinstance(entity, Lock):
        return m.lock_from_legacy(entity.resource_path, m.lock_to_legacy(entity))
    raise TypeError(f"not a domain entity: {type(entity).__name__}")  # pragma: no cover


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    """The rows of `sql` in a database opened read-only; none when the file or table is missing."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=5)
    try:
        try:
            return list(conn.execute(sql).fetchall())
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
    finally:
        conn.close()


def actor_names(data_dir: Path) -> list[tuple[str, str, Path]]:
    """(kind, name, file) of every actor the host has recorded in `data_dir` (for a sharded
    actor, the file is its shard)."""
    rows = _rows(host_index_path(data_dir), "SELECT kind, name, file FROM actors ORDER BY kind, name")
    found = [(str(k), str(n), data_dir / str(f)) for k, n, f in rows]
    for shard in shard_files(data_dir):
        found += [(str(k), str(n), shard) for k, n in _rows(shard, "SELECT kind, name FROM _actors")]
    return sorted(found)


def shard_rows(data_dir: Path, kind: str, table: str, cols: str) -> list[sqlite3.Row]:
    """`SELECT actor, cols` of a sharded kind's table over every shard (committed data)."""
    out: list[sqlite3.Row] = []
    for shard in shard_files(data_dir):
        out += _rows(shard, f"SELECT actor, {cols} FROM {physical_name(kind, table)} ORDER BY rowid")  # noqa: S608
    return out


def actor_snapshot(data_dir: Path, now_ms: int | None = None) -> Snapshot:  # noqa: PLR0912 - a loop per table
    """Every entity the actor databases of `data_dir` hold (committed data)."""
    snap = empty_snapshot()
    stale_at = now_ms if now_ms is not None else 0

    def _form(entity: Any, agent: str | None = None) -> Json:
        return _canonical(_as_legacy(entity, agent, stale_at), agent)

    for kind, _name, path in actor_names(data_dir):
        if kind == "coordinator":
            for r in _rows(path, f"SELECT {AGENT_COLS} FROM agents"):  # noqa: S608 - constant columns
                snap["agent"][r[0]] = _form(agent_from_row(r))
            for r in _rows(path, f"SELECT {MSG_COLS} FROM messages"):  # noqa: S608
                snap["chat"][r[0]] = _form(message_from_row(r))
            for r in _rows(path, f"SELECT {TASK_COLS} FROM tasks"):  # noqa: S608
                snap["task"][r[0]] = _form(task_from_row(r))
            for r in _rows(path, f"SELECT {ZONE_COLS} FROM zones"):  # noqa: S608
                snap["zone"][r[0]] = _form(zone_from_row(r))
            for r in _rows(path, f"SELECT {CLAIM_COLS} FROM claims"):  # noqa: S608
                snap["claim"][r[0]] = _form(claim_from_row(r, stale_at))
            for r in _rows(path, f"SELECT {HANDOFF_COLS} FROM handoffs"):  # noqa: S608
                snap["handoff"][r[0]] = _form(handoff_from_row(r))
    for r in shard_rows(data_dir, "agent", "checkpoint", CHECKPOINT_COLS):
        snap["checkpoint"][r[0]] = _form(checkpoint_from_row(r[0], r[1:]), r[0])  # type: ignore[arg-type]
    for r in shard_rows(data_dir, "agent", "messages", DM_COLS):
        snap["dm"][r[1]] = _form(dm_from_row(r[1:]), r[0])  # type: ignore[arg-type]
    for r in shard_rows(data_dir, "agent", "memory", MEM_COLS):
        snap["memory"][r[1]] = _form(memory_from_row(r[1:]), r[0])  # type: ignore[arg-type]
    for r in shard_rows(data_dir, "lock", "current_lock", LOCK_COLS):
        lock = lock_from_row(r[1:])  # type: ignore[arg-type]
        if _live(lock, now_ms):
            snap["lock"][r[0]] = _form(lock)
    return snap
