"""The event loop's stalls: how late it runs a tick it was asked for, and what the process did
meanwhile.

One process serves every request, so anything that holds its event loop (a long turn, a pause of
the cyclic collector, a blocking system call, or the machine not running the process at all)
delays every request in flight by as much: the rare rounds of the realistic mix whose p99 jumped
to hundreds of milliseconds were such stalls (docs/benchmarks.md, twentieth pass), and from
outside their causes all look the same. `LoopWatch` asks the loop for a
tick every `interval_s` and measures how late each one runs (the loop's lag). A tick that is
`stall_s` or more late is a stall: it is counted and logged at warning (`loop.stalled`) with what
tells the causes apart, for the window since the previous tick:

- `cpu_ms`: the process's CPU time (every thread). Near `window_ms`, the process was busy: a long
  callback or turn of the loop. Far below it, the process was not running: a blocking system call
  (a file sync, a page fault that read the disk) or the machine itself.
- `gc_ms` and `gc_generation`: the time the cyclic collector ran, and the oldest generation it
  collected (timed through `gc.callbacks`).
- `major_faults`, `involuntary_switches`, `voluntary_switches`: page faults that read the disk,
  the times the kernel took the CPU away from the process, and the times it waited (`getrusage`).
- `where`, `syscall`, `wchan`: what the loop's thread was doing while the tick was overdue, seen
  by a watchdog thread (`sample=True`, the default; it wakes every `interval_s / 2` and takes the
  GIL for a few microseconds): the innermost frames of its Python stack, the system call it was
  in (`/proc/self/task/<tid>/syscall`: its name on x86-64, else its number; `running`) and the
  kernel function it waited in (`wchan`). A file sync or a write the kernel's write-back held
  back (`wchan` `balance_dirty_pages`) shows as that call, since SQLite and the file calls
  release the GIL; Python code that kept the CPU shows as `futex` (waiting for the GIL the
  watchdog took to look) with that code in `where`. If the watchdog itself woke late by half a
  stall or more, it records that instead (`watchdog_late_ms`): the whole process, or the machine,
  was not running, or a C call held the GIL.

Figures for `/admin/metrics` (`gauges`): the ticks, the stalls, the last and the longest lag, and
the collector's pauses (their total and the longest), which prometheus_client's own
`python_gc_*` figures do not time. A tick costs a few microseconds, ten times a second.
"""

from __future__ import annotations

import asyncio
import gc
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.metrics import Gauge

__all__ = ["INTERVAL_S", "STALL_S", "LoopWatch", "Usage"]

log = structlog.get_logger("gateway.loop")

INTERVAL_S: Final = 0.1
"""How often the loop is asked for a tick."""
STALL_S: Final = 0.25
"""A tick this late is a stall: ten times the mix's p99 on a 2-core machine (docs/benchmarks.md)."""

Usage = tuple[int, int, int]
"""(major page faults, involuntary context switches, voluntary ones) of the process so far."""

WHERE_FRAMES: Final = 4
"""Innermost frames of the loop thread's stack in a stall's `where`."""

_X86_64_SYSCALLS: Final = {
    0: "read", 1: "write", 2: "open", 3: "close", 7: "poll", 9: "mmap", 11: "munmap",
    17: "pread64", 18: "pwrite64", 19: "readv", 20: "writev", 23: "select", 35: "nanosleep",
    44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 72: "fcntl", 74: "fsync",
    75: "fdatasync", 76: "truncate", 77: "ftruncate", 82: "rename", 87: "unlink", 202: "futex",
    230: "clock_nanosleep", 232: "epoll_wait", 257: "openat", 262: "newfstatat", 281: "epoll_pwait",
    285: "fallocate", 295: "preadv", 296: "pwritev",
}  # fmt: skip
"""Names of the system calls a stalled loop is likely to be in (x86-64 numbers)."""


def _usage() -> Usage:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_majflt, ru.ru_nivcsw, ru.ru_nvcsw


def _read_proc(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:  # not Linux, or the thread is gone
        return ""


def syscall_of(text: str) -> str:
    """The system call a `/proc/.../syscall` line names: its name where known (x86-64), else its
    number; `running` or `blocked` as the kernel says; empty if unknown."""
    first = text.split(" ", 1)[0]
    if not first.isdigit():
        return first
    if platform.machine() == "x86_64":
        return _X86_64_SYSCALLS.get(int(first), first)
    return first


class LoopWatch:
    """Ticks on a loop (`start`, `stop`), its stalls logged and counted (module docstring)."""

    def __init__(
        self,
        *,
        interval_s: float = INTERVAL_S,
        stall_s: float = STALL_S,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        usage: Callable[[], Usage] = _usage,
        sample: bool = True,
    ) -> None:
        if interval_s <= 0 or stall_s <= 0:
            raise ValueError("interval_s and stall_s must be positive")
        self.interval_s = interval_s
        self.stall_s = stall_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._usage = usage
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0  # when the last tick ran (`clock`); the next is due `interval_s` later
        self._cpu = 0.0
        self._ru: Usage = (0, 0, 0)
        self._sample = sample
        self._watchdog: threading.Thread | None = None
        self._quit = threading.Event()
        self._loop_thread = 0  # the loop thread's `threading.get_ident()`
        self._loop_tid = 0  # and its kernel thread id
        self._seen: tuple[float, dict[str, str]] | None = None  # (the overdue tick's due time, what was seen)
        self._gc_started: float | None = None
        self._window_gc_s = 0.0  # the collector's time since the last tick
        self._window_gc_generation = -1  # the oldest generation it collected since (-1: none)
        self.ticks = 0
        self.stalls = 0
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0
        self.gc_pause_s = 0.0  # every collection's time, summed
        self.gc_pause_max_s = 0.0

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Tick on `loop` (the running one by default) from now on, and time the collector."""
        if self._loop is not None:
            raise RuntimeError("the loop watch is running already")
        self._loop = loop or asyncio.get_running_loop()
        now = self._clock()
        self._last, self._cpu, self._ru = now, self._cpu_clock(), self._usage()
        gc.callbacks.append(self._on_gc)
        self._schedule()
        if self._sample:
            self._loop_thread, self._loop_tid = threading.get_ident(), threading.get_native_id()
            self._quit.clear()
            self._watchdog = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
            self._watchdog.start()

    def stop(self) -> None:
        """No more ticks; the collector no longer timed. The figures stay."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._loop = None
        if self._watchdog is not None:
            self._quit.set()
            self._watchdog.join(timeout=1.0)
            self._watchdog = None

    def _schedule(self) -> None:
        if self._loop is None:  # stopped
            return
        self._handle = self._loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.observe(now)
        self._schedule()

    def observe(self, now: float) -> float:
        """The tick due `interval_s` after the last ran at `now`: count it, log a stall; its lag."""
        due = self._last + self.interval_s
        lag = max(0.0, now - due)
        cpu, ru = self._cpu_clock(), self._usage()
        self.ticks += 1
        self.last_lag_s = lag
        self.max_lag_s = max(self.max_lag_s, lag)
        if lag >= self.stall_s:
            self.stalls += 1
            seen = self._seen
            extra = dict(seen[1]) if seen is not None and seen[0] == due else {}
            log.warning(
                "loop.stalled",
                lag_ms=round(lag * 1000, 1),
                window_ms=round((now - self._last) * 1000, 1),
                cpu_ms=round((cpu - self._cpu) * 1000, 1),
                gc_ms=round(self._window_gc_s * 1000, 1),
                gc_generation=self._window_gc_generation,
                major_faults=ru[0] - self._ru[0],
                involuntary_switches=ru[1] - self._ru[1],
                voluntary_switches=ru[2] - self._ru[2],
                **extra,
            )
        self._last, self._cpu, self._ru = now, cpu, ru
        self._window_gc_s, self._window_gc_generation = 0.0, -1
        return lag

    def _watch(self) -> None:
        """The watchdog thread: while a tick is overdue by `stall_s`, look once at what the loop's
        thread is doing (kept for the stall's line), unless the watchdog woke late itself."""
        step = self.interval_s / 2
        while True:
            asked = time.monotonic()
            if self._quit.wait(step):
                return
            late = time.monotonic() - asked - step
            due, seen = self._last + self.interval_s, self._seen
            if self._clock() - due < self.stall_s:
                continue
            if seen is not None and seen[0] == due and "watchdog_late_ms" not in seen[1]:
                continue  # looked already
            if late >= self.stall_s / 2:  # not running either; a later look on time replaces this
                self._seen = (due, {"watchdog_late_ms": f"{late * 1000:.1f}"})
            else:
                found: dict[str, str] = {}
                self._seen = (due, found)  # filled as it looks: the stall may end meanwhile
                self.look(found)

    def look(self, seen: dict[str, str]) -> None:
        """Fill `seen` with what the loop's thread is doing now: `where` (its innermost Python
        frames, innermost first) at once, then `syscall` and `wchan` (the kernel's view; left out
        where /proc has none), whose reads may hand the GIL back to a busy loop thread."""
        frame = sys._current_frames().get(self._loop_thread)
        where: list[str] = []
        while frame is not None and len(where) < WHERE_FRAMES:  # no source lines: no file reads
            code = frame.f_code
            where.append(f"{code.co_name} ({code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
            frame = frame.f_back
        if where:
            seen["where"] = " < ".join(where)
        task = f"/proc/self/task/{self._loop_tid}"
        syscall = syscall_of(_read_proc(f"{task}/syscall"))
        if syscall:
            seen["syscall"] = syscall
        wchan = _read_proc(f"{task}/wchan")
        if wchan and wchan != "0":
            seen["wchan"] = wchan

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """`gc.callbacks`: a collection starts or stops."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        if self._gc_started is None:  # installed during a collection
            return
        took = time.perf_counter() - self._gc_started
        self._gc_started = None
        self.gc_pause_s += took
        self.gc_pause_max_s = max(self.gc_pause_max_s, took)
        self._window_gc_s += took
        self._window_gc_generation = max(self._window_gc_generation, int(info.get("generation", 0)))

    def gauges(self) -> list[Gauge]:
        """The figures for `/admin/metrics`."""
        return [
            Gauge(
                "agent_coord_loop_ticks", "Ticks of the event loop's watch.", [({}, self.ticks)], "counter"
            ),
            Gauge(
                "agent_coord_loop_stalls",
                f"Ticks at least {self.stall_s:g} s late (each logged as loop.stalled).",
                [({}, self.stalls)],
                "counter",
            ),
            Gauge("agent_coord_loop_lag_seconds", "How late the last tick ran.", [({}, self.last_lag_s)]),
            Gauge("agent_coord_loop_lag_max_seconds", "The longest lag so far.", [({}, self.max_lag_s)]),
            Gauge(
                "agent_coord_gc_pause_seconds",
                "Time the cyclic collector held the process, summed.",
                [({}, self.gc_pause_s)],
                "counter",
            ),
            Gauge("agent_coord_gc_pause_max_seconds", "The longest collection.", [({}, self.gc_pause_max_s)]),
        ]
