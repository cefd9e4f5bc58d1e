"""gateway.legacy.mapping: domain entities <-> legacy values, lossless both ways where the specs allow."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.codec import Corrupt, decode, dumps, loads
from gateway.legacy.generator import generate

text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
word = st.text(alphabet="abcdefghij-_.", min_size=1, max_size=8)
opt_text = st.none() | text
nonempty = st.none() | text.filter(bool)
times = st.integers(0, 4_102_444_800_000).map(iso_from_ms)
strs = st.lists(text, max_size=3)


def same_data(a: Any, b: Any) -> bool:
    """JSON data equality that tells 1 from True and 1 from 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


agents = st.builds(
    Agent,
    agent_id=word,
    status=text,
    current_task=nonempty,
    working_on=nonempty,
    last_seen=st.none() | times,
    capabilities=st.none() | strs,
    offers=st.none() | strs,
    needs=st.none() | strs,
)
messages = st.builds(
    GroupMessage, id=word, author=text, author_type=text, message=text, timestamp=times, reactions=st.just([])
)
tasks = st.builds(
    Task,
    id=word,
    title=text,
    description=opt_text,
    status=text,
    assignee=nonempty,
    created_by=text,
    priority=text,
    tags=strs,
    files=strs,
    created_at=times,
    updated_at=times,
)
zones = st.builds(Zone, zone_id=word, path=text, owner=text, description=opt_text, claimed_at=times)
claims = st.builds(Claim, what=text, by=word, description=opt_text, since=times, stale=st.just(False))
handoffs = st.builds(
    Handoff,
    id=word,
    from_agent=text,
    to_agent=st.none() | text.filter(lambda s: s != "any"),
    title=text,
    context=text,
    code=opt_text,
    file_path=opt_text,
    next_steps=strs,
    priority=text,
    status=st.sampled_from(["pending", "claimed", "completed", "in_review", "rejected", "parked"]),
    claimed_by=opt_text,
    created_at=times,
    claimed_at=st.none() | times,
    completed_at=st.none() | times,
)
checkpoints = st.builds(
    Checkpoint,
    agent_id=word,
    conversation_summary=opt_text,
    accomplishments=strs,
    pending_work=strs,
    recent_context=opt_text,
    files_edited=strs,
    checkpoint_at=st.none() | times,
)
dms = st.builds(
    DirectMessage, id=word, from_agent=word, type=text, message=text, timestamp=times, read=st.booleans()
)
memories = st.builds(Memory, id=word, category=text, content=text, tags=strs, created_at=times)


@st.composite
def locks(draw: st.DrawFn) -> Lock:
    expires_ms = draw(st.integers(0, 4_102_444_800_000))
    return Lock(
        resource_path=draw(text),
        resource_type=draw(st.sampled_from(["file-lock", "repo-path", "branch", "custom"])),
        locked_by=draw(word),
        reason=draw(opt_text),
        locked_at=draw(times),
        expires_at=iso_from_ms(expires_ms),
        expires_ms=expires_ms,
    )


def through_json(value: dict[str, Any]) -> dict[str, Any]:
    """What Redis would hand back: the exact text written, decoded again."""
    out = loads(dumps(value))
    assert isinstance(out, dict)
    return out


# --- actor-side entity -> legacy -> back: equal to the original -----------------------------------


@given(agents)
def test_agent_round_trips(agent: Agent) -> None:
    """An actor-side agent written to legacy and read back is equal (capabilities carried)."""
    assert m.agent_from_legacy(agent.agent_id, through_json(m.agent_to_legacy(agent))) == agent


@given(messages)
def test_chat_message_round_trips(msg: GroupMessage) -> None:
    """A chat message written to legacy and read back is equal."""
    assert m.chat_from_legacy(through_json(m.chat_to_legacy(msg))) == msg


@given(tasks)
def test_task_round_trips(task: Task) -> None:
    """A task (files carried, assignee null written as "") written and read back is equal."""
    assert m.task_from_legacy(through_json(m.task_to_legacy(task))) == task


@given(zones)
def test_zone_round_trips(zone: Zone) -> None:
    """A zone (claimedAt <-> createdAt) written and read back is equal."""
    assert m.zone_from_legacy(zone.zone_id, through_json(m.zone_to_legacy(zone))) == zone


@given(claims)
def test_claim_round_trips(claim: Claim) -> None:
    """A claim written and read back is equal (stale is computed, stored false)."""
    assert m.claim_from_legacy(through_json(m.claim_to_legacy(claim))) == claim


@given(handoffs)
def test_handoff_round_trips(handoff: Handoff) -> None:
    """A handoff (status vocabulary and open toAgent translated) written and read back is equal."""
    assert m.handoff_from_legacy(through_json(m.handoff_to_legacy(handoff))) == handoff


@given(checkpoints)
def test_checkpoint_round_trips(cp: Checkpoint) -> None:
    """A checkpoint (accomplishments and filesEdited carried) written and read back is equal."""
    assert m.checkpoint_from_legacy(cp.agent_id, through_json(m.checkpoint_to_legacy(cp))) == cp


@given(dms, word)
def test_dm_round_trips_apart_from_its_placement(dm: DirectMessage, to: str) -> None:
    """A DM written into a conversation and read back is equal, plus where it was placed."""
    back = m.dm_from_legacy(through_json(m.dm_to_legacy(dm, to, read_at="2025-12-03T20:00:00.000Z")))
    placement = {"conversationId", "to", "readAt"}
    assert {k for k in back.extra if k not in placement} == set()
    assert dataclasses.replace(back, extra={}) == dm
    assert back.extra["to"] == to


@given(memories, word)
def test_memory_round_trips_apart_from_its_owner(mem: Memory, agent_id: str) -> None:
    """A per-agent memory written team-wide and read back is equal, plus its owner (createdBy)."""
    back = m.memory_from_legacy(through_json(m.memory_to_legacy(mem, agent_id)))
    assert back.extra == {"createdBy": agent_id}
    assert m.memory_owner(back) == agent_id
    assert dataclasses.replace(back, extra={}) == mem


@given(locks())
def test_lock_round_trips(lock: Lock) -> None:
    """A lock (expiry inside the value, resourceType carried) written and read back is equal."""
    assert m.lock_from_legacy(lock.resource_path, through_json(m.lock_to_legacy(lock))) == lock


# --- legacy value -> domain -> legacy keeps every field and its spelling ----------------------------

POST_AGENT = {
    "id": "phil",
    "name": "phil",
    "status": "active",
    "currentTask": "fix chat",
    "workingOn": "",
    "role": "agent",
    "lastSeen": "2025-12-03T19:40:02.123Z",
}
LEGACY_VALUES: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], dict[str, Any]]] = [
    ("agent post", lambda v: m.agent_to_legacy(m.agent_from_legacy("phil", v)), POST_AGENT),
    (
        "agent spawn",
        lambda v: m.agent_to_legacy(m.agent_from_legacy("agent-x", v)),
        {"name": "n", "role": "dev", "task": "t", "tools": [], "status": "queued", "createdAt": "x"},
    ),
    (
        "agent sync",
        lambda v: m.agent_to_legacy(m.agent_from_legacy("s", v)),
        {"id": "s", "name": "s", "lastSeen": "2025-12-03T19:40:02.123Z", "status": "active"},
    ),
    (
        "agent rich",
        lambda v: m.agent_to_legacy(m.agent_from_legacy("r", v)),
        {
            "id": "r",
            "name": "renamed",
            "version": 2,
            "role": "general",
            "specialty": [],
            "status": "inactive",
            "currentTask": None,
            "metrics": {"successRate": 0.5, "lastOptimized": None},
            "previousNames": ["r"],
        },
    ),
    (
        "image-only chat",
        lambda v: m.chat_to_legacy(m.chat_from_legacy(v)),
        {"id": "a-b", "author": "p", "authorType": "agent", "timestamp": "t", "reactions": [],
         "imageData": "d"},
    ),
    (
        "orchestration subtask",
        lambda v: m.task_to_legacy(m.task_from_legacy(v)),
        {"id": "orch-1-sub-0", "title": "t", "status": "todo", "priority": "high", "createdBy": "o",
         "createdAt": "c", "updatedAt": "u", "tags": ["orchestration"], "parentOrchestration": "orch-1"},
    ),
    (
        "task null assignee",
        lambda v: m.task_to_legacy(m.task_from_legacy(v)),
        {"id": "t", "title": "t", "status": "review", "priority": "critical", "assignee": None,
         "createdBy": "c", "createdAt": "c", "updatedAt": "u", "tags": [], "blockedReason": "x"},
    ),
    (
        "handoff without context, toAgent any",
        lambda v: m.handoff_to_legacy(m.handoff_from_legacy(v)),
        {"id": "ho", "fromAgent": "f", "toAgent": "any", "type": "patch", "status": "in_review", "title": "t",
         "priority": "urgent", "createdAt": "2025-01-01T00:00:00.000Z",
         "updatedAt": "2025-01-02T00:00:00.000Z", "feedback": "ok"},
    ),
    (
        "handoff literally pending",
        lambda v: m.handoff_to_legacy(m.handoff_from_legacy(v)),
        {"id": "ho", "fromAgent": "f", "toAgent": "claude-code", "status": "pending", "title": "t",
         "priority": "low", "createdAt": "c", "updatedAt": "c"},
    ),
    (
        "checkpoint with JSON recentContext",
        lambda v: m.checkpoint_to_legacy(m.checkpoint_from_legacy("a", v)),
        {"agentId": "a", "currentTask": "task-1", "recentContext": '{"version":2}', "checkpointAt": "t"},
    ),
    (
        "dm with attachments",
        lambda v: m.dm_to_legacy(m.dm_from_legacy(v), v["to"]),
        {"id": "dm-1", "conversationId": "dm-a-b", "from": "a", "fromType": "human", "to": "b",
         "toType": "agent", "message": "", "attachments": [{"id": "x", "data": "AA=="}],
         "timestamp": "t", "read": True, "readAt": "r"},
    ),
    (
        "memory recalled",
        lambda v: m.memory_to_legacy(m.memory_from_legacy(v), "p"),
        {"id": "mem", "category": "warning", "content": "c", "tags": ["Redis"], "createdBy": "phil",
         "createdAt": "t", "references": 3, "lastRecalled": "r"},
    ),
    (
        "claim",
        lambda v: m.claim_to_legacy(m.claim_from_legacy(v, now_ms=0)),
        {"what": "api/dm.ts", "by": "phil", "description": "Editing file", "since": "t", "stale": False},
    ),
    (
        "lock",
        lambda v: m.lock_to_legacy(m.lock_from_legacy("api/dm.ts", v)),
        {"resourcePath": "api/dm.ts", "lockedBy": "phil", "lockedAt": "2025-12-03T19:40:02.123Z",
         "expiresAt": "2025-12-03T19:50:02.123Z"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "round_trip", "value"), LEGACY_VALUES, ids=[v[0] for v in LEGACY_VALUES])
def test_legacy_shapes_keep_every_field_and_order(
    name: str, round_trip: Callable[[dict[str, Any]], dict[str, Any]], value: dict[str, Any]
) -> None:
    """Each writer shape read and written back is the same JSON text (fields, spellings, order)."""
    assert dumps(round_trip(value)) == dumps(value), name


@given(
    st.dictionaries(
        word,
        st.none() | st.booleans() | st.integers() | text | strs,
        max_size=6,
    ),
    st.sampled_from(["task", "agent", "handoff", "chat", "checkpoint", "memory", "claim", "zone"]),
)
def test_arbitrary_legacy_values_keep_every_field(value: dict[str, Any], kind: str) -> None:
    """Any legacy object, with unknown properties and odd spellings, round-trips as data, unless
    a property its entity maps has a JSON type the field cannot hold: then it is refused as
    unmappable, naming that property."""
    trips: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "task": lambda v: m.task_to_legacy(m.task_from_legacy(v)),
        "agent": lambda v: m.agent_to_legacy(m.agent_from_legacy("a", v)),
        "handoff": lambda v: m.handoff_to_legacy(m.handoff_from_legacy(v)),
        "chat": lambda v: m.chat_to_legacy(m.chat_from_legacy(v)),
        "checkpoint": lambda v: m.checkpoint_to_legacy(m.checkpoint_from_legacy("a", v)),
        "memory": lambda v: m.memory_to_legacy(m.memory_from_legacy(v), "unknown"),
        "claim": lambda v: m.claim_to_legacy(m.claim_from_legacy(v)),
        "zone": lambda v: m.zone_to_legacy(m.zone_from_legacy("z", v)),
    }
    if kind == "memory":
        value.setdefault("createdBy", "unknown")
    try:
        written = trips[kind](value)
    except m.UnmappableError as e:
        prop = str(e).split(":", 1)[0]
        assert prop in value
        assert value[prop] is not None  # null always reads as the field's default
        return
    assert same_data(written, value)


def test_changes_on_the_domain_side_are_written_canonically() -> None:
    """A changed field is written in the legacy writer's spelling; untouched ones keep theirs."""
    task = m.task_from_legacy(
        {"id": "t", "title": "t", "status": "todo", "priority": "medium", "assignee": None, "createdBy": "c",
         "createdAt": "c", "updatedAt": "u", "tags": [], "description": None}
    )  # fmt: skip
    assert task.assignee is None
    task.assignee = "phil"
    out = m.task_to_legacy(task)
    assert out["assignee"] == "phil"
    assert out["description"] is None  # untouched null stays null
    task.assignee = None
    assert m.task_to_legacy(task)["assignee"] is None  # back to the original spelling


def test_handoff_vocabularies_are_translated() -> None:
    """submitted<->pending, integrated<->completed, any<->null; other statuses verbatim."""
    h = m.handoff_from_legacy(
        {
            "id": "h",
            "fromAgent": "f",
            "toAgent": "any",
            "status": "submitted",
            "title": "t",
            "createdAt": "c",
            "updatedAt": "c",
        }
    )
    assert (h.status, h.to_agent, h.context) == ("pending", None, "")
    h.status, h.claimed_by, h.claimed_at = "claimed", "x", "d"
    out = m.handoff_to_legacy(h)
    assert (out["status"], out["toAgent"], out["updatedAt"]) == ("claimed", "any", "d")
    assert "context" not in out
    h.status = "completed"
    assert m.handoff_to_legacy(h)["status"] == "integrated"


def test_canonical_forms() -> None:
    """Canonical: ISO ms Z times, "" assignee is null, stale dropped, extra ignored."""
    task = m.task_from_legacy(
        {"id": "t", "title": "t", "status": "todo", "priority": "m", "assignee": "", "createdBy": "c",
         "createdAt": "2025-12-03T19:40:02Z", "updatedAt": "2025-12-03T19:40:02.123Z", "tags": []}
    )  # fmt: skip
    c = m.canonical(task)
    assert c["assignee"] is None
    assert c["createdAt"] == "2025-12-03T19:40:02.000Z"
    assert c["files"] == []
    assert m.conversation_id("tyler", "claude-code") == "dm-claude-code-tyler"


# --- every value the generator writes (every known writer shape) round-trips ----------------------


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.mark.integration
async def test_every_generated_legacy_value_round_trips(r: redis.asyncio.Redis) -> None:
    """Each readable value of a generated data set is written back with every field intact."""
    await generate(r, scale=60, seed=5, flush=True)
    checked = 0

    def check(raw: str | bytes, back: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        nonlocal checked
        value = decode(raw, key="k")
        if isinstance(value, Corrupt) or not isinstance(value, dict):
            return
        assert same_data(back(value), value), value
        checked += 1

    def hash_trip(key: str, back: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Callable[[], Any]:
        async def run() -> None:
            for fld, raw in (await r.hgetall(key)).items():
                check(raw, lambda v, f=fld: back(f, v))  # type: ignore[misc] # bound default for the loop

        return run

    await hash_trip(keys.ACTIVE_AGENTS, lambda f, v: m.agent_to_legacy(m.agent_from_legacy(f, v)))()
    await hash_trip(keys.TASKS, lambda f, v: m.task_to_legacy(m.task_from_legacy(v)))()
    await hash_trip(keys.HANDOFFS, lambda f, v: m.handoff_to_legacy(m.handoff_from_legacy(v)))()
    await hash_trip(keys.ZONES, lambda f, v: m.zone_to_legacy(m.zone_from_legacy(f, v)))()
    await hash_trip(keys.CLAIMS, lambda f, v: m.claim_to_legacy(m.claim_from_legacy(v)))()
    await hash_trip(keys.LOCKS, lambda f, v: m.lock_to_legacy(m.lock_from_legacy(f, v)))()
    await hash_trip(keys.CHECKPOINTS, lambda f, v: m.checkpoint_to_legacy(m.checkpoint_from_legacy(f, v)))()
    await hash_trip(
        keys.SHARED_MEMORY,
        lambda f, v: m.memory_to_legacy(m.memory_from_legacy(v), m.memory_owner(m.memory_from_legacy(v))),
    )()
    for raw in await r.lrange(keys.MESSAGES, 0, -1):
        check(raw, lambda v: m.chat_to_legacy(m.chat_from_legacy(v)))
    for raw in (await r.hgetall(keys.DM_MESSAGES)).values():
        arr = decode(raw, key="dm")
        if isinstance(arr, list):
            for msg in arr:
                assert same_data(m.dm_to_legacy(m.dm_from_legacy(msg), msg["to"]), msg)
    assert checked > 1000


@pytest.mark.parametrize(
    ("read", "value", "prop"),
    [
        (m.task_from_legacy, {"id": 5, "title": "x"}, "id"),
        (m.task_from_legacy, {"id": "t", "title": ["x"], "status": None}, "title"),
        (m.task_from_legacy, {"id": "t", "title": "x", "tags": {"a": 1}}, "tags"),
        (m.task_from_legacy, {"id": "t", "title": "x", "assignee": 3}, "assignee"),
        (m.task_from_legacy, {"id": "t", "title": "x", "updatedAt": 17}, "updatedAt"),
        (lambda v: m.agent_from_legacy("a", v), {"status": {"on": True}}, "status"),
        (lambda v: m.agent_from_legacy("a", v), {"capabilities": "all"}, "capabilities"),
        (m.chat_from_legacy, {"id": "c", "message": 42}, "message"),
        (m.handoff_from_legacy, {"id": "h", "status": 1}, "status"),
        (m.handoff_from_legacy, {"id": "h", "toAgent": ["b"]}, "toAgent"),
        (lambda v: m.lock_from_legacy("p", v), {"lockedBy": "a", "expiresAt": 1}, "expiresAt"),
        (lambda v: m.checkpoint_from_legacy("a", v), {"recentContext": {"v": 2}}, "recentContext"),
        (m.memory_from_legacy, {"id": "m", "content": None, "tags": "x"}, "tags"),
    ],
)
def test_values_of_the_wrong_json_type_do_not_map(
    read: Callable[[dict[str, Any]], Any], value: dict[str, Any], prop: str
) -> None:
    """A property of a JSON type its field cannot hold makes the whole value unmappable, with the
    property named (issue 15: an array title reached the actors' SQL and clients)."""
    with pytest.raises(m.UnmappableError, match=f"^{prop}: expected"):
        read(value)


def test_null_and_absent_still_read_as_their_defaults() -> None:
    """null is "not set" for text and arrays, as before: only other types are refused."""
    task = m.task_from_legacy({"id": "t", "title": None, "status": None, "tags": None, "assignee": None})
    assert (task.title, task.status, task.tags, task.assignee) == ("", "todo", [], None)
