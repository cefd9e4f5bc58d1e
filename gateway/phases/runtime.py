"""The migration runtime: phase control, repair worker and shadow reads of one gateway.

`MigrationRuntime` is what the admin API talks to (`PhaseService`): it reports the status
operators watch (phase, since when, which store serves reads and takes writes, repair queue
depth and age, shadow mismatch rates per domain, the last consistency report) and carries out
phase changes: guards first, then the switch through the phase gate, so that no request
straddles two phases, then the audit row.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.phase import Phase
from gateway.errors import StartupRefused
from gateway.phases.control import PhaseChange, PhaseControl
from gateway.phases.gate import PhaseGate, SwitchTimeoutError
from gateway.phases.guards import ConsistencyReportInfo, GuardContext, PhaseChangeRefusedError, refusals
from gateway.phases.repair import Copier, DeadLetter, RepairQueue, RepairWorker
from gateway.phases.reports import newest_report
from gateway.phases.shadow import ShadowReader
from gateway.settings import MigrationSettings

log = structlog.get_logger(__name__)

DEAD_LETTERS_SHOWN = 20
"""The dead letters listed in the status (the admin API lists them all)."""


class MigrationRuntime:
    """Phase control for a gateway; `legacy_configured` is False when no Redis is configured."""

    def __init__(
        self,
        data_dir: Path,
        clock: Clock,
        settings: MigrationSettings,
        *,
        legacy_configured: bool,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.legacy_configured = legacy_configured
        self.control = PhaseControl(data_dir, clock, settings.phase)
        self.gate = PhaseGate()
        self.queue = RepairQueue(data_dir, clock)
        self.shadow = ShadowReader(clock, settings.shadow_sample_rate)
        self.worker: RepairWorker | None = None
        self.replication: dict[str, int] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.data_dir = Path(data_dir)
        self.reverse_synced = False
        if not legacy_configured and self.control.phase != "cutover":
            phase = self.control.phase
            self.queue.close()
            self.control.close()
            raise StartupRefused(
                f"the data directory {data_dir} is in phase {phase!r}, which needs the legacy Redis: "
                "configure legacy.redis_url (or --redis-url)"
            )

    @property
    def last_report(self) -> ConsistencyReportInfo | None:
        """The newest consistency report of the data directory (`agent-coord check` writes them)."""
        return newest_report(self.data_dir)

    @property
    def phase(self) -> Phase:
        return self.control.phase

    def start_repair(self, copy: Copier, replication: dict[str, int] | None = None) -> None:
        """Start draining the repair queue with `copy` (the router's serialised copy);
        `replication` are the router's counters, reported in the status."""
        self.replication = replication
        self.worker = RepairWorker(
            self.queue, copy, self.clock, max_strikes=self.settings.repair_max_attempts
        )
        self._worker_task = asyncio.get_running_loop().create_task(self.worker.run())

    async def stop_background(self) -> None:
        """Stop the repair worker and wait for the shadow reads in flight (both use the stores)."""
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
            self._worker_task = None
        await self.shadow.drain()

    async def close(self) -> None:
        """Stop the background work, then close the phase control and the repair queue."""
        await self.stop_background()
        self.queue.close()
        self.control.close()

    # -- PhaseService ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        stats = self.queue.stats()
        now = self.clock.now_ms()
        report = self.last_report
        return {
            "phase": self.phase,
            "since": iso_from_ms(self.control.since_ms),
            "reads": self.phase.serves,
            "writes": self.phase.writes,
            "legacyConfigured": self.legacy_configured,
            "repairQueue": {
                "depth": stats.depth,
                "oldestAgeMs": None if stats.oldest_ms is None else now - stats.oldest_ms,
                "maxAttempts": stats.max_attempts,
                "repaired": 0 if self.worker is None else self.worker.repaired,
                "failures": 0 if self.worker is None else self.worker.failures,
                "recoveredAtStart": self.queue.recovered,
                "deadLetters": stats.dead_letters,
            },
            "deadLetters": [d.to_json() for d in self.queue.dead_letters(DEAD_LETTERS_SHOWN)],
            "replication": dict(self.replication or {}),
            "shadow": self.shadow.to_json(),
            "consistency": {
                "lastReport": None
                if report is None
                else {
                    "finishedAt": iso_from_ms(report.finished_ms),
                    "clean": report.clean,
                    "complete": report.complete,
                    "full": report.full,
                    "compared": report.compared,
                    "differences": report.differences,
                    "ageS": (now - report.finished_ms) // 1000,
                    "path": report.path,
                },
                "summary": "no report yet (run `agent-coord check`)" if report is None else report.summary,
            },
        }

    def history(self, limit: int) -> list[PhaseChange]:
        return self.control.history(limit)

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        return self.queue.dead_letters(limit)

    def record_reverse_sync(self, *, started_ms: int, finished_ms: int, entities: int) -> None:
        """A complete copy of the actors into Redis finished (`agent-coord migrate`)."""
        self.control.record_reverse_sync(started_ms=started_ms, finished_ms=finished_ms, entities=entities)

    async def resolve_dead_letters(self, action: str, seqs: list[int] | None, *, actor: str) -> int:
        """`retry` (back into the queue) or `drop` the dead letters `seqs` (all when None)."""
        if action == "retry":
            count = await self.queue.retry_dead(seqs)
        else:
            count = await self.queue.drop_dead(seqs)
        log.warning("repair.dead_letters_resolved", action=action, seqs=seqs, count=count, actor=actor)
        return count

    async def change_phase(self, to_phase: str, *, actor: str, reason: str, force: bool) -> PhaseChange:
        from_phase = self.phase
        if not self.legacy_configured and to_phase != "cutover":
            raise PhaseChangeRefusedError(
                [f"phase {to_phase!r} needs the legacy Redis, and none is configured (legacy.redis_url)"]
            )
        self._check(from_phase, to_phase, force)  # before pausing traffic: most refusals are clear

        def switch() -> PhaseChange:
            # again with no operation in flight: one of them may have queued a repair meanwhile,
            # and another switch may have run while this one waited for the gate
            problems = self._check(self.phase, to_phase, force)
            change = self.control.set(to_phase, actor=actor, reason=reason, forced=bool(problems))
            if problems:
                log.warning("phase.forced", overridden=problems, to=to_phase)
            return change

        try:
            return await self.gate.switch(switch)
        except SwitchTimeoutError as e:
            raise PhaseChangeRefusedError([str(e)]) from e

    def _check(self, from_phase: str, to_phase: str, force: bool) -> list[str]:
        """The guards' refusals that `force` overrides; raises for the others (and unforced)."""
        problems = refusals(
            from_phase,
            to_phase,
            GuardContext(
                repair_depth=self.queue.stats().depth,
                last_report=self.last_report,
                now_ms=self.clock.now_ms(),
                report_max_age_s=self.settings.consistency_max_age_s,
                reverse_synced=self.reverse_synced or self.control.reverse_synced(),
                dead_letters=self.queue.stats().dead_letters,
            ),
        )
        if problems and (not force or to_phase == from_phase):
            raise PhaseChangeRefusedError(problems)
        return problems
