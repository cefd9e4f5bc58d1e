"""The checker's textual fast path (`consistency.legacy_form`) never hides a difference.

A Redis value equal, as text, to the legacy form of the actor entity is taken as the same pair
without being mapped. Where the legacy form loses something the canonical comparison looks at,
a Redis value that is exactly that text still differs from the entity; these tests plant such
values and check that the pair is reported as the canonical comparison reports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from consistency.check import Checker, CheckOptions
from consistency.compare import Finding, Kind, classify
from consistency.legacy_form import _GUARDS, legacy_form, same_as_read
from consistency.stores import LegacyExpectations
from gateway.bulk.legacy_side import Deferred
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import SystemClock
from gateway.domain.entities import Entity, EntityKey
from gateway.domain.model import Agent, Checkpoint, Claim, DirectMessage, Handoff, Lock, Memory, Task, Zone
from gateway.legacy import keys
from gateway.legacy import mapping as m
from tests.checker.test_check_stores import check, differences, seed_and_import, settings_for

T = "2025-12-03T20:00:00.000Z"
NOW = 1_764_792_000_000
LATER = "2099-01-01T00:00:00.000Z"
LATER_MS = 4_070_908_800_000


def changed(entity: Any, **fields: Any) -> Any:
    """A copy of `entity` with fields of any type (what the actor store might hold)."""
    return dataclasses.replace(entity, **fields)


def deferred(key: EntityKey, raw: str) -> Deferred:
    """The legacy value `raw` of `key` as a deferring scan yields it (hash domains)."""
    hashes = {
        "agent": keys.ACTIVE_AGENTS,
        "task": keys.TASKS,
        "zone": keys.ZONES,
        "claim": keys.CLAIMS,
        "handoff": keys.HANDOFFS,
        "checkpoint": keys.CHECKPOINTS,
        "memory": keys.SHARED_MEMORY,
        "lock": keys.LOCKS,
    }
    fld = key.scope if key.domain == "checkpoint" else key.id
    return Deferred(key, raw, hashes[key.domain], fld, NOW)


def key_of(entity: Entity) -> EntityKey:  # noqa: PLR0911 - one per domain
    if isinstance(entity, Agent):
        return EntityKey("agent", "", entity.agent_id)
    if isinstance(entity, Zone):
        return EntityKey("zone", "", entity.zone_id)
    if isinstance(entity, Lock):
        return EntityKey("lock", "", entity.resource_path)
    if isinstance(entity, Checkpoint):
        return EntityKey("checkpoint", entity.agent_id, "")
    if isinstance(entity, Claim):
        return EntityKey("claim", "", entity.what)
    if isinstance(entity, Memory):
        return EntityKey("memory", "alice", entity.id)
    assert isinstance(entity, Task | Handoff)
    return EntityKey("task" if isinstance(entity, Task) else "handoff", "", entity.id)


def written(key: EntityKey, entity: Any) -> str:
    """The Redis text a naive textual comparison would call equal: the legacy form of `entity`,
    rendered by the mapping whatever the entity holds."""
    renders: dict[str, Callable[[Any], dict[str, Any]]] = {
        "agent": m.agent_to_legacy,
        "task": m.task_to_legacy,
        "zone": m.zone_to_legacy,
        "claim": m.claim_to_legacy,
        "handoff": m.handoff_to_legacy,
        "checkpoint": m.checkpoint_to_legacy,
        "memory": lambda e: m.memory_to_legacy(e, key.scope),
        "lock": m.lock_to_legacy,
    }
    return orjson.dumps(renders[key.domain](entity)).decode()


def both_ways(key: EntityKey, raw: str, actors: Any) -> tuple[Finding, Finding]:
    """The finding with the fast path and with the value mapped first (the canonical path)."""
    from consistency.rules import Expectations  # noqa: PLC0415

    exp = Expectations(NOW)
    fast = classify(key, deferred(key, raw), actors, exp)
    slow = classify(key, deferred(key, raw).entity(), actors, exp)
    return fast, slow


TASK = Task("t1", "Fix it", None, "todo", "bob", "alice", "high", ["x"], [], T, T)
HANDOFF = Handoff(
    "h1", "alice", "bob", "Take over", "ctx", None, None, [], "medium", "pending", None, T, None, None
)
LOCK = Lock("a.py", "file-lock", "bob", None, T, LATER, LATER_MS)
AGENT = Agent("a1", "active", "t1", None, T, ["py"], None, None)
DM = DirectMessage("m1", "alice", "note", "hi", T, read=False)

# (what the legacy form loses, the actor entity, its key): each pair is a difference
LOSSY: list[tuple[str, Any, EntityKey | None]] = [
    ("handoff to the literal agent `any`", changed(HANDOFF, to_agent="any"), None),
    ("handoff status in its legacy spelling", changed(HANDOFF, status="submitted"), None),
    ("handoff status integrated", changed(HANDOFF, status="integrated"), None),
    ("task title null", changed(TASK, title=None), None),
    ("task title a number", changed(TASK, title=7), None),
    ("task updatedAt null", changed(TASK, updated_at=None), None),
    ("task tags not an array", changed(TASK, tags="x"), None),
    ("agent status null", changed(AGENT, status=None), None),
    ("agent id other than its key", AGENT, EntityKey("agent", "", "a2")),
    ("zone id other than its key", Zone("z1", "src/", "bob", None, T), EntityKey("zone", "", "z2")),
    ("lock path other than its key", LOCK, EntityKey("lock", "", "b.py")),
    ("lock type null", changed(LOCK, resource_type=None), None),
    (
        "checkpoint of another agent",
        Checkpoint("a1", "s", [], [], None, [], T),
        EntityKey("checkpoint", "a2", ""),
    ),
]


@pytest.mark.parametrize(("what", "entity", "key"), LOSSY, ids=[c[0] for c in LOSSY])
def test_a_redis_value_equal_to_a_lossy_legacy_form_is_still_a_difference(
    what: str, entity: Any, key: EntityKey | None
) -> None:
    key = key or key_of(entity)
    assert legacy_form(key, entity) is None, what  # no fast path for it
    fast, slow = both_ways(key, written(key, entity), entity)
    assert slow.is_difference, what
    assert (fast.kind, fast.fields) == (slow.kind, slow.fields), what


def test_a_dm_read_flag_that_is_not_a_boolean_takes_the_canonical_path() -> None:
    dm = changed(DM, read=1)
    key = EntityKey("dm", "bob", "m1")
    msg = m.dm_to_legacy(dm, "bob")
    assert not same_as_read(key, msg, dm)
    from consistency.rules import Expectations  # noqa: PLC0415

    got = classify(key, Deferred(key, msg), dm, Expectations(NOW))
    assert got.kind is Kind.DIFFERS
    assert got.fields == ("read",)


def test_equal_entities_take_the_fast_path_and_other_spellings_the_canonical_one() -> None:
    key = key_of(TASK)
    text = written(key, TASK)
    assert same_as_read(key, text, TASK)
    # the same task written with other spacing and key order: not equal as text, same canonically
    spaced = orjson.dumps(dict(reversed(orjson.loads(text).items())), option=orjson.OPT_INDENT_2).decode()
    assert not same_as_read(key, spaced, TASK)
    fast, slow = both_ways(key, spaced, TASK)
    assert fast.kind is slow.kind is Kind.SAME
    # a real difference in an otherwise equal text
    other = text.replace('"Fix it"', '"Fix that"')
    fast, slow = both_ways(key, other, TASK)
    assert (fast.kind, fast.fields) == (slow.kind, slow.fields) == (Kind.DIFFERS, ("title",))


_TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", "any", "submitted", "integrated", "pending", "note", "a1", T]),
    st.integers(-2, 2),
    st.booleans(),
    st.lists(st.sampled_from(["x", 1]), max_size=2),
)
_EXTRA = st.dictionaries(st.sampled_from(["name", "role", "type", "custom", "updatedAt"]), _TEXT, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["task", "handoff", "agent", "zone", "lock", "checkpoint", "claim", "memory"]),
    values=st.lists(_TEXT, min_size=14, max_size=14),
    extra=_EXTRA,
)
def test_the_fast_path_agrees_with_the_canonical_comparison_on_any_entity(
    kind: str, values: list[Any], extra: dict[str, Any]
) -> None:
    """Entities with any JSON value in any field: wherever the legacy form can be rendered, a
    Redis value equal to it is classified exactly as the canonical comparison classifies it."""
    v = values
    makers: dict[str, Callable[[], Any]] = {
        "task": lambda: Task("t1", v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], extra),
        "handoff": lambda: Handoff(
            "h1", v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], extra
        ),
        "agent": lambda: Agent("a1", v[0], v[1], v[2], v[3], v[4], v[5], v[6], extra),
        "zone": lambda: Zone("z1", v[0], v[1], v[2], v[3], extra),
        "lock": lambda: Lock("a.py", v[0], v[1], v[2], v[3], v[4], NOW, extra),
        "checkpoint": lambda: Checkpoint("a1", v[0], v[1], v[2], v[3], v[4], v[5], extra),
        "claim": lambda: Claim("src/x", v[0], v[1], v[2], False, extra),
        "memory": lambda: Memory("mem1", v[0], v[1], v[2], v[3], {**extra, "createdBy": "alice"}),
    }
    entity = makers[kind]()
    key = key_of(entity)
    try:
        text = written(key, entity)
    except (TypeError, ValueError, KeyError, AttributeError):
        return  # no legacy form at all: nothing a text could equal
    fast, slow = both_ways(key, text, entity)
    assert (fast.kind, fast.fields, fast.rule) == (slow.kind, slow.fields, slow.rule)


# -- on real stores --------------------------------------------------------------------------------


async def plant_lossy(url: str, data_dir: Path) -> None:
    """Two handoffs whose actor values the legacy form cannot tell from another value, with
    Redis holding exactly that legacy form: `toAgent` `any` and status `submitted`."""
    settings = settings_for(url, data_dir)
    async with open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors:
        raw = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            for hid, change in (
                ("lossy-any", {"to_agent": "any"}),
                ("lossy-status", {"status": "submitted"}),
            ):
                entity = changed(HANDOFF, id=hid, **change)
                key = EntityKey("handoff", "", hid)
                await actors.write_batch([(key, entity)])
                await raw.hset(keys.HANDOFFS, hid, written(key, entity))
        finally:
            await raw.aclose()


async def counts(url: str, data_dir: Path, *, fast: bool) -> dict[str, Any]:
    settings = settings_for(url, data_dir)
    clock = SystemClock()
    async with (
        open_legacy_side(settings, url, clock=clock) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir), clock=clock, fire_alarms=False) as actors,
    ):
        checker = Checker(legacy, actors, clock, LegacyExpectations(legacy), fast=fast)
        report = await checker.run(CheckOptions(rounds=0, max_samples=100))
        assert legacy.defer is fast
        doc = report.to_json()
        return {"domains": doc["domains"], "totals": doc["totals"]}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_on_real_stores_the_fast_path_reports_what_the_canonical_path_reports(
    redis_url: str, tmp_path: Path
) -> None:
    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(plant_lossy(redis_url, tmp_path))
    status, doc = check(redis_url, tmp_path, "--rounds", "0", "--samples", "100")
    assert status == 1
    assert differences(doc)["handoff"] == {
        "missingInActors": 0,
        "missingInLegacy": 0,
        "differs": 2,
        "unreadable": 0,
    }
    found = {s["id"]: s["fields"] for s in doc["samples"] if s["domain"] == "handoff"}
    assert found == {"lossy-any": ["toAgent"], "lossy-status": ["status"]}
    assert doc["totals"]["differences"] == 2
    with_fast = asyncio.run(counts(redis_url, tmp_path, fast=True))
    without = asyncio.run(counts(redis_url, tmp_path, fast=False))
    assert with_fast == without


_META_EXTRA = st.one_of(
    _EXTRA,
    st.fixed_dictionaries(
        {m.META: st.fixed_dictionaries({"absent": st.just(["assignee"])}), "custom": _TEXT}
    ),
    st.dictionaries(st.sampled_from(["taskId", "readAt", "conversationId", "createdBy", "to", "x"]), _TEXT),
)


_OF_TYPE: dict[type, st.SearchStrategy[Any]] = {
    str: st.sampled_from(
        ["", "any", "a1", "bob", T, "x y", "\u00e9t\u00e9", "\U0001f600", "submitted", "note"]
    ),
    type(None): st.none(),
    list: st.lists(st.sampled_from(["x", 1, "\u00e9"]), max_size=2),
    bool: st.booleans(),
}
_BASE: dict[str, Any] = {
    "task": TASK,
    "handoff": HANDOFF,
    "agent": AGENT,
    "zone": Zone("z1", "src/", "bob", None, T),
    "lock": LOCK,
    "checkpoint": Checkpoint("a1", "s", [], [], None, [], T),
    "claim": Claim("src/x", "bob", None, T),
    "memory": Memory("mem1", "learning", "c", [], T),
    "dm": DM,
}


@st.composite
def _plain_entities(draw: st.DrawFn) -> tuple[EntityKey, Any]:
    """An entity whose attributes have the types its legacy form reads back (mostly), any
    values, and an extra of carried, ordered or remembered properties."""
    kind = draw(st.sampled_from(sorted(_BASE)))
    guard = _GUARDS[kind][1]
    values = {
        attr: draw(_TEXT if draw(st.integers(0, 19)) == 0 else st.one_of(*(_OF_TYPE[t] for t in types)))
        for attr, types in guard
        if attr not in ("agent_id", "zone_id", "resource_path", "what", "id")
    }
    entity = dataclasses.replace(_BASE[kind], **values, extra=dict(draw(_META_EXTRA)))
    key = EntityKey("dm", draw(_OF_TYPE[str]), "m1") if kind == "dm" else key_of(entity)
    return key, entity


@settings(max_examples=1500, deadline=None)
@given(pair=_plain_entities())
def test_the_compiled_legacy_forms_are_the_mappings_own(pair: tuple[EntityKey, Any]) -> None:
    """The fast path's renderers (generated from the mapping's field tables) give exactly the
    value, key order included, that the mapping's `*_to_legacy` writes, for any entity they
    render."""
    key, entity = pair
    form = legacy_form(key, entity)
    if form is None:
        return
    theirs = m.dm_to_legacy(entity, key.scope) if key.domain == "dm" else orjson.loads(written(key, entity))
    assert orjson.dumps(form) == orjson.dumps(theirs)


@pytest.mark.parametrize(
    "entity",
    [TASK, HANDOFF, LOCK, AGENT, Zone("z1", "src/", "bob", None, T), Claim("src/x", "bob", None, T)],
    ids=lambda e: type(e).__name__,
)
def test_plain_entities_have_a_compiled_legacy_form(entity: Any) -> None:
    key = key_of(entity)
    assert orjson.dumps(legacy_form(key, entity)).decode() == written(key, entity)
