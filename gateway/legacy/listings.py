"""The task and agent listings of the legacy store, kept in step with the tracked hashes.

`/work`, `GET /tasks` and `GET /agents` (22 of every 100 requests of issue 13's mix) list the
whole `tasks` and `active-agents` hashes. The tracked cache (`gateway.legacy.tracking`) hands out
one dict per state of a hash, a new one after every write; these classes keep what the last
state listed and carry it over to the next one:

* `TaskListings`: every readable task, newest first (ties in the hash's order, as a stable sort
  of the hash gives), and the same tasks grouped by status and by assignee, each group in that
  order. A task created is put in place in its groups (binary search), so `/work`'s `todo` and
  `mine` and the task list are slices of a group instead of a walk over every task; any other
  change (an update, a delete, another client's write) sorts the parsed tasks again and groups
  them once.
* `AgentListings`: the listable agents (not offline, with a `lastSeen`), newest `lastSeen` first,
  ties in the hash's order. A heartbeat rewrites one agent's value: that agent moves to its new
  place (binary search) instead of every agent being looked up and sorted again.

Each row keeps its rendered JSON once a listing has rendered it (`LegacyRecords.fragment`), so a
listing renders only the rows it has not rendered before. Only hashes whose every value is
readable are kept: an unreadable value is reported on every read, as before (`LegacyRecords`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from typing import Final

import orjson

from gateway.domain.model import Agent, RenderedList, Task
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.records import Json, LegacyRecords, ms

__all__ = ["AgentListings", "TaskListings"]

_LISTINGS_MAX: Final = 256
"""Task listings kept while the hash is unchanged (one per agent for `/work`'s `mine`)."""

_LAST: Final = float("inf")


class _Rows:
    """Tasks newest first (ties: the older field of the hash first), each with its JSON once
    rendered, in two parallel lists."""

    __slots__ = ("rendered", "tasks")

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.rendered: list[orjson.Fragment | None] = []

    def append(self, task: Task, rendered: orjson.Fragment | None) -> None:
        self.tasks.append(task)
        self.rendered.append(rendered)

    def insert(self, task: Task) -> None:
        """Put a task newer in the hash than every row after the rows at least as new (where a
        stable sort of the hash puts it)."""
        tasks, created = self.tasks, task.created_at
        lo, hi = 0, len(tasks)
        while lo < hi:  # the first task older than this one
            mid = (lo + hi) // 2
            if tasks[mid].created_at < created:
                hi = mid
            else:
                lo = mid + 1
        tasks.insert(lo, task)
        self.rendered.insert(lo, None)

    def first(self, limit: int, records: LegacyRecords) -> RenderedList:
        """The first `limit` rows as a listing that carries their JSON."""
        tasks, out = self.tasks[:limit], self.rendered[:limit]
        if None in out:
            for i, item in enumerate(out):
                if item is None:
                    out[i] = self.rendered[i] = records.fragment(tasks[i])
        return RenderedList(tasks, rendered=out)


class TaskListings:
    """The task listings of the `tasks` hash (module docstring)."""

    def __init__(self, records: LegacyRecords) -> None:
        self.records = records
        # every readable task by field, with the text it was read from: a change re-reads only
        # the fields whose text changed
        self._fields: dict[str, tuple[str, Task]] = {}
        self._raw: dict[str, str] | None = None  # the hash the rows below are of (None: nothing kept)
        self._all = _Rows()
        self._by_status: dict[str, _Rows] | None = None  # built on first use
        self._by_assignee: dict[str, _Rows] | None = None
        self._listings: dict[tuple[str | None, str | None, int], RenderedList] = {}

    def listing(
        self, raw: dict[str, str], status: str | None, assignee: str | None, limit: int
    ) -> list[Task]:
        """The tasks of the raw hash `raw` with this status and assignee (None: not filtered),
        newest first, at most `limit`; the same list for the same question while the hash is
        unchanged. Unassigned tasks (`""`, null, absent) never match an assignee."""
        self._follow(raw)
        query = (status, assignee, limit)
        found = self._listings.get(query)
        if found is not None:
            return found
        if assignee is not None:
            rows = self._group("assignee", assignee)
            if status is not None and rows is not None:
                picked = _Rows()
                for task, item in zip(rows.tasks, rows.rendered, strict=True):
                    if task.status == status:
                        picked.append(task, item)
                rows = picked
        elif status is not None:
            rows = self._group("status", status)
        else:
            rows = self._all
        found = RenderedList() if rows is None else rows.first(limit, self.records)
        if self._raw is not None:
            if len(self._listings) >= _LISTINGS_MAX:
                self._listings.clear()
            self._listings[query] = found
        return found

    def _group(self, by: str, value: str) -> _Rows | None:
        groups = self._by_status if by == "status" else self._by_assignee
        if groups is None:
            groups = {}
            for task, item in zip(self._all.tasks, self._all.rendered, strict=True):
                name = task.status if by == "status" else task.assignee
                if isinstance(name, str):
                    rows = groups.get(name)
                    if rows is None:
                        rows = groups[name] = _Rows()
                    rows.append(task, item)
            if self._raw is not None:
                if by == "status":
                    self._by_status = groups
                else:
                    self._by_assignee = groups
        return groups.get(value)

    def _follow(self, raw: dict[str, str]) -> None:
        """Bring the rows to the hash `raw`."""
        before = self._raw
        if before is not None and (before is raw or before == raw):
            self._raw = raw
            return
        self._listings = {}
        if before is None or not self._appended(before, raw):
            self._sort(raw)
        # a hash with an unreadable value is not kept: it is reported on every read, as before
        self._raw = raw if len(self._fields) == len(raw) else None

    def _task_of(self, fld: str, text: str) -> Task | None:
        """The task of one field's text: the one read before while the text is unchanged."""
        known = self._fields.get(fld)
        if known is not None and (known[0] is text or known[0] == text):
            return known[1]
        task = self.records.parse_shared(text, keys.TASKS, fld, m.task_from_legacy)
        if task is not None:
            self._fields[fld] = (text, task)
        return task

    def _sort(self, raw: dict[str, str]) -> None:
        """Every readable task of `raw`, newest first (stable: ties keep the hash's order)."""
        tasks = [t for fld, text in raw.items() if (t := self._task_of(fld, text)) is not None]
        known = self._fields
        if len(known) > len(tasks):  # fields deleted, or unreadable now: forgotten
            self._fields = {
                f: k for f, text in raw.items() if (k := known.get(f)) is not None and k[0] == text
            }
        tasks.sort(key=_created_at, reverse=True)
        self._all = _Rows()
        self._all.tasks = tasks
        self._all.rendered = [None] * len(tasks)
        self._by_status = self._by_assignee = None

    def _appended(self, before: dict[str, str], raw: dict[str, str]) -> bool:
        """When `raw` is `before` with fields added at its end (a task created: the tracked hash
        keeps the order of its fields), put each new task in place in every row list; False (and
        nothing changed) for any other change. The tracked cache says which fields its own writes
        added (`LegacyRecords.appended`); else the two hashes are compared."""
        n = len(before)
        if len(raw) <= n or n == 0:
            return False
        added = self.records.appended(keys.TASKS, before, raw)
        if added is None:
            # compared in C (identical texts first), not field by field
            if list(itertools.islice(raw, n)) != list(before):
                return False
            if list(itertools.islice(raw.values(), n)) != list(before.values()):
                return False
            added = list(itertools.islice(raw, n, None))
        for fld in added:
            task = self._task_of(fld, raw[fld])
            if task is None:
                continue
            self._all.insert(task)
            for groups, name in ((self._by_status, task.status), (self._by_assignee, task.assignee)):
                if groups is not None and isinstance(name, str):
                    rows = groups.get(name)
                    if rows is None:
                        rows = groups[name] = _Rows()
                    rows.insert(task)
        return True


def _created_at(task: Task) -> str:
    return task.created_at


def _agent(fld: str, value: Json) -> Agent:
    return m.agent_from_legacy(fld, value)


class AgentListings:
    """The agent listing of the `active-agents` hash (module docstring)."""

    def __init__(self, records: LegacyRecords) -> None:
        self.records = records
        self._raw: dict[str, str] | None = None  # the hash the rows below are of (None: nothing kept)
        self._order: list[str] = []  # its fields, in its order
        self._place: dict[str, int] = {}  # each field's index in that order
        # the listable agents, in listing order, in three parallel lists: (-lastSeen ms, place in
        # the hash), the agent, its JSON once rendered
        self._keys: list[tuple[int, int]] = []
        self._agents: list[Agent] = []
        self._rendered: list[orjson.Fragment | None] = []
        self._key_of: dict[str, tuple[int, int]] = {}  # a listed agent's field -> its key above

    def listing(self, raw: dict[str, str], cutoff_ms: int, limit: int) -> list[Agent]:
        """The agents of the raw hash `raw` seen at or after `cutoff_ms` and not offline, newest
        `lastSeen` first, at most `limit`."""
        if raw is not self._raw and not self._changed(raw):
            self._rebuild(raw)
        n = min(bisect.bisect_right(self._keys, (-cutoff_ms, _LAST)), limit)
        agents, out = self._agents[:n], self._rendered[:n]
        if None in out:
            for i, item in enumerate(out):
                if item is None:
                    out[i] = self._rendered[i] = self.records.fragment(agents[i])
        return RenderedList(agents, rendered=out)

    def _changed(self, raw: dict[str, str]) -> bool:
        """Bring the rows to `raw` when it has the kept hash's fields in the same order (values
        rewritten: heartbeats); False (nothing changed) otherwise."""
        before = self._raw
        if before is None or len(raw) != len(before) or list(raw) != self._order:
            return False
        values = zip(raw, raw.values(), before.values(), strict=True)
        changed = [f for f, new, old in values if new is not old and new != old]
        found: list[tuple[str, Agent]] = []
        for fld in changed:
            parse = functools.partial(_agent, fld)
            agent = self.records.parse_shared(raw[fld], keys.ACTIVE_AGENTS, fld, parse)
            if agent is None:  # unreadable now: read afresh, reported
                return False
            found.append((fld, agent))
        for fld, agent in found:
            old_key = self._key_of.pop(fld, None)
            if old_key is not None:
                i = bisect.bisect_left(self._keys, old_key)
                del self._keys[i], self._agents[i], self._rendered[i]
            self._add(fld, agent, self._place[fld], loading=False)
        self._raw = raw
        return True

    def _add(self, fld: str, agent: Agent, place: int, *, loading: bool) -> None:
        seen = ms(agent.last_seen) if isinstance(agent.last_seen, str) else None
        if agent.status == "offline" or seen is None:
            return
        key = (-seen, place)
        self._key_of[fld] = key
        if loading:
            self._keys.append(key)
            self._agents.append(agent)
            return
        i = bisect.bisect_left(self._keys, key)
        self._keys.insert(i, key)
        self._agents.insert(i, agent)
        self._rendered.insert(i, None)

    def _rebuild(self, raw: dict[str, str]) -> None:
        found = self.records.fields_of(keys.ACTIVE_AGENTS, raw, m.agent_from_legacy, shared=True)
        self._order = list(raw)
        self._place = {f: i for i, f in enumerate(self._order)}
        self._keys, self._agents, self._key_of = [], [], {}
        for fld, agent in found:
            self._add(fld, agent, self._place[fld], loading=True)
        order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
        self._keys = [self._keys[i] for i in order]
        self._agents = [self._agents[i] for i in order]
        self._rendered = [None] * len(order)
        # a hash with an unreadable value is not kept: it is reported on every read, as before
        self._raw = raw if len(found) == len(raw) else None
