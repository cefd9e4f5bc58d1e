"""Read-only inspection of a data directory's actors, beside a running gateway or without one.

It reads the host index (`host.sqlite`: every actor's kind, name and file, and the alarm index)
and, optionally, counts each actor's table rows. Everything is opened read-only through
aiosqlite: these are long scans of many files, exactly where a worker thread helps and where
blocking the event loop would hurt. WAL lets readers run while the gateway writes, so this works
beside a live gateway too (what it sees is each file's last committed state). The export tool
and the consistency checker scan the actor side the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiosqlite


@dataclass(slots=True)
class ActorInfo:
    """One actor of the data directory."""

    kind: str
    name: str
    file: Path
    size_bytes: int
    alarm_ms: int | None
    rows: dict[str, int] = field(default_factory=dict)


def _read_only(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


async def iter_actors(data_dir: Path, kind: str | None = None) -> AsyncIterator[ActorInfo]:
    """Every actor the host has recorded (optionally of one kind), in (kind, name) order."""
    index = data_dir / "host.sqlite"
    if not index.exists():
        raise FileNotFoundError(f"{data_dir} holds no actor host index (host.sqlite)")
    async with aiosqlite.connect(_read_only(index), uri=True) as db:
        alarms = {
            (str(k), str(n)): int(ts)
            for k, n, ts in await db.execute_fetchall("SELECT kind, name, ts FROM alarms")
        }
        sql = "SELECT kind, name, file FROM actors WHERE ? IS NULL OR kind = ? ORDER BY kind, name"
        async with db.execute(sql, (kind, kind)) as cur:
            async for k, n, f in cur:
                path = data_dir / str(f)
                size = path.stat().st_size if path.exists() else 0
                yield ActorInfo(str(k), str(n), path, size, alarms.get((str(k), str(n))))


async def count_rows(path: Path) -> dict[str, int]:
    """Rows per table of one actor database (our internal `_`-prefixed tables excluded)."""
    async with aiosqlite.connect(_read_only(path), uri=True) as db:
        tables = [
            str(r[0])
            for r in await db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' "
                "AND name NOT LIKE 'sqlite%' ORDER BY name"
            )
        ]
        out: dict[str, int] = {}
        for table in tables:
            rows = await db.execute_fetchall(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608 - names from sqlite_master
            out[table] = int(next(iter(rows))[0])
        return out
