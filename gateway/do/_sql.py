"""Small helpers shared by the actor classes: JSON columns and the `_extra` side table."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.actors import ActorContext, TableSpec


def dumps(value: Any) -> str:
    """A JSON column value, written compactly (JS `JSON.stringify` output)."""
    return orjson.dumps(value).decode()


_EMPTY = frozenset({"[]", "null"})  # both read as [] (null is not a list)


def loads_list(text: str | None) -> list[Any]:
    """A JSON array column; NULL or unparseable text reads as `[]`."""
    if not text or text in _EMPTY:  # most array columns of a listing: no parse, a new list
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


EXTRA_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _extra (domain TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (domain, id))"
)
EXTRA_TABLE = TableSpec(
    "_extra", "domain TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL", key=("domain", "id")
)
"""The `_extra` side table of the sharded kinds (agent, lock)."""


def get_extra(actor: Any, domain: str, ident: str) -> dict[str, Any]:
    """The fields of entity `(domain, ident)` that the actor tables do not model (`{}` if none).

    They live in a side table `_extra(domain, id, value)` of the actor's storage (its own
    database for the coordinator, its rows in the shard for agents and locks), so upstream's
    tables stay unchanged (see gateway/do/replica.py).
    """
    ctx: ActorContext = actor.ctx
    if ctx.sharded:
        row = ctx.tables.first("_extra", "value", "domain = ? AND id = ?", domain, ident)
    else:
        # every time, not once per activation: a turn that fails after creating the table rolls
        # the CREATE back, while a flag on the (surviving) actor object would say it exists
        ctx.sql.exec(EXTRA_SCHEMA)
        row = ctx.sql.exec("SELECT value FROM _extra WHERE domain = ? AND id = ?", domain, ident).first()
    if row is None:
        return {}
    value = orjson.loads(row[0])
    return value if isinstance(value, dict) else {}


def put_extra(actor: Any, domain: str, ident: str, extra: dict[str, Any] | None) -> None:
    """Replace the extra fields of `(domain, ident)`; empty or None removes them."""
    ctx: ActorContext = actor.ctx
    if ctx.sharded:
        if extra:
            ctx.tables.insert(
                "_extra", {"domain": domain, "id": ident, "value": dumps(extra)}, conflict="replace"
            )
        else:
            ctx.tables.delete("_extra", "domain = ? AND id = ?", domain, ident)
        return
    ctx.sql.exec(EXTRA_SCHEMA)
    if extra:
        ctx.sql.exec(
            "INSERT OR REPLACE INTO _extra (domain, id, value) VALUES (?, ?, ?)", domain, ident, dumps(extra)
        )
    else:
        ctx.sql.exec("DELETE FROM _extra WHERE domain = ? AND id = ?", domain, ident)
