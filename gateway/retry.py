"""Backoff as a value: how long to wait before the next attempt, for every retry in the gateway.

One `Backoff` describes a schedule (exponential from `base_s`, capped at `cap_s`, scaled by a
jitter drawn uniformly from `jitter`), and the three places that retry use it:

* the legacy client (`gateway.legacy.client`), through tenacity's `wait` hook;
* the repair worker (`gateway.phases.repair`), whose next attempt time is persisted per entry;
* the actor host's alarm retries (`gateway.actors.host`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 30  # 2**30 times the base is beyond every cap we use; keeps the float finite


@dataclass(frozen=True, slots=True)
class Backoff:
    """Attempt `n` (0 for the first retry) waits `min(cap_s, base_s * 2**n) * uniform(*jitter)`."""

    base_s: float
    cap_s: float = math.inf
    jitter: tuple[float, float] = (1.0, 1.0)

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number `attempt + 1`, in seconds."""
        growth: float = 2.0 ** min(attempt, _MAX_DOUBLINGS)
        return min(self.cap_s, self.base_s * growth) * rng.uniform(*self.jitter)

    def tenacity_wait(self, rng: random.Random) -> Callable[[RetryCallState], float]:
        """This schedule as tenacity's `wait` (its attempt numbers count from 1)."""
        return lambda state: self.delay_s(state.attempt_number - 1, rng)
