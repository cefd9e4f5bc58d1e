"""The migration phase: one setting, persisted, changed at run time, every change audited.

The phase lives in `<data_dir>/control.sqlite` beside the actor databases. At start-up the
persisted phase wins over the config file's (an operator's run-time decision must survive a
restart); the config file's phase applies only to a data directory that has never had one.
Every change appends a row to the audit log: when, who, from, to, reason, and whether guards
were overridden with `--force`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.phase import PHASES, Phase

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS phase (id INTEGER PRIMARY KEY CHECK (id = 1), phase TEXT NOT NULL,
    since_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS phase_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL, from_phase TEXT, to_phase TEXT NOT NULL, reason TEXT NOT NULL,
    forced INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS reverse_sync (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL, entities INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """One row of the audit log."""

    seq: int
    at_ms: int
    actor: str
    from_phase: str | None
    to_phase: str
    reason: str
    forced: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": iso_from_ms(self.at_ms),
            "actor": self.actor,
            "from": self.from_phase,
            "to": self.to_phase,
            "reason": self.reason,
            "forced": self.forced,
        }


def read_phase(data_dir: Path) -> str | None:
    """The phase persisted in a data directory, read-only (None: none persisted yet). For tools
    that run beside the gateway, such as `agent-coord check --repair`."""
    path = Path(data_dir) / "control.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT phase FROM phase WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None  # no phase table yet
    finally:
        db.close()
    return None if row is None else str(row[0])


def record_reverse_sync(data_dir: Path, *, started_ms: int, finished_ms: int, entities: int) -> None:
    """Record a complete copy of the actors into Redis (`agent-coord migrate ... --to legacy`,
    every domain, every agent). The guard on leaving cutover accepts the move when the newest
    such copy started after cutover began (`PhaseControl.reverse_synced`). Written through its
    own short connection, by a tool that holds the data directory itself (no gateway runs;
    beside a running gateway it goes through `POST /admin/reverse-sync`)."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "control.sqlite", isolation_level=None, timeout=10)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO reverse_sync (started_ms, finished_ms, entities) VALUES (?, ?, ?)",
            (started_ms, finished_ms, entities),
        )
    finally:
        db.close()
    log.info("phase.reverse_synced", started_ms=started_ms, finished_ms=finished_ms, entities=entities)


class PhaseControl:
    """Reads and changes the current phase; the single source of truth for the router."""

    def __init__(self, data_dir: Path, clock: Clock, initial_phase: str) -> None:
        if initial_phase not in PHASES:
            raise ValueError(f"unknown phase {initial_phase!r}")
        data_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._db = sqlite3.connect(data_dir / "control.sqlite", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # rare writes; an operator's decision must not be lost
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT phase, since_ms FROM phase WHERE id = 1").fetchone()
        if row is None:
            now = clock.now_ms()
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO phase (id, phase, since_ms) VALUES (1, ?, ?)", (initial_phase, now))
            self._db.execute(
                "INSERT INTO phase_audit (at_ms, actor, from_phase, to_phase, reason, forced) "
                "VALUES (?, 'config', NULL, ?, 'initial phase from the configuration', 0)",
                (now, initial_phase),
            )
            self._db.execute("COMMIT")
            self.phase: Phase = Phase(initial_phase)
            self.since_ms = now
        else:
            self.phase = Phase(row[0])
            self.since_ms = int(row[1])
            if self.phase != initial_phase:
                log.warning(
                    "phase.config_differs",
                    persisted=self.phase,
                    configured=initial_phase,
                    note="the persisted phase wins; change it with `agent-coord phase set`",
                )

    def set(self, to_phase: str, *, actor: str, reason: str, forced: bool = False) -> PhaseChange:
        """Persist a new phase and its audit row in one transaction."""
        if to_phase not in PHASES:
            raise ValueError(f"unknown phase {to_phase!r}")
        now = self._clock.now_ms()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("UPDATE phase SET phase = ?, since_ms = ? WHERE id = 1", (to_phase, now))
            cur = self._db.execute(
                "INSERT INTO phase_audit (at_ms, actor, from_phase, to_phase, reason, forced) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now, actor, self.phase, to_phase, reason, int(forced)),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        change = PhaseChange(int(cur.lastrowid or 0), now, actor, self.phase, to_phase, reason, forced)
        log.info("phase.changed", **change.to_json())
        self.phase, self.since_ms = Phase(to_phase), now
        return change

    def record_reverse_sync(self, *, started_ms: int, finished_ms: int, entities: int) -> None:
        """`record_reverse_sync` through the running gateway's own connection (the admin API's
        `POST /admin/reverse-sync`: the tool opens no file under a running gateway)."""
        self._db.execute(
            "INSERT INTO reverse_sync (started_ms, finished_ms, entities) VALUES (?, ?, ?)",
            (started_ms, finished_ms, entities),
        )
        log.info("phase.reverse_synced", started_ms=started_ms, finished_ms=finished_ms, entities=entities)

    def reverse_synced(self) -> bool:
        """In cutover: Redis was refilled from the actors by a copy that started after cutover
        began (`record_reverse_sync`); writes since then are the operator's to stop first."""
        row = self._db.execute("SELECT MAX(started_ms) FROM reverse_sync").fetchone()
        return self.phase == "cutover" and row is not None and row[0] is not None and row[0] >= self.since_ms

    def history(self, limit: int = 100) -> list[PhaseChange]:
        """The newest `limit` changes, oldest first."""
        rows = self._db.execute(
            "SELECT seq, at_ms, actor, from_phase, to_phase, reason, forced FROM phase_audit "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [PhaseChange(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in reversed(rows)]

    def close(self) -> None:
        self._db.close()
