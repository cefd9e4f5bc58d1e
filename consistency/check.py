"""One consistency check: both stores walked side by side, mismatches re-checked, a report.

The two stores are `Source`s (the bulk layer's `EntitySource` role: a key-ordered, resumable
scan in batches, and `read_many` for given keys). The check

1. walks both scans together (`consistency.compare.merge`), keeps the keys the options select
   (domains, agents, a seeded sample) and classifies each pair;
2. re-reads every difference from both stores after `delay_s`, up to `rounds` times, so a write
   in flight while the check ran is no false alarm: only what persists is reported;
3. counts everything in a `Report`, with a bounded number of samples.

A long check saves its state (`run-<id>.state.json` in the reports directory) every
`checkpoint_every` keys; `resume=True` continues the newest unfinished run with the same scope.
Any failure of a store ends the check with `complete=False` and the reason (exit status 3).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol, cast

import orjson
import structlog

from consistency.compare import Finding, Item, Kind, Value, classify, merge_batches, sort_key
from consistency.compare import Pair as MergedPair
from consistency.legacy_form import same_as_read
from consistency.report import DomainCounts, Report, write_atomic
from consistency.rules import CLAIM_CONFLICTS, Expectations
from gateway.bulk.items import SAMPLE_RULE, EntitySource, Selection, cursor_of
from gateway.bulk.legacy_side import Deferred, KnownConflict, LegacySource
from gateway.bulk.versions import version
from gateway.clock import Clock
from gateway.domain.entities import DOMAINS, PER_AGENT, Entity, EntityKey, Unreadable
from gateway.phases.reports import reports_dir

log = structlog.get_logger(__name__)

STATE_SUFFIX: Final = ".state.json"

ACTORS_AHEAD: Final = 16
"""Batches of the actor scan a sampled check reads ahead of the comparison (`read_ahead`).

The legacy scan lists a domain's keys before it sends the domain's first batch (they are
sorted first), which at 1,000,000 kept the comparison waiting about 1.5 s at the start of the
tasks alone, the checking process idle; the actor side's sampled pages are read meanwhile now.
A sampled batch is a few MB at most, so the read-ahead holds a few tens of MB at most; a full
check, whose process tree is nearer the 300 MB aim and whose comparison waits little, reads no
batch ahead."""


Source = EntitySource
"""One store, entity by entity (the bulk layer's source)."""


class Scanner(Protocol):
    """What scans a store: a `Source`, or the legacy scan in a second process."""

    def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]: ...


ExpectationProbe = Callable[[int], Awaitable[Expectations]]
"""now_ms -> what the comparison must know of the legacy store (chat window, claim conflicts)."""

Progress = Callable[[int], None]
"""Called with the number of keys walked so far, once per batch."""


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """What to compare and how (the CLI's flags)."""

    domains: tuple[str, ...] = DOMAINS
    agents: tuple[str, ...] = ()
    sample: float = 1.0
    seed: int = 0
    rounds: int = 3
    delay_s: float = 2.0
    batch: int = 500
    max_samples: int = 20  # per domain, of the differences and of the expected ones
    checkpoint_every: int = 50_000
    resume: bool = False
    stores: dict[str, str] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return set(self.domains) >= set(DOMAINS) and not self.agents and self.sample >= 1.0

    def selection(self) -> Selection:
        """What the stores' scans select: the domains, and with agents only their own data."""
        domains = self.domains
        if self.agents:
            domains = tuple(d for d in domains if d == "agent" or d in PER_AGENT)
        return Selection(domains, frozenset(self.agents) if self.agents else None, self.sample, self.seed)

    def scope_json(self) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "agents": list(self.agents) or None,
            "sample": self.sample,
            "seed": self.seed if self.sample < 1.0 else None,
            "sampleRule": SAMPLE_RULE if self.sample < 1.0 else None,
            "full": self.full,
        }

    def document(self) -> dict[str, Any]:
        """The options as the report records them."""
        return {
            "scope": self.scope_json(),
            "recheck": {"rounds": self.rounds, "delayS": self.delay_s},
            "stores": dict(self.stores),
        }

    def selects(self, key: EntityKey) -> bool:
        """Whether the key is in the domains, the agents and the sample."""
        return self.selection().wants_key(key)


def _state_text(state: dict[str, Any]) -> str:
    """A saved state as JSON text: orjson (about 20 times faster than the standard library on
    the claim conflicts' 2 MB), else the standard library for what orjson refuses (an integer
    past 64 bits, text with a lone surrogate), as before."""
    try:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(state, ensure_ascii=False)


class CheckAborted(Exception):
    """A store failed during the check; `report` is the incomplete report."""

    def __init__(self, report: Report, reason: str) -> None:
        super().__init__(reason)
        self.report = report


@dataclass(slots=True)
class Part:
    """Part of a walk: its domains (in scan order) and how far it went (the cursor after its
    last key walked, None before the first)."""

    domains: tuple[str, ...]
    cursor: str | None = None
    walked: int = 0


Snapshot = dict[str, Any]
"""What a part of a walk found so far, as plain data (the pipe between the check's processes,
the saved state): `cursor`, `walked`, `domains` (counts JSON by domain), `expectedSamples`,
`samples`, `candidates` ([domain, scope, id])."""


class SecondPart(Protocol):
    """Walks one part of a check in another process, beside the walk of the checking process
    (`consistency.split.SplitWalk`)."""

    def domains(self, opts: CheckOptions) -> tuple[str, ...]:
        """The domains of `opts` it walks; none: the check is not split."""
        ...

    async def walk(
        self,
        part: Part,
        opts: CheckOptions,
        exp: Expectations,
        start: Snapshot,
        progress: Callable[[Snapshot], None],
    ) -> Snapshot:
        """Walks `part` on from `start` (its findings so far), calling `progress` with what it
        found up to each saved position; returns what it found in all."""
        ...


@dataclass(slots=True)
class _Run:
    report: Report
    candidates: list[EntityKey]
    parts: list[Part]
    other: Snapshot | None = None
    """What the part walked in the second process found so far (not yet in `report`)."""
    mine_done: bool = False
    """The checking process's own part is walked (a second part may still be walking)."""

    @property
    def walked(self) -> int:
        return sum(p.walked for p in self.parts)


class Checker:
    """Runs checks between `legacy` and `actors` (see the module doc)."""

    def __init__(
        self,
        legacy: Source,
        actors: Source,
        clock: Clock,
        expectations: ExpectationProbe,
        *,
        data_dir: Path | None = None,
        fast: bool = True,
        legacy_scan: Scanner | None = None,
        second: SecondPart | None = None,
    ) -> None:
        if fast and isinstance(legacy, LegacySource):
            legacy.defer = True  # values are mapped only when they differ (`classify`)
        self.legacy = legacy
        self.legacy_scan = legacy_scan or legacy
        """What the walk scans the legacy store with (`consistency.legacy_proc.ProcessScan`: in
        a second process); reads by key and the re-check rounds use `legacy`."""
        self.actors = actors
        self.second = second
        """Walks part of the domains in a second process (a check of a data directory): the
        checking process then walks its own part with `legacy` itself."""
        self.checkpoint: Callable[[_Run, CheckOptions], None] = self._save_state
        """Called with the run every `checkpoint_every` keys walked (the second process sends
        its snapshot instead of saving)."""
        self.clock = clock
        self.expectations = expectations
        self.data_dir = data_dir
        self.findings: list[Finding] = []
        """The differences the last run reported (all of them, for a repair)."""
        self.not_resumed: list[str] = []
        """Why saved checks of the same scope were not resumed by the last run (an older
        sampling rule): one line each, for the operator."""
        self._conflicts_saved: tuple[list[KnownConflict] | None, list[list[Any]]] = (None, [])
        """`legacy.conflicts` (a list that only grows) and its saved form, one entry a conflict:
        extended only with what was added since."""

    async def run(self, opts: CheckOptions, progress: Progress | None = None) -> Report:
        """The check; raises `CheckAborted` (with the incomplete report) when a store fails."""
        run = self._resumed(opts) if opts.resume else None
        if run is None:
            report = Report(Report.new_run_id(), self.clock.now_ms(), opts.document())
            run = _Run(report, [], [Part(opts.domains)])
        run.parts = self._plan(run.parts, opts)
        try:
            exp = await self.expectations(self.clock.now_ms())
            await self._walk(run, opts, exp, progress)
            findings = await self._recheck(run, opts)
            exp = await self.expectations(self.clock.now_ms())  # the scan found the claim conflicts
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            log.warning("consistency.check_aborted", reason=reason, walked=run.walked, exc_info=True)
            self._save_state(run, opts)
            run.report.finished_ms = self.clock.now_ms()
            run.report.incomplete_reason = reason
            raise CheckAborted(run.report, reason) from e
        self.findings = findings
        for f in findings:
            run.report.record(f, opts.max_samples)
        if "claim" in opts.domains:
            for what, by in sorted(set(exp.claim_conflicts)):
                if not opts.agents or by in opts.agents:
                    conflict = EntityKey("claim", by, what)
                    run.report.record(
                        Finding(conflict, Kind.EXPECTED, {"what": what, "by": by}, rule=CLAIM_CONFLICTS),
                        opts.max_samples,
                    )
        run.report.finished_ms = self.clock.now_ms()
        run.report.complete = True
        self._drop_state(run.report.run_id)
        return run.report

    def _plan(self, parts: list[Part], opts: CheckOptions) -> list[Part]:
        """The parts to walk: a walk of one part split in two when a second process takes some
        of its domains (each part goes on from the one cursor: every key up to it was walked,
        none after it), else as they are (a split walk resumed in one process: one part after
        the other)."""
        theirs = self.second.domains(opts) if self.second is not None else ()
        if len(parts) != 1 or not theirs:
            return parts
        (whole,) = parts
        mine = tuple(d for d in whole.domains if d not in theirs)
        if not mine or not set(theirs) & set(whole.domains):
            return parts
        split = tuple(d for d in whole.domains if d in theirs)
        return [Part(mine, whole.cursor, whole.walked), Part(split, whole.cursor)]

    async def _walk(
        self, run: _Run, opts: CheckOptions, exp: Expectations, progress: Progress | None
    ) -> None:
        if self.second is not None and len(run.parts) == 2:  # noqa: PLR2004 - mine and the second's
            await self._walk_split(run, opts, exp, progress)
        else:
            for part in run.parts:
                await self.walk_part(run, part, opts, exp, progress, self.legacy_scan)
            run.mine_done = True
        if len(run.parts) > 1:
            _in_domain_order(run)
        if progress is not None:
            progress(run.walked)
        log.info(
            "consistency.walked", run_id=run.report.run_id, walked=run.walked, to_recheck=len(run.candidates)
        )

    async def _walk_split(
        self, run: _Run, opts: CheckOptions, exp: Expectations, progress: Progress | None
    ) -> None:
        """The first part walked here (Redis read in this process), the second in the second
        process at the same time; what it found is added to the run once it is done."""
        second_part = cast("SecondPart", self.second)
        mine, theirs = run.parts
        run.other = take(run, theirs)

        def taken(snap: Snapshot) -> None:
            run.other = snap
            theirs.cursor, theirs.walked = snap["cursor"], snap["walked"]
            if progress is not None:
                progress(run.walked)
            if run.mine_done:  # else saved with the next save of this process's walk
                self.checkpoint(run, opts)

        second = asyncio.ensure_future(second_part.walk(theirs, opts, exp, run.other, taken))
        try:
            await self.walk_part(run, mine, opts, exp, progress, self.legacy)
            run.mine_done = True
            found = await second
        finally:
            if not second.done():
                second.cancel()
                await asyncio.gather(second, return_exceptions=True)
        theirs.cursor, theirs.walked = found["cursor"], found["walked"]
        put(run, found)
        run.other = None

    async def walk_part(  # noqa: PLR0917 - the run, the part, and how to walk it
        self,
        run: _Run,
        part: Part,
        opts: CheckOptions,
        exp: Expectations,
        progress: Progress | None,
        legacy_scan: Scanner,
    ) -> None:
        """One part's domains walked in both stores, from its cursor on."""
        selection = opts.selection()
        selection = replace(selection, domains=tuple(d for d in selection.domains if d in part.domains))
        if not selection.domains:
            return

        def scan(source: Scanner) -> AsyncIterator[list[Item]]:
            return source.scan(selection, start_after=part.cursor, batch=opts.batch)

        actor_batches = scan(self.actors)
        ahead = read_ahead(actor_batches, ACTORS_AHEAD) if selection.sampled else None
        if ahead is not None:
            actor_batches = ahead
        started = time.perf_counter()
        try:
            merged = merge_batches(scan(legacy_scan), actor_batches)
            await self._pairs(run, part, selection, opts, exp, progress, merged)
        finally:
            if ahead is not None:
                await ahead.aclose()  # its reading task ends with it
        log.info(
            "consistency.part_walked",
            domains=",".join(selection.domains),
            walked=part.walked,
            seconds=round(time.perf_counter() - started, 2),
        )

    async def _pairs(  # noqa: PLR0917
        self,
        run: _Run,
        part: Part,
        selection: Selection,
        opts: CheckOptions,
        exp: Expectations,
        progress: Progress | None,
        merged: AsyncIterator[list[MergedPair]],
    ) -> None:
        """The walk's pairs classified and counted; the state saved every `checkpoint_every`."""
        since_save = 0
        counts = run.report.counts
        record = run.report.record
        keeps = run.report.keeps_expected
        # the scans select the domains and agents; a sample may pass keys outside it
        selects = selection.wants_key if (selection.sampled or opts.agents) else None
        async for pairs in merged:
            for key, left, right in pairs:
                if selects is None or selects(key):
                    domain = counts(key.domain)
                    domain.compared += 1
                    held: object = left  # a deferring scan's values are typed as entities
                    if (
                        type(held) is Deferred
                        and right is not None
                        and not isinstance(right, Unreadable)
                        and same_as_read(key, held.raw, right)
                    ):
                        domain.same += 1  # most pairs: no finding made (`same_as_written`)
                        continue
                    # a difference is read again (`_recheck`); an expected one is shown only as a sample
                    f = classify(key, left, right, exp, show=keeps(key.domain, opts.max_samples))
                    if f.is_difference:
                        run.candidates.append(key)
                    else:
                        record(f, opts.max_samples)
            part.walked += len(pairs)
            part.cursor = cursor_of(pairs[-1][0])
            since_save += len(pairs)
            if progress is not None:
                progress(run.walked)
            if since_save >= opts.checkpoint_every:
                self.checkpoint(run, opts)
                since_save = 0

    async def _recheck(self, run: _Run, opts: CheckOptions) -> list[Finding]:
        """Read the candidates again after the delay, `rounds` times; the last findings.

        A key written all the time (a live writer beside the check) can be caught with a write
        in flight by every round, each round reading one store after the other. So a difference
        of the last round whose copies have different versions (`gateway.bulk.versions`: one
        store holds a newer write than the other) is read once more: when the store that was
        behind now holds that version or a newer one, the difference was a write in flight and
        counts as settled (as it does when that read finds no difference). A store that stays
        behind (a lost write, a difference left in place) and copies of the same version that
        differ are reported as before."""
        keys = run.candidates
        findings: list[Finding] = []
        pairs: dict[EntityKey, Pair] = {}
        for _ in range(max(1, opts.rounds)):
            if not keys:
                break
            if opts.rounds > 0:
                await self.clock.sleep(opts.delay_s)
            found, pairs = await self._read_and_classify(keys)
            self._settle(run, opts, [f for f in found if not f.is_difference])
            findings = [f for f in found if f.is_difference]
            keys = [f.key for f in findings]
        behind = {f.key: b for f in findings if (b := _behind(*pairs[f.key])) is not None}
        if behind:
            if opts.rounds > 0:
                await self.clock.sleep(opts.delay_s)
            found, again = await self._read_and_classify(list(behind))
            settled = [
                f if not f.is_difference else Finding(f.key, Kind.SAME)
                for f in found
                if not f.is_difference or _reached(again[f.key], *behind[f.key])
            ]
            log.info("consistency.in_flight", behind=len(behind), settled=len(settled))
            self._settle(run, opts, settled)
            gone = {f.key for f in settled}
            findings = [f for f in findings if f.key not in gone]
        return findings

    @staticmethod
    def _settle(run: _Run, opts: CheckOptions, settled: list[Finding]) -> None:
        for f in settled:
            run.report.counts(f.key.domain).settled += 1
            run.report.record(f, opts.max_samples)

    async def _read_and_classify(self, keys: list[EntityKey]) -> tuple[list[Finding], dict[EntityKey, Pair]]:
        """The keys' findings, and the values read (legacy, actors) by key."""
        out: list[Finding] = []
        pairs: dict[EntityKey, Pair] = {}
        if not keys:
            return out, pairs
        exp = await self.expectations(self.clock.now_ms())
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            left = await self.legacy.read_many(chunk)
            right = await self.actors.read_many(chunk)
            for key in chunk:
                a, b = left.get(key), right.get(key)
                pairs[key] = (a, b)
                if a is None and b is None:
                    out.append(Finding(key, Kind.SAME))  # deleted from both meanwhile: agreed
                else:
                    out.append(classify(key, a, b, exp))
        return out, pairs

    # -- resumable state ------------------------------------------------------------------------

    def _state_path(self, run_id: str) -> Path | None:
        return None if self.data_dir is None else reports_dir(self.data_dir) / f"run-{run_id}{STATE_SUFFIX}"

    def _save_state(self, run: _Run, opts: CheckOptions) -> None:
        path = self._state_path(run.report.run_id)
        if path is None:
            return
        r = run.report
        found = snapshot(run, run.parts[0])
        if run.other is not None:  # the second process's part: as far as it has told
            found = _joined(found, run.other)
        state = {
            "runId": r.run_id,
            "startedMs": r.started_ms,
            "scope": opts.scope_json(),
            "cursor": run.parts[0].cursor,
            "walked": run.walked,
            "domains": found["domains"],
            "samples": found["samples"],
            "expectedSamples": found["expectedSamples"],
            "samplesLeftOut": r.samples_left_out,
            "candidates": found["candidates"],
        }
        conflicts = getattr(self.legacy, "conflicts", None)
        if conflicts:  # learned by the legacy scan of the claims, which a resumed walk may not see again
            state["claimConflicts"] = self._saved_conflicts(conflicts)
        if len(run.parts) > 1:  # each part's own position (`cursor` is the first's)
            state["parts"] = [
                {"domains": list(p.domains), "cursor": p.cursor, "walked": p.walked} for p in run.parts
            ]
        write_atomic(path, _state_text(state))

    def _saved_conflicts(self, conflicts: list[KnownConflict]) -> list[list[Any]]:
        """The claim conflicts in the saved state's form. The state is saved every
        `checkpoint_every` keys, and the 1,000,000 data set has 24,664 conflicts: made once
        (and again only when the list has grown), not at every save."""
        of, saved = self._conflicts_saved
        if of is not conflicts or len(saved) > len(conflicts):  # another list: made anew
            saved = []
        if len(saved) != len(conflicts):
            saved = saved + [[c.what, c.winner, list(c.others)] for c in conflicts[len(saved) :]]
            self._conflicts_saved = (conflicts, saved)
        return saved

    def _drop_state(self, run_id: str) -> None:
        path = self._state_path(run_id)
        if path is not None:
            path.unlink(missing_ok=True)

    def _resumed(self, opts: CheckOptions) -> _Run | None:
        """The newest unfinished run with the same scope, or None. A saved sampled check of
        another sampling rule (`gateway.bulk.items.SAMPLE_RULE`: older ones chose other keys)
        is never resumed, which would mix two samples: it is removed, and `not_resumed` says so."""
        self.not_resumed = []
        if self.data_dir is None:
            return None
        folder = reports_dir(self.data_dir)
        states = sorted(folder.glob(f"run-*{STATE_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        wanted = opts.scope_json()
        for path in reversed(states):
            state = json.loads(path.read_text(encoding="utf-8"))
            scope = dict(state["scope"])
            # rule 1 saved no rule: its sampled checks are rule 1, its full ones need none
            scope.setdefault("sampleRule", 1 if scope.get("seed") is not None else None)
            if scope != wanted:
                if wanted["sampleRule"] is not None and _other_rule(scope, wanted):
                    self._refuse(path, state, scope["sampleRule"])
                continue
            report = Report(state["runId"], state["startedMs"], opts.document())
            report.domains = {d: DomainCounts.from_json(c) for d, c in state["domains"].items()}
            report.samples = state["samples"]
            report.expected_samples = state["expectedSamples"]
            report.samples_left_out = state["samplesLeftOut"]
            candidates = [EntityKey(d, s, i) for d, s, i in state["candidates"]]
            known = getattr(self.legacy, "conflicts", None)
            if known is not None:
                seen = {(c.what, c.winner, tuple(c.others)) for c in known}
                known.extend(
                    KnownConflict(w, k, list(o))
                    for w, k, o in state.get("claimConflicts", [])
                    if (w, k, tuple(o)) not in seen
                )
            if "parts" in state:  # a split walk: each part goes on from its own position
                parts = [Part(tuple(p["domains"]), p["cursor"], p["walked"]) for p in state["parts"]]
            else:
                parts = [Part(opts.domains, state["cursor"], state["walked"])]
            log.info("consistency.resumed", run_id=report.run_id, cursor=state["cursor"], parts=len(parts))
            return _Run(report, candidates, parts)
        return None

    def _refuse(self, path: Path, state: dict[str, Any], rule: object) -> None:
        line = (
            f"the saved sampled check {state['runId']} was made with sampling rule {rule}, which "
            f"chose other keys than this version's (rule {SAMPLE_RULE}): it is not resumed (that "
            "would mix two samples) and is removed; this check starts from the beginning"
        )
        log.warning("consistency.resume_refused", run_id=state["runId"], rule=rule, now=SAMPLE_RULE)
        self.not_resumed.append(line)
        path.unlink(missing_ok=True)


Behind = tuple[int, tuple[int, ...]]
"""The store that is behind (0 legacy, 1 actors) and the version it must reach."""

Pair = tuple[Value | Deferred | None, Value | Deferred | None]
"""One key's values as a re-check read them: (legacy, actors)."""


def _entity(value: Value | Deferred | None) -> Entity | None:
    """The entity a value holds (a deferred legacy value mapped), or None (absent, unreadable)."""
    if isinstance(value, Deferred):
        value = value.entity()
    return None if value is None or isinstance(value, Unreadable) else value


def _behind(legacy: Value | Deferred | None, actors: Value | Deferred | None) -> Behind | None:
    """Which store (0 legacy, 1 actors) holds an older version than the other, and the newer
    version; None when neither is behind (the same version, an unreadable value, a domain
    without versions, or neither holds an entity)."""
    a, b = _entity(legacy), _entity(actors)
    if a is None and b is None:
        return None
    if a is None and b is not None:  # a create in flight: one store does not hold it yet
        return (0, version(b)) if version(b) else None
    if b is None and a is not None:
        return (1, version(a)) if version(a) else None
    if a is None or b is None:
        return None
    va, vb = version(a), version(b)
    if va == vb:
        return None
    return (0, vb) if va < vb else (1, va)


def _reached(pair: Pair, side: int, wanted: tuple[int, ...]) -> bool:
    """Whether the store `side` of `pair` now holds version `wanted` or a newer one."""
    held = _entity(pair[side])
    return held is not None and version(held) >= wanted


def _other_rule(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a saved scope is the wanted one but for the sampling rule."""
    return {k: v for k, v in saved.items() if k != "sampleRule"} == {
        k: v for k, v in wanted.items() if k != "sampleRule"
    } and saved["sampleRule"] != wanted["sampleRule"]


def read_ahead(batches: AsyncIterator[list[Item]], depth: int) -> AsyncGenerator[list[Item], None]:
    """The batches of `batches`, read by a task of their own, started now, up to `depth` ahead
    of the consumer: the source is read while the consumer waits on something else (the legacy
    scan's first batch). An error of the source is raised at its place in the stream; closing
    the generator (`aclose`) cancels the reading and closes the source. Call it in a running
    event loop."""
    got: asyncio.Queue[list[Item] | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def read() -> None:
        try:
            async for batch in batches:
                await got.put(batch)
                # the actor side's reads do not wait on anything (SQLite in this thread): without
                # a turn of the loop here the task would read `depth` batches in one go while
                # Redis's replies to the other scan wait unread (a connection being opened then
                # timed out, `legacy.timeout_s`, in a sampled check's second process under load)
                await asyncio.sleep(0)
        except Exception as e:  # noqa: BLE001 - raised by the consumer, in order
            await got.put(e)
            return
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()
        await got.put(None)

    reader = asyncio.create_task(read())

    async def taken() -> AsyncGenerator[list[Item], None]:
        try:
            while (item := await got.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    return taken()


def ordered(items: Collection[Item]) -> list[Item]:
    """Items in scan order (for in-memory sources)."""
    return sorted(items, key=lambda it: sort_key(it[0]))


def _domain_index(domain: str) -> int:
    return DOMAINS.index(domain) if domain in DOMAINS else len(DOMAINS)


def snapshot(run: _Run, part: Part) -> Snapshot:
    """What `run` found (all of it), at `part`'s position, as plain data."""
    r = run.report
    return {
        "cursor": part.cursor,
        "walked": part.walked,
        "domains": {d: c.to_json() for d, c in r.domains.items()},
        "expectedSamples": list(r.expected_samples),
        "samples": list(r.samples),
        "candidates": [[k.domain, k.scope, k.id] for k in run.candidates],
    }


def _joined(a: Snapshot, b: Snapshot) -> Snapshot:
    """Two parts' findings (of different domains) as one, in the order of a walk of both."""

    def by_domain(items: list[Any], domain_of: Callable[[Any], str]) -> list[Any]:
        return sorted(items, key=lambda x: _domain_index(domain_of(x)))

    domains = {**a["domains"], **b["domains"]}
    return {
        "cursor": a["cursor"],
        "walked": a["walked"] + b["walked"],
        "domains": {d: domains[d] for d in sorted(domains, key=_domain_index)},
        "expectedSamples": by_domain(a["expectedSamples"] + b["expectedSamples"], lambda s: s["domain"]),
        "samples": by_domain(a["samples"] + b["samples"], lambda s: s["domain"]),
        "candidates": by_domain(a["candidates"] + b["candidates"], lambda k: k[0]),
    }


def take(run: _Run, part: Part) -> Snapshot:
    """The findings of `part`'s domains taken out of `run` (a resumed check's, for the process
    that walks that part on), with its position."""
    mine = set(part.domains)
    r = run.report
    out: Snapshot = {
        "cursor": part.cursor,
        "walked": part.walked,
        "domains": {d: r.domains.pop(d).to_json() for d in list(r.domains) if d in mine},
        "expectedSamples": [s for s in r.expected_samples if s["domain"] in mine],
        "samples": [s for s in r.samples if s["domain"] in mine],
        "candidates": [[k.domain, k.scope, k.id] for k in run.candidates if k.domain in mine],
    }
    r.expected_samples = [s for s in r.expected_samples if s["domain"] not in mine]
    r.samples = [s for s in r.samples if s["domain"] not in mine]
    run.candidates = [k for k in run.candidates if k.domain not in mine]
    return out


def put(run: _Run, found: Snapshot) -> None:
    """A part's findings (`take`, `snapshot`) added to `run`, whose findings are of other
    domains, in the order a walk of both would have found them."""
    r = run.report
    for d, c in found["domains"].items():
        r.domains[d] = DomainCounts.from_json(c)
    r.expected_samples += found["expectedSamples"]
    r.samples += found["samples"]
    run.candidates += [EntityKey(d, s, i) for d, s, i in found["candidates"]]
    _in_domain_order(run)


def _in_domain_order(run: _Run) -> None:
    """The run's counts, samples and candidates in the domains' scan order (stable: each
    domain's in the order found), as one walk of every domain would have found them."""
    r = run.report
    r.domains = {d: r.domains[d] for d in sorted(r.domains, key=_domain_index)}
    r.expected_samples.sort(key=lambda s: _domain_index(s["domain"]))
    r.samples.sort(key=lambda s: _domain_index(s["domain"]))
    run.candidates.sort(key=lambda k: _domain_index(k.domain))


def new_run(report: Report, found: Snapshot, part: Part) -> _Run:
    """A run of one part (the second process's) that starts from `found`."""
    run = _Run(report, [], [part])
    put(run, found)
    return run
