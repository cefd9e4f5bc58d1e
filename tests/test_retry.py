"""gateway.retry.Backoff: the one retry schedule of the client, the repair worker and alarms."""

from __future__ import annotations

import random

import pytest
from tenacity import RetryCallState

from gateway.legacy.client import BACKOFF as CLIENT
from gateway.phases.repair import BACKOFF as REPAIR
from gateway.retry import Backoff


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    """Without jitter, attempt n waits base * 2**n, never more than the cap."""
    b = Backoff(base_s=0.5, cap_s=3.0)
    assert [b.delay_s(n, random.Random(0)) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Backoff(2.0).delay_s(10_000, random.Random(0)) == 2.0 * 2.0**30  # bounded, no overflow


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_its_bounds(seed: int) -> None:
    """The repair worker waits 50-100 % of its step, the client 0-100 % (as before the change)."""
    rng = random.Random(seed)
    assert 0.25 <= REPAIR.delay_s(0, rng) <= 0.5
    assert 30.0 <= REPAIR.delay_s(12, rng) <= 60.0
    assert 0.0 <= CLIENT.delay_s(0, rng) <= 0.05
    assert 0.0 <= CLIENT.delay_s(9, rng) <= 0.5


def test_tenacity_attempt_numbers_count_from_one() -> None:
    """tenacity's first failed attempt is number 1: it waits the first step."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = 3
    assert Backoff(0.1, jitter=(1.0, 1.0)).tenacity_wait(random.Random(0))(state) == pytest.approx(0.4)
