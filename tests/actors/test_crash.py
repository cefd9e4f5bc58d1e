"""Durability across a real process crash (`AGENT_COORD_CRASH_AT`): S4 a turn that dies before its
commit leaves nothing; S9(g) an alarm whose handler ran but whose commit never happened runs
again after a restart (at least once)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.actors import ActorRef, actor_path
from gateway.actors.crash import CRASH_EXIT_CODE
from gateway.testing.actors import query_actor_db

if TYPE_CHECKING:
    from tests.actors.conftest import HostProcs


def rows(data_dir: Path, name: str) -> list[int]:
    found = query_actor_db(data_dir, ActorRef("rec", name), "SELECT n FROM rows ORDER BY n")
    return [int(r[0]) for r in found]


def stored_alarm(data_dir: Path, name: str) -> int | None:
    found = query_actor_db(
        data_dir, ActorRef("rec", name), "SELECT value FROM _actor_meta WHERE key = 'alarm'"
    )
    return None if not found else int(found[0][0])


def indexed_alarms(data_dir: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{data_dir / 'host.sqlite'}?mode=ro", uri=True)
    try:
        return [(str(k), str(n)) for k, n in conn.execute("SELECT kind, name FROM alarms")]
    finally:
        conn.close()


def test_crash_before_commit_leaves_none_of_the_turns_rows(tmp_path: Path, procs: HostProcs) -> None:
    """A process killed between a turn's writes and its commit leaves none of those rows after restart."""
    data = tmp_path / "data"
    crashed = procs.start("write-turn", data, crash_at="turn.before_commit")
    assert crashed.wait() == CRASH_EXIT_CODE
    assert crashed.rest() == [], "the turn reported success before its commit"
    assert actor_path(data, ActorRef("rec", "crash")).exists()

    again = procs.start("write-turn", data)  # a restarted host on the same directory
    assert again.next_event() == {"event": "committed"}
    assert again.wait() == 0
    assert rows(data, "crash") == [1, 2, 3], "rows of the crashed turn survived, or the new turn's were lost"


def test_alarm_handler_runs_again_after_a_crash_before_its_commit(tmp_path: Path, procs: HostProcs) -> None:
    """An alarm whose handler ran but never committed is still set after the crash and runs again."""
    data = tmp_path / "data"
    marker = data.with_name(data.name + ".alarm-runs")
    crashed = procs.start("set-alarm", data, crash_at="alarm.before_commit")
    assert crashed.next_event() == {"event": "alarm_set"}
    assert crashed.wait() == CRASH_EXIT_CODE
    assert marker.read_text().split() == ["0"], "the handler did not run before the crash"
    assert rows(data, "alarm") == []
    assert stored_alarm(data, "alarm") is not None
    assert indexed_alarms(data) == [("rec", "alarm")]

    restarted = procs.start("run-alarms", data)
    assert restarted.next_event() == {"event": "started", "pending": 1}
    assert restarted.next_event() == {"event": "done"}
    assert restarted.wait() == 0
    assert marker.read_text().split() == ["0", "0"], "the alarm did not run again after the restart"
    assert rows(data, "alarm") == [100]
    assert stored_alarm(data, "alarm") is None
    assert indexed_alarms(data) == []
