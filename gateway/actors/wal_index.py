"""The WAL index of a database (its `-shm` file), read without disturbing SQLite's locks.

How far a WAL has grown since its last checkpoint is `mxFrame - nBackfill` of the WAL index
(https://www.sqlite.org/walformat.html section 2.2: the header at offset 0 and its copy at 48,
each 48 bytes with `mxFrame` at offset 16; `nBackfill` at offset 96; native byte order). Reading
those 100 bytes costs a few microseconds and no lock; a read torn by a concurrent write (the two
copies of the header differ) counts as nothing this time (`wal.py` uses it).
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

_HEADER = 48
_MX_FRAME = 16
_PAGE_SIZE = 14
_N_BACKFILL = 96


_held: dict[str, list[int]] = {}
"""database path -> [descriptor of its -shm file (-1: not opened yet), holders]"""
_held_lock = threading.Lock()


def hold_index(db_path: Path) -> None:
    """Keep the WAL index of `db_path` open for `_header` while this process has the database
    open (call once per connection opened; `release_index` when it is closed).

    Why: SQLite's locks (fcntl) belong to the process, and closing *any* descriptor of a file
    drops every lock the process holds on it. Opening the `-shm` file and closing it again, as a
    read of the header would, drops the locks of this process's SQLite connections: the shared
    lock that says the WAL index is in use (another process opening the database first would
    then truncate it, and this process's mapping of it dies with SIGBUS: seen once the checkpoint
    helper process existed), and the read and write locks of transactions open. So the
    descriptor stays open until the last connection is closed."""
    with _held_lock:
        entry = _held.setdefault(str(db_path), [-1, 0])
        entry[1] += 1


def release_index(db_path: Path) -> None:
    """A connection of `db_path` held with `hold_index` was closed; the last one closes the
    descriptor (no lock of SQLite's is left to drop)."""
    with _held_lock:
        entry = _held.get(str(db_path))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _held[str(db_path)]
            if entry[0] >= 0:
                os.close(entry[0])


def _read_index(db_path: Path) -> bytes | None:
    """The first bytes of the WAL index of `db_path`, through the held descriptor if any (None:
    no WAL index yet)."""
    shm = f"{db_path}-shm"
    with _held_lock:
        entry = _held.get(str(db_path))
        if entry is not None:
            # not opened yet, or the file it opened was deleted (SQLite deletes the WAL index when
            # its last connection closes; a later one makes a new file): no lock is held on that one
            if entry[0] < 0 or os.fstat(entry[0]).st_nlink == 0:
                if entry[0] >= 0:
                    os.close(entry[0])
                    entry[0] = -1
                try:
                    entry[0] = os.open(shm, os.O_RDONLY)
                except FileNotFoundError:
                    return None
            return os.pread(entry[0], _N_BACKFILL + 4, 0)
    try:  # no connection of this process has the database open: no lock to drop
        fd = os.open(shm, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.pread(fd, _N_BACKFILL + 4, 0)
    finally:
        os.close(fd)


def _header(db_path: Path) -> tuple[int, int, int] | None:
    """(mxFrame, page size, nBackfill) of the WAL index of `db_path`; None if unknown."""
    head = _read_index(db_path)
    if head is None:
        return None
    if len(head) < _N_BACKFILL + 4 or head[:_HEADER] != head[_HEADER : 2 * _HEADER]:
        return None
    (mx_frame,) = struct.unpack_from("=I", head, _MX_FRAME)
    (page_size,) = struct.unpack_from("=H", head, _PAGE_SIZE)
    (backfilled,) = struct.unpack_from("=I", head, _N_BACKFILL)
    if page_size == 1:  # 65536 is stored as 1
        page_size = 65536
    return int(mx_frame), int(page_size), int(backfilled)


def wal_frames(db_path: Path) -> int:
    """Frames in the WAL of `db_path` since it last started over (0 if unknown)."""
    head = _header(db_path)
    return 0 if head is None else head[0]


def wal_backlog_bytes(db_path: Path) -> int:
    """Bytes of WAL frames not yet checkpointed into `db_path` (0 if unknown: no WAL index yet,
    or a read torn by a concurrent commit)."""
    head = _header(db_path)
    if head is None:
        return 0
    mx_frame, page_size, backfilled = head
    return max(0, mx_frame - backfilled) * (page_size + 24)
