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

The start again needs a moment with nothing left to copy back: SQLite restarts a WAL only in a
write transaction whose snapshot began when every frame had been copied back (`walRestartLog`,
read lock 0). Under a steady load the turns commit while the worker thread checkpoints, so the
PASSIVE checkpoint ends with new frames behind it, the next transaction begins before they are
copied back, and the WAL never starts again: it grew by every frame ever written (under issue
13's mix the coordinator's WAL passed 340 MB in 20 s, beside a 4 MB database, and every append
cost the file system a fresh block, zeroed). So the checkpoint runs in rounds: up to `BULK_ROUNDS`
with the turns running, each copying back what the turns committed during the one before,
until fewer than `CATCH_UP_BYTES` are left; then a last one with the actor's turns held back
(`catch_up`), which copies back those few frames and syncs, and the actor's next write starts
the WAL over. The file then keeps the size it reached, about `CHECKPOINT_WAL_BYTES` and what
one `CHECKPOINT_INTERVAL_S` adds, and is overwritten from then on.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from gateway.actors.storage import wait_through_cancellation

CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
CHECKPOINT_INTERVAL_S = 1.0
BULK_ROUNDS = 4
"""PASSIVE checkpoints, turns running, before the one with the turns held back (`catch_up`)."""
CATCH_UP_BYTES = 256 * 1024
"""Frames not yet copied back small enough for the checkpoint with the turns held back."""

_HEADER = 48
_MX_FRAME = 16
_PAGE_SIZE = 14
_N_BACKFILL = 96


def _header(db_path: Path) -> tuple[int, int, int] | None:
    """(mxFrame, page size, nBackfill) of the WAL index of `db_path`; None if unknown."""
    try:
        fd = os.open(f"{db_path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _N_BACKFILL + 4, 0)
    finally:
        os.close(fd)
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


async def checkpoint_in_rounds(db_path: Path, checkpoint: Callable[[], object]) -> None:
    """Run `checkpoint` in a worker thread, the turns going on, up to `BULK_ROUNDS` times, until
    fewer than `CATCH_UP_BYTES` of frames are left for the round with the turns held back. Each
    round is never abandoned half-way: a cancellation waits for the thread."""
    loop = asyncio.get_running_loop()
    for _ in range(BULK_ROUNDS):
        await wait_through_cancellation(loop.run_in_executor(None, checkpoint))
        if wal_backlog_bytes(db_path) <= CATCH_UP_BYTES:
            return


async def held_round(
    synchronous: str,
    in_thread: Callable[[], object],
    inline: Callable[[], object],
    executor: Executor | None = None,
) -> float:
    """The round with the turns held back (the caller holds them): `in_thread` in a worker
    thread under `synchronous=FULL`, whose syncs are slow; else `inline` on the turns' own
    connection, as their commits run (a few frames; in a thread the GIL hand-offs held the
    actor's events 2-8 ms under issue 13's mix). Returns its milliseconds."""
    started = time.perf_counter()
    if synchronous == "FULL":
        await wait_through_cancellation(asyncio.get_running_loop().run_in_executor(executor, in_thread))
    else:
        inline()
    return round((time.perf_counter() - started) * 1000, 2)
