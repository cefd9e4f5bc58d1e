"""The event loop's stalls: how late it runs a tick it was asked for, and what the process did
meanwhile.

One process serves every request, so anything that holds its event loop (a long turn, a pause of
the cyclic collector, a blocking system call, or the machine not running the process at all)
delays every request in flight by as much. The p99 of the realistic mix is set by such stalls
(docs/benchmarks.md), and from outside they all look the same. `LoopWatch` asks the loop for a
tick every `interval_s` and measures how late each one runs (the loop's lag). A tick that is
`stall_s` or more late is a stall: it is counted and logged at warning (`loop.stalled`) with what
tells the causes apart, for the window since the previous tick:

- `cpu_ms`: the process's CPU time (every thread). Near `window_ms`, the process was busy: a long
  callback or turn of the loop. Far below it, the process was not running: a blocking system call
  (a file sync, a page fault that read the disk) or the machine itself.
- `gc_ms` and `gc_generation`: the time the cyclic collector ran, and the oldest generation it
  collected (timed through `gc.callbacks`).
- `major_faults`, `involuntary_switches`: page faults that read the disk, and the times the
  kernel took the CPU away from the process (`getrusage`).

Figures for `/admin/metrics` (`gauges`): the ticks, the stalls, the last and the longest lag, and
the collector's pauses (their total and the longest), which prometheus_client's own
`python_gc_*` figures do not time. A tick costs a few microseconds, ten times a second.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from gateway.metrics import Gauge

__all__ = ["INTERVAL_S", "STALL_S", "LoopWatch", "Usage"]

log = structlog.get_logger("gateway.loop")

INTERVAL_S: Final = 0.1
"""How often the loop is asked for a tick."""
STALL_S: Final = 0.25
"""A tick this late is a stall: ten times the mix's p99 on a 2-core machine (docs/benchmarks.md)."""

Usage = tuple[int, int]
"""(major page faults, involuntary context switches) of the process so far."""


def _usage() -> Usage:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_majflt, ru.ru_nivcsw


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
        self._due = 0.0  # when the next tick was asked for (`clock`)
        self._last = 0.0  # when the last tick ran
        self._cpu = 0.0
        self._ru: Usage = (0, 0)
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
        self._schedule(now)

    def stop(self) -> None:
        """No more ticks; the collector no longer timed. The figures stay."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._loop = None

    def _schedule(self, now: float) -> None:
        if self._loop is None:  # stopped
            return
        self._due = now + self.interval_s
        self._handle = self._loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.observe(now)
        self._schedule(now)

    def observe(self, now: float) -> float:
        """The tick asked for at `self._due` ran at `now`: count it, log a stall; its lag."""
        lag = max(0.0, now - self._due)
        cpu, ru = self._cpu_clock(), self._usage()
        self.ticks += 1
        self.last_lag_s = lag
        self.max_lag_s = max(self.max_lag_s, lag)
        if lag >= self.stall_s:
            self.stalls += 1
            log.warning(
                "loop.stalled",
                lag_ms=round(lag * 1000, 1),
                window_ms=round((now - self._last) * 1000, 1),
                cpu_ms=round((cpu - self._cpu) * 1000, 1),
                gc_ms=round(self._window_gc_s * 1000, 1),
                gc_generation=self._window_gc_generation,
                major_faults=ru[0] - self._ru[0],
                involuntary_switches=ru[1] - self._ru[1],
            )
        self._last, self._cpu, self._ru = now, cpu, ru
        self._window_gc_s, self._window_gc_generation = 0.0, -1
        return lag

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
