"""Start-up conversion of actors kept in the old layout (one SQLite file per actor) into shards.

Before shards, every agent and lock had its own file `<data_dir>/<kind>/<h[:2]>/<h>.sqlite`
holding upstream's tables under their own names and `_actor_meta` (name, alarm). When the host
starts with a kind declared sharded and finds such files, it copies each actor's rows into its
shard (`tables.TableSpec` names the columns; the columns both sides have are copied, in rowid
order, so listings keep their tie order), registers it, moves its alarm, and only after that
commit deletes the old file and its host-index rows. A crash half-way leaves the old files not
yet converted; the next start converts them again (an actor's shard rows are replaced, so a file
converted twice gives the same rows).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import structlog

from gateway.actors.layout import SQLITE_SIDECARS, actor_files, shard_of
from gateway.actors.naming import ActorRef
from gateway.actors.shards import ShardSet
from gateway.actors.tables import physical_name

log = structlog.get_logger(__name__)

BATCH = 256


def convert_old_layout(data_dir: Path, index: sqlite3.Connection, shards: ShardSet) -> int:
    """Convert every old per-actor file of a sharded kind; returns how many actors moved."""
    moved = 0
    for kind in shards.kinds:
        files = actor_files(data_dir, kind)
        for start in range(0, len(files), BATCH):
            moved += _convert_batch(kind, files[start : start + BATCH], index, shards)
        if files:
            _remove_empty_dirs(data_dir / kind)
    if moved:
        log.info("actor_host.converted_old_layout", actors=moved, data_dir=str(data_dir))
    return moved


def _convert_batch(kind: str, files: list[Path], index: sqlite3.Connection, shards: ShardSet) -> int:
    touched: set[int] = set()
    done: list[tuple[Path, ActorRef]] = []
    try:
        for path in files:
            ref = _convert_file(kind, path, shards, touched)
            if ref is not None:
                done.append((path, ref))
        for i in sorted(touched):
            shards[i].conn.execute("COMMIT")
    except BaseException:
        for i in touched:
            if shards[i].conn.in_transaction:
                shards[i].conn.execute("ROLLBACK")
        raise
    for path, ref in done:
        index.execute("DELETE FROM actors WHERE kind = ? AND name = ?", (ref.kind, ref.name))
        index.execute("DELETE FROM alarms WHERE kind = ? AND name = ?", (ref.kind, ref.name))
        for p in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)):
            p.unlink(missing_ok=True)
    return len(done)


def _convert_file(kind: str, path: Path, shards: ShardSet, touched: set[int]) -> ActorRef | None:
    old = sqlite3.connect(f"file:{quote(str(path.resolve()))}", uri=True)
    try:
        meta = dict(old.execute("SELECT key, value FROM _actor_meta").fetchall())
        name = meta.get("name")
        if not isinstance(name, str):
            log.warning("actor_host.convert_skipped", file=str(path), reason="no actor name recorded")
            return None
        ref = ActorRef(kind, name)
        shard = shards[shard_of(ref, shards.count)]
        conn = shard.conn
        if shard.index not in touched:
            conn.execute("BEGIN IMMEDIATE")
            touched.add(shard.index)
        created = meta.get("created_ms")
        conn.execute(
            "INSERT OR IGNORE INTO _actors (kind, name, created_ms) VALUES (?, ?, ?)",
            (kind, name, int(created) if isinstance(created, int) else shards.now_ms()),
        )
        alarm = meta.get("alarm")
        if alarm is not None:
            conn.execute(
                "INSERT OR REPLACE INTO _alarms (kind, name, ts) VALUES (?, ?, ?)", (kind, name, int(alarm))
            )
        have_tables = {str(r[0]) for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for spec in shards.kinds[kind].values():
            table = physical_name(kind, spec.name)
            conn.execute(f"DELETE FROM {table} WHERE actor = ?", (name,))  # noqa: S608 - declared names
            if spec.name not in have_tables:
                continue
            have_cols = {str(r[1]) for r in old.execute(f"PRAGMA table_info({spec.name})")}
            cols = [c for c in spec.column_names if c in have_cols]
            if not cols:
                continue
            listed = ", ".join(cols)
            marks = ", ".join("?" for _ in range(len(cols) + 1))
            rows = old.execute(f"SELECT {listed} FROM {spec.name} ORDER BY rowid").fetchall()  # noqa: S608
            conn.executemany(
                f"INSERT OR REPLACE INTO {table} (actor, {listed}) VALUES ({marks})",  # noqa: S608
                [(name, *r) for r in rows],
            )
        return ref
    finally:
        old.close()


def _remove_empty_dirs(folder: Path) -> None:
    for sub in sorted(folder.glob("*"), reverse=True):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
