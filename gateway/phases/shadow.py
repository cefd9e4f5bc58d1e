"""Shadow reads: read the non-authoritative store too, compare, count, never serve.

After the GitHub Scientist pattern: on a sampled fraction of reads the same read runs against
the other store in the background (it adds no latency to the request), both answers are
brought to the wire form and compared as data, and a mismatch is counted per domain with a
bounded number of samples kept (both values) for operators to read in the admin status. The
shadow side's errors are counted too; they never reach the client.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.domain.jscompat import iso_from_ms

log = structlog.get_logger(__name__)

MAX_SAMPLES = 50
MAX_IN_FLIGHT = 32  # beyond this, shadow reads are skipped rather than queued


@dataclass(slots=True)
class DomainStats:
    compared: int = 0
    mismatched: int = 0
    errors: int = 0
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        rate = self.mismatched / self.compared if self.compared else 0.0
        return {
            "compared": self.compared,
            "mismatched": self.mismatched,
            "mismatchRate": round(rate, 6),
            "errors": self.errors,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class ShadowStats:
    domains: dict[str, DomainStats] = field(default_factory=dict)
    samples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def domain(self, name: str) -> DomainStats:
        stats = self.domains.get(name)
        if stats is None:
            stats = self.domains[name] = DomainStats()
        return stats


def first_difference(a: Any, b: Any, path: str = "$") -> str | None:
    """The path of the first difference between two JSON values (key order ignored), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        pairs: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}"
            pairs.append((f"{path}.{k}", a[k], b[k]))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}.length"
        pairs = [(f"{path}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))]
    else:
        return None if type(a) is type(b) and a == b else path
    for sub, x, y in pairs:
        found = first_difference(x, y, sub)
        if found:
            return found
    return None


class ShadowReader:
    """Decides which reads to shadow and compares them in background tasks."""

    def __init__(self, clock: Clock, sample_rate: float, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.sample_rate = sample_rate
        self.stats = ShadowStats()
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not security
        self._tasks: set[asyncio.Task[None]] = set()

    def sampled(self) -> bool:
        return self.sample_rate > 0 and (self.sample_rate >= 1 or self._rng.random() < self.sample_rate)

    def submit(
        self,
        domain: str,
        what: str,
        served: Any,
        shadow_read: Callable[[], Awaitable[Any]],
        normalize: Callable[[Any], Any] | None = None,
    ) -> None:
        """Compare `served` with what `shadow_read()` gives, in the background."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.stats.domain(domain).skipped += 1
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(domain, what, served, shadow_read, normalize)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self,
        domain: str,
        what: str,
        served: Any,
        shadow_read: Callable[[], Awaitable[Any]],
        normalize: Callable[[Any], Any] | None,
    ) -> None:
        stats = self.stats.domain(domain)
        try:
            shadow = await shadow_read()
        except Exception as e:  # noqa: BLE001 - the shadow side must never affect anything else
            stats.errors += 1
            log.info("shadow.error", domain=domain, what=what, error=str(e))
            return
        a, b = (normalize(served), normalize(shadow)) if normalize else (served, shadow)
        stats.compared += 1
        where = first_difference(a, b)
        if where is not None:
            stats.mismatched += 1
            self.stats.samples.append(
                {
                    "at": iso_from_ms(self.clock.now_ms()),
                    "domain": domain,
                    "what": what,
                    "path": where,
                    "served": a,
                    "shadow": b,
                }
            )
            log.warning("shadow.mismatch", domain=domain, what=what, path=where)

    async def drain(self) -> None:
        """Wait for the shadow reads in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "sampleRate": self.sample_rate,
            "domains": {k: v.to_json() for k, v in sorted(self.stats.domains.items())},
            "samples": list(self.stats.samples),
        }
