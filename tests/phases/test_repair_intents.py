"""The repair queue's intents and scheduling, and the rollout set of `parallel`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.backup.restore import restore
from gateway.backup.snapshot import take_snapshot
from gateway.clock import FakeClock
from gateway.domain.entities import EntityKey
from gateway.phases import repair
from gateway.phases.repair import INTENTS_FILE, RepairQueue
from gateway.phases.router import in_rollout
from gateway.settings import MigrationSettings

K1 = EntityKey("task", "", "task-1")
K2 = EntityKey("dm", "bob", "msg-1")


def test_finished_intents_leave_nothing_behind(tmp_path: Path) -> None:
    """begin/end around a replication that finished: no intent, no repair entry, after reopening."""
    q = RepairQueue(tmp_path, FakeClock())
    handles = q.begin([K1, K2], "legacy")
    assert q.intents() == 2
    q.end(handles)
    q.close()
    again = RepairQueue(tmp_path, FakeClock())
    assert (again.intents(), again.stats().depth, again.recovered) == (0, 0, 0)
    again.close()


def test_intents_of_a_dead_gateway_become_repairs(tmp_path: Path) -> None:
    """Intents still there when the queue is opened (the gateway died in between) are repaired."""
    clock = FakeClock(5_000)
    q = RepairQueue(tmp_path, clock)
    q.begin([K1], "legacy")
    q.begin([K2], "actors")
    q.close()  # as a SIGKILL would leave it: nothing ended
    again = RepairQueue(tmp_path, clock)
    assert again.recovered == 2
    assert again.intents() == 0
    assert [(e.key, e.target, e.last_error) for e in again.due()] == [
        (K1, "legacy", "gateway stopped during replication"),
        (K2, "actors", "gateway stopped during replication"),
    ]
    again.close()


def test_a_torn_last_line_is_not_an_intent(tmp_path: Path) -> None:
    """A journal line cut short (its write never returned, so its command never ran) is skipped;
    the intents before it are recovered."""
    q = RepairQueue(tmp_path, FakeClock())
    q.begin([K1], "legacy")
    q.close()
    with (tmp_path / INTENTS_FILE).open("ab") as f:
        f.write(b'["b",2,"task","","ta')
    again = RepairQueue(tmp_path, FakeClock())
    assert again.recovered == 1
    assert [e.key for e in again.all()] == [K1]
    again.close()


def test_the_journal_is_emptied_once_nothing_is_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal does not grow without bound: past its limit it is emptied when the last open
    intent ends, never while one is open."""
    monkeypatch.setattr(repair, "JOURNAL_TRUNCATE_BYTES", 200)
    q = RepairQueue(tmp_path, FakeClock())
    journal = tmp_path / INTENTS_FILE
    held = q.begin([K1], "legacy")
    for _ in range(10):
        q.end(q.begin([K2], "actors"))
    assert journal.stat().st_size > 200  # K1 is still open
    q.end(held)
    assert journal.stat().st_size == 0
    q.begin([K2], "legacy")
    q.close()
    again = RepairQueue(tmp_path, FakeClock())
    assert [(e.key, e.target) for e in again.all()] == [(K2, "legacy")]
    again.close()


def test_intents_an_older_queue_kept_in_its_table_are_recovered(tmp_path: Path) -> None:
    """A repair.sqlite of an older version, with an intent left in its `intent` table."""
    RepairQueue(tmp_path, FakeClock()).close()
    db = sqlite3.connect(tmp_path / "repair.sqlite")
    db.execute(
        "INSERT INTO intent (domain, scope, id, target, started_ms) VALUES (?, ?, ?, ?, ?)",
        ("task", "", "task-1", "legacy", 1),
    )
    db.commit()
    db.close()
    again = RepairQueue(tmp_path, FakeClock())
    assert again.recovered == 1
    assert [(e.key, e.target) for e in again.all()] == [(K1, "legacy")]
    again.close()


def test_intents_in_flight_travel_in_a_backup(tmp_path: Path) -> None:
    """A backup copies the intent journal (docs/operations.md, "Backups"): a restored copy
    repairs what was in flight when it was taken, as the crashed gateway's next start would."""
    source, copy, target = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    q = RepairQueue(source, FakeClock())
    q.end(q.begin([K2], "actors"))
    q.begin([K1], "legacy")  # in flight
    copy.mkdir()
    manifest = take_snapshot(source, copy, phase="write-through", source="data-dir", now_iso="")
    q.close()
    assert INTENTS_FILE in {f.path for f in manifest.files}
    restore(copy, target, force=False)
    again = RepairQueue(target, FakeClock())
    assert (again.recovered, [(e.key, e.target) for e in again.all()]) == (1, [(K1, "legacy")])
    again.close()


async def test_abandoned_intents_are_queued_at_once(tmp_path: Path) -> None:
    """A replication interrupted in a live gateway (cancelled) turns its intents into repairs."""
    q = RepairQueue(tmp_path, FakeClock())
    await q.abandon(q.begin([K1], "legacy"), "replication interrupted")
    assert q.intents() == 0
    assert [(e.key, e.last_error) for e in q.all()] == [(K1, "replication interrupted")]
    q.close()


async def test_entries_for_a_down_target_wait_for_the_next_attempt(tmp_path: Path) -> None:
    """`not_before_ms` postpones a new entry; `next_due_ms` answers per target."""
    clock = FakeClock(1_000)
    q = RepairQueue(tmp_path, clock)
    await q.enqueue(K1, "legacy", "down", not_before_ms=9_000)
    await q.enqueue(K2, "actors", "down")
    assert [e.key for e in q.due()] == [K2]
    assert (q.next_due_ms("legacy"), q.next_due_ms("actors"), q.next_due_ms()) == (9_000, 1_000, 1_000)
    await q.enqueue(K1, "legacy", "down", not_before_ms=500)  # never earlier than now
    assert q.next_due_ms("legacy") == 1_000
    q.close()


def test_rollout_allow_list_wins_over_the_percentage() -> None:
    """An allow-list names the agents exactly; without one every agent is in at 100 %."""
    listed = MigrationSettings(rollout_agents=("alice",), rollout_percent=100.0)
    assert in_rollout("alice", listed)
    assert not in_rollout("bob", listed)
    assert in_rollout("anyone", MigrationSettings())


def test_rollout_percentage_is_sticky_and_grows_monotonically() -> None:
    """The sticky percentage picks about that share of agents, the same ones every time, and an
    agent in the rollout at 10 % stays in it at 50 %."""
    agents = [f"agent-{i}" for i in range(2000)]

    def chosen(percent: float) -> set[str]:
        settings = MigrationSettings(rollout_percent=percent)
        return {a for a in agents if in_rollout(a, settings)}

    ten, fifty = chosen(10.0), chosen(50.0)
    assert 150 < len(ten) < 250
    assert 900 < len(fifty) < 1100
    assert ten <= fifty
    assert chosen(10.0) == ten
    assert chosen(0.0) == set()
