"""What the check's processes import before they start work (issue 12: each module of dataclasses
imported is start-up the check pays for in both of its processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOT_IN_THE_LEGACY_SCAN = (
    "aiohttp",
    "gateway.actors.host",
    "gateway.do.coordinator",
    "gateway.domain.commands",
    "gateway.domain.rules",
)


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run(  # noqa: S603 - this interpreter, our own code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(ran.stdout))


@pytest.mark.slow
def test_the_legacy_scans_process_imports_the_legacy_side_and_no_actor_or_command() -> None:
    held = modules_after("from consistency.legacy_proc import child_main")
    assert {"gateway.bulk.legacy_side", "gateway.legacy.mapping"} <= held
    assert held.isdisjoint(NOT_IN_THE_LEGACY_SCAN), sorted(held & set(NOT_IN_THE_LEGACY_SCAN))


def test_the_rules_give_the_mappings_claim_staleness() -> None:
    from gateway.domain import claim_age, rules  # noqa: PLC0415

    assert rules.claim_is_stale is claim_age.claim_is_stale
    assert rules.CLAIM_STALE_MS == 30 * 60 * 1000
    now = 1_700_000_000_000
    assert not rules.claim_is_stale("2023-11-14T22:13:20.000Z", now)  # made at `now`
    assert rules.claim_is_stale("2023-11-14T21:43:19.999Z", now)  # 30 minutes and 1 ms before
    assert rules.claim_is_stale("", now)
    assert rules.claim_is_stale("not a date", now)
