"""Fixtures of the actor host tests: a fake clock, a fresh counting kind, a started host, and
subprocess hosts (`host_proc.py`) that are killed at the end of the test whatever happened."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost
from gateway.clock import FakeClock
from gateway.testing.actors import CountingActor, counting_kind, host_for

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("host_proc.py")


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
def kind() -> type[CountingActor]:
    """A counting actor kind with counters of its own."""
    return counting_kind()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The host's data directory (created by the host)."""
    return tmp_path / "data"


@pytest.fixture
async def host(data_dir: Path, clock: FakeClock, kind: type[CountingActor]) -> AsyncIterator[ActorHost]:
    """A started host with the kind `c` on the fake clock."""
    async with host_for(data_dir, {"c": kind}, clock=clock) as started:
        yield started


class HostProc:
    """One `host_proc.py` process; its stdout is read line by line with a deadline."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self._buf = b""

    def next_event(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next JSON line the process prints; fails the test if none comes in time."""
        stdout = self.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no output within {timeout_s} s; stderr: {self.stderr_tail()}")
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    code = self.popen.wait(5)
                    raise AssertionError(f"process exited ({code}) early; stderr: {self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        return event

    def wait(self, timeout_s: float = 10.0) -> int:
        """Wait for the exit code (the process is killed by the fixture if this times out)."""
        return self.popen.wait(timeout_s)

    def rest(self) -> list[dict[str, Any]]:
        """Every remaining event, after the process exited."""
        assert self.popen.stdout is not None
        data = self._buf + self.popen.stdout.read()
        self._buf = b""
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def stderr_tail(self) -> str:
        if self.popen.poll() is None or self.popen.stderr is None:
            return "(still running)"
        return self.popen.stderr.read().decode(errors="replace")[-2000:]


class HostProcs:
    """Starts subprocess hosts and kills and reaps every one still running at teardown."""

    def __init__(self) -> None:
        self._procs: list[HostProc] = []

    def start(self, command: str, data_dir: Path, *args: str, crash_at: str | None = None) -> HostProc:
        env = {k: v for k, v in os.environ.items() if k != "AGENT_COORD_CRASH_AT"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if crash_at is not None:
            env["AGENT_COORD_CRASH_AT"] = crash_at
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and runner, no shell
            [sys.executable, str(RUNNER), command, str(data_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        proc = HostProc(popen)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            popen = proc.popen
            if popen.poll() is None:
                popen.kill()
            popen.wait(10)
            for stream in (popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[HostProcs]:
    """Subprocess hosts; whatever is still running when the test ends is killed."""
    started = HostProcs()
    try:
        yield started
    finally:
        started.close()
