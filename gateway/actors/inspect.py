"""Read-only inspection of a data directory's actors, beside a running gateway or without one.

It reads the host index (`host.sqlite`: every file actor's kind, name and file, and the alarm
index) and the shard files (`_actors`, `_alarms`, and each sharded actor's rows, counted per
actor with one GROUP BY per table, so 100,000 actors cost a few queries per shard), and,
optionally, counts each file actor's table rows. The files come from `layout.py`. Everything is
opened read-only through aiosqlite: these are long scans of many files, exactly where a worker
thread helps and where blocking the event loop would hurt. WAL lets readers run while the
gateway writes, so this works beside a live gateway too (what it sees is each file's last
committed state). The export tool and the consistency checker scan the actor side the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from gateway.actors.layout import host_index_path, shard_files


@dataclass(slots=True)
class ActorInfo:
    """One actor of the data directory."""

    kind: str
    name: str
    file: Path
    size_bytes: int
    alarm_ms: int | None
    rows: dict[str, int] = field(default_factory=dict)
    sharded: bool = False  # rows live in a shard file (`file`); size is the bytes of its values


def _read_only(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


async def iter_actors(data_dir: Path, kind: str | None = None) -> AsyncIterator[ActorInfo]:
    """Every actor the host has recorded (optionally of one kind), in (kind, name) order."""
    index = host_index_path(data_dir)
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
    sharded: list[ActorInfo] = []
    for shard in shard_files(data_dir):
        sharded += await _shard_actors(shard, kind)
    sharded.sort(key=lambda i: (i.kind, i.name))
    for info in sharded:
        yield info


async def _shard_actors(shard: Path, kind: str | None) -> list[ActorInfo]:
    """The registered actors of one shard with their alarms, rows per table and bytes."""
    async with aiosqlite.connect(_read_only(shard), uri=True) as db:
        alarms = {
            (str(k), str(n)): int(ts)
            for k, n, ts in await db.execute_fetchall(
                "SELECT kind, name, ts FROM _alarms WHERE ? IS NULL OR kind = ?", (kind, kind)
            )
        }
        infos = {
            (str(k), str(n)): ActorInfo(str(k), str(n), shard, 0, alarms.get((str(k), str(n))), sharded=True)
            for k, n in await db.execute_fetchall(
                "SELECT kind, name FROM _actors WHERE ? IS NULL OR kind = ?", (kind, kind)
            )
        }
        tables = await db.execute_fetchall(
            "SELECT kind, name, physical FROM _tables WHERE (? IS NULL OR kind = ?) AND name NOT LIKE '\\_%' "
            "ESCAPE '\\' ORDER BY kind, name",
            (kind, kind),
        )
        for k, name, physical in tables:
            cols = [str(r[1]) for r in await db.execute_fetchall(f'PRAGMA table_info("{physical}")')]
            size = " + ".join(f'coalesce(length("{c}"), 0)' for c in cols if c != "actor") or "0"
            sql = f'SELECT actor, count(*), sum({size}) FROM "{physical}" GROUP BY actor'  # noqa: S608 - names from the shard
            for actor, count, nbytes in await db.execute_fetchall(sql):
                info = infos.get((str(k), str(actor)))
                if info is not None:
                    info.rows[str(name)] = int(count)
                    info.size_bytes += int(nbytes or 0)
        for info in infos.values():
            for table_kind, name, _physical in tables:
                if table_kind == info.kind:
                    info.rows.setdefault(str(name), 0)
            info.rows = dict(sorted(info.rows.items()))
        return list(infos.values())


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
