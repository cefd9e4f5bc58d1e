"""The checkpoint helper: a child process that runs the host's WAL checkpoints (`wal.py`).

Why a process: under `synchronous=NORMAL` a commit costs no sync, but a checkpoint syncs the WAL
and the database, and the first write after a complete checkpoint syncs the new WAL header.
The round with an actor's turns held back ran inline on the event loop, and a sync on a slow
moment of a virtual disk stalled every request in flight (hundreds of milliseconds, caught by the
loop watch naming `fdatasync`; `docs/benchmarks.md`, twentieth pass). In a process of its own
the syncs hold only the turns of the actor whose file is checkpointed.

How the loop waits: every wait for an answer costs at least one step of the event loop, and
under load a step lasts milliseconds (it serves every connection that is ready): a held round
answered asynchronously held a hot actor (the coordinator takes six requests in ten) 13-34 ms at
the median, longer than the round itself (twenty-first pass). So `round` may first wait for the
answer on the pipe itself, blocking the loop up to `block_s` (the round the loop held before,
about a millisecond, but bounded); only a slower round (a slow sync) is then waited for
asynchronously, holding that actor's turns and nothing else. The answers are read by a reader
callback of the loop (`add_reader`), so no thread has to win the GIL to report one.

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
import math
import os
import select
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.actors.storage import wait_through_cancellation

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


class HelperGone(Exception):
    """The helper process ended with a round unanswered."""


class RoundTimedOut(Exception):
    """The helper left a round unanswered for `round_timeout_s`."""


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
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = -1  # the helper's stdout (non-blocking), read by `_on_readable`
        self._buf = bytearray()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._down_until = 0.0
        self._closed = False
        self.starts = 0
        self.rounds = 0
        self.failures = 0
        self.answered_in_time = 0  # rounds answered within their `block_s`

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def in_flight(self) -> int:
        """Rounds asked and not answered yet."""
        return len(self._pending)

    async def round(self, path: Path, *, restart: bool, block_s: float = 0.0) -> RoundResult | None:
        """Checkpoint `path` in the helper (PASSIVE), and with `restart` start its WAL over if
        every frame was copied back. Waits up to `block_s` for the answer with the event loop
        blocked, then without. None when the helper is unavailable: the caller runs the round
        itself. A failure SQLite reports raises `sqlite3.OperationalError`."""
        proc = self._running()
        if proc is None or proc.stdin is None:
            return None
        asked = time.perf_counter()
        in_time = False
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            try:
                request = {"id": req_id, "path": str(path), "restart": restart}
                os.write(proc.stdin.fileno(), json.dumps(request).encode() + b"\n")
            except OSError as e:  # the process ended: its pipe is closed
                await self._fail(proc, f"could not write to it: {e}", kill=False)
                return None
            if block_s > 0:
                self._wait_blocking(fut, block_s)
                in_time = fut.done()
            try:
                if in_time:  # no await: a done future awaited still costs steps of the loop
                    reply = fut.result()
                    self.answered_in_time += 1
                else:
                    reply = await self._answer(fut)
            except RoundTimedOut:
                await self._fail(proc, f"no answer in {self.round_timeout_s} s", kill=True)
                return None
            except HelperGone as e:
                await self._fail(proc, str(e), kill=False)
                return None
        finally:
            self._pending.pop(req_id, None)
        if not reply.get("ok"):
            raise sqlite3.OperationalError(f"checkpoint helper: {reply.get('error')}")
        self.rounds += 1
        log.debug(
            "checkpoint_helper.round",
            path=str(path),
            restart=restart,
            helper_ms=reply["ms"],
            waited_ms=round((time.perf_counter() - asked) * 1000, 2),
            in_time=in_time,
        )
        return RoundResult(int(reply["busy"]), int(reply["log"]), int(reply["done"]), float(reply["ms"]))

    async def _answer(self, fut: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """Wait for the answer with the loop running, at most `round_timeout_s`. A cancellation
        waits for the answer too, then is raised: the caller may hold an actor's turns for this
        round, and must not let them run while the helper still writes its file."""
        timer = asyncio.get_running_loop().call_later(self.round_timeout_s, self._time_out, fut)
        try:
            return await wait_through_cancellation(fut)
        finally:
            timer.cancel()

    @staticmethod
    def _time_out(fut: asyncio.Future[dict[str, Any]]) -> None:
        if not fut.done():
            fut.set_exception(RoundTimedOut())

    def _wait_blocking(self, fut: asyncio.Future[dict[str, Any]], block_s: float) -> None:
        """Read answers with the loop blocked until `fut` has its own or `block_s` is over."""
        deadline = time.monotonic() + block_s
        while not fut.done():
            left = deadline - time.monotonic()
            if left <= 0 or self._out < 0:
                return
            # poll, not select: select() refuses descriptors above 1023, and a gateway holding
            # thousands of sockets when its first checkpoint starts the helper gets one
            poller = select.poll()
            poller.register(self._out, select.POLLIN)
            if poller.poll(max(1, math.ceil(left * 1000))):
                self._on_readable()

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._closed:
            return None
        proc = self._proc
        if proc is not None:
            return proc
        if time.monotonic() < self._down_until:
            return None
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as e:
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_after_s
            log.warning("checkpoint_helper.start_failed", error=str(e), retry_after_s=self.retry_after_s)
            return None
        assert proc.stdout is not None  # noqa: S101 - started with stdout=PIPE
        self._out = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buf.clear()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._out, self._on_readable)
        self._proc = proc
        self.starts += 1
        log.info("checkpoint_helper.started", pid=proc.pid, synchronous=self.synchronous)
        return proc

    def _on_readable(self) -> None:
        """Read what the helper wrote; hand each answer to its request. At the end of its
        output (the process ended), fail what is still waiting."""
        while True:
            try:
                chunk = os.read(self._out, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._detach()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(HelperGone("the checkpoint helper ended"))
                        fut.exception()  # retrieved here too: its round may have stopped waiting
                return
            self._buf += chunk
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            try:
                reply = json.loads(line)
            except ValueError:
                log.warning("checkpoint_helper.bad_reply", line=line[:200].decode(errors="replace"))
                continue
            waiting = self._pending.get(reply.get("id", 0)) if isinstance(reply, dict) else None
            if waiting is not None and not waiting.done():
                waiting.set_result(reply)

    def _detach(self) -> None:
        """Stop reading the current process's output (it ended, or it is being ended)."""
        if self._out >= 0 and self._loop is not None:
            self._loop.remove_reader(self._out)
        self._out = -1

    async def _fail(self, proc: subprocess.Popen[bytes], reason: str, *, kill: bool) -> None:
        """Give up on this process: kill it if asked (its SQLite locks end with it), wait for it,
        and run the rounds in the gateway for `retry_after_s`."""
        if self._proc is not proc:
            return  # another request already failed it
        self._proc = None
        self._detach()
        self.failures += 1
        self._down_until = time.monotonic() + self.retry_after_s
        log.warning("checkpoint_helper.failed", pid=proc.pid, reason=reason, retry_after_s=self.retry_after_s)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(HelperGone(f"the checkpoint helper failed: {reason}"))
                fut.exception()  # retrieved here too: its round may have stopped waiting
        await self._end(proc, kill=kill)

    async def _end(self, proc: subprocess.Popen[bytes], *, kill: bool) -> None:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if kill:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, proc.wait, EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            try:
                await loop.run_in_executor(None, proc.wait, EXIT_WAIT_S)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a disk that does not answer)
                log.warning("checkpoint_helper.did_not_exit", pid=proc.pid)
        if proc.stdout is not None:
            proc.stdout.close()

    async def close(self) -> None:
        """End the process (stdin closed: it finishes the round it runs, then exits)."""
        self._closed = True
        proc, self._proc = self._proc, None
        self._detach()
        if proc is not None:
            await self._end(proc, kill=False)
            log.info("checkpoint_helper.closed", pid=proc.pid, rounds=self.rounds)
