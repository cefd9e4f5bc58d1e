"""Small helpers shared by the actor classes: JSON columns, schema additions, the `_extra` table."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.actors import ActorContext


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


def add_columns(ctx: ActorContext, table: str, columns: dict[str, str]) -> None:
    """Add our own columns to an upstream table that lacks them (a database copied from a DO)."""
    have = {row[1] for row in ctx.sql.exec(f"PRAGMA table_info({table})").all()}
    for name, decl in columns.items():
        if name not in have:
            ctx.sql.exec(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


EXTRA_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _extra (domain TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (domain, id))"
)


def _extras(actor: Any) -> None:
    # Every time, not once per activation: a turn that fails after creating the table rolls the
    # CREATE back, while a flag on the (surviving) actor object would say it exists.
    actor.ctx.sql.exec(EXTRA_SCHEMA)


def get_extra(actor: Any, domain: str, ident: str) -> dict[str, Any]:
    """The fields of entity `(domain, ident)` that the actor tables do not model (`{}` if none).

    They live in a side table `_extra(domain, id, value)` of the actor's database, so upstream's
    tables stay unchanged (see gateway/do/replica.py).
    """
    _extras(actor)
    row = actor.ctx.sql.exec("SELECT value FROM _extra WHERE domain = ? AND id = ?", domain, ident).first()
    if row is None:
        return {}
    value = orjson.loads(row[0])
    return value if isinstance(value, dict) else {}


def put_extra(actor: Any, domain: str, ident: str, extra: dict[str, Any] | None) -> None:
    """Replace the extra fields of `(domain, ident)`; empty or None removes them."""
    _extras(actor)
    if extra:
        actor.ctx.sql.exec(
            "INSERT OR REPLACE INTO _extra (domain, id, value) VALUES (?, ?, ?)", domain, ident, dumps(extra)
        )
    else:
        actor.ctx.sql.exec("DELETE FROM _extra WHERE domain = ? AND id = ?", domain, ident)
