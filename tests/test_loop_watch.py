"""The event loop's watch: stalls counted and logged with what tells their causes apart, the
collector's pauses timed, and the figures in /admin/metrics."""

from __future__ import annotations

import asyncio
import gc
import platform
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.app import LOOP_WATCH, create_app
from gateway.loop_watch import LoopWatch, syscall_of
from gateway.settings import MigrationSettings, Settings, StorageSettings


async def until(done: Callable[[], bool]) -> None:
    """Let the loop run (its ticks, a late one too) until `done()`, at most a second."""
    for _ in range(100):
        await asyncio.sleep(0.01)
        if done():
            return


def stall_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The `loop.stalled` lines among captured log lines."""
    return [e for e in logs if e["event"] == "loop.stalled"]


class FakeClocks:
    """The wall clock, the CPU clock and the rusage counters, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 5.0
        self.faults = 0
        self.switches = 0
        self.waits = 0

    def usage(self) -> tuple[int, int, int]:
        return self.faults, self.switches, self.waits


async def test_a_late_tick_is_a_stall_logged_with_the_window_it_ended() -> None:
    clocks = FakeClocks()
    watch = LoopWatch(
        interval_s=0.1,
        stall_s=0.25,
        clock=lambda: clocks.now,
        cpu_clock=lambda: clocks.cpu,
        usage=clocks.usage,
        sample=False,
    )
    watch.start()
    try:
        with capture_logs() as logs:
            clocks.now += 0.12  # the first tick, due 0.1 s after the start: 20 ms late
            watch._tick()  # as the loop runs it
            first = watch.last_lag_s
            clocks.now += 0.1 + 0.4  # the next one 400 ms late, while the process ran 30 ms of CPU
            clocks.cpu += 0.03
            clocks.faults += 2
            clocks.switches += 7
            clocks.waits += 1
            watch._tick()
    finally:
        watch.stop()
    assert first == pytest.approx(0.02)
    assert watch.last_lag_s == pytest.approx(0.4)
    assert (watch.ticks, watch.stalls) == (2, 1)
    assert watch.max_lag_s == pytest.approx(0.4)
    stalled = stall_lines(logs)
    assert len(stalled) == 1
    line = stalled[0]
    assert line["log_level"] == "warning"
    assert line["lag_ms"] == pytest.approx(400.0)
    assert line["window_ms"] == pytest.approx(500.0)
    assert line["cpu_ms"] == pytest.approx(30.0)  # far below the window: the process was not running
    assert (line["major_faults"], line["involuntary_switches"], line["voluntary_switches"]) == (2, 7, 1)
    assert (line["gc_ms"], line["gc_generation"]) == (0.0, -1)


async def test_a_blocked_loop_is_a_stall_with_its_cpu_and_the_collector_in_it() -> None:
    watch = LoopWatch(interval_s=0.01, stall_s=0.05)
    watch.start()
    try:
        await asyncio.sleep(0.03)  # a few ticks on time
        with capture_logs() as logs:
            gc.collect()  # a full collection inside the stall
            started = time.process_time()
            while time.process_time() - started < 0.2:  # then 200 ms of CPU work, however long it took
                pass
            await until(lambda: watch.stalls > 0)  # the late tick runs at the next turn of the loop
    finally:
        watch.stop()
    stalled = stall_lines(logs)
    assert watch.stalls >= 1
    assert stalled
    line = stalled[0]
    assert line["lag_ms"] >= 50
    assert line["cpu_ms"] >= 100  # busy: the CPU time is the window's
    assert line["gc_generation"] == 2
    assert line["gc_ms"] > 0
    # the watchdog saw Python code keep the loop: the frame of this test, waiting for the GIL
    assert "test_a_blocked_loop_is_a_stall" in line.get("where", ""), line
    assert watch.gc_pause_max_s > 0
    assert watch.gc_pause_s >= watch.gc_pause_max_s


ON_LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"


async def test_a_loop_held_in_a_system_call_names_the_call_and_the_code_that_made_it() -> None:
    watch = LoopWatch(interval_s=0.01, stall_s=0.05)
    watch.start()
    try:
        await asyncio.sleep(0.03)
        with capture_logs() as logs:
            time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop held in a system call (GIL released)
            await until(lambda: watch.stalls > 0)
    finally:
        watch.stop()
    stalled = stall_lines(logs)
    assert stalled
    line = stalled[0]
    assert line["cpu_ms"] < line["window_ms"] / 2  # not busy: waiting
    assert line["where"].startswith("test_a_loop_held_in_a_system_call")
    if ON_LINUX_X86_64:
        assert line["syscall"] == "clock_nanosleep"
    assert "watchdog_late_ms" not in line


def test_system_calls_are_named_from_proc() -> None:
    assert syscall_of("running") == "running"
    assert syscall_of("") == ""
    if ON_LINUX_X86_64:
        assert syscall_of("75 0x5 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x7f12") == "fdatasync"
        assert syscall_of("999 0x0") == "999"


async def test_a_stopped_watch_ticks_no_more_and_leaves_the_collector_alone() -> None:
    watch = LoopWatch(interval_s=0.01)
    watch.start()
    assert watch.running
    with pytest.raises(RuntimeError, match="running already"):
        watch.start()
    await until(lambda: watch.ticks >= 2)
    watch.stop()
    ticks = watch.ticks
    await asyncio.sleep(0.05)
    assert watch.ticks == ticks >= 2
    assert not watch.running
    assert watch._on_gc not in gc.callbacks
    assert watch._watchdog is None  # the watchdog thread ended
    paused = watch.gc_pause_s
    gc.collect()
    assert watch.gc_pause_s == paused


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopWatch(interval_s=0)
    with pytest.raises(ValueError, match="positive"):
        LoopWatch(stall_s=-1)


async def test_the_gateway_exports_its_loop_and_collector_figures(tmp_path: Path) -> None:
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path / "data"),
        migration=MigrationSettings(admin_token="t"),
    )
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server()
    try:
        watch = app[LOOP_WATCH]
        assert watch.running
        await until(lambda: watch.ticks >= 1)
        gc.collect()
        url = f"http://{server.host}:{server.port}/admin/metrics"
        headers = {"Authorization": "Bearer t"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        await server.close()
    assert not watch.running  # stopped with the app

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, name
        return float(found.group(1))

    assert value("agent_coord_loop_ticks_total") >= 1
    assert value("agent_coord_loop_stalls_total") >= 0
    assert value("agent_coord_loop_lag_max_seconds") >= value("agent_coord_loop_lag_seconds") >= 0
    assert value("agent_coord_gc_pause_seconds_total") > 0
    assert value("agent_coord_gc_pause_max_seconds") > 0
