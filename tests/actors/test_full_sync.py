"""FULL's promise, seen at the system-call level: when a turn is acknowledged, everything the
shard layout wrote to its write-ahead logs has reached `fdatasync`.

A SIGKILL (test_sharded_crash.py) loses the process but keeps the page cache, so it cannot tell
NORMAL from FULL. Power loss drops whatever the disk was not asked to sync. SQLite in WAL mode
with `synchronous=FULL` syncs the WAL at every commit; these tests check that the host keeps
that promise end to end: it acknowledges a turn only after the commit that holds it returned,
and the commit ran on a connection in FULL. The host runs under `strace -f` (`host_proc.py
shard-rounds`, eight actors on two shard files, turns folded into group commits); the trace is
replayed in order: a `pwrite64` to a `-wal` file marks it unsynced, a completed `fdatasync` /
`fsync` of it marks it synced, and at every acknowledgement written to stdout no WAL may be
unsynced. Under NORMAL the same replay finds acknowledgements with unsynced WAL pages, which
shows that the check can fail (and is why NORMAL promises less).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("host_proc.py")
ROUNDS = 6
TIMEOUT_S = 60

# `PID syscall(FD<path>, ...` and `PID <... syscall resumed>...`
CALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>(.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")


@dataclass
class Replay:
    """What the trace says about each WAL file at each acknowledgement."""

    unsynced: set[str] = field(default_factory=set)
    acks: list[set[str]] = field(default_factory=list)  # the unsynced WALs at each ack
    synced_calls: int = 0
    written: set[str] = field(default_factory=set)  # every WAL written at all
    pending_sync: dict[str, str] = field(default_factory=dict)  # thread id -> WAL being synced

    def line(self, text: str) -> None:
        if m := RESUMED.match(text):
            pid, call, rest = m.groups()
            if call in ("fdatasync", "fsync") and pid in self.pending_sync:
                path = self.pending_sync.pop(pid)
                if rest.rstrip().endswith("= 0"):
                    self.synced(path)
            return
        m = CALL.match(text)
        if m is None:
            return
        pid, call, fd, path, rest = m.groups()
        if call == "write":
            if fd == "1" and "acked" in rest:
                self.acks.append(set(self.unsynced))
            return
        if not path.endswith("-wal"):
            return
        if call == "pwrite64":
            self.unsynced.add(path)  # counted from its start: conservative
            self.written.add(path)
        elif call in ("fdatasync", "fsync"):
            if "<unfinished ...>" in rest:
                self.pending_sync[pid] = path
            elif rest.rstrip().endswith("= 0"):
                self.synced(path)

    def synced(self, path: str) -> None:
        self.synced_calls += 1
        self.unsynced.discard(path)


def traced_rounds(tmp_path: Path, sync: str) -> Replay:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    trace = tmp_path / f"trace-{sync}.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("AGENT_COORD_CRASH_AT", None)
    cmd = [strace, "-f", "-qq", "-y", "-s", "80", "-o", str(trace)]
    cmd += ["-e", "trace=pwrite64,write,fdatasync,fsync"]
    cmd += [sys.executable, str(RUNNER), "shard-rounds", str(tmp_path / "data"), sync, str(ROUNDS)]
    done = subprocess.run(  # noqa: S603 - strace and our own interpreter, no shell
        cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=REPO, check=False
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    acked = [line for line in done.stdout.splitlines() if '"acked"' in line]
    assert len(acked) == ROUNDS, done.stdout
    replay = Replay()
    for text in trace.read_text().splitlines():
        replay.line(text)
    assert len(replay.acks) == ROUNDS, "every acknowledgement must appear in the trace"
    return replay


def test_full_syncs_every_wal_write_before_the_turn_is_acknowledged(tmp_path: Path) -> None:
    replay = traced_rounds(tmp_path, "FULL")
    shard_wals = {Path(p).name for p in replay.written if "/shards/" in p}
    assert shard_wals == {"shard-000.sqlite-wal", "shard-001.sqlite-wal"}  # the turns were traced
    assert replay.synced_calls >= ROUNDS  # at least one sync per round of commits
    unsafe = [(i + 1, sorted(wals)) for i, wals in enumerate(replay.acks) if wals]
    assert unsafe == [], f"acknowledged with WAL pages not yet synced: {unsafe}"


def test_normal_acknowledges_before_the_wal_is_synced(tmp_path: Path) -> None:
    """The contrast: NORMAL leaves the sync to checkpoints, so the replay above would fail."""
    replay = traced_rounds(tmp_path, "NORMAL")
    assert any(replay.acks), "under NORMAL some acknowledgement precedes the WAL's sync"
