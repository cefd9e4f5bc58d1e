"""Checkpoints off the event loop, and how far a WAL has grown since its last checkpoint.

The host's connections that run turns never checkpoint (`PRAGMA wal_autocheckpoint=0`): SQLite's
automatic checkpoint runs inside the COMMIT that crosses its threshold, on the event loop, with
two fsyncs (measured on the coordinator's schema: 5.5-6.5 ms, every ~250th write turn; every
request in flight waits). Instead a background task checkpoints a WAL once it holds more than
`CHECKPOINT_WAL_BYTES` of frames not yet copied back (`PASSIVE`: it never blocks a writer or a
reader): in the host's checkpoint helper process (`checkpoint_helper.py`), or, without one, from
a second connection in a worker thread.

Why not the WAL file's size: a checkpoint does not shrink the file. Once every frame is copied
back, the next writer starts again at its beginning and overwrites it, so the file keeps the
size of its longest run; a trigger on the size would checkpoint every WAL that was ever that
long at every interval. The frames not yet copied back are read off the WAL index
(`wal_index.py`).

The start again needs a moment with nothing left to copy back: SQLite restarts a WAL only in a
write transaction whose snapshot began when every frame had been copied back (`walRestartLog`,
read lock 0). Under a steady load the turns commit while the worker thread checkpoints, so the
PASSIVE checkpoint ends with new frames behind it, the next transaction begins before they are
copied back, and the WAL never starts again: it grew by every frame ever written (under issue
13's mix the coordinator's WAL passed 340 MB in 20 s, beside a 4 MB database, and every append
cost the file system a fresh block, zeroed). So the checkpoint runs in rounds: up to `BULK_ROUNDS`
with the turns running, each copying back what the turns committed during the one before,
until fewer than `CATCH_UP_BYTES` are left; then a last one with the actor's turns held back
(`catch_up`), which copies back those few frames and syncs; then the helper commits a write
that changes nothing, which starts the WAL over (and syncs its new header) while the turns are
still held; without a helper the actor's next write starts it over. The file then keeps the
size it reached, about `CHECKPOINT_WAL_BYTES` and what one `CHECKPOINT_INTERVAL_S` adds, and is
overwritten from then on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.actors.storage import wait_through_cancellation
from gateway.actors.wal_index import hold_index, release_index, wal_backlog_bytes, wal_frames

__all__ = [
    "checkpoint_in_rounds",
    "held_round",
    "hold_index",
    "release_index",
    "wal_backlog_bytes",
    "wal_frames",
]

if TYPE_CHECKING:
    from gateway.actors.checkpoint_helper import CheckpointHelper

CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
CHECKPOINT_INTERVAL_S = 1.0
BULK_ROUNDS = 4
"""PASSIVE checkpoints, turns running, before the one with the turns held back (`catch_up`)."""
CATCH_UP_BYTES = 256 * 1024
"""Frames not yet copied back small enough for the checkpoint with the turns held back."""
HELD_BLOCK_S = 0.005
"""How long the event loop waits, blocked, for the helper's answer to the round with the turns
held back, before it waits on (`checkpoint_helper.py`: a step of a loop under load lasts
milliseconds, and the held actor waits for the steps; a slow sync is then the actor's alone)."""


async def checkpoint_in_rounds(
    db_path: Path, checkpoint: Callable[[], object], helper: CheckpointHelper | None = None
) -> None:
    """Checkpoint `db_path`, the turns going on, up to `BULK_ROUNDS` times, until fewer than
    `CATCH_UP_BYTES` of frames are left for the round with the turns held back: in the `helper`
    process, or (none, or unavailable) with `checkpoint` in a worker thread. Each round is never
    abandoned half-way: a cancellation waits for it."""
    loop = asyncio.get_running_loop()
    for _ in range(BULK_ROUNDS):
        if helper is None or await helper.round(db_path, restart=False) is None:
            await wait_through_cancellation(loop.run_in_executor(None, checkpoint))
        if wal_backlog_bytes(db_path) <= CATCH_UP_BYTES:
            return


async def held_round(
    synchronous: str,
    in_thread: Callable[[], object],
    inline: Callable[[], object],
    executor: Executor | None = None,
    *,
    helper: CheckpointHelper | None = None,
    path: Path | None = None,
) -> float:
    """The round with the turns held back (the caller holds them), which also starts the WAL
    over: in the `helper` process, whose syncs (the checkpoint's, and the new WAL header's)
    then hold only these turns. Without it (none, or unavailable): `in_thread` in a worker
    thread under `synchronous=FULL`, whose syncs are slow; else `inline` on the turns' own
    connection, as their commits run (a few frames; in a thread the GIL hand-offs held the
    actor's events 2-8 ms under issue 13's mix), and the actor's next write restarts the WAL.
    Returns its milliseconds.

    `helper.round` is awaited directly (it waits for its answer through a cancellation itself):
    a round answered within `HELD_BLOCK_S` then costs no step of the loop."""
    started = time.perf_counter()
    if helper is None or path is None or await helper.round(path, restart=True, block_s=HELD_BLOCK_S) is None:
        if synchronous == "FULL":
            await wait_through_cancellation(asyncio.get_running_loop().run_in_executor(executor, in_thread))
        else:
            inline()
    return round((time.perf_counter() - started) * 1000, 2)
