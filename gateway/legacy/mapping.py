"""The one mapping between domain entities (actor side) and legacy Redis values, field by field.

Used by the legacy store, the import tool and the consistency checker alike, so the three can
never disagree. `docs/mapping.md` documents every field, the decisions of migration.md
("Mapping decisions") and what does not round-trip.

How a value survives both directions:

* Every entity has a list of `Field`s: the legacy property, the domain attribute (or `None` for a
  legacy-only property with a default, kept in `extra`), and the two conversions.
* Legacy properties no `Field` names are carried verbatim in the domain object's `extra`, in
  their original order; domain fields the legacy side does not model (agent capabilities, task
  files, checkpoint accomplishments ...) are written as extra JSON properties, which the legacy
  API ignores.
* When a legacy value spells a field in a way the canonical write would not reproduce (a task
  `assignee` that is `null` or absent instead of `""`, a handoff `status` of `pending`, an image
  message without a `message` key ...), the original spelling is remembered in
  `extra["$legacy"]` and written back as long as the domain value is unchanged. So a legacy value
  read and written back keeps every property and its spelling, while an entity created on the
  actor side is written in exactly the legacy writers' shape (and its `extra` stays empty).

Writes order the keys as the legacy writer does (`*_ORDER`); carried properties follow.
`canonical_*` give the forms the checker compares: ISO-8601 ms `Z` timestamps, `""`/missing
assignee as unassigned (null), missing arrays as empty, JSON as data, `extra` left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from gateway.domain.claim_age import claim_is_stale
from gateway.domain.jscompat import iso_from_ms, parse_js_date
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
from gateway.legacy.codec import UNDEFINED, Undefined

__all__ = [
    "HANDOFF_STATUS_TO_DO",
    "HANDOFF_STATUS_TO_LEGACY",
    "META",
    "UnmappableError",
    "agent_from_legacy",
    "agent_to_legacy",
    "canonical",
    "canonical_time",
    "chat_from_legacy",
    "chat_to_legacy",
    "checkpoint_from_legacy",
    "checkpoint_to_legacy",
    "claim_from_legacy",
    "claim_to_legacy",
    "conversation_id",
    "dm_from_legacy",
    "dm_to_legacy",
    "handoff_from_legacy",
    "handoff_to_legacy",
    "lock_from_legacy",
    "lock_to_legacy",
    "memory_from_legacy",
    "memory_owner",
    "memory_to_legacy",
    "task_from_legacy",
    "task_to_legacy",
    "zone_from_legacy",
    "zone_to_legacy",
]

META: Final = "$legacy"
"""The `extra` key remembering non-canonical legacy spellings: `{"absent": [...], "raw": {...}}`."""

Json = dict[str, Any]
E = TypeVar("E")
Raw = Any  # a legacy property value, or UNDEFINED when the property is absent


@dataclass(frozen=True, slots=True)
class Field:
    """One legacy property and how it maps: `attr` names the domain attribute, or is None for a
    legacy-only property kept in `extra` unless it equals its default."""

    key: str
    attr: str | None
    read: Callable[[Raw, Json], Any]  # legacy -> domain; ctx holds already-read domain values
    write: Callable[[Any, Json], Raw]  # domain -> legacy; UNDEFINED means "leave the key out"


def _same(a: Any, b: Any) -> bool:
    """JSON equality that also tells `1` from `true` and `1` from `1.0` from `"1"` by type."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- field conversions -----------------------------------------------------------------------------
#
# A read conversion accepts the JSON types the legacy writers produce for its property and raises
# `UnmappableError` for any other: a task `title` that is an array, a numeric `id`, a `tags` that is
# an object. Such a value is unreadable as a whole (`LegacyRecords.parse` reports and skips it;
# writes over it answer 409), never handed to the actor store or to clients with the wrong type.


class UnmappableError(ValueError):
    """A legacy value with a property of a JSON type its field cannot hold."""


def _kind(raw: Raw) -> str:
    names = {dict: "an object", list: "an array", str: "text", bool: "a boolean", int: "a number"}
    return names.get(type(raw), "a number" if isinstance(raw, float) else type(raw).__name__)


def _want(raw: Raw, expected: str) -> UnmappableError:
    return UnmappableError(f"expected {expected}, found {_kind(raw)}")


def _verbatim(raw: Raw, _ctx: Json) -> str | None:
    """Optional text: absent and null are None."""
    if raw is UNDEFINED or raw is None:
        return None
    if not isinstance(raw, str):
        raise _want(raw, "text or null")
    return raw


def _omit_none(value: Any, _ctx: Json) -> Raw:
    return UNDEFINED if value is None else value


def _text_or_none(raw: Raw, _ctx: Json) -> str | None:
    """`""`, null and absent are all "not set" (DO: a NULL column)."""
    text = _verbatim(raw, _ctx)
    return text or None


def _blank_if_none(value: Any, _ctx: Json) -> Raw:
    return "" if value is None else value


def _str_or(default: str) -> Callable[[Raw, Json], Any]:
    def read(raw: Raw, _ctx: Json) -> Any:
        text = _verbatim(raw, _ctx)
        return default if text is None else text

    return read


def _str_or_ctx(attr: str) -> Callable[[Raw, Json], Any]:
    """Text, or the already-read domain value `attr` when absent or null."""

    def read(raw: Raw, ctx: Json) -> Any:
        text = _verbatim(raw, ctx)
        return ctx[attr] if text is None else text

    return read


def _as_is(value: Any, _ctx: Json) -> Raw:
    return value


def _list_or_none(raw: Raw, _ctx: Json) -> list[Any] | None:
    """An optional array: absent and null are None."""
    if raw is UNDEFINED or raw is None:
        return None
    if not isinstance(raw, list):
        raise _want(raw, "an array or null")
    return raw


def _list_or_empty(raw: Raw, ctx: Json) -> list[Any]:
    return _list_or_none(raw, ctx) or []


def _nonempty_list(value: list[Any] | None, _ctx: Json) -> Raw:
    return value if value else UNDEFINED


def _virtual(default: Callable[[Json], Any]) -> tuple[Callable[[Raw, Json], Any], Callable[[Any, Json], Raw]]:
    """Conversions of a legacy-only property with a default (kept in `extra` when not default)."""

    def read(raw: Raw, ctx: Json) -> Any:
        return default(ctx) if raw is UNDEFINED else raw

    return read, _as_is


def _const(value: Any) -> Callable[[Json], Any]:
    return lambda _ctx: value


# --- the generic engine ----------------------------------------------------------------------------


def _ordered_keys(present: Sequence[str], order: Sequence[str]) -> list[str]:
    """The writer's key order: `order` first, then the rest as they come."""
    have = set(present)
    head = [k for k in order if k in have]
    taken = set(head)
    return head + [k for k in present if k not in taken]


_KNOWN: Final[dict[int, frozenset[str]]] = {}
"""id(spec) -> the legacy keys of the spec (the specs are module constants), made on first use."""


def _known(spec: Sequence[Field]) -> frozenset[str]:
    known = _KNOWN.get(id(spec))
    if known is None:
        known = _KNOWN[id(spec)] = frozenset(f.key for f in spec)
    return known


def _meta(value: Mapping[str, Any], order: Sequence[str], absent: list[str], raw_kept: Json) -> Json:
    """What `extra[META]` remembers of a legacy value's spelling (empty: nothing to remember)."""
    original_order = list(value)
    # `_ordered_keys(original_order, order) != original_order`, without building it: the
    # writer's order keeps the value as it is iff the value starts with its `order` keys
    head = [k for k in order if k in value]
    moved = original_order[: len(head)] != head
    meta: Json = {}
    if absent:
        meta["absent"] = absent
    if raw_kept:
        meta["raw"] = raw_kept
    if moved:
        meta["order"] = original_order
    return meta


def _read(
    value: Mapping[str, Any], spec: Sequence[Field], ctx: Json, order: Sequence[str] = ()
) -> tuple[Json, Json]:
    """Domain attribute values and `extra` (with META) from a legacy value."""
    attrs: Json = {}
    extra: Json = {}
    absent: list[str] = []
    raw_kept: Json = {}
    known = _known(spec)
    get = value.get
    # the hot loop of every legacy read: an unmappable property is named in the error;
    # UNDEFINED is a singleton (`is` tells it); a canonical value that is the raw value itself
    # is the same JSON
    for f in spec:
        key = f.key
        raw = get(key, UNDEFINED)
        try:
            domain = f.read(raw, ctx)
        except UnmappableError as e:
            raise UnmappableError(f"{key}: {e}") from None
        attr = f.attr
        if attr is not None:
            attrs[attr] = domain
            ctx[attr] = domain
        elif raw is not UNDEFINED and not _same(domain, f.read(UNDEFINED, ctx)):
            extra[key] = domain
        canon = f.write(domain, ctx)
        if raw is UNDEFINED:
            if canon is not UNDEFINED:
                absent.append(key)
        elif canon is not raw and (canon is UNDEFINED or not _same(canon, raw)):
            raw_kept[key] = raw
    if not known.issuperset(value):
        for key, raw in value.items():
            if key not in known:
                extra[key] = raw
    meta = _meta(value, order, absent, raw_kept)
    if meta:
        extra[META] = meta
    return attrs, extra


def _write(
    entity: Any, spec: Sequence[Field], order: Sequence[str], ctx: Json, extra: Mapping[str, Any]
) -> Json:
    """The legacy value of a domain entity: writer's key order, carried properties after."""
    meta = extra.get(META) or {}
    if not meta:
        return _write_plain(entity, spec, order, ctx, extra)
    absent = set(meta.get("absent", ()))
    raw_kept: Mapping[str, Any] = meta.get("raw", {})
    out: Json = {}
    for f in spec:
        if f.attr is not None:
            domain = ctx[f.attr] = getattr(entity, f.attr)
        else:
            domain = extra.get(f.key, f.read(UNDEFINED, ctx))
        if f.key in absent and _same(f.read(UNDEFINED, ctx), domain):
            continue
        if f.key in raw_kept and _same(f.read(raw_kept[f.key], ctx), domain):
            out[f.key] = raw_kept[f.key]
            continue
        canon = f.write(domain, ctx)
        if not isinstance(canon, Undefined):
            out[f.key] = canon
    known = {f.key for f in spec}
    for key, value in extra.items():
        if key != META and key not in known:
            out[key] = value
    keys = _ordered_keys(list(out), [*meta.get("order", ()), *order])
    return {k: out[k] for k in keys}


_KEYS_OF: Final[dict[tuple[int, int], tuple[frozenset[str], frozenset[str]]]] = {}
"""(id(spec), id(order)) -> (the spec's legacy keys, the writer's order as a set), made on first use."""


def _write_plain(
    entity: Any, spec: Sequence[Field], order: Sequence[str], ctx: Json, extra: Mapping[str, Any]
) -> Json:
    """`_write` of an entity whose `extra` remembers no legacy spelling (no META), the common
    case, in fewer steps: no spelling to restore, and the key order checked before it is made."""
    sets = _KEYS_OF.get((id(spec), id(order)))
    if sets is None:
        sets = _KEYS_OF[id(spec), id(order)] = (frozenset(f.key for f in spec), frozenset(order))
    known, ordered = sets
    out: Json = {}
    for f in spec:
        if f.attr is not None:
            domain = ctx[f.attr] = getattr(entity, f.attr)
        else:
            domain = extra.get(f.key, f.read(UNDEFINED, ctx))
        canon = f.write(domain, ctx)
        if canon is not UNDEFINED:
            out[f.key] = canon
    for key, value in extra.items():
        if key != META and key not in known:
            out[key] = value
    head = [k for k in order if k in out]
    if len(head) == len(out) and head == list(out):
        return out
    return {k: out[k] for k in head + [k for k in out if k not in ordered]}


def _build(cls: Callable[..., E], attrs: Json, extra: Json, **more: Any) -> E:
    return cls(**attrs, **more, extra=extra)


# --- agents: agent-coord:active-agents -------------------------------------------------------------

AGENT_ORDER: Final = ("id", "name", "status", "currentTask", "workingOn", "role", "lastSeen")
"""The `POST /api/agents` 7-field shape; carried properties (capabilities ...) follow."""

_name_read, _name_write = _virtual(lambda ctx: ctx["agent_id"])
_role_read, _role_write = _virtual(_const("agent"))
_AGENT: Final = (
    Field("id", "agent_id", lambda raw, ctx: ctx["agent_id"], _as_is),
    Field("name", None, _name_read, _name_write),
    Field("status", "status", _str_or("offline"), _as_is),
    Field("currentTask", "current_task", _text_or_none, _blank_if_none),
    Field("workingOn", "working_on", _text_or_none, _blank_if_none),
    Field("role", None, _role_read, _role_write),
    Field("lastSeen", "last_seen", _verbatim, _omit_none),
    Field("capabilities", "capabilities", _list_or_none, _omit_none),
    Field("offers", "offers", _list_or_none, _omit_none),
    Field("needs", "needs", _list_or_none, _omit_none),
)


def agent_from_legacy(agent_id: str, value: Mapping[str, Any]) -> Agent:
    """An `active-agents` value (any writer shape of §1.1) as an Agent; the hash field is the id."""
    attrs, extra = _read(value, _AGENT, {"agent_id": agent_id}, AGENT_ORDER)
    return _build(Agent, attrs, extra)


def agent_to_legacy(agent: Agent) -> Json:
    """The legacy value: the POST 7-field shape, plus carried properties (or the original shape)."""
    return _write(agent, _AGENT, AGENT_ORDER, {"agent_id": agent.agent_id}, agent.extra)


# --- group chat: agent-coord:messages --------------------------------------------------------------

CHAT_ORDER: Final = (
    "id",
    "author",
    "authorType",
    "message",
    "timestamp",
    "reactions",
    "imageData",
    "imageName",
)
_CHAT: Final = (
    Field("id", "id", _str_or(""), _as_is),
    Field("author", "author", _str_or(""), _as_is),
    Field("authorType", "author_type", _str_or("agent"), _as_is),
    # An image-only legacy message has no `message` key: "" here, and the key stays absent.
    Field("message", "message", _str_or(""), _as_is),
    Field("timestamp", "timestamp", _str_or(""), _as_is),
    Field("reactions", "reactions", _list_or_empty, _as_is),
)


def chat_from_legacy(value: Mapping[str, Any]) -> GroupMessage:
    """A chat list element as a GroupMessage (`imageData`/`imageName` carried in `extra`)."""
    attrs, extra = _read(value, _CHAT, {}, CHAT_ORDER)
    return _build(GroupMessage, attrs, extra)


def chat_to_legacy(msg: GroupMessage) -> Json:
    """The chat list element as `POST /api/chat` writes it."""
    return _write(msg, _CHAT, CHAT_ORDER, {}, msg.extra)


# --- tasks: agent-coord:tasks ----------------------------------------------------------------------

TASK_ORDER: Final = (
    "id", "title", "description", "status", "priority", "assignee", "createdBy", "createdAt",
    "updatedAt", "tags",
)  # fmt: skip
_TASK: Final = (
    Field("id", "id", _str_or(""), _as_is),
    Field("title", "title", _str_or(""), _as_is),
    Field("description", "description", _verbatim, _omit_none),
    Field("status", "status", _str_or("todo"), _as_is),
    Field("priority", "priority", _str_or("medium"), _as_is),
    # "", null and absent all mean unassigned (None); each is written back as it was.
    Field("assignee", "assignee", _text_or_none, _blank_if_none),
    Field("createdBy", "created_by", _str_or(""), _as_is),
    Field("createdAt", "created_at", _str_or(""), _as_is),
    Field("updatedAt", "updated_at", _str_or_ctx("created_at"), _as_is),
    Field("tags", "tags", _list_or_empty, _as_is),
    Field("files", "files", _list_or_empty, _nonempty_list),
)


def task_from_legacy(value: Mapping[str, Any]) -> Task:
    """A task value as a Task; status and priority verbatim (`review`, `critical` stay)."""
    attrs, extra = _read(value, _TASK, {}, TASK_ORDER)
    return _build(Task, attrs, extra)


def task_to_legacy(task: Task) -> Json:
    """The task value as the legacy create/update writers shape it (`files` carried when set)."""
    return _write(task, _TASK, TASK_ORDER, {"created_at": task.created_at}, task.extra)


# --- zones: agent-coord:zones ----------------------------------------------------------------------

ZONE_ORDER: Final = ("zoneId", "owner", "path", "description", "createdAt")
_ZONE: Final = (
    Field("zoneId", "zone_id", lambda raw, ctx: ctx["zone_id"], _as_is),
    Field("owner", "owner", _str_or(""), _as_is),
    Field("path", "path", _str_or(""), _as_is),
    Field("description", "description", _verbatim, _omit_none),
    Field("createdAt", "claimed_at", _str_or(""), _as_is),
)


def zone_from_legacy(zone_id: str, value: Mapping[str, Any]) -> Zone:
    """A zone value as a Zone (`createdAt` is the DO `claimedAt`); the hash field is the id."""
    attrs, extra = _read(value, _ZONE, {"zone_id": zone_id}, ZONE_ORDER)
    return _build(Zone, attrs, extra)


def zone_to_legacy(zone: Zone) -> Json:
    """The zone value as `POST /api/zones` writes it."""
    return _write(zone, _ZONE, ZONE_ORDER, {"zone_id": zone.zone_id}, zone.extra)


# --- claims: agent-coord:claims, field {by}:{what} -------------------------------------------------

CLAIM_ORDER: Final = ("what", "by", "description", "since", "stale")
_stale_read, _stale_write = _virtual(_const(False))
_CLAIM: Final = (
    Field("what", "what", _str_or(""), _as_is),
    Field("by", "by", _str_or(""), _as_is),
    Field("description", "description", _verbatim, _omit_none),
    Field("since", "since", _str_or(""), _as_is),
    Field("stale", None, _stale_read, _stale_write),  # always stored false; computed on read
)


def claim_from_legacy(value: Mapping[str, Any], *, now_ms: int | None = None) -> Claim:
    """A claim value as a Claim; `stale` computed from `since` when `now_ms` is given."""
    attrs, extra = _read(value, _CLAIM, {}, CLAIM_ORDER)
    claim = _build(Claim, attrs, extra)
    if now_ms is not None:
        claim.stale = claim_is_stale(claim.since, now_ms)
    return claim


def claim_to_legacy(claim: Claim) -> Json:
    """The claim value as `POST /api/claims` writes it (`stale:false`)."""
    return _write(claim, _CLAIM, CLAIM_ORDER, {}, claim.extra)


# --- handoffs: agent-coord:handoffs ----------------------------------------------------------------

HANDOFF_STATUS_TO_DO: Final = {"submitted": "pending", "claimed": "claimed", "integrated": "completed"}
HANDOFF_STATUS_TO_LEGACY: Final = {v: k for k, v in HANDOFF_STATUS_TO_DO.items()}
HANDOFF_ORDER: Final = (
    "id", "taskId", "fromAgent", "toAgent", "type", "status", "title", "description", "code",
    "filePath", "tests", "context", "priority", "createdAt", "updatedAt", "claimedBy", "claimedAt",
    "completedAt", "feedback",
)  # fmt: skip


def _handoff_status_read(raw: Raw, ctx: Json) -> str:
    text = _str_or("submitted")(raw, ctx)
    return str(HANDOFF_STATUS_TO_DO.get(text, text))


def _handoff_status_write(status: str, _ctx: Json) -> str:
    return HANDOFF_STATUS_TO_LEGACY.get(status, status)


def _to_agent_read(raw: Raw, ctx: Json) -> str | None:
    text = _verbatim(raw, ctx)
    return None if text == "any" else text


def _to_agent_write(value: str | None, _ctx: Json) -> str:
    return "any" if value is None else value


def _latest_change(ctx: Json) -> Any:
    """The default `updatedAt`: the latest of the create, claim and complete times."""
    stamps = [ctx.get(k) for k in ("created_at", "claimed_at", "completed_at")]
    return max((s for s in stamps if isinstance(s, str)), default="")


def _updated_write(value: Any, ctx: Json) -> Any:
    """`updatedAt` never falls behind a claim or completion the DO side recorded."""
    stamps = [s for s in (value, ctx.get("claimed_at"), ctx.get("completed_at")) if isinstance(s, str)]
    return max(stamps) if stamps else value


_type_read, _type_write = _virtual(_const("code"))
_HANDOFF: Final = (
    Field("id", "id", _str_or(""), _as_is),
    Field("fromAgent", "from_agent", _str_or(""), _as_is),
    Field("toAgent", "to_agent", _to_agent_read, _to_agent_write),
    Field("type", None, _type_read, _type_write),
    Field("status", "status", _handoff_status_read, _handoff_status_write),
    Field("title", "title", _str_or(""), _as_is),
    Field("code", "code", _verbatim, _omit_none),
    Field("filePath", "file_path", _verbatim, _omit_none),
    # A legacy handoff without `context` stays without it (DO: "" in the NOT NULL column).
    Field("context", "context", _str_or(""), _as_is),
    Field("nextSteps", "next_steps", _list_or_empty, _nonempty_list),
    Field("priority", "priority", _str_or("medium"), _as_is),
    Field("createdAt", "created_at", _str_or(""), _as_is),
    Field("claimedBy", "claimed_by", _verbatim, _omit_none),
    Field("claimedAt", "claimed_at", _verbatim, _omit_none),
    Field("completedAt", "completed_at", _verbatim, _omit_none),
    # legacy-only, after the times it depends on: kept when it is not simply the latest of them
    Field(
        "updatedAt", None, lambda raw, ctx: _latest_change(ctx) if raw is UNDEFINED else raw, _updated_write
    ),
)


def handoff_from_legacy(value: Mapping[str, Any]) -> Handoff:
    """A handoff value as a Handoff: `submitted`->`pending`, `integrated`->`completed`, `any`->null."""
    attrs, extra = _read(value, _HANDOFF, {}, HANDOFF_ORDER)
    return _build(Handoff, attrs, extra)


def handoff_to_legacy(handoff: Handoff) -> Json:
    """The handoff value in the legacy writer's shape; unknown statuses are kept verbatim."""
    return _write(handoff, _HANDOFF, HANDOFF_ORDER, {}, handoff.extra)


# --- checkpoints: agent-coord:checkpoints ----------------------------------------------------------

CHECKPOINT_ORDER: Final = (
    "agentId", "conversationSummary", "currentTask", "pendingWork", "recentContext", "checkpointAt",
    "accomplishments", "filesEdited",
)  # fmt: skip
_CHECKPOINT: Final = (
    Field("agentId", "agent_id", lambda raw, ctx: ctx["agent_id"], _as_is),
    Field("conversationSummary", "conversation_summary", _verbatim, _omit_none),
    Field("pendingWork", "pending_work", _list_or_empty, _nonempty_list),
    # recentContext is never decoded, even when it holds JSON text (context-manager.ts).
    Field("recentContext", "recent_context", _verbatim, _omit_none),
    Field("checkpointAt", "checkpoint_at", _verbatim, _omit_none),
    Field("accomplishments", "accomplishments", _list_or_empty, _nonempty_list),
    Field("filesEdited", "files_edited", _list_or_empty, _nonempty_list),
)


def checkpoint_from_legacy(agent_id: str, value: Mapping[str, Any]) -> Checkpoint:
    """A checkpoint value as a Checkpoint (legacy `currentTask` carried in `extra`)."""
    attrs, extra = _read(value, _CHECKPOINT, {"agent_id": agent_id}, CHECKPOINT_ORDER)
    return _build(Checkpoint, attrs, extra)


def checkpoint_to_legacy(cp: Checkpoint) -> Json:
    """The checkpoint value; `accomplishments`/`filesEdited` carried as extra properties."""
    return _write(cp, _CHECKPOINT, CHECKPOINT_ORDER, {"agent_id": cp.agent_id}, cp.extra)


# --- direct messages: agent-coord:dm:messages (one element of a conversation's array) --------------

DM_ORDER: Final = (
    "id", "conversationId", "from", "fromType", "to", "toType", "message", "type", "attachments",
    "timestamp", "read", "readAt",
)  # fmt: skip


def conversation_id(a: str, b: str) -> str:
    """`dm-{lower}-{higher}`: the two ids after JS default sort (UTF-16 code-unit order)."""
    low, high = sorted((a, b), key=lambda s: s.encode("utf-16-be", "surrogatepass"))
    return f"dm-{low}-{high}"


_ftype_read, _ftype_write = _virtual(_const("agent"))
_note_read, _note_write = _virtual(_const("note"))
_DM: Final = (
    Field("id", "id", _str_or(""), _as_is),
    Field("from", "from_agent", _str_or(""), _as_is),
    Field("fromType", None, _ftype_read, _ftype_write),
    Field("toType", None, _ftype_read, _ftype_write),
    Field("message", "message", _str_or(""), _as_is),
    Field("type", "type", _note_read, lambda v, _ctx: UNDEFINED if v == "note" else v),
    Field("timestamp", "timestamp", _str_or(""), _as_is),
    Field("read", "read", lambda raw, _ctx: raw is True, _as_is),
)
_DM_TO: Final = "to"


def dm_from_legacy(value: Mapping[str, Any]) -> DirectMessage:
    """A conversation message as an inbox DirectMessage of its `to` (kept in `extra["to"]`).

    Legacy DMs have no `type`: it is `note` unless a gateway-written `type` property is there.
    """
    attrs, extra = _read(value, _DM, {}, DM_ORDER)
    return _build(DirectMessage, attrs, extra)


def dm_to_legacy(dm: DirectMessage, to: str, *, read_at: str | None = None) -> Json:
    """The conversation message of `dm` sent to `to`; `readAt` set when read (keeps an old one)."""
    extra = dict(dm.extra)
    extra.setdefault("conversationId", conversation_id(dm.from_agent, to))
    extra[_DM_TO] = to
    if dm.read and "readAt" not in extra and read_at is not None:
        extra["readAt"] = read_at
    if not dm.read:
        extra.pop("readAt", None)
    return _write(dm, _DM, DM_ORDER, {}, extra)


# --- memory: agent-coord:shared-memory -------------------------------------------------------------

MEMORY_ORDER: Final = (
    "id", "category", "content", "tags", "createdBy", "createdAt", "references", "lastRecalled",
)  # fmt: skip
_refs_read, _refs_write = _virtual(_const(0))
_MEMORY: Final = (
    Field("id", "id", _str_or(""), _as_is),
    Field("category", "category", _str_or("learning"), _as_is),
    Field("content", "content", _str_or(""), _as_is),
    Field("tags", "tags", _list_or_empty, _as_is),
    Field("createdAt", "created_at", _str_or(""), _as_is),
    Field("references", None, _refs_read, _refs_write),
)


def memory_from_legacy(value: Mapping[str, Any]) -> Memory:
    """A team-wide memory as a Memory; its owner (`createdBy`) is carried in `extra`."""
    attrs, extra = _read(value, _MEMORY, {}, MEMORY_ORDER)
    return _build(Memory, attrs, extra)


def memory_owner(mem: Memory) -> str:
    """The agent whose per-agent memory this is on the actor side (`createdBy`, else `unknown`)."""
    owner = mem.extra.get("createdBy")
    return owner if isinstance(owner, str) else "unknown"


def memory_to_legacy(mem: Memory, agent_id: str) -> Json:
    """The shared-memory value of agent `agent_id`'s memory (`createdBy` = the agent)."""
    extra = dict(mem.extra)
    extra.setdefault("createdBy", agent_id)
    return _write(mem, _MEMORY, MEMORY_ORDER, {}, extra)


# --- locks: agent-coord:locks ----------------------------------------------------------------------

LOCK_ORDER: Final = ("resourcePath", "lockedBy", "reason", "lockedAt", "expiresAt", "resourceType")
_LOCK: Final = (
    Field("resourcePath", "resource_path", lambda raw, ctx: ctx["resource_path"], _as_is),
    Field("lockedBy", "locked_by", _str_or(""), _as_is),
    Field("reason", "reason", _verbatim, _omit_none),
    Field("lockedAt", "locked_at", _str_or(""), _as_is),
    Field("expiresAt", "expires_at", _str_or(""), _as_is),
    # the DO's resourceType, carried; its default `file-lock` is left out, as legacy never spells it
    Field(
        "resourceType",
        "resource_type",
        _str_or("file-lock"),
        lambda v, _ctx: UNDEFINED if v == "file-lock" else v,
    ),
)


def lock_from_legacy(resource_path: str, value: Mapping[str, Any]) -> Lock:
    """A lock value as a Lock; the expiry is the `expiresAt` inside it (unreadable = expired)."""
    attrs, extra = _read(value, _LOCK, {"resource_path": resource_path}, LOCK_ORDER)
    expires = parse_js_date(attrs["expires_at"]) if attrs["expires_at"] else None
    return _build(Lock, attrs, extra, expires_ms=0 if expires is None else expires)


def lock_to_legacy(lock: Lock) -> Json:
    """The lock value as `POST /api/locks` writes it; a DO `resourceType` is carried."""
    return _write(lock, _LOCK, LOCK_ORDER, {"resource_path": lock.resource_path}, lock.extra)


# --- canonical forms for comparison ----------------------------------------------------------------

_TIME_KEYS: Final = frozenset(
    {
        "lastSeen", "timestamp", "createdAt", "updatedAt", "claimedAt", "completedAt", "since",
        "checkpointAt", "lockedAt", "expiresAt",
    }
)  # fmt: skip
_ARRAY_KEYS: Final = frozenset(
    {"capabilities", "offers", "needs", "tags", "files", "nextSteps", "pendingWork", "accomplishments",
     "filesEdited", "reactions"}
)  # fmt: skip


def canonical_time(value: Any) -> Any:
    """An ISO-8601 UTC ms `Z` timestamp for any date text JS would parse; other values unchanged."""
    if isinstance(value, str):
        ms = parse_js_date(value)
        if ms is not None:
            return iso_from_ms(ms)
    return value


def canonical(entity: Any) -> Json:
    """The comparison form of a domain entity: its read-back JSON with canonical timestamps,
    missing arrays as `[]`, `""` as null for optional text (unassigned = null), no `extra`."""
    data: Json = entity.to_json()
    out: Json = {}
    for key, value in data.items():
        if key in _TIME_KEYS:
            out[key] = canonical_time(value)
        elif key in _ARRAY_KEYS:
            out[key] = value if isinstance(value, list) else []
        elif key in ("assignee", "currentTask", "workingOn", "description") and value == "":
            out[key] = None
        else:
            out[key] = value
    if "stale" in out:
        del out["stale"]  # computed at read time from `since`
    return out
