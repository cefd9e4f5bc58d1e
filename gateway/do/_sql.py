"""Small helpers shared by the actor classes: JSON columns and schema additions."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.actors import ActorContext


def dumps(value: Any) -> str:
    """A JSON column value, written compactly (JS `JSON.stringify` output)."""
    return orjson.dumps(value).decode()


def loads_list(text: str | None) -> list[Any]:
    """A JSON array column; NULL or unparseable text reads as `[]`."""
    if not text:
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
