"""The one domain model of the gateway and its JSON renderers for the DO wire shapes.

Each record is a slotted dataclass with an `extra` dict for fields that one store holds and the
other does not model (the legacy Redis store carries its additional fields through it). The
renderers build the exact DO shapes of do-api.md, in upstream key order:

* the **read-back form** (`to_json`): what upstream returns for a row read from SQLite, where an
  empty nullable column is `null`;
* the **create form** (`create_json`): what upstream returns for an object built in memory from a
  request, where a key whose value was not given is left out.

`extra` is never rendered: the DO shapes are closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "Agent",
    "AgentStateView",
    "ChatPage",
    "Checkpoint",
    "Claim",
    "ClaimOutcome",
    "DirectMessage",
    "GroupMessage",
    "Handoff",
    "HandoffOutcome",
    "Lock",
    "LockAcquireOutcome",
    "LockCheck",
    "LockHistory",
    "LockHistoryEntry",
    "LockReleaseOutcome",
    "Memory",
    "RenderedList",
    "Task",
    "WorkBundle",
    "Zone",
    "list_answer",
    "mention_hint_chat",
    "mention_hint_work",
    "wire_list",
]

JsonObj = dict[str, Any]


def _list(v: list[Any] | None) -> list[Any]:
    return [] if v is None else v


class RenderedList(list[Any]):
    """A list of records that renders its JSON array once and keeps it (`json`).

    A store hands these out for records it never changes and never lets anyone change (the
    coordinator's copies in memory, gateway/do/memory.py hands the same list out again while
    its table is unchanged), so listing the same agents or tasks again costs no rendering.
    Equal to, and rendered like, a plain list of the same records anywhere else. `render`, if
    given, renders one record (to its read-back form, that form already rendered as an
    `orjson.Fragment`, or its JSON text as `bytes`): the store's own cache of its records' JSON.

    Records whose JSON the store already has as `bytes` (`rendered`, or what `render` gives) are
    joined into the array, not passed through `orjson.dumps` as fragments: orjson copies each
    fragment into a buffer it grows as it goes, which cost 75 us for a listing of 1,000 tasks
    (250 KB) against about 8 us for the join (issue 13: the task listing and `/work` after
    every new task).
    """

    __slots__ = ("_answer", "_fragment", "_items", "_json", "_render")

    def __init__(
        self,
        records: Iterable[Any] = (),
        render: Callable[[Any], Any] | None = None,
        *,
        rendered: list[Any] | None = None,
    ) -> None:
        super().__init__(records)
        self._json: bytes | None = None
        self._fragment: orjson.Fragment | None = None
        self._answer: tuple[str, bool, bytes] | None = None
        self._render = render
        # each record's rendered form, in order, when the store already has them (its own list)
        self._items = rendered

    def json_bytes(self) -> bytes:
        """The records' read-back forms as a JSON array (bytes), rendered on the first call."""
        if self._json is None:
            items = self._items
            if items is None:
                render = self._render
                items = [r.to_json() for r in self] if render is None else [render(r) for r in self]
            if items and type(items[0]) is bytes:  # the records' JSON texts: joined
                self._json = _json_array(items)
            else:
                self._json = orjson.dumps(items)
            self._items = None
        return self._json

    def json(self) -> orjson.Fragment:
        """`json_bytes` as an `orjson.Fragment`, for a larger answer rendered by orjson."""
        if self._fragment is None:
            self._fragment = orjson.Fragment(self.json_bytes())
        return self._fragment

    def answer(self, key: str, *, count: bool = False) -> bytes:
        """The HTTP answer `{"<key>": <the array>}` (then `"count": <its length>` if `count`),
        rendered once: a listing handed out again while its table is unchanged answers the same
        bytes. Joined around the array, as orjson would render it (`key` is a plain ASCII
        name), without copying the array (a task listing: 200-300 KB) through orjson again."""
        kept = self._answer
        if kept is not None and kept[0] == key and kept[1] == count:
            return kept[2]
        tail = b',"count":%d}' % len(self) if count else b"}"
        rendered = b"".join((b'{"', key.encode(), b'":', self.json_bytes(), tail))
        self._answer = (key, count, rendered)
        return rendered


def _json_array(items: list[bytes]) -> bytes:
    """`b"[" + b",".join(items) + b"]"` in one copy of the array instead of three: the brackets
    go onto the first and last items (a few hundred bytes each) before the one join. The open
    tasks' array is 250-300 KB under the realistic mix, joined after every new task, and the
    team's after every heartbeat or `/work` (issue 13: 38 -> 22 us for 1,000 tasks)."""
    if len(items) == 1:
        return b"[" + items[0] + b"]"
    seq = items.copy()
    seq[0] = b"[" + seq[0]
    seq[-1] += b"]"
    return b",".join(seq)


Render = Callable[[Sequence[Any]], Any]


def _plain(records: Sequence[Any]) -> list[JsonObj]:
    return [r.to_json() for r in records]


def list_answer(key: str, records: Sequence[Any]) -> bytes:
    """The answer `{"<key>": [records' read-back forms]}`, kept with a `RenderedList`."""
    if isinstance(records, RenderedList):
        return records.answer(key)
    return orjson.dumps({key: _plain(records)})


def _json_bytes(records: Sequence[Any]) -> bytes:
    """The records' read-back forms as a JSON array (bytes), kept with a `RenderedList`."""
    if isinstance(records, RenderedList):
        return records.json_bytes()
    return orjson.dumps(_plain(records))


def wire_list(records: Sequence[Any]) -> Any:
    """For the HTTP answer (orjson): the records' read-back forms, pre-rendered if they are a
    `RenderedList` (an `orjson.Fragment`), else as a list of dicts."""
    return records.json() if isinstance(records, RenderedList) else _plain(records)


@dataclass(slots=True)
class Agent:
    """A registered agent (coordinator `agents` table; DO `Agent`)."""

    agent_id: str
    status: str = "active"
    current_task: str | None = None
    working_on: str | None = None
    last_seen: str | None = None
    capabilities: list[Any] | None = None
    offers: list[Any] | None = None
    needs: list[Any] | None = None
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form; JSON array columns that are NULL read back as `[]`."""
        return {
            "agentId": self.agent_id,
            "status": self.status,
            "currentTask": self.current_task,
            "workingOn": self.working_on,
            "lastSeen": self.last_seen,
            "capabilities": _list(self.capabilities),
            "offers": _list(self.offers),
            "needs": _list(self.needs),
        }


@dataclass(slots=True)
class GroupMessage:
    """A group chat message (coordinator `messages` table; DO `GroupMessage`)."""

    id: str
    author: str
    author_type: str
    message: str
    timestamp: str
    reactions: list[Any] = field(default_factory=list)
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Same shape whether created or read back."""
        return {
            "id": self.id,
            "author": self.author,
            "authorType": self.author_type,
            "message": self.message,
            "timestamp": self.timestamp,
            "reactions": self.reactions,
        }


@dataclass(slots=True)
class Task:
    """A task (coordinator `tasks` table; DO `Task`)."""

    id: str
    title: str
    description: str | None
    status: str
    assignee: str | None
    created_by: str
    priority: str
    tags: list[Any]
    files: list[Any]
    created_at: str
    updated_at: str
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form: `description` and `assignee` are `null` when unset."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "assignee": self.assignee,
            "createdBy": self.created_by,
            "priority": self.priority,
            "tags": self.tags,
            "files": self.files,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    def create_json(self) -> JsonObj:
        """Create form: `description` and `assignee` are left out when not given."""
        out: JsonObj = {"id": self.id, "title": self.title}
        if self.description is not None:
            out["description"] = self.description
        out["status"] = self.status
        if self.assignee is not None:
            out["assignee"] = self.assignee
        out["createdBy"] = self.created_by
        out["priority"] = self.priority
        out["tags"] = self.tags
        out["files"] = self.files
        out["createdAt"] = self.created_at
        out["updatedAt"] = self.updated_at
        return out


@dataclass(slots=True)
class Zone:
    """A claimed zone of the code base (coordinator `zones` table; DO `Zone`)."""

    zone_id: str
    path: str
    owner: str
    description: str | None
    claimed_at: str
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form (`description` null when unset)."""
        return {
            "zoneId": self.zone_id,
            "path": self.path,
            "owner": self.owner,
            "description": self.description,
            "claimedAt": self.claimed_at,
        }

    def create_json(self) -> JsonObj:
        """Create form (`description` left out when not given)."""
        out: JsonObj = {"zoneId": self.zone_id, "path": self.path, "owner": self.owner}
        if self.description is not None:
            out["description"] = self.description
        out["claimedAt"] = self.claimed_at
        return out


@dataclass(slots=True)
class Claim:
    """A work claim (coordinator `claims` table; DO `Claim`); `stale` is computed on read."""

    what: str
    by: str
    description: str | None
    since: str
    stale: bool = False
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form."""
        return {
            "what": self.what,
            "by": self.by,
            "description": self.description,
            "since": self.since,
            "stale": self.stale,
        }

    def create_json(self) -> JsonObj:
        """Create form (`description` left out when not given)."""
        out: JsonObj = {"what": self.what, "by": self.by}
        if self.description is not None:
            out["description"] = self.description
        out["since"] = self.since
        out["stale"] = self.stale
        return out


@dataclass(slots=True)
class Handoff:
    """A work handoff (coordinator `handoffs` table; DO `Handoff`)."""

    id: str
    from_agent: str
    to_agent: str | None
    title: str
    context: str
    code: str | None
    file_path: str | None
    next_steps: list[Any]
    priority: str
    status: str
    claimed_by: str | None
    created_at: str
    claimed_at: str | None
    completed_at: str | None
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form: every key, `null` for unset ones (claim/complete answers use it too)."""
        return {
            "id": self.id,
            "fromAgent": self.from_agent,
            "toAgent": self.to_agent,
            "title": self.title,
            "context": self.context,
            "code": self.code,
            "filePath": self.file_path,
            "nextSteps": self.next_steps,
            "priority": self.priority,
            "status": self.status,
            "claimedBy": self.claimed_by,
            "createdAt": self.created_at,
            "claimedAt": self.claimed_at,
            "completedAt": self.completed_at,
        }

    def create_json(self) -> JsonObj:
        """Create form: optional keys left out, no claim/complete keys."""
        out: JsonObj = {"id": self.id, "fromAgent": self.from_agent}
        if self.to_agent is not None:
            out["toAgent"] = self.to_agent
        out["title"] = self.title
        out["context"] = self.context
        if self.code is not None:
            out["code"] = self.code
        if self.file_path is not None:
            out["filePath"] = self.file_path
        out["nextSteps"] = self.next_steps
        out["priority"] = self.priority
        out["status"] = self.status
        out["createdAt"] = self.created_at
        return out


@dataclass(slots=True)
class Checkpoint:
    """An agent's checkpoint (agent actor `checkpoint` row; DO `AgentCheckpoint`)."""

    agent_id: str
    conversation_summary: str | None
    accomplishments: list[Any]
    pending_work: list[Any]
    recent_context: str | None
    files_edited: list[Any]
    checkpoint_at: str | None
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form."""
        return {
            "agentId": self.agent_id,
            "conversationSummary": self.conversation_summary,
            "accomplishments": self.accomplishments,
            "pendingWork": self.pending_work,
            "recentContext": self.recent_context,
            "filesEdited": self.files_edited,
            "checkpointAt": self.checkpoint_at,
        }


@dataclass(slots=True)
class DirectMessage:
    """A direct message in an agent's inbox (agent actor `messages` table)."""

    id: str
    from_agent: str
    type: str
    message: str
    timestamp: str
    read: bool = False
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Same shape whether created or read back; `read` is a boolean."""
        return {
            "id": self.id,
            "from": self.from_agent,
            "type": self.type,
            "message": self.message,
            "timestamp": self.timestamp,
            "read": self.read,
        }


@dataclass(slots=True)
class Memory:
    """A memory entry (agent actor `memory` table)."""

    id: str
    category: str
    content: str
    tags: list[Any]
    created_at: str
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Same shape whether created or read back."""
        return {
            "id": self.id,
            "category": self.category,
            "content": self.content,
            "tags": self.tags,
            "createdAt": self.created_at,
        }


@dataclass(slots=True)
class Lock:
    """A resource lock (lock actor `current_lock` row; DO `ResourceLockData`)."""

    resource_path: str
    resource_type: str
    locked_by: str
    reason: str | None
    locked_at: str
    expires_at: str
    expires_ms: int
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form (`/history` `currentLock`): `reason` null when unset."""
        return {
            "resourcePath": self.resource_path,
            "resourceType": self.resource_type,
            "lockedBy": self.locked_by,
            "reason": self.reason,
            "lockedAt": self.locked_at,
            "expiresAt": self.expires_at,
        }

    def check_json(self, now_ms: int) -> JsonObj:
        """`/check` form: the read-back form plus integer `remainingMs`."""
        out = self.to_json()
        out["remainingMs"] = self.expires_ms - now_ms
        return out

    def create_json(self) -> JsonObj:
        """`/lock` answer form: `reason` left out when not set."""
        out: JsonObj = {
            "resourcePath": self.resource_path,
            "resourceType": self.resource_type,
            "lockedBy": self.locked_by,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        out["lockedAt"] = self.locked_at
        out["expiresAt"] = self.expires_at
        return out


@dataclass(slots=True)
class LockHistoryEntry:
    """One acquisition of a lock (lock actor `lock_history` row)."""

    id: str
    locked_by: str
    reason: str | None
    locked_at: str
    released_at: str | None
    release_reason: str | None
    extra: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        """Read-back form."""
        return {
            "id": self.id,
            "lockedBy": self.locked_by,
            "reason": self.reason,
            "lockedAt": self.locked_at,
            "releasedAt": self.released_at,
            "releaseReason": self.release_reason,
        }


# ----------------------------------------------------------------------------------------------
# Results of operations that are more than one record
# ----------------------------------------------------------------------------------------------


def mention_hint_chat(n: int) -> str:
    """The `hint` of GET /chat when there are mentions."""
    return f"You have {n} unread mention(s). Check and respond!"


def mention_hint_work(n: int) -> str:
    """The `inbox.hint` of /work when there are mentions."""
    return f"You have {n} unread mention(s)! Respond to keep the conversation flowing."


@dataclass(slots=True)
class ChatPage:
    """The answer of GET /coordinator/chat."""

    messages: list[GroupMessage]
    agent_id: str | None = None
    pending_mentions: list[GroupMessage] = field(default_factory=list)
    inbox: bool = False

    def to_json(self) -> JsonObj:
        """`{messages,count[,pendingMentions,pendingCount,hint]}` or the inbox shape."""
        return self._render(_plain)

    def wire(self) -> JsonObj:
        """`to_json` for orjson at the HTTP edge: a pre-rendered list stays an `orjson.Fragment`."""
        return self._render(wire_list)

    def answer(self) -> bytes:
        """`to_json` rendered for the HTTP answer; a page of a kept listing and nothing else
        (no mentions, not the inbox) is `{messages, count}`, kept with the listing."""
        if (
            isinstance(self.messages, RenderedList)
            and not self.pending_mentions
            and not (self.inbox and self.agent_id is not None)
        ):
            return self.messages.answer("messages", count=True)
        return orjson.dumps(self.wire())

    def _render(self, render: Render) -> JsonObj:
        if self.inbox and self.agent_id is not None:
            return {
                "messages": [m.to_json() for m in self.pending_mentions],
                "count": len(self.pending_mentions),
                "agentId": self.agent_id,
                "isInbox": True,
            }
        out: JsonObj = {"messages": render(self.messages), "count": len(self.messages)}
        if self.pending_mentions:
            n = len(self.pending_mentions)
            out["pendingMentions"] = [m.to_json() for m in self.pending_mentions]
            out["pendingCount"] = n
            out["hint"] = mention_hint_chat(n)
        return out


@dataclass(slots=True)
class WorkBundle:
    """The /coordinator/work hot-start bundle (HEAD shape)."""

    agent_id: str
    team: list[Agent]
    todo: list[Task]
    mine: list[Task]
    recent_chat: list[GroupMessage]
    pending_mentions: list[GroupMessage]

    def to_json(self) -> JsonObj:
        """HEAD key order; `inbox` only when there are mentions."""
        return self._render(_plain)

    def wire(self) -> JsonObj:
        """`to_json` for orjson at the HTTP edge: a pre-rendered list stays an `orjson.Fragment`."""
        return self._render(wire_list)

    def answer(self) -> bytes:
        """`orjson.dumps(self.wire())`, byte for byte, joined from its parts: the listings (the
        open tasks: 200-300 KB under the realistic mix) are copied once, into the answer, not
        through orjson's growing buffer (32 us a `/work` there against about 8; issue 13)."""
        out = self._render(_json_bytes)
        inbox = out.pop("inbox", None)
        team, tasks, chat = out.pop("team"), out.pop("tasks"), out.pop("recentChat")
        head = orjson.dumps(out)  # {"agentId":...,"summary":{...}}
        parts = [
            head[:-1],
            b',"team":',
            team,
            b',"tasks":{"todo":',
            tasks["todo"],
            b',"mine":',
            tasks["mine"],
            b'},"recentChat":',
            chat,
        ]
        if inbox is not None:
            parts += (b',"inbox":', orjson.dumps(inbox))
        parts.append(b"}")
        return b"".join(parts)

    def _render(self, render: Render) -> JsonObj:
        n = len(self.pending_mentions)
        out: JsonObj = {
            "agentId": self.agent_id,
            "summary": {
                "activeAgents": len(self.team),
                "todoTasks": len(self.todo),
                "inProgressTasks": sum(1 for t in self.mine if t.status == "in-progress"),
                "pendingMentions": n,
            },
            "team": render(self.team),
            "tasks": {"todo": render(self.todo), "mine": render(self.mine)},
            "recentChat": render(self.recent_chat),
        }
        if n:
            out["inbox"] = {
                "pendingMentions": [m.to_json() for m in self.pending_mentions],
                "count": n,
                "hint": mention_hint_work(n),
            }
        return out


@dataclass(slots=True)
class AgentStateView:
    """The /agent/<id>/state answer (also the `state-sync` frame payload)."""

    agent_id: str
    checkpoint: Checkpoint | None
    unread_messages: list[DirectMessage]
    recent_memories: list[Memory]

    def to_json(self) -> JsonObj:
        """`{agentId, checkpoint, unreadMessages, recentMemories}`."""
        return {
            "agentId": self.agent_id,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_json(),
            "unreadMessages": [m.to_json() for m in self.unread_messages],
            "recentMemories": [m.to_json() for m in self.recent_memories],
        }


@dataclass(slots=True)
class ClaimOutcome:
    """A claim attempt: the new claim, or the existing claim that blocks it (`conflict`)."""

    claim: Claim
    conflict: bool = False


@dataclass(slots=True)
class HandoffOutcome:
    """A handoff claim/complete: the updated handoff, or the upstream error text."""

    handoff: Handoff | None
    error: str | None = None


@dataclass(slots=True)
class LockCheck:
    """The /check answer; `expired_now` when this check released an expired lock."""

    resource_path: str
    lock: Lock | None
    now_ms: int
    expired_now: Lock | None = None

    def to_json(self) -> JsonObj:
        """`{locked:false,resourcePath[,note]}` or `{locked:true,lock:{...,remainingMs}}`."""
        if self.lock is not None:
            return {"locked": True, "lock": self.lock.check_json(self.now_ms)}
        out: JsonObj = {"locked": False, "resourcePath": self.resource_path}
        if self.expired_now is not None:
            out["note"] = "Previous lock expired"
        return out


@dataclass(slots=True)
class LockAcquireOutcome:
    """A /lock attempt: `acquired`, or the holder's lock that blocks it; `expired_previous` is an
    expired lock this one took over, `relock` says the holder extended its own lock."""

    acquired: bool
    lock: Lock
    ttl_ms: float
    now_ms: int
    expired_previous: Lock | None = None
    relock: bool = False


@dataclass(slots=True)
class LockReleaseOutcome:
    """An /unlock attempt."""

    outcome: Literal["none", "released", "not_owner", "expired"]
    lock: Lock | None = None
    release_reason: str | None = None


@dataclass(slots=True)
class LockHistory:
    """The /history answer."""

    resource_path: str
    current: Lock | None
    history: list[LockHistoryEntry]

    def to_json(self) -> JsonObj:
        """`{resourcePath, currentLock, history}`."""
        return {
            "resourcePath": self.resource_path,
            "currentLock": None if self.current is None else self.current.to_json(),
            "history": [h.to_json() for h in self.history],
        }
