"""`GET /ready`: is this gateway ready to serve in its current phase? (`/health` stays the
liveness answer: the process runs.)

Ready means all of:

- the actor host has started and is not shutting down;
- the legacy Redis answers PING, in the phases where it serves (`parallel`, `write-through`);
  in `read-switch` it is reported but not required: writes to it queue for repair meanwhile;
- the repair queue holds at most `migration.ready_repair_queue_max` entities.

200 `{"ready": true, ...}` or 503 `{"ready": false, ...}` with one entry per check. A failed check
says what failed, never an address or an error's text (the log has those).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from gateway.domain.phase import PHASES
from gateway.errors import GatewayError
from gateway.phases.runtime import MigrationRuntime

__all__ = ["LEGACY_SERVES", "Readiness"]

log = structlog.get_logger(__name__)

LEGACY_SERVES: Final = frozenset(p for p in PHASES if p.serves == "legacy")
PING_TIMEOUT_S: Final = 2.0


class Host(Protocol):
    """What /ready asks of the actor host."""

    @property
    def accepting(self) -> bool: ...


class Pingable(Protocol):
    """What /ready asks of the legacy store."""

    async def ping(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /ready looks at."""

    host: Host
    runtime: MigrationRuntime
    legacy: Pingable | None
    repair_queue_max: int

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body)."""
        phase = self.runtime.phase
        host_ok = self.host.accepting
        depth = self.runtime.queue.stats().depth
        queue_ok = depth <= self.repair_queue_max
        checks: dict[str, Any] = {
            "actorHost": {"ok": host_ok},
            "repairQueue": {"ok": queue_ok, "depth": depth, "max": self.repair_queue_max},
        }
        ready = host_ok and queue_ok
        if self.legacy is not None:
            required = phase in LEGACY_SERVES
            reachable = await self._ping(self.legacy)
            checks["legacyRedis"] = {"ok": reachable, "required": required}
            ready = ready and (reachable or not required)
        return ready, {"ready": ready, "phase": phase, "checks": checks}

    async def _ping(self, legacy: Pingable) -> bool:
        try:
            return await asyncio.wait_for(legacy.ping(), PING_TIMEOUT_S)
        except (GatewayError, TimeoutError) as e:
            log.warning("ready.legacy_unreachable", error=str(e))
            return False
