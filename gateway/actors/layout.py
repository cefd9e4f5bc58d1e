"""The data directory of the actor host: where every file it owns lives.

    <data_dir>/host.lock                      the single-owner flock (S2)
    <data_dir>/host.sqlite                    the host index: file actors' names, their alarm
                                              index, the layout record (shard count)
    <data_dir>/shards/shard-NNN.sqlite        the shard files: rows of every sharded actor
                                              (agents, locks), keyed by the actor's name
    <data_dir>/<kind>/<h[:2]>/<h>.sqlite      one file per actor of a file kind (the coordinator)

Each SQLite file may have `-wal` and `-shm` companions next to it. `host_files` is the one list
of them all: `agent-coord actors`, backups (`gateway.backup`) and the tests use it rather than
globbing. Other components keep their own files in the same directory (`control.sqlite`,
`repair.sqlite`, `consistency/`, `admin-token`, `credentials.key`); they are not the host's and
are not listed here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.actors.naming import ActorRef

HOST_LOCK = "host.lock"
HOST_INDEX = "host.sqlite"
SHARD_DIR = "shards"
SQLITE_SIDECARS = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class HostFile:
    """One file the host owns; `role` is `lock`, `index`, `shard` or `actor`."""

    role: str
    path: Path


def host_lock_path(data_dir: Path) -> Path:
    return data_dir / HOST_LOCK


def host_index_path(data_dir: Path) -> Path:
    return data_dir / HOST_INDEX


def shard_path(data_dir: Path, index: int) -> Path:
    """The SQLite file of shard `index`."""
    return data_dir / SHARD_DIR / f"shard-{index:03d}.sqlite"


def shard_of(ref: ActorRef, shards: int) -> int:
    """The shard that holds `ref`: a stable hash of kind and name (never Python's `hash`)."""
    raw = ref.kind.encode("utf-8", "surrogatepass") + b"\0" + ref.name.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % shards


def shard_files(data_dir: Path) -> list[Path]:
    """The shard files present in `data_dir`, in shard order."""
    folder = data_dir / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(folder.glob("shard-[0-9][0-9][0-9].sqlite"))


def actor_files(data_dir: Path, kind: str) -> list[Path]:
    """The per-actor SQLite files of `kind` (file kinds; also the old layout of sharded kinds)."""
    folder = data_dir / kind
    if not folder.is_dir():
        return []
    return sorted(folder.glob("[0-9a-f][0-9a-f]/*.sqlite"))


def _file_kinds(data_dir: Path) -> list[str]:
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p.name != SHARD_DIR)


def host_files(data_dir: Path, *, sidecars: bool = False) -> list[HostFile]:
    """Every file of the actor host in `data_dir` that exists now (with `-wal`/`-shm` if asked).

    The one list of the host's files: backups copy these (the SQLite ones through the backup
    API), `agent-coord actors` reads them, tests count them.
    """
    found: list[HostFile] = []
    for role, path in (("lock", host_lock_path(data_dir)), ("index", host_index_path(data_dir))):
        if path.exists():
            found.append(HostFile(role, path))
    found += [HostFile("shard", p) for p in shard_files(data_dir)]
    for kind in _file_kinds(data_dir):
        found += [HostFile("actor", p) for p in actor_files(data_dir, kind)]
    if sidecars:
        extra = [
            HostFile(f.role, f.path.with_name(f.path.name + s))
            for f in found
            if f.path.suffix == ".sqlite"
            for s in SQLITE_SIDECARS
        ]
        found += [f for f in extra if f.path.exists()]
    return found


def open_files_bound(shards: int, max_open: int) -> int:
    """The most file descriptors the host holds: 6 per shard (database, WAL and shared memory
    of the turn connection, database and WAL of the checkpoint connection when the rounds run in
    the gateway, the shared memory the WAL index is read through: `wal_index.py`), 5 per open
    file actor (database, WAL and shared memory of its connection; once checkpointed in the
    gateway, the database descriptor of the checkpoint's connection, which SQLite keeps for reuse
    while another connection of the process has the file open; the WAL index's), 1 for the WAL
    of the file actor being checkpointed, and the lock file and the index (database, WAL, shared
    memory). The checkpoint helper process (`checkpoint_helper.py`) holds its own."""
    return 6 * shards + 5 * max_open + 1 + 4


class HostRunningError(RuntimeError):
    """A running actor host (a gateway) owns the data directory."""


@contextlib.contextmanager
def hold_host_lock(data_dir: Path) -> Iterator[None]:
    """Hold the host's `flock` on `host.lock` (as a starting host does) while the block runs, so
    no gateway starts on `data_dir` meanwhile; `HostRunningError` when one owns it already."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(host_lock_path(data_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HostRunningError(f"a running gateway owns {data_dir} (it holds {HOST_LOCK})") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def host_running(data_dir: Path) -> bool:
    """Does a running actor host own `data_dir`? (The lock is probed and released at once.)"""
    if not host_lock_path(data_dir).exists():
        return False
    try:
        with hold_host_lock(data_dir):
            return False
    except HostRunningError:
        return True
