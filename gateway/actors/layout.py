"""The data directory of the actor host: where every file it owns lives.

    <data_dir>/host.lock                      the single-owner flock (S2)
    <data_dir>/host.sqlite                    the host index: actors' names and files, alarms
    <data_dir>/<kind>/<h[:2]>/<h>.sqlite      one file per actor (`gateway.actors.naming`)

Each SQLite file may have `-wal` and `-shm` companions next to it. `host_files` is the one list
of them all: backups (`gateway.backup`) and the tests use it rather than globbing. Other
components keep their own files in the same directory (`control.sqlite`, `repair.sqlite`,
`consistency/`, `admin-token`, `credentials.key`); they are not the host's and are not listed
here.

(Issue 9 changes this layout to shard files; its version of this module, with the same
`host_files` and `HostFile`, replaces this one: whoever lands second merges the two.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST_LOCK = "host.lock"
HOST_INDEX = "host.sqlite"
SQLITE_SIDECARS = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class HostFile:
    """One file the host owns; `role` is `lock`, `index` or `actor`."""

    role: str
    path: Path


def host_lock_path(data_dir: Path) -> Path:
    return data_dir / HOST_LOCK


def host_index_path(data_dir: Path) -> Path:
    return data_dir / HOST_INDEX


def actor_files(data_dir: Path, kind: str) -> list[Path]:
    """The per-actor SQLite files of `kind`."""
    folder = data_dir / kind
    if not folder.is_dir():
        return []
    return sorted(folder.glob("[0-9a-f][0-9a-f]/*.sqlite"))


def _file_kinds(data_dir: Path) -> list[str]:
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir())


def host_files(data_dir: Path, *, sidecars: bool = False) -> list[HostFile]:
    """Every file of the actor host in `data_dir` that exists now (with `-wal`/`-shm` if asked).

    The one list of the host's files: backups copy these (the SQLite ones through the backup
    API), tests count them.
    """
    found: list[HostFile] = []
    for role, path in (("lock", host_lock_path(data_dir)), ("index", host_index_path(data_dir))):
        if path.exists():
            found.append(HostFile(role, path))
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
