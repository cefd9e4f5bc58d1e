"""What the coordinator keeps in memory between turns answers as its tables do: after its own
writes, after the replica's and raw SQL's, after a turn that rolled back, after an eviction and
a restart. And pending mentions are found through `_mention_rows` whoever wrote the message."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.actors import ActorHost, HostLimits
from gateway.actors.naming import actor_path
from gateway.clock import FakeClock
from gateway.do import COORDINATOR
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.do.coordinator import AGENT_COLS, TASK_COLS, agent_from_row, task_from_row
from gateway.do.memory import Key, _Listing
from gateway.do.replica import ActorReplica
from gateway.domain import commands as c
from gateway.domain.entities import EntityKey
from gateway.domain.ids import IdGenerator
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import (
    Agent,
    ChatPage,
    GroupMessage,
    RenderedList,
    Task,
    WorkBundle,
    list_answer,
    wire_list,
)
from gateway.settings import LimitSettings

NOW = 1_795_627_727_041
LIMITS = LimitSettings()


def listing_by_query(actor: Any, now_ms: int, limit: int) -> list[Agent]:
    """The listing as the coordinator's SQL answered it before the copy in memory."""
    cutoff = iso_from_ms(now_ms - int(LIMITS.agent_offline_after_s * 1000))
    rows = actor.ctx.sql.exec(
        f"SELECT {AGENT_COLS} FROM agents WHERE status != 'offline' AND last_seen >= ? "  # noqa: S608
        "ORDER BY last_seen DESC, rowid DESC LIMIT ?",
        cutoff,
        limit,
    ).all()
    return [agent_from_row(r) for r in rows]


async def assert_listing_matches(host: ActorHost, clock: FakeClock, limit: int = 1000) -> list[Agent]:
    async def both(actor: Any) -> tuple[list[Agent], list[Agent]]:
        return await actor.list_agents(clock.now_ms(), limit), listing_by_query(actor, clock.now_ms(), limit)

    served, queried = await host.call(COORDINATOR, both)
    assert served == queried
    assert_renders_alike(served, queried)
    return served


def assert_renders_alike(served: list[Any], queried: list[Any]) -> None:
    """What the HTTP answer renders of a listing is what rendering the queried rows gives."""
    rendered = orjson.dumps(wire_list(served))
    assert rendered == orjson.dumps([r.to_json() for r in queried])
    assert orjson.dumps(wire_list(served)) == rendered  # rendered again: the same


def register(agent_id: str, clock: FakeClock, **body: Any) -> c.RegisterAgent:
    return c.RegisterAgent.parse({"agentId": agent_id, **body}, clock.now_ms(), max_bytes=10_000)


async def test_the_listing_follows_every_writer(host: ActorHost, clock: FakeClock) -> None:
    store, replica = ActorStore(host), ActorReplica(host)
    for i in range(5):
        await store.register_agent(register(f"a{i}", clock, status="active", capabilities=["py"]))
        await clock.advance(1)
    names = [a.agent_id for a in await assert_listing_matches(host, clock)]
    assert names == ["a4", "a3", "a2", "a1", "a0"]

    # the coordinator's own writes: a /work heartbeat, a chat read with agentId, a re-registration
    await clock.advance(1)
    await store.work_bundle(c.WorkQuery("a0", clock.now_ms(), 1000))
    await clock.advance(1)
    await store.get_chat(c.ChatQuery(50, None, False, "a2", False, clock.now_ms()))
    await clock.advance(1)
    await store.register_agent(register("a3", clock, status="busy", currentTask="t"))
    agents = await assert_listing_matches(host, clock)
    assert [a.agent_id for a in agents] == ["a3", "a2", "a0", "a4", "a1"]
    assert agents[0].status == "busy"
    assert agents[0].current_task == "t"

    # the replica writes an entity, and deletes one
    seen = iso_from_ms(clock.now_ms() + 5)
    await replica.write_entity(EntityKey("agent", "", "a1"), Agent("a1", "active", None, None, seen))
    await replica.write_entity(EntityKey("agent", "", "a4"), None)
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["a1", "a3", "a2", "a0"]

    # raw SQL in a turn: one agent goes offline, one is made stale
    async def raw(actor: Any) -> None:
        actor.ctx.sql.exec("UPDATE agents SET status = 'offline' WHERE agent_id = 'a2'")
        actor.ctx.sql.exec("UPDATE agents SET last_seen = '2001-01-01T00:00:00.000Z' WHERE agent_id = 'a0'")

    await host.call(COORDINATOR, raw)
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["a1", "a3"]
    assert [a.agent_id for a in await assert_listing_matches(host, clock, limit=1)] == ["a1"]

    # and the heartbeat of an agent that was never registered adds it
    await clock.advance(10)
    await store.work_bundle(c.WorkQuery("new", clock.now_ms(), 1000))
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["new", "a1", "a3"]


async def test_a_rolled_back_turn_leaves_nothing_in_memory(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    await store.register_agent(register("a", clock, status="active"))
    await clock.advance(1)
    await store.register_agent(register("b", clock, status="active"))

    await clock.advance(1)

    async def fails_after_a_heartbeat(actor: Any) -> None:
        await actor.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))  # a moves to the front
        raise RuntimeError("the turn fails")

    with pytest.raises(RuntimeError):
        await host.call(COORDINATOR, fails_after_a_heartbeat)
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["b", "a"]


async def test_the_copy_starts_from_the_database_after_eviction_and_restart(
    tmp_path: Path, host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.register_agent(register("a", clock, status="active", offers=["x"]))
    await assert_listing_matches(host, clock)
    assert await host.evict(COORDINATOR)
    await clock.advance(1)
    await store.register_agent(register("b", clock, status="active"))
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["b", "a"]
    await host.close()

    again = build_actor_host(tmp_path, LIMITS, clock=clock)
    await again.start()
    try:
        agents = await assert_listing_matches(again, clock)
        assert [(a.agent_id, a.offers) for a in agents] == [("b", []), ("a", ["x"])]
    finally:
        await again.close()


async def test_reads_do_not_reload_the_copy(host: ActorHost, clock: FakeClock) -> None:
    """Heartbeats, registrations and listings keep the copy current without reading the table."""
    store = ActorStore(host)
    for i in range(3):
        await store.register_agent(register(f"a{i}", clock, status="active"))
    for i in range(3):
        await clock.advance(1)
        await store.work_bundle(c.WorkQuery(f"a{i}", clock.now_ms(), 1000))
        await store.list_agents(clock.now_ms(), 1000)
    loads: int = await host.call(COORDINATOR, _loads)
    assert loads == 1


async def test_a_write_committed_by_another_connection_is_seen(
    tmp_path: Path, host: ActorHost, clock: FakeClock
) -> None:
    """Between turns no statement asks whether the copy is current while nothing was written;
    a commit through another connection to the coordinator's file is still seen."""
    store = ActorStore(host)
    for name in ("a", "b"):
        await store.register_agent(register(name, clock, status="active"))
        await clock.advance(1)
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["b", "a"]

    other = sqlite3.connect(actor_path(tmp_path, COORDINATOR), isolation_level=None)
    try:
        other.execute("UPDATE agents SET status = 'offline' WHERE agent_id = 'b'")
    finally:
        other.close()
    assert [a.agent_id for a in await store.list_agents(clock.now_ms(), 1000)] == ["a"]


async def test_a_rolled_back_savepoint_inside_a_turn_leaves_nothing_in_memory(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.register_agent(register("a", clock, status="active"))
    await clock.advance(1)
    await store.register_agent(register("b", clock, status="active"))
    await clock.advance(1)

    async def heartbeat_undone_then_listed(actor: Any) -> list[str]:
        async def heartbeat_then_fail() -> None:
            await actor.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))  # a moves to the front
            raise RuntimeError("the nested transaction fails")

        with pytest.raises(RuntimeError):
            await actor.ctx.sql.transaction(heartbeat_then_fail)
        return [a.agent_id for a in await actor.list_agents(clock.now_ms(), 1000)]

    assert await host.call(COORDINATOR, heartbeat_undone_then_listed) == ["b", "a"]
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["b", "a"]


async def test_reads_ask_no_stamp_while_nothing_was_written(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    await store.register_agent(register("a", clock, status="active"))
    await store.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))  # every copy made
    statements: list[str] = []

    async def trace(actor: Any) -> None:
        actor.ctx.sql.conn.set_trace_callback(statements.append)

    await host.call(COORDINATOR, trace)
    await store.list_agents(clock.now_ms(), 1000)
    await store.list_tasks(c.ListTasks(None, None, 1000))
    await store.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))  # a write: one stamp read back
    assert not [s for s in statements if s.startswith("SELECT stamp")]
    assert len([s for s in statements if "_change_stamps s" in s]) == 1


def chat_query(clock: FakeClock, agent_id: str | None = None) -> c.ChatQuery:
    return c.ChatQuery(
        limit=50, since_ms=None, since_invalid=False, agent_id=agent_id, inbox=False, now_ms=clock.now_ms()
    )


async def test_a_read_served_from_memory_opens_no_transaction(host: ActorHost, clock: FakeClock) -> None:
    """A listing and a chat read answered from the copies run one statement, `PRAGMA
    data_version`, and no BEGIN or COMMIT (issue 13); a write still runs in a transaction."""
    store = ActorStore(host)
    await store.register_agent(register("a", clock, status="active"))
    await store.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))  # every copy made
    await store.get_chat(chat_query(clock))
    statements: list[str] = []

    async def trace(actor: Any) -> None:
        actor.ctx.sql.conn.set_trace_callback(statements.append)

    await host.call(COORDINATOR, trace)
    agents = await store.list_agents(clock.now_ms(), 1000)
    await store.list_tasks(c.ListTasks(None, None, 1000))
    await store.get_chat(chat_query(clock))
    assert [a.agent_id for a in agents] == ["a"]
    assert statements == ["PRAGMA data_version"] * 3
    for write in (
        lambda: store.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000)),
        lambda: store.register_agent(register("a", clock, status="active")),
        lambda: store.get_chat(chat_query(clock, agent_id="a")),
    ):
        statements.clear()
        await write()
        assert statements[0] == "BEGIN"  # before the copies are checked: one snapshot, one pragma
        assert statements.count("PRAGMA data_version") == 1, statements
        assert statements[-1] == "COMMIT"


async def test_another_connections_commit_just_before_a_write_is_seen(
    tmp_path: Path, host: ActorHost, clock: FakeClock
) -> None:
    """A commit through another connection that lands between a turn's read of the copies and
    its first write (here: while the write's transaction begins) is seen by the next listing:
    the copy's check, the write and its read-back share one snapshot. (Without that, the copy
    would take the read-back's stamp, which covers the other commit too, as its own.)"""
    store = ActorStore(host)
    for name in ("a", "b"):
        await store.register_agent(register(name, clock, status="active"))
        await clock.advance(1)
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["b", "a"]
    other = sqlite3.connect(actor_path(tmp_path, COORDINATOR), isolation_level=None)
    armed = [True]

    def commit_elsewhere_at_begin(statement: str) -> None:
        if statement == "BEGIN" and armed[0]:
            armed[0] = False
            other.execute("UPDATE agents SET status = 'offline' WHERE agent_id = 'b'")

    async def listed_then_touched(actor: Any) -> list[str]:
        listed = [a.agent_id for a in await actor.list_agents(clock.now_ms(), 1000)]
        actor.ctx.sql.conn.set_trace_callback(commit_elsewhere_at_begin)
        try:
            await actor.register_agent(register("a", clock, status="active"))  # a write
        finally:
            actor.ctx.sql.conn.set_trace_callback(None)
        return listed

    try:
        await clock.advance(1)
        assert await host.call(COORDINATOR, listed_then_touched) == ["b", "a"]
    finally:
        other.close()
    assert not armed[0], "the other connection never committed"
    assert [a.agent_id for a in await store.list_agents(clock.now_ms(), 1000)] == ["a"]
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["a"]


async def _loads(actor: Any) -> int:
    return actor.roster.loads  # type: ignore[no-any-return]


async def test_mentions_are_found_whoever_wrote_the_message(host: ActorHost, clock: FakeClock) -> None:
    store, replica = ActorStore(host), ActorReplica(host)
    await store.post_chat(c.PostChat("m1", "bob", "agent", "@ann look", clock.now_ms()))
    stamp = iso_from_ms(clock.now_ms())

    async def write(ident: str, text: str) -> None:
        msg = GroupMessage(ident, "cy", "agent", text, stamp)
        await replica.write_entity(EntityKey("chat", "", ident), msg)

    await write("m2", "hi @all")
    await write("m3", "no one")
    await write("m3", "@ann too")  # an edit that adds the mention
    await write("m2", "hi all")  # and one that removes it
    bundle = await store.work_bundle(c.WorkQuery("ann", clock.now_ms(), 1000))
    assert [m.id for m in bundle.pending_mentions] == ["m1", "m3"]


async def test_a_database_from_before_the_mention_rows_is_filled_once(
    tmp_path: Path, host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.post_chat(c.PostChat("m1", "bob", "agent", "@ann look", clock.now_ms()))
    await store.post_chat(c.PostChat("m2", "bob", "agent", "plain", clock.now_ms()))

    async def drop(actor: Any) -> None:  # as a coordinator file written before the table was
        for name in ("_mention_rows_insert", "_mention_rows_update", "_mention_rows_delete"):
            actor.ctx.sql.exec(f"DROP TRIGGER {name}")
        actor.ctx.sql.exec("DROP TABLE _mention_rows")

    await host.call(COORDINATOR, drop)
    assert await host.evict(COORDINATOR)
    bundle = await store.work_bundle(c.WorkQuery("ann", clock.now_ms(), 1000))
    assert [m.id for m in bundle.pending_mentions] == ["m1"]


def tasks_by_query(actor: Any, status: str | None, assignee: str | None, limit: int) -> list[Task]:
    clauses = [c for c, v in (("status = ?", status), ("assignee = ?", assignee)) if v is not None]
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    params = [v for v in (status, assignee) if v is not None]
    rows = actor.ctx.sql.exec(
        f"SELECT {TASK_COLS} FROM tasks {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",  # noqa: S608
        *params,
        limit,
    ).all()
    return [task_from_row(r) for r in rows]


async def assert_tasks_match(host: ActorHost) -> list[list[str]]:
    """Every filter the API offers, against the query, at two limits; returns the ids listed."""

    async def both(actor: Any) -> list[list[str]]:
        listed = []
        for status, assignee in ((None, None), ("todo", None), (None, "ann"), ("todo", "ann"), ("done", "x")):
            for limit in (1000, 2):
                served = await actor.list_tasks(c.ListTasks(status, assignee, limit))
                queried = tasks_by_query(actor, status, assignee, limit)
                assert served == queried
                assert_renders_alike(served, queried)
                listed.append([t.id for t in served])
        return listed

    result: list[list[str]] = await host.call(COORDINATOR, both)
    return result


async def test_task_listings_follow_every_writer(host: ActorHost, clock: FakeClock) -> None:
    store, replica = ActorStore(host), ActorReplica(host)
    gen = IdGenerator(random.Random(7))
    for i in range(6):  # two tasks in each millisecond: the rowid breaks the tie
        body = {"id": f"t{i}", "title": f"task {i}", "assignee": "ann" if i % 2 else None}
        await store.create_task(c.CreateTask.parse(body, clock.now_ms(), gen))
        if i % 2:
            await clock.advance(1)
    assert (await assert_tasks_match(host))[0] == ["t5", "t4", "t3", "t2", "t1", "t0"]

    await store.update_task(c.UpdateTask.parse({"id": "t3", "status": "done"}, clock.now_ms()))
    await store.update_task(c.UpdateTask.parse({"id": "t0", "assignee": "ann"}, clock.now_ms()))
    listed = await assert_tasks_match(host)
    assert listed[2] == ["t5", "t4", "t2", "t1", "t0"]  # todo
    assert listed[4] == ["t5", "t3", "t1", "t0"]  # ann's

    stamp = iso_from_ms(clock.now_ms() + 1)
    newer = Task("t9", "from redis", None, "todo", "ann", "x", "low", [], [], stamp, stamp)
    await replica.write_entity(EntityKey("task", "", "t9"), newer)
    await replica.write_entity(EntityKey("task", "", "t5"), None)

    async def raw(actor: Any) -> None:
        actor.ctx.sql.exec("UPDATE tasks SET status = 'done', assignee = 'x' WHERE id = 't4'")

    await host.call(COORDINATOR, raw)
    listed = await assert_tasks_match(host)
    assert listed[0] == ["t9", "t4", "t3", "t2", "t1", "t0"]
    assert listed[8] == ["t4"]  # done and x's


async def test_chat_reads_follow_every_writer(tmp_path: Path, clock: FakeClock) -> None:
    """The window keeps the newest 5 messages here: every read of at most 5 is answered as the
    query answers it, with and without `since`, after posts, replicated and raw writes."""
    limits = LimitSettings(list_limit_max=5, chat_limit_default=5)
    host = build_actor_host(tmp_path, limits, clock=clock)
    await host.start()
    store, replica = ActorStore(host), ActorReplica(host)

    async def assert_chat_matches() -> list[str]:
        async def both(actor: Any) -> list[str]:
            for limit in (1, 3, 5):
                for since in (None, iso_from_ms(NOW + 2), iso_from_ms(NOW + 100)):
                    served = actor._newest_messages(limit, since)
                    actor.chat_window.size = 0  # the query, as before the window
                    queried = actor._newest_messages(limit, since)
                    assert served == queried
                    assert_renders_alike(served, queried)
                    actor.chat_window.size = 5
            return [m.id for m in actor._newest_messages(5)]

        result: list[str] = await host.call(COORDINATOR, both)
        return result

    try:
        for i in range(8):  # two messages in each millisecond
            await store.post_chat(c.PostChat(f"m{i}", "bob", "agent", f"hello {i}", clock.now_ms()))
            if i % 2:
                await clock.advance(1)
        assert await assert_chat_matches() == ["m3", "m4", "m5", "m6", "m7"]

        late = GroupMessage("old", "cy", "agent", "late", iso_from_ms(NOW))  # older than the window
        await replica.write_entity(EntityKey("chat", "", "old"), late)
        newer = GroupMessage("new", "cy", "agent", "from redis", iso_from_ms(NOW + 50))
        await replica.write_entity(EntityKey("chat", "", "new"), newer)
        assert await assert_chat_matches() == ["m4", "m5", "m6", "m7", "new"]

        await replica.write_entity(EntityKey("chat", "", "m6"), None)
        await store.post_chat(c.PostChat("m8", "bob", "agent", "again", NOW + 1))  # an old time
        assert await assert_chat_matches() == ["m8", "m4", "m5", "m7", "new"]  # m8 is after m3
    finally:
        await host.close()


async def test_chat_pages_follow_seeded_posts_replacements_and_deletes(  # noqa: PLR0915 - one scenario
    tmp_path: Path, clock: FakeClock
) -> None:
    """Seeded posts (several in one millisecond, some at an older time), replicated rewrites and
    deletes, with pages of every size read between them: each page, and its answer's bytes, are
    the query's; the window renders each message's JSON once (a page after a post renders the
    new message alone)."""
    limits = LimitSettings(list_limit_max=6, chat_limit_default=6)
    host = build_actor_host(tmp_path, limits, clock=clock)
    await host.start()
    store, replica = ActorStore(host), ActorReplica(host)
    rng = random.Random(21)
    rendered: list[str] = []

    async def pages(actor: Any) -> None:
        window = actor.chat_window
        render = window._fragment

        def counted(message: GroupMessage) -> bytes:
            rendered.append(message.id)
            return bytes(render(message))

        window._fragment = counted
        try:
            for limit in (0, 1, 2, 6):
                served = actor._newest_messages(limit)
                window.size = 0  # the query, as before the window
                queried = actor._newest_messages(limit)
                window.size = 6
                assert served == queried
                assert_renders_alike(served, queried)
                page = ChatPage(served)
                assert page.answer() == orjson.dumps(ChatPage(queried).to_json())
        finally:
            window._fragment = render

    async def write(step: int, op: int) -> None:
        if op <= 2:
            ident = f"m{step}"
            when = clock.now_ms() - rng.choice((0, 0, 5))
            await store.post_chat(c.PostChat(ident, "bob", "agent", f"hi {step} \u00e9", when))
            ids.append(ident)
        elif op == 3:
            ident = rng.choice(ids)
            again = GroupMessage(ident, "cy", "agent", f"edited {step}", iso_from_ms(clock.now_ms()))
            await replica.write_entity(EntityKey("chat", "", ident), again)
        elif op == 4:
            ident = ids.pop(rng.randrange(len(ids)))
            await replica.write_entity(EntityKey("chat", "", ident), None)
        else:
            await clock.advance(rng.choice((0, 1)))

    ids: list[str] = []
    try:
        for step in range(60):
            op = rng.randrange(6) if ids else 0
            await write(step, op)
            rendered.clear()
            await host.call(COORDINATOR, pages)
            assert len(rendered) == len(set(rendered))  # each message rendered at most once a step
            if op <= 2:  # a post: the new message alone, if it is among the newest
                assert set(rendered) <= {ids[-1]}
        rendered.clear()
        await host.call(COORDINATOR, pages)  # nothing changed: nothing rendered
        assert rendered == []
    finally:
        await host.close()


async def test_a_listing_asked_again_drops_agents_as_they_age(tmp_path: Path, clock: FakeClock) -> None:
    """The same listing is handed out again while nothing changed, but an agent that became
    older than the offline window leaves it without any write."""
    # an idle coordinator is never evicted here: the copy in memory answers throughout
    host = build_actor_host(tmp_path, LIMITS, clock=clock, host_limits=HostLimits(idle_timeout_s=1e9))
    await host.start()
    try:
        store = ActorStore(host)
        await store.register_agent(register("old", clock, status="active"))
        await clock.advance(60_000)
        await store.register_agent(register("new", clock, status="active"))
        first = await assert_listing_matches(host, clock)
        again = await assert_listing_matches(host, clock)
        assert again is first
        assert [a.agent_id for a in again] == ["new", "old"]
        await clock.advance(LIMITS.agent_offline_after_s * 1000 - 30_000)  # "old" is now too old
        assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["new"]
        assert host.activations == 1
    finally:
        await host.close()


def _as_texts(records: list[Any]) -> RenderedList:
    """A listing as the coordinator's copies hand it out: each record's JSON text kept (bytes)."""
    return RenderedList(records, rendered=[orjson.dumps(r.to_json()) for r in records])


def _as_fragments(records: list[Any]) -> RenderedList:
    """A listing as the legacy store hands it out: each record's JSON as an `orjson.Fragment`."""
    return RenderedList(records, lambda r: orjson.Fragment(orjson.dumps(r.to_json())))


def _rendered_by(records: list[Any]) -> RenderedList:
    """A listing whose records are rendered (as bytes) when it is first rendered."""
    return RenderedList(records, lambda r: orjson.dumps(r.to_json()))


@pytest.mark.parametrize("inbox", [False, True])
@pytest.mark.parametrize("mentions", [0, 2])
def test_pre_rendered_lists_render_as_plain_ones(inbox: bool, mentions: int) -> None:
    """`wire()` (pre-rendered lists, for the HTTP answer) gives the bytes `to_json()` gives, and
    so do the answers joined from their parts (`answer()`), whatever form the listing's records
    have (plain, JSON texts, fragments, rendered on demand), empty listings and text outside
    ASCII included."""
    stamp = iso_from_ms(NOW)
    agents = [Agent(f"a{i}", "active", 't\u00e9"', None, stamp, ["py"] if i else None) for i in range(3)]
    tasks = [
        Task(f"t{i}", "x\U0001f600", None, "todo", None, "c", "low", ["k"], [], stamp, stamp)
        for i in range(3)
    ]
    chat = [GroupMessage(f"m{i}", "bob", "agent", f"hi {i} @a0 \u2028", stamp) for i in range(3)]
    pending = chat[:mentions]
    for wrap in (list, RenderedList, _as_texts, _as_fragments, _rendered_by):
        for mine in (tasks[:1], []):
            bundle = WorkBundle("a0", wrap(agents), wrap(tasks), wrap(mine), wrap(chat), pending)
            assert orjson.dumps(bundle.wire()) == orjson.dumps(bundle.to_json())
            assert bundle.answer() == orjson.dumps(bundle.to_json())
            assert bundle.answer() == bundle.answer()
            empty = WorkBundle("a\u00e9", wrap([]), wrap([]), wrap([]), wrap([]), pending)
            assert empty.answer() == orjson.dumps(empty.to_json())
        page = ChatPage(wrap(chat), "a0" if inbox or mentions else None, pending, inbox)
        assert orjson.dumps(page.wire()) == orjson.dumps(page.to_json())
        assert orjson.dumps(wire_list(wrap(agents))) == orjson.dumps([a.to_json() for a in agents])
        # the whole answers, kept with a RenderedList: the same bytes, asked once or again
        for _ in range(2):
            assert page.answer() == orjson.dumps(page.to_json())
            assert list_answer("agents", listed := wrap(agents)) == orjson.dumps(
                {"agents": [a.to_json() for a in agents]}
            )
            assert list_answer("tasks", listed) != list_answer("agents", listed)
    for kept in (RenderedList(tasks), _as_texts(tasks)):
        assert kept.answer("tasks") is kept.answer("tasks")
        assert kept.answer("tasks", count=True) == orjson.dumps(
            {"tasks": [t.to_json() for t in tasks], "count": 3}
        )
    assert RenderedList().answer("tasks", count=True) == b'{"tasks":[],"count":0}'


@pytest.mark.parametrize("n", [1, 2, 3, 1000])
def test_a_listing_of_json_texts_joins_as_orjson_renders_it(n: int) -> None:
    """The array joined in one copy (the brackets put onto the first and last texts) is the
    bytes orjson gives, and the listing's own texts are left as they were."""
    stamp = iso_from_ms(NOW)
    tasks = [
        Task(f"t{i}", f"x{i}\u00e9", None, "todo", None, "c", "low", [], [], stamp, stamp) for i in range(n)
    ]
    texts = [orjson.dumps(t.to_json()) for t in tasks]
    before = list(texts)
    listing = RenderedList(tasks, rendered=texts)
    assert listing.json_bytes() == orjson.dumps([t.to_json() for t in tasks])
    assert texts == before
    assert listing.answer("tasks", count=True) == orjson.dumps(
        {"tasks": [t.to_json() for t in tasks], "count": n}
    )


async def test_listings_follow_interleaved_writes_and_reads(host: ActorHost, clock: FakeClock) -> None:
    """Seeded random heartbeats, registrations (some offline), `/work`s, new tasks and task
    updates, with every listing read between them at several limits: each answer, and its JSON
    bytes, are the query's (the copies update their listings in place, row by row)."""
    store = ActorStore(host)
    rng = random.Random(13)
    gen = IdGenerator(random.Random(5))
    agents = [f"a{i}" for i in range(12)]
    for step in range(160):
        await clock.advance(rng.choice((0, 1, 7, 60_000)))
        op = rng.randrange(5)
        who = rng.choice(agents)
        if op == 0:
            status = rng.choice(("active", "busy", "offline", "idle"))
            await store.register_agent(register(who, clock, status=status))
        elif op == 1:
            await store.work_bundle(c.WorkQuery(who, clock.now_ms(), rng.choice((1000, 3))))
        elif op == 2:
            body = {"id": f"t{step}", "title": "x", "assignee": rng.choice((None, who))}
            await store.create_task(c.CreateTask.parse(body, clock.now_ms(), gen))
        elif op == 3:
            tasks = await store.list_tasks(c.ListTasks(None, None, 1000))
            if tasks:
                update = {"id": rng.choice(tasks).id, "status": rng.choice(("todo", "done", "in-progress"))}
                if rng.random() < 0.5:
                    update["assignee"] = rng.choice(agents)
                await store.update_task(c.UpdateTask.parse(update, clock.now_ms()))
        for limit in (1000, 3, 0):
            await assert_listing_matches(host, clock, limit)
        if step % 4 == 0:
            await assert_tasks_match(host)

        async def tasks_of(actor: Any, who: str = who) -> None:
            for status in (None, "todo", "in-progress"):
                for limit in (1000, 1):
                    served = await actor.list_tasks(c.ListTasks(status, who, limit))
                    queried = tasks_by_query(actor, status, who, limit)
                    assert served == queried
                    assert_renders_alike(served, queried)

        await host.call(COORDINATOR, tasks_of)


def wal_frames(wal: Path, page: int) -> int:
    """The frames a WAL file holds (its 32-byte header, then a 24-byte header per page)."""
    return (wal.stat().st_size - 32) // (page + 24)


async def test_a_heartbeat_that_keeps_the_status_commits_two_pages(
    tmp_path: Path, host: ActorHost, clock: FakeClock
) -> None:
    """A `/work` heartbeat of an active agent and a re-registration that keeps the status write
    the agent's row and the table's stamp: two WAL pages, not three (its `idx_agents_status`
    entry is not rewritten, issue 13). A change of status still rewrites it. Either way the row
    is what the upsert made of it."""
    store = ActorStore(host)
    for name in ("a", "b", "c"):
        await store.register_agent(register(name, clock, status="active", currentTask="t"))
        await clock.advance(1)
    path = actor_path(tmp_path, COORDINATOR)
    other = sqlite3.connect(path, isolation_level=None)
    page = int(other.execute("PRAGMA page_size").fetchone()[0])
    wal = path.with_name(f"{path.name}-wal")

    async def pages_of(write: Any) -> int:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await write()
        return wal_frames(wal, page)

    seen: dict[str, str] = {}
    try:
        await clock.advance(1)
        seen["a"] = iso_from_ms(clock.now_ms())
        assert await pages_of(lambda: store.work_bundle(c.WorkQuery("a", clock.now_ms(), 1000))) == 2
        await clock.advance(1)
        seen["b"] = iso_from_ms(clock.now_ms())
        assert await pages_of(lambda: store.register_agent(register("b", clock, status="active"))) == 2
        await clock.advance(1)
        assert await pages_of(lambda: store.register_agent(register("c", clock, status="busy"))) == 3
        await clock.advance(1)
        seen["c"] = iso_from_ms(clock.now_ms())
        assert await pages_of(lambda: store.work_bundle(c.WorkQuery("c", clock.now_ms(), 1000))) == 3
        query = "SELECT agent_id, status, current_task, last_seen FROM agents"
        rows = {r[0]: r[1:] for r in other.execute(query)}
    finally:
        other.close()
    assert rows == {name: ("active", "t", seen[name]) for name in ("a", "b", "c")}
    assert [a.agent_id for a in await assert_listing_matches(host, clock)] == ["c", "b", "a"]


def test_a_listing_renders_each_row_once_whatever_the_order_of_writes() -> None:
    """The copies' ordered rows (`_Listing`): seeded random adds, removes, loads and listings
    at several offsets and limits. Every listing carries each row's own JSON, newest first; a
    row is rendered once while it stays (found through the keys not rendered yet, not by looking
    at every row), and no key is left waiting for its JSON once a listing covered it; the keys
    waiting are kept in order."""
    rng = random.Random(29)
    listing = _Listing()
    rows: dict[Key, str] = {}
    renders: list[str] = []

    def render(record: str) -> bytes:
        renders.append(record)
        return orjson.dumps({"r": record})

    for step in range(600):
        op = rng.randrange(10)
        if op < 4 or not rows:  # a written row
            key: Key = (f"{rng.randrange(50):03d}", rng.randrange(1_000), f"id{step}")
            rows[key] = f"rec{step}"
            listing.add(key, rows[key], False)
        elif op < 6:
            gone = rng.choice(sorted(rows))
            del rows[gone]
            listing.remove(gone)
        elif op == 6:  # a load: every row again, unsorted, then sorted once
            listing = _Listing()
            for key in rng.sample(sorted(rows), len(rows)):
                listing.add(key, rows[key], True)
            listing.sort()
        else:
            lo, limit = rng.randrange(len(rows) + 1), rng.choice((1, 3, 50, 1_000))
            before = len(renders)
            out = listing.newest(lo, limit, render)
            keys = sorted(rows)
            expected = [rows[k] for k in keys[max(lo, len(keys) - limit) :]][::-1]
            assert list(out) == expected
            assert orjson.dumps(out.json()) == orjson.dumps([{"r": r} for r in expected])
            assert out.answer("rows") == orjson.dumps({"rows": [{"r": r} for r in expected]})
            assert len(set(renders[before:])) == len(renders) - before  # none rendered twice
            shown = set(keys[max(lo, len(keys) - limit) :])
            assert not shown & set(listing.pending)
        unrendered = [k for k, r in zip(listing.keys, listing.rendered, strict=True) if r is None]
        assert listing.pending == unrendered
        assert listing.keys == sorted(rows)
