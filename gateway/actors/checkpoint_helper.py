"""The checkpoint helper: a child process that runs the host's WAL checkpoints (`wal.py`).

Why a process: under `synchronous=NORMAL` a commit costs no sync, but a checkpoint syncs the WAL
and the database, and the first write after a complete checkpoint syncs the new WAL header.
The round with an actor's turns held back ran inline on the event loop, and a sync on a slow
moment of a virtual disk stalled every request in flight (hundreds of milliseconds, caught by the
loop watch naming `fdatasync`; `docs/benchmarks.md`, twentieth pass). In a worker thread the held
actor's events waited for the GIL instead (tried twice: the p99 doubled). In a process of its
own the syncs hold only the turns of the actor whose file is checkpointed, and its reply is read
by the event loop itself, so no thread has to win the GIL to report it.

The process (`checkpoint_worker.py`) starts with the first checkpoint a host needs, not with the
host: most data directories (and tests) never need one. If it cannot start, dies, or leaves a
round unanswered for `ROUND_TIMEOUT_S` (then it is killed: its SQLite locks go with it), the
round is reported unavailable and the caller runs it itself, as before the helper existed; a
new process is tried `RETRY_AFTER_S` later. The process ends when its stdin closes (`close`, or
the gateway's own death), so it never outlives the gateway by more than the round it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

WORKER = Path(__file__).with_name("checkpoint_worker.py")
ROUND_TIMEOUT_S = 120.0
"""A round unanswered this long: the helper is killed and the round runs in the gateway."""
RETRY_AFTER_S = 30.0
"""After the helper failed, rounds run in the gateway this long before a new helper is tried."""
EXIT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class RoundResult:
    """SQLite's answer to the checkpoint (busy, frames in the WAL, frames copied back) and the
    round's milliseconds in the helper."""

    busy: int
    log_frames: int
    done: int
    ms: float


class CheckpointHelper:
    """One checkpoint helper process and its requests in flight."""

    def __init__(
        self,
        synchronous: str,
        *,
        round_timeout_s: float = ROUND_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
        command: list[str] | None = None,
    ) -> None:
        self.synchronous = synchronous
        self.round_timeout_s = round_timeout_s
        self.retry_after_s = retry_after_s
        self._command = command or [sys.executable, "-I", str(WORKER), synchronous]
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        # request id -> (the process asked, the future of its answer)
        self._pending: dict[int, tuple[asyncio.subprocess.Process, asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._down_until = 0.0
        self._start_lock = asyncio.Lock()
        self._closed = False
        self.starts = 0
        self.rounds = 0
        self.failures = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def in_flight(self) -> int:
        """Rounds asked and not answered yet."""
        return len(self._pending)

    async def round(self, path: Path, *, restart: bool) -> RoundResult | None:
        """Checkpoint `path` in the helper (PASSIVE), and with `restart` start its WAL over if
        every frame was copied back. None when the helper is unavailable: the caller runs the
        round itself. A failure SQLite reports raises `sqlite3.OperationalError`."""
        proc = await self._running()
        if proc is None or proc.stdin is None:
            return None
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = (proc, fut)
        try:
            request = {"id": req_id, "path": str(path), "restart": restart}
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            reply = await asyncio.wait_for(fut, self.round_timeout_s)
        except TimeoutError:
            await self._fail(proc, f"no answer in {self.round_timeout_s} s", kill=True)
            return None
        except (OSError, RuntimeError, HelperGone) as e:  # a closed pipe, or the process ended
            await self._fail(proc, str(e) or type(e).__name__, kill=False)
            return None
        finally:
            self._pending.pop(req_id, None)
        if not reply.get("ok"):
            raise sqlite3.OperationalError(f"checkpoint helper: {reply.get('error')}")
        self.rounds += 1
        return RoundResult(int(reply["busy"]), int(reply["log"]), int(reply["done"]), float(reply["ms"]))

    async def _running(self) -> asyncio.subprocess.Process | None:
        if self._closed:
            return None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        if time.monotonic() < self._down_until:
            return None
        async with self._start_lock:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
            except OSError as e:
                self.failures += 1
                self._down_until = time.monotonic() + self.retry_after_s
                log.warning("checkpoint_helper.start_failed", error=str(e), retry_after_s=self.retry_after_s)
                return None
            self._proc = proc
            self._reader = asyncio.get_running_loop().create_task(self._read(proc))
            self.starts += 1
            log.info("checkpoint_helper.started", pid=proc.pid, synchronous=self.synchronous)
            return proc

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Hand each reply to its request; at the end of the output, fail what is still waiting."""
        assert proc.stdout is not None  # noqa: S101 - started with stdout=PIPE
        try:
            while line := await proc.stdout.readline():
                try:
                    reply = json.loads(line)
                except ValueError:
                    log.warning("checkpoint_helper.bad_reply", line=line[:200].decode(errors="replace"))
                    continue
                waiting = self._pending.get(reply.get("id", 0)) if isinstance(reply, dict) else None
                if waiting is not None and waiting[0] is proc and not waiting[1].done():
                    waiting[1].set_result(reply)
        finally:
            for owner, fut in self._pending.values():
                if owner is proc and not fut.done():
                    fut.set_exception(HelperGone("the checkpoint helper ended"))

    async def _fail(self, proc: asyncio.subprocess.Process, reason: str, *, kill: bool) -> None:
        """Give up on this process: kill it if asked (its SQLite locks end with it), wait for it,
        and run the rounds in the gateway for `retry_after_s`."""
        if self._proc is not proc:
            return  # another request already failed it
        self._proc = None
        reader, self._reader = self._reader, None
        self.failures += 1
        self._down_until = time.monotonic() + self.retry_after_s
        log.warning("checkpoint_helper.failed", pid=proc.pid, reason=reason, retry_after_s=self.retry_after_s)
        await self._end(proc, reader, kill=kill)

    async def _end(
        self, proc: asyncio.subprocess.Process, reader: asyncio.Task[None] | None, *, kill: bool
    ) -> None:
        if proc.stdin is not None:
            proc.stdin.close()
        if kill and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            await asyncio.wait_for(proc.wait(), EXIT_WAIT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), EXIT_WAIT_S)
            if proc.returncode is None:  # stuck in the kernel (a disk that does not answer)
                log.warning("checkpoint_helper.did_not_exit", pid=proc.pid)
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(reader, EXIT_WAIT_S)

    async def close(self) -> None:
        """End the process (stdin closed: it finishes the round it runs, then exits)."""
        self._closed = True
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if proc is not None:
            await self._end(proc, reader, kill=False)
            log.info("checkpoint_helper.closed", pid=proc.pid, rounds=self.rounds)


class HelperGone(Exception):
    """The helper process ended with a round unanswered."""
