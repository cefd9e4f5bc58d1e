"""Durability of the shard layout across a real SIGKILL: at each commit point of a group commit
(`shard.before_commit`, `shard.after_commit`) and at an arbitrary moment, under NORMAL and FULL.

The host runs in a subprocess (`host_proc.py`, commands `shard-*`): eight actors on two shard
files, whose turns each write four cells, a log row and the alarm, yielding between statements so
that turns of several actors fold into one group. After the kill a restarted host reads every
actor back: each must be exactly at the state of a whole number of its turns (never some cells of
a turn without the others, or its rows without its alarm), and every acknowledged turn must be
there. A SIGKILL is a process crash, which both settings survive; FULL's extra promise (power
loss: every acknowledged turn's WAL pages synced) is checked at the system-call level in
test_full_sync.py.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.actors import ActorRef
from gateway.actors.layout import shard_of
from tests.actors.host_proc import ACCOUNTS, ALARM_BASE_MS, CELLS, SHARDS

if TYPE_CHECKING:
    from tests.actors.conftest import HostProcs


def state_of(version: int) -> dict[str, Any]:
    """What an actor holds after its turns 1..version, and nothing else."""
    return {
        "cells": dict.fromkeys(CELLS, version) if version else {},
        "log": list(range(1, version + 1)),
        "alarm": ALARM_BASE_MS + version if version else None,
    }


def versions(procs: HostProcs, data: Path, sync: str) -> dict[str, int]:
    """Each actor's committed version, read by a restarted host; fails on a half-applied turn."""
    dump = procs.start("shard-dump", data, sync)
    event = dump.next_event()
    assert dump.wait() == 0
    assert event["event"] == "states"
    found: dict[str, int] = {}
    for name, state in event["states"].items():
        version = len(state["log"])
        assert state == state_of(version), f"{name} holds part of a turn: {state}"
        found[name] = version
    return found


def test_the_actors_span_both_shards() -> None:
    """The premise of the tests below: several actors share each shard file."""
    shards = [shard_of(ActorRef("acct", n), SHARDS) for n in ACCOUNTS]
    assert min(shards.count(i) for i in range(SHARDS)) >= 2


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_sigkill_before_the_group_commit_leaves_every_actor_before_its_turn(
    tmp_path: Path, procs: HostProcs, sync: str
) -> None:
    """Killed after the turns folded into their group but before its COMMIT: every actor is at its
    acknowledged turn 1, with nothing of turn 2."""
    data = tmp_path / "data"
    crashed = procs.start("shard-crash", data, sync, "shard.before_commit")
    assert crashed.next_event() == {"event": "acked", "version": 1}
    assert crashed.wait() == -signal.SIGKILL
    assert crashed.rest() == []
    assert versions(procs, data, sync) == dict.fromkeys(ACCOUNTS, 1)


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_sigkill_after_a_group_commit_keeps_the_whole_group(
    tmp_path: Path, procs: HostProcs, sync: str
) -> None:
    """Killed right after the first COMMIT of turn 2 returned, before any reply: the actors of
    that group hold all of turn 2, the others all of turn 1 and nothing more. (Under FULL the
    other shard's COMMIT may have finished in its worker thread too.)"""
    data = tmp_path / "data"
    crashed = procs.start("shard-crash", data, sync, "shard.after_commit")
    assert crashed.next_event() == {"event": "acked", "version": 1}
    assert crashed.wait() == -signal.SIGKILL
    assert crashed.rest() == []
    found = versions(procs, data, sync)
    assert set(found.values()) <= {1, 2}
    assert 2 in found.values(), "the commit that ran before the kill was lost"


def exited(pid: int) -> bool:
    """The process is gone, or a zombie nobody reaped (its parent was killed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_sigkill_while_the_checkpoint_helper_works_keeps_every_acknowledged_turn(
    tmp_path: Path, procs: HostProcs, sync: str
) -> None:
    """The host killed while its checkpoint helper process runs rounds all the time (held
    rounds that start the WAL over included): every acknowledged turn is there after a restart,
    and the helper, its stdin closed by the kill, ends by itself."""
    data = tmp_path / "data"
    running = procs.start("shard-rounds-checkpointing", data, sync)
    acked, rounds, pid = 0, 0, None
    while acked < 5 or rounds < 20:
        event = running.next_event()
        assert event["event"] == "acked", event
        acked, rounds, pid = int(event["version"]), int(event["helper_rounds"]), event["helper_pid"]
        assert acked < 2000, "the helper ran too few rounds"
    assert pid is not None
    running.popen.send_signal(signal.SIGKILL)
    assert running.wait() == -signal.SIGKILL
    acked = max([acked, *(int(e["version"]) for e in running.rest())])
    deadline = time.monotonic() + 10
    while not exited(pid):
        assert time.monotonic() < deadline, "the helper outlived the host"
        time.sleep(0.02)
    found = versions(procs, data, sync)
    assert all(v >= acked for v in found.values()), f"acknowledged round {acked} lost: {found}"
    assert all(v <= acked + 1 for v in found.values())


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_sigkill_at_any_moment_keeps_every_acknowledged_turn_whole(
    tmp_path: Path, procs: HostProcs, sync: str
) -> None:
    """Killed from outside while rounds of turns run: every actor holds a whole number of turns,
    at least up to the last round that was acknowledged before the kill."""
    data = tmp_path / "data"
    running = procs.start("shard-rounds", data, sync)
    acked = 0
    while acked < 5:
        event = running.next_event()
        assert event["event"] == "acked"
        acked = int(event["version"])
    running.popen.send_signal(signal.SIGKILL)
    assert running.wait() == -signal.SIGKILL
    acked = max([acked, *(int(e["version"]) for e in running.rest())])
    found = versions(procs, data, sync)
    assert all(v >= acked for v in found.values()), f"acknowledged round {acked} lost: {found}"
    assert all(v <= acked + 1 for v in found.values())
