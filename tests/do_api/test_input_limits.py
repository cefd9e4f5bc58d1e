"""Input the gateway cannot store or answer is refused with a 400 naming the limit, before any write."""

from __future__ import annotations

import orjson

from .conftest import Api


def nested(depth: int) -> bytes:
    """`depth` arrays around a string, as JSON text (orjson cannot write such a value)."""
    return b"[" * depth + b'"x"' + b"]" * depth


async def test_a_deeply_nested_extra_field_is_refused_before_it_is_stored(api: Api) -> None:
    """An agent body nested 300 levels deep is a 400 naming the depth limit, and no agent is stored."""
    raw = b'{"agentId":"deep","x":' + nested(300) + b"}"
    status, body = await api.post("/coordinator/agents", raw=raw)
    assert status == 400
    assert body["error"] == "Invalid JSON body"
    assert body["maxDepth"] == 64
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []


async def test_nesting_up_to_the_limit_is_stored_and_answered(api: Api) -> None:
    """A value nested to the depth limit is stored and echoed unchanged."""
    raw = b'{"agentId":"deep","x":' + nested(63) + b"}"  # with the body object: depth 64
    status, body = await api.post("/coordinator/agents", raw=raw)
    assert (status, body["agent"]) == (200, orjson.loads(raw))
