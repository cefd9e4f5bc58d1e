"""Request parsing into typed commands: defaults, and a 400 naming the field for wrong types."""

from __future__ import annotations

import pytest

from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator
from gateway.errors import ApiError

NOW = 1_795_627_727_041
IDS = IdGenerator()
TTL = {"ttl_min_ms": 1, "ttl_max_ms": 86_400_000, "ttl_default_ms": 7_200_000}


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (b'{"x":' + b"[" * 63 + b"1" + b"]" * 63 + b"}", False),  # 64 levels with the body
        (b'{"x":' + b"[" * 64 + b"1" + b"]" * 64 + b"}", True),  # 65
        (b'{"x":' + b'[{"y":' * 32 + b"1" + b"}]" * 32 + b"}", True),  # 65, objects and arrays
        (b'{"x":"' + b"[{" * 500 + b'"}', False),  # brackets inside a string do not nest
        (b'{"a":[[[1]]],"b":' + b"[" * 62 + b"2" + b"]" * 62 + b"}", False),  # 80 openers, depth 64
    ],
)
def test_parse_body_refuses_bodies_nested_deeper_than_the_limit(raw: bytes, refused: bool) -> None:
    """Depth counts nesting, not brackets: more than 64 levels is a 400 naming the limit."""
    if refused:
        with pytest.raises(ApiError) as e:
            c.parse_body(raw)
        assert e.value.status == 400
        assert e.value.body()["maxDepth"] == c.MAX_JSON_DEPTH
    else:
        assert isinstance(c.parse_body(raw), dict)


def test_parse_body_rejects_non_objects() -> None:
    """Empty, malformed and non-object bodies are a 400 Invalid JSON body."""
    for raw in (b"", b"{bad json", b"[1,", b"[1,2]", b"42"):
        with pytest.raises(ApiError) as e:
            c.parse_body(raw)
        assert e.value.status == 400
        assert e.value.body()["error"] == "Invalid JSON body"


@pytest.mark.parametrize(
    ("factory", "body", "field"),
    [
        (lambda b: c.CreateTask.parse(b, NOW, IDS), {"title": 123}, "title"),
        (lambda b: c.CreateTask.parse(b, NOW, IDS), {"tags": "x"}, "tags"),
        (lambda b: c.CreateTask.parse(b, NOW, IDS), {"files": [1]}, "files"),
        (lambda b: c.PostChat.parse(b, NOW, IDS), {"message": "x"}, "author"),
        (lambda b: c.PostChat.parse(b, NOW, IDS), {"author": "a", "message": 42}, "message"),
        (lambda b: c.RegisterAgent.parse(b, NOW), {"status": "idle"}, "agentId"),
        (lambda b: c.RegisterAgent.parse(b, NOW), {"agentId": "a", "capabilities": "x"}, "capabilities"),
        (lambda b: c.AddMemory.parse("a", b, NOW, IDS), {"category": 7}, "category"),
        (lambda b: c.MarkDmsRead.parse("a", b, 0), {"messageIds": "abc"}, "messageIds"),
        (lambda b: c.MarkDmsRead.parse("a", b, 0), {}, "messageIds"),
        (lambda b: c.AcquireLock.parse("p", b, NOW, IDS, **TTL), {"reason": "x"}, "agentId"),
        (lambda b: c.AcquireLock.parse("p", b, NOW, IDS, **TTL), {"agentId": "a", "ttlMs": "100"}, "ttlMs"),
        (lambda b: c.AcquireLock.parse("p", b, NOW, IDS, **TTL), {"agentId": "a", "ttlMs": -60000}, "ttlMs"),
        (
            lambda b: c.AcquireLock.parse("p", b, NOW, IDS, **TTL),
            {"agentId": "a", "ttlMs": 86_400_001},
            "ttlMs",
        ),
        (lambda b: c.AcquireLock.parse("p", b, NOW, IDS, **TTL), {"agentId": "a", "ttlMs": True}, "ttlMs"),
        (lambda b: c.ReleaseLock.parse("p", b, NOW), {"agentId": "a", "force": "yes"}, "force"),
        (lambda b: c.UpdateTask.parse(b, NOW), {}, "id"),
        (lambda b: c.UpdateTask.parse(b, NOW), {"id": "t", "status": ""}, "status"),
        (lambda b: c.ZoneClaim.parse(b, NOW), {"zoneId": 5, "path": "p", "owner": "o"}, "zoneId"),
    ],
)
def test_wrong_or_missing_field_is_400_naming_it(factory, body, field) -> None:  # type: ignore[no-untyped-def]
    """Every wrong JSON type or missing required field gives a 400 whose body names the field."""
    with pytest.raises(ApiError) as e:
        factory(body)
    assert e.value.status == 400
    assert e.value.body()["field"] == field


def test_upstream_group_messages_are_kept() -> None:
    """Zone, claim and handoff validation keep upstream's exact 400 messages."""
    with pytest.raises(ApiError) as e:
        c.ZoneClaim.parse({"zoneId": "z", "owner": "o"}, NOW)
    assert e.value.body() == {"error": "zoneId, path, and owner required"}
    with pytest.raises(ApiError) as e:
        c.ClaimWork.parse({"what": "w"}, NOW)
    assert e.value.body() == {"error": "what and by required"}
    with pytest.raises(ApiError) as e:
        c.CreateHandoff.parse({"fromAgent": "a", "title": "t"}, NOW, IDS)
    assert e.value.body() == {"error": "fromAgent, title, and context required"}


def test_task_defaults_follow_upstream() -> None:
    """An empty task body gets upstream's defaults; empty strings count as not given."""
    t = c.CreateTask.parse({"status": "", "title": None}, NOW, IDS)
    assert (t.title, t.status, t.created_by, t.priority, t.tags, t.files) == (
        "Untitled Task",
        "todo",
        "system",
        "medium",
        [],
        [],
    )
    assert t.description is None
    assert t.id.startswith(f"task-{NOW}-")


def test_lock_ttl_zero_or_null_means_default() -> None:
    """ttlMs 0, null or absent is the 2 h default; a float inside the bounds is kept."""
    for body in ({"agentId": "a"}, {"agentId": "a", "ttlMs": 0}, {"agentId": "a", "ttlMs": None}):
        assert c.AcquireLock.parse("p", body, NOW, IDS, **TTL).ttl_ms == 7_200_000
    assert c.AcquireLock.parse("p", {"agentId": "a", "ttlMs": 1500.5}, NOW, IDS, **TTL).ttl_ms == 1500.5


@pytest.mark.parametrize(("raw", "value"), [(None, 50), ("", 50), ("3", 3), ("20abc", 20), ("5000", 1000)])
def test_parse_limit(raw: str | None, value: int) -> None:
    """limit: JS parseInt, default when absent or empty, capped at the maximum."""
    assert c.parse_limit(raw, 50, 1000) == value


@pytest.mark.parametrize("raw", ["x", "-5", "-0x1"])
def test_parse_limit_rejects_nan_and_negative(raw: str) -> None:
    """limit=x and negative limits are a 400 naming `limit`."""
    with pytest.raises(ApiError) as e:
        c.parse_limit(raw, 50, 1000)
    assert e.value.body()["field"] == "limit"


def test_update_task_distinguishes_absent_from_null() -> None:
    """PATCH: an absent key is unchanged, null clears a nullable field."""
    u = c.UpdateTask.parse({"id": "t", "assignee": None}, NOW)
    assert u.assignee is None
    assert u.status is c.UNSET
    assert u.description is c.UNSET
