"""Checkpoints off the event loop: how far a WAL has grown since its last checkpoint.

The host's connections that run turns never checkpoint (`PRAGMA wal_autocheckpoint=0`): SQLite's
automatic checkpoint runs inside the COMMIT that crosses its threshold, on the event loop, with
two fsyncs (measured on the coordinator's schema: 5.5-6.5 ms, every ~250th write turn; every
request in flight waits). Instead a background task checkpoints a WAL from a second connection
in a worker thread once it holds more than `CHECKPOINT_WAL_BYTES` of frames not yet copied back
(`PASSIVE`: it never blocks a writer or a reader).

Why not the WAL file's size: a checkpoint does not shrink the file. Once every frame is copied
back, the next writer starts again at its beginning and overwrites it, so the file keeps the
size of its longest run; a trigger on the size would checkpoint every WAL that was ever that
long at every interval. The frames not yet copied back are `mxFrame - nBackfill` of the WAL
index (the `-shm` file, https://www.sqlite.org/walformat.html section 2.2: the header at offset 0
and its copy at 48, each 48 bytes with `mxFrame` at offset 16; `nBackfill` at offset 96; native
byte order). Reading those 100 bytes costs a few microseconds and no lock; a read torn by a
concurrent write (the two copies of the header differ) counts as nothing this time.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
CHECKPOINT_INTERVAL_S = 1.0

_HEADER = 48
_MX_FRAME = 16
_PAGE_SIZE = 14
_N_BACKFILL = 96


def wal_backlog_bytes(db_path: Path) -> int:
    """Bytes of WAL frames not yet checkpointed into `db_path` (0 if unknown: no WAL index yet,
    or a read torn by a concurrent commit)."""
    try:
        fd = os.open(f"{db_path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        head = os.pread(fd, _N_BACKFILL + 4, 0)
    finally:
        os.close(fd)
    if len(head) < _N_BACKFILL + 4 or head[:_HEADER] != head[_HEADER : 2 * _HEADER]:
        return 0
    (mx_frame,) = struct.unpack_from("=I", head, _MX_FRAME)
    (page_size,) = struct.unpack_from("=H", head, _PAGE_SIZE)
    (backfilled,) = struct.unpack_from("=I", head, _N_BACKFILL)
    if page_size == 1:  # 65536 is stored as 1
        page_size = 65536
    return max(0, int(mx_frame) - int(backfilled)) * (int(page_size) + 24)
