"""The checker's comparison and re-check rounds on in-memory stores (pure logic, fake clock)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from consistency.check import ACTORS_AHEAD, CheckAborted, Checker, CheckOptions, _state_text
from consistency.compare import Item, Kind, Value, classify, same
from consistency.report import Report, save
from consistency.rules import Expectations
from gateway.bulk.items import SAMPLE_RULE, Selection
from gateway.bulk.legacy_side import KnownConflict
from gateway.clock import FakeClock, settle
from gateway.domain.entities import EntityKey, Unreadable
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.model import Agent, Checkpoint, Claim, DirectMessage, GroupMessage, Lock, Memory, Task
from gateway.phases.reports import newest_report

from .memory import MemorySource

NOW = 1_795_627_727_041


def task(i: str, **kw: object) -> Task:
    base = Task(
        i,
        f"title {i}",
        None,
        "todo",
        None,
        "alice",
        "medium",
        [],
        [],
        iso_from_ms(NOW - 5000),
        iso_from_ms(NOW - 5000),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def lock(path: str, expires_ms: int) -> Lock:
    return Lock(
        path, "file-lock", "bob", None, iso_from_ms(NOW - 60_000), iso_from_ms(expires_ms), expires_ms
    )


def chat(i: int) -> GroupMessage:
    return GroupMessage(f"m{i:04d}", "alice", "agent", f"hello {i}", iso_from_ms(NOW - 100_000 + i))


def dataset() -> dict[EntityKey, Value]:
    """A little of every domain."""
    out: dict[EntityKey, Value] = {}
    for a in ("alice", "bob"):
        out[EntityKey("agent", "", a)] = Agent(a, "active", None, None, iso_from_ms(NOW), ["py"], [], [])
        out[EntityKey("checkpoint", a, a)] = Checkpoint(
            a, "sum", ["did"], [], None, ["f.py"], iso_from_ms(NOW)
        )
        out[EntityKey("dm", a, f"dm-{a}")] = DirectMessage(f"dm-{a}", "carol", "note", "hi", iso_from_ms(NOW))
        out[EntityKey("memory", a, f"mem-{a}")] = Memory(f"mem-{a}", "fact", "x", ["t"], iso_from_ms(NOW))
    for i in range(3):
        out[EntityKey("task", "", f"t{i}")] = task(f"t{i}")
        out[EntityKey("chat", "", f"m{i:04d}")] = chat(i)
    out[EntityKey("claim", "", "src/a.py")] = Claim("src/a.py", "alice", None, iso_from_ms(NOW))
    out[EntityKey("lock", "", "src/b.py")] = lock("src/b.py", NOW + 60_000)
    return out


def stores() -> tuple[MemorySource, MemorySource]:
    return MemorySource("legacy", dataset()), MemorySource("actors", dataset())


def checker(
    legacy: MemorySource,
    actors: MemorySource,
    clock: FakeClock,
    exp: Callable[[int], Expectations] | None = None,
    data_dir: Path | None = None,
) -> Checker:
    async def probe(now_ms: int) -> Expectations:
        return exp(now_ms) if exp is not None else Expectations(now_ms)

    return Checker(legacy, actors, clock, probe, data_dir=data_dir)


QUICK = CheckOptions(rounds=0)


def state_files(data_dir: Path) -> list[Path]:
    return list(data_dir.glob("consistency/run-*.state.json"))


async def test_the_same_data_checks_clean() -> None:
    legacy, actors = stores()
    report = await checker(legacy, actors, FakeClock(NOW)).run(QUICK)
    assert report.clean
    totals = report.totals()
    assert (totals.compared, totals.same, totals.differences) == (len(dataset()), len(dataset()), 0)


async def test_every_kind_of_difference_in_both_directions_is_counted_exactly() -> None:
    """Missing on either side, a differing field and unreadable values on either side, in
    several domains; the samples name the fields and show both values."""
    legacy, actors = stores()
    del actors.values[EntityKey("task", "", "t0")]
    del legacy.values[EntityKey("memory", "bob", "mem-bob")]
    actors.values[EntityKey("task", "", "t1")] = task("t1", status="done")
    legacy.values[EntityKey("dm", "alice", "dm-alice")] = Unreadable(
        EntityKey("dm", "alice", "dm-alice"), "{oops", "not JSON"
    )
    actors.values[EntityKey("lock", "", "src/b.py")] = Unreadable(
        EntityKey("lock", "", "src/b.py"), "{}", "no lockedBy"
    )
    report = await checker(legacy, actors, FakeClock(NOW)).run(QUICK)
    assert not report.clean
    doc = report.to_json()
    assert doc["totals"]["differences"] == 5
    assert (doc["domains"]["task"]["missingInActors"], doc["domains"]["task"]["differs"]) == (1, 1)
    assert doc["domains"]["memory"]["missingInLegacy"] == 1
    assert doc["domains"]["dm"]["unreadable"] == 1
    assert doc["domains"]["lock"]["unreadable"] == 1
    differs = next(s for s in doc["samples"] if s["kind"] == "differs")
    assert differs["fields"] == ["status"]
    assert (differs["legacy"]["status"], differs["actors"]["status"]) == ("todo", "done")
    unreadable = next(s for s in doc["samples"] if s["domain"] == "dm")
    assert unreadable["legacy"] == {"unreadable": "not JSON", "raw": "{oops"}
    assert sum(d["same"] for d in doc["domains"].values()) == len(dataset()) - 5


async def test_expected_differences_are_counted_apart_with_their_rule() -> None:
    """Chat beyond the legacy window, expired locks, fields the legacy writers drop, legacy claim
    conflicts and actor-only domains: counted apart, the report stays clean."""
    legacy, actors = stores()
    bad = EntityKey("task", "", "t9")
    legacy.values[bad] = Unreadable(bad, '{"id": "t9", ', "not JSON")  # never imported
    del legacy.values[EntityKey("chat", "", "m0000")]  # older than the window's oldest (m0001)
    legacy.values[EntityKey("lock", "", "old")] = lock("old", NOW - 1)  # expired, gone from the actors
    legacy.values[EntityKey("agent", "", "alice")] = Agent(
        "alice", "active", None, None, iso_from_ms(NOW), [], [], []
    )
    actors.values[EntityKey("soul", "alice", "soul")] = Memory("soul", "soul", "s", [], iso_from_ms(NOW))

    def exp(now_ms: int) -> Expectations:
        return Expectations(
            now_ms,
            chat_oldest_ms=NOW - 100_000 + 1,
            claim_conflicts=(("src/a.py", "bob"),),
            actor_only=frozenset({"soul"}),
        )

    report = await checker(legacy, actors, FakeClock(NOW), exp).run(
        CheckOptions(rounds=0, domains=(*CheckOptions().domains, "soul"))
    )
    doc = report.to_json()
    assert report.clean, doc["samples"]
    assert doc["totals"]["expected"] == {
        "actor-only": 1,
        "carried-fields": 1,
        "chat-window": 1,
        "claim-conflicts": 1,
        "expired-locks": 1,
        "unreadable-legacy": 1,
    }
    assert doc["expectedRules"]["chat-window"]["rule"] == "docs/mapping.md#chat-window"
    carried = next(s for s in doc["expectedSamples"] if s["rule"] == "docs/mapping.md#carried-fields")
    assert carried["fields"] == ["capabilities"]


async def test_expected_differences_beyond_the_samples_are_counted_and_the_kept_ones_shown() -> None:
    """More expired locks than a domain keeps samples of: each one counted, the first ones kept
    with their value shown (the walk does not render the others)."""
    legacy, actors = stores()
    for i in range(7):
        legacy.values[EntityKey("lock", "", f"old{i}")] = lock(f"old{i}", NOW - 1)
    report = await checker(legacy, actors, FakeClock(NOW)).run(CheckOptions(rounds=0, max_samples=3))
    doc = report.to_json()
    assert report.clean
    assert doc["domains"]["lock"]["expected"] == {"expired-locks": 7}
    kept = [s for s in doc["expectedSamples"] if s["domain"] == "lock"]
    assert [s["id"] for s in kept] == ["old0", "old1", "old2"]
    assert all(s["legacy"]["resourcePath"] == s["id"] and s["actors"] is None for s in kept)


def test_a_dropped_field_that_is_not_carried_is_a_difference() -> None:
    """The carried-fields rule covers only empty legacy arrays of the fields its writers drop."""
    exp = Expectations(NOW)
    key = EntityKey("agent", "", "a")
    a = Agent("a", "active", None, None, None, ["x"], [], [])
    b = Agent("a", "busy", None, None, None, ["x"], [], [])
    assert classify(key, a, b, exp).fields == ("status",)
    c = Agent("a", "active", None, None, None, ["y"], [], [])
    assert classify(key, c, a, exp).kind is Kind.DIFFERS  # legacy holds another value, not none


def test_json_data_equality_is_strict_about_types() -> None:
    assert same({"a": 1, "b": [1.0]}, {"b": [1], "a": 1})
    assert not same(True, 1)
    assert not same([0], [False])
    assert not same(None, "")


async def run_with_clock(clock: FakeClock, coro: object, between: Callable[[int], None]) -> Report:
    """Run a check; each time it waits for the re-check delay, call `between(n)` then let the
    delay pass."""
    t = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    n = 0
    for _ in range(100):
        await settle()
        if t.done():
            break
        if clock.sleepers:
            between(n)
            n += 1
            await clock.advance(2000)
    assert t.done()
    return t.result()  # type: ignore[no-any-return]


async def test_writes_in_flight_settle_in_the_re_check_and_persistent_ones_are_reported() -> None:
    """A difference that a write in flight fixes before the re-check is no mismatch (counted as
    settled); one left in place through every round is reported."""
    legacy, actors = stores()
    clock = FakeClock(NOW)
    in_flight = EntityKey("task", "", "t2")
    actors.values[in_flight] = task("t2", title="new title")  # the actors have it, Redis not yet
    left = EntityKey("memory", "alice", "mem-alice")
    del actors.values[left]

    def between(n: int) -> None:
        if n == 0:
            legacy.values[in_flight] = task("t2", title="new title")  # the replication arrives

    report = await run_with_clock(
        clock, checker(legacy, actors, clock).run(CheckOptions(rounds=3, delay_s=2)), between
    )
    doc = report.to_json()
    assert doc["domains"]["task"]["settled"] == 1
    assert doc["domains"]["task"]["differences"] == 0
    assert doc["domains"]["memory"]["missingInLegacy"] == 0
    assert doc["domains"]["memory"]["missingInActors"] == 1
    assert doc["totals"]["differences"] == 1
    assert legacy.reads == 3  # three rounds re-read the one that stayed


def agent(name: str, seen_ms: int, status: str = "active") -> Agent:
    return Agent(name, status, None, None, iso_from_ms(seen_ms), ["py"], [], [])


class LiveLegacy(MemorySource):
    """Redis beside a live writer: each read of it lands a new write of the `hot` agents (Redis
    first) and the previous write's copy in `actors` (the gateway's replication), except for the
    `stuck` ones, whose copies never arrive. So every read pair catches the write in flight."""

    def __init__(self, values: dict[EntityKey, Value], actors: MemorySource, hot: set[EntityKey]) -> None:
        super().__init__("legacy", values)
        self.actors = actors
        self.hot = hot
        self.stuck: set[EntityKey] = set()

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Value | None]:
        for key in self.hot:
            before = self.values[key]
            assert isinstance(before, Agent)
            if key not in self.stuck:
                self.actors.values[key] = before
            seen = (parse_js_date(before.last_seen or "") or 0) + 1000
            self.values[key] = agent(key.id, seen, f"s{seen}")
        return await super().read_many(keys)


async def test_a_key_written_all_the_time_is_no_mismatch_but_a_copy_that_stays_behind_is() -> None:
    """A writer rewrites two agents through the gateway before every read of the check: each
    round finds Redis one write ahead of the actors. Where the actors then hold the version Redis
    had, the difference was a write in flight (settled); where they never get it (a lost
    replication), and where both hold the same version with other content, it is reported."""
    _, actors = stores()
    hot, stuck = EntityKey("agent", "", "alice"), EntityKey("agent", "", "bob")
    same_version = EntityKey("agent", "", "carol")
    legacy = LiveLegacy(dataset(), actors, {hot, stuck})
    legacy.stuck.add(stuck)
    for key in (hot, stuck):  # the walk too finds Redis a write ahead
        legacy.values[key] = agent(key.id, NOW + 1000, "s0")
    legacy.values[same_version] = agent("carol", NOW, "busy")
    actors.values[same_version] = agent("carol", NOW, "idle")
    clock = FakeClock(NOW)
    report = await run_with_clock(
        clock, checker(legacy, actors, clock).run(CheckOptions(rounds=3, delay_s=2)), lambda _n: None
    )
    doc = report.to_json()
    assert sorted(s["key"] for s in doc["samples"]) == ["agent:bob", "agent:carol"]
    assert doc["domains"]["agent"]["differs"] == 2
    assert doc["domains"]["agent"]["settled"] == 1
    assert doc["totals"]["differences"] == 2


async def test_sampling_finds_a_seeded_difference_at_the_expected_rate() -> None:
    """With --sample 0.1, the same keys are compared on both sides; over seeds, about a tenth of
    1,000 planted differences are found, and the same seed picks the same keys."""
    legacy, actors = MemorySource("legacy"), MemorySource("actors")
    for i in range(2000):
        k = EntityKey("task", "", f"t{i:05d}")
        legacy.values[k] = task(k.id)
        actors.values[k] = task(k.id, status="done") if i % 2 else task(k.id)
    found = []
    for seed in (1, 2, 3, 4):
        report = await checker(legacy, actors, FakeClock(NOW)).run(
            CheckOptions(rounds=0, sample=0.1, seed=seed)
        )
        t = report.totals()
        assert 150 <= t.compared <= 250
        found.append(t.differs)
        assert t.differs + t.same == t.compared
        assert not report.to_json()["scope"]["full"]
    assert all(60 <= n <= 140 for n in found), found
    again = await checker(legacy, actors, FakeClock(NOW)).run(CheckOptions(rounds=0, sample=0.1, seed=1))
    assert again.totals().differs == found[0]


async def test_domain_and_agent_filters() -> None:
    legacy, actors = stores()
    del actors.values[EntityKey("dm", "bob", "dm-bob")]
    del actors.values[EntityKey("task", "", "t0")]
    only_alice = await checker(legacy, actors, FakeClock(NOW)).run(CheckOptions(rounds=0, agents=("alice",)))
    assert only_alice.clean
    assert set(only_alice.domains) == {"agent", "checkpoint", "dm", "memory"}
    bob_dms = await checker(legacy, actors, FakeClock(NOW)).run(
        CheckOptions(rounds=0, domains=("dm",), agents=("bob",))
    )
    assert bob_dms.totals().missing_in_actors == 1
    assert bob_dms.totals().compared == 1


async def test_a_store_failing_mid_check_is_incomplete_and_a_resumed_run_finishes(tmp_path: Path) -> None:
    """The scan breaks after some entities: the check aborts with an incomplete report and a
    saved state; `resume` continues after the last key and ends with the full counts."""
    legacy, actors = stores()
    del actors.values[EntityKey("task", "", "t0")]
    legacy.fail_after = 7
    c = checker(legacy, actors, FakeClock(NOW), data_dir=tmp_path)
    opts = CheckOptions(rounds=0, batch=2, checkpoint_every=1)
    with pytest.raises(CheckAborted) as aborted:
        await c.run(opts)
    incomplete = aborted.value.report
    assert not incomplete.complete
    assert "went away" in (incomplete.incomplete_reason or "")
    save(incomplete, tmp_path)
    info = newest_report(tmp_path)
    assert info is not None
    assert (info.complete, info.clean) == (False, False)
    legacy.fail_after = None
    resumed = await c.run(dataclasses.replace(opts, resume=True))
    assert resumed.run_id == incomplete.run_id
    assert resumed.totals().compared == len(dataset())
    assert resumed.totals().missing_in_actors == 1
    assert not state_files(tmp_path)


@pytest.mark.parametrize("rule", [1, 2])
async def test_a_saved_sampled_check_of_an_older_sampling_rule_is_not_resumed(
    tmp_path: Path, rule: int
) -> None:
    """A sampled check saved by a version with another sampling rule chose other keys: resuming
    it would mix two samples. It is not resumed: removed, said why, and the check starts over.
    Rule 1 saved no rule; rule 2 (SHA-1) saved its number."""
    legacy, actors = stores()
    legacy.fail_after = 7
    c = checker(legacy, actors, FakeClock(NOW), data_dir=tmp_path)
    opts = CheckOptions(rounds=0, batch=2, checkpoint_every=1, sample=0.5, seed=3)
    with pytest.raises(CheckAborted) as aborted:
        await c.run(opts)
    [saved] = state_files(tmp_path)
    state = json.loads(saved.read_text(encoding="utf-8"))
    assert state["scope"]["sampleRule"] == SAMPLE_RULE
    if rule == 1:
        del state["scope"]["sampleRule"]  # as rule 1 saved it
    else:
        state["scope"]["sampleRule"] = rule
    saved.write_text(json.dumps(state), encoding="utf-8")
    legacy.fail_after = None
    again = await c.run(dataclasses.replace(opts, resume=True))
    assert again.run_id != aborted.value.report.run_id
    assert again.complete
    assert [line for line in c.not_resumed if f"sampling rule {rule}," in line and "not resumed" in line]
    assert not state_files(tmp_path)
    fresh = await checker(legacy, actors, FakeClock(NOW)).run(dataclasses.replace(opts, resume=False))
    assert again.totals().compared == fresh.totals().compared


async def test_a_full_check_saved_before_sampling_rules_were_recorded_is_resumed(tmp_path: Path) -> None:
    """A full check needs no sampling rule: one saved without it (before rule 2) goes on."""
    legacy, actors = stores()
    legacy.fail_after = 7
    c = checker(legacy, actors, FakeClock(NOW), data_dir=tmp_path)
    opts = CheckOptions(rounds=0, batch=2, checkpoint_every=1)
    with pytest.raises(CheckAborted) as aborted:
        await c.run(opts)
    [saved] = state_files(tmp_path)
    state = json.loads(saved.read_text(encoding="utf-8"))
    del state["scope"]["sampleRule"]
    saved.write_text(json.dumps(state), encoding="utf-8")
    legacy.fail_after = None
    resumed = await c.run(dataclasses.replace(opts, resume=True))
    assert resumed.run_id == aborted.value.report.run_id
    assert resumed.totals().compared == len(dataset())
    assert not c.not_resumed


class _Counted(MemorySource):
    """A store that counts the batches its scan has produced (`enough` is set at `wanted`) and
    notes whether the scan was closed."""

    def __init__(self, name: str, values: dict[EntityKey, Value], wanted: int = 1) -> None:
        super().__init__(name, values)
        self.produced = 0
        self.wanted = wanted
        self.enough = asyncio.Event()
        self.closed = False

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        try:
            async for items in super().scan(selection, start_after=start_after, batch=batch):
                self.produced += 1
                if self.produced >= self.wanted:
                    self.enough.set()
                yield items
        finally:
            self.closed = True


class _Watching(MemorySource):
    """A legacy store that notes, in `seen`, how many batches `other` had produced when its scan
    produced its first (set by the subclasses' `scan`)."""

    def __init__(self, name: str, values: dict[EntityKey, Value], other: _Counted) -> None:
        super().__init__(name, values)
        self.other = other
        self.seen: int | None = None


class _SlowStart(_Watching):
    """A legacy store whose scan lists its keys for a while before its first batch (as the real
    one sorts a domain's keys first): it waits for `other` to have produced its `wanted` batches,
    at most a second, and notes how many it had."""

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.other.enough.wait(), 1.0)
        self.seen = self.other.produced
        async for items in super().scan(selection, start_after=start_after, batch=batch):
            yield items


def _tasks(n: int) -> dict[EntityKey, Value]:
    return {EntityKey("task", "", f"t{i:05d}"): task(f"t{i:05d}") for i in range(n)}


async def test_a_sampled_check_reads_the_actors_while_the_legacy_scan_lists_its_keys() -> None:
    """The comparison waits for the legacy scan's first batch of a domain (its keys are listed
    and sorted first); a sampled check reads the actor side's batches meanwhile, up to
    `ACTORS_AHEAD` (and no more), and reports the same as without the wait. A full check reads
    none ahead."""
    opts = CheckOptions(rounds=0, sample=0.5, seed=3, batch=10)
    actors = _Counted("actors", _tasks(2000), wanted=ACTORS_AHEAD + 5)
    legacy = _SlowStart("legacy", _tasks(2000), actors)
    report = await checker(legacy, actors, FakeClock(NOW)).run(opts)
    assert legacy.seen == ACTORS_AHEAD + 1  # the queue's and the one waiting to be put: no more
    plain = await checker(
        MemorySource("legacy", _tasks(2000)), MemorySource("actors", _tasks(2000)), FakeClock(NOW)
    ).run(opts)
    assert report.domains == plain.domains
    assert report.clean
    assert 900 <= report.totals().compared <= 1100
    actors = _Counted("actors", _tasks(100))
    legacy = _SlowStart("legacy", _tasks(100), actors)
    full = await checker(legacy, actors, FakeClock(NOW)).run(CheckOptions(rounds=0, batch=10))
    assert (legacy.seen, full.totals().compared, full.clean) == (0, 100, True)


class _Turns(_Watching):
    """A legacy store whose scan waits on the event loop before its first batch (as a Redis
    reply does): it notes how many batches `other` had produced when it got its turn back."""

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        await asyncio.sleep(0)  # a reply that has arrived: the next turn of the loop takes it
        self.seen = self.other.produced
        async for items in super().scan(selection, start_after=start_after, batch=batch):
            yield items


async def test_reading_ahead_leaves_the_loop_to_the_other_scan_between_batches() -> None:
    """The actor side's reads never wait (SQLite in the loop's thread): the read-ahead gives
    the loop a turn after each batch, so the legacy scan's replies are taken as they arrive
    (not after `ACTORS_AHEAD` batches read in one go, which once made a Redis connection time
    out), and the report is the same."""
    opts = CheckOptions(rounds=0, sample=0.5, seed=3, batch=10)
    actors = _Counted("actors", _tasks(2000))
    legacy = _Turns("legacy", _tasks(2000), actors)
    report = await checker(legacy, actors, FakeClock(NOW)).run(opts)
    assert legacy.seen is not None
    assert legacy.seen <= 2  # one batch read, maybe the next: not ACTORS_AHEAD
    assert report.clean
    assert 900 <= report.totals().compared <= 1100


async def test_a_store_failing_during_a_sampled_check_ends_the_reading_ahead() -> None:
    """An actor store failing while read ahead aborts the check at that point, as it would
    without the read-ahead; a legacy store failing closes the actor scan read ahead (no task
    is left reading)."""
    opts = CheckOptions(rounds=0, sample=0.5, seed=3, batch=10)
    actors = _Counted("actors", _tasks(500))
    actors.fail_after = 100
    with pytest.raises(CheckAborted) as aborted:
        await checker(MemorySource("legacy", _tasks(500)), actors, FakeClock(NOW)).run(opts)
    assert "actors went away" in (aborted.value.report.incomplete_reason or "")
    assert 0 < sum(c.compared for c in aborted.value.report.domains.values()) <= 120
    legacy = MemorySource("legacy", _tasks(500))
    legacy.fail_after = 20
    actors = _Counted("actors", _tasks(500))
    with pytest.raises(CheckAborted) as aborted:
        await checker(legacy, actors, FakeClock(NOW)).run(opts)
    assert "legacy went away" in (aborted.value.report.incomplete_reason or "")
    assert actors.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}


class _LearningSource(MemorySource):
    """A legacy store whose scan learns a claim conflict per batch, as the claims' scan does."""

    def __init__(self, name: str, values: dict[EntityKey, Value]) -> None:
        super().__init__(name, values)
        self.conflicts: list[KnownConflict] = []
        self.saved: list[list[list[object]]] = []  # each saved state's conflicts, as saved
        self.data_dir: Path | None = None

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        async for items in super().scan(selection, start_after=start_after, batch=batch):
            if self.data_dir is not None:  # what the last save wrote, before this batch's
                for path in state_files(self.data_dir):
                    self.saved.append(json.loads(path.read_text())["claimConflicts"])
            n = len(self.conflicts)
            self.conflicts.append(KnownConflict(f"src/{n}.py", f"agent-{n}", [f"other-{n}:src/{n}.py"]))
            yield items


async def test_each_saved_state_holds_every_claim_conflict_learned_so_far(tmp_path: Path) -> None:
    """The saved state carries the claim conflicts (a resumed walk may not scan the claims
    again): each save holds all of them, those learned since the last save included, in order."""
    values = dataset()
    legacy, actors = _LearningSource("legacy", values), MemorySource("actors", values)
    legacy.fail_after = len(values) - 1
    legacy.data_dir = tmp_path
    c = checker(legacy, actors, FakeClock(NOW), data_dir=tmp_path)
    with pytest.raises(CheckAborted):
        await c.run(CheckOptions(rounds=0, batch=2, checkpoint_every=1))
    assert len(legacy.saved) >= 3
    for saved in legacy.saved:
        assert saved == [[f"src/{n}.py", f"agent-{n}", [f"other-{n}:src/{n}.py"]] for n in range(len(saved))]
    assert [len(s) for s in legacy.saved] == sorted(len(s) for s in legacy.saved)
    (path,) = state_files(tmp_path)  # the state the abort left: every conflict learned
    assert len(json.loads(path.read_text())["claimConflicts"]) == len(legacy.conflicts)


def test_a_state_orjson_refuses_is_written_by_the_standard_library() -> None:
    """A saved state holds store values (samples); one orjson refuses (an integer past 64 bits,
    which JSON allows) is written as before, and reads back the same."""
    state = {"samples": [{"value": {"n": 2**70}}], "walked": 3, "domains": {"task": 1}}
    assert json.loads(_state_text(state)) == state
    plain = {"walked": 3, "claimConflicts": [["src/a.py", "bob", ["carol:src/a.py"]]], "é": "ü"}
    assert json.loads(_state_text(plain)) == plain
