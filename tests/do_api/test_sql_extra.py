"""gateway.do._sql's `_extra` side table: the fields an actor table does not model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost
from gateway.clock import FakeClock
from gateway.do import agent_ref
from gateway.do._sql import get_extra, put_extra
from gateway.do.actor_store import build_actor_host
from gateway.settings import LimitSettings


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[ActorHost]:
    h = build_actor_host(tmp_path, LimitSettings(), clock=FakeClock(0))
    await h.start()
    yield h
    await h.close()


async def test_a_failed_turn_that_created_the_table_does_not_break_the_next(host: ActorHost) -> None:
    """The table's creation rolls back with a failed turn; the next turn creates it again."""

    async def put_then_fail(actor: Any) -> None:
        put_extra(actor, "dm", "m1", {"readAt": "x"})
        raise RuntimeError("the turn fails after its first use of _extra")

    with pytest.raises(RuntimeError):
        await host.call(agent_ref("a"), put_then_fail)

    async def put_then_get(actor: Any) -> dict[str, Any]:
        put_extra(actor, "dm", "m2", {"readAt": "y"})
        return {"m1": get_extra(actor, "dm", "m1"), "m2": get_extra(actor, "dm", "m2")}

    assert await host.call(agent_ref("a"), put_then_get) == {"m1": {}, "m2": {"readAt": "y"}}
