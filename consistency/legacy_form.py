"""The checker's fast path: an actor entity's legacy form, compared with the Redis value as read.

Mapping every Redis value into an entity is most of what a check costs. Most pairs are equal,
and an equal pair has a cheaper proof: render the actor entity into its legacy value with the
mapping's own write direction (`gateway.legacy.mapping.*_to_legacy`, the value the write-through
replica writes) and compare that JSON text with the raw Redis text (for a DM, the message object
as the conversation array held it). When they are equal, the Redis value maps to the entity the
rendering came from, so the pair is the same; when they differ, the Redis value is mapped and the
canonical comparison decides, as without the fast path (a different key order or number spelling
only costs the slow path, never a verdict).

"Maps to the entity the rendering came from" holds only where the write direction loses nothing
the canonical comparison looks at. It loses something in a few places, and `legacy_form` returns
None there, so those pairs always take the canonical path:

* a field of a type its legacy reader would refuse or read differently: `None` in a text field
  (a task title of null reads back as `""`), a number in a text field, an array field that is
  not a list, a DM `read` that is not a boolean (only `true` reads back as read);
* values two domain values share in the legacy form: a handoff addressed to the literal agent
  `any` (written as `any`, which means "no one"), a handoff status spelled the legacy way
  (`submitted` reads back as `pending`);
* identities the legacy side takes from the hash field, not the value: an agent id, a zone id,
  a lock's path or a checkpoint's agent that differs from its key.

`tests/checker/test_fast_path.py` holds this to the canonical comparison: for each such case,
and for random entities, the fast path never calls a pair the same that the canonical path would
not.

The rendering runs once per entity of a check, so it is compiled: for each domain one generated
function checks the guard attribute by attribute and unrolls the mapping's write engine over the
domain's field table (`mapping._write_plain`, the same tables, so the two cannot drift apart);
an entity whose `extra` remembers a legacy spelling is rendered by the mapping itself. A property
test holds the compiled forms to the mapping's `*_to_legacy`, key order included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

import orjson

from gateway.domain.entities import Entity, EntityKey
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.legacy import mapping as m
from gateway.legacy.codec import UNDEFINED

__all__ = ["legacy_form", "same_as_read"]

_STR: Final[frozenset[type]] = frozenset({str})
_OPT_STR: Final[frozenset[type]] = frozenset({str, type(None)})
_LIST: Final[frozenset[type]] = frozenset({list})
_OPT_LIST: Final[frozenset[type]] = frozenset({list, type(None)})
_BOOL: Final[frozenset[type]] = frozenset({bool})

_Guard = tuple[tuple[str, frozenset[type]], ...]

# domain -> (entity class, the types each attribute must have to read back as itself)
_GUARDS: Final[dict[str, tuple[type, _Guard]]] = {
    "agent": (
        Agent,
        (
            ("agent_id", _STR),
            ("status", _STR),
            ("current_task", _OPT_STR),
            ("working_on", _OPT_STR),
            ("last_seen", _OPT_STR),
            ("capabilities", _OPT_LIST),
            ("offers", _OPT_LIST),
            ("needs", _OPT_LIST),
        ),
    ),
    "task": (
        Task,
        (
            ("id", _STR),
            ("title", _STR),
            ("description", _OPT_STR),
            ("status", _STR),
            ("priority", _STR),
            ("assignee", _OPT_STR),
            ("created_by", _STR),
            ("created_at", _STR),
            ("updated_at", _STR),
            ("tags", _LIST),
            ("files", _LIST),
        ),
    ),
    "zone": (
        Zone,
        (
            ("zone_id", _STR),
            ("owner", _STR),
            ("path", _STR),
            ("description", _OPT_STR),
            ("claimed_at", _STR),
        ),
    ),
    "claim": (Claim, (("what", _STR), ("by", _STR), ("description", _OPT_STR), ("since", _STR))),
    "handoff": (
        Handoff,
        (
            ("id", _STR),
            ("from_agent", _STR),
            ("to_agent", _OPT_STR),
            ("status", _STR),
            ("title", _STR),
            ("code", _OPT_STR),
            ("file_path", _OPT_STR),
            ("context", _STR),
            ("next_steps", _LIST),
            ("priority", _STR),
            ("created_at", _STR),
            ("claimed_by", _OPT_STR),
            ("claimed_at", _OPT_STR),
            ("completed_at", _OPT_STR),
        ),
    ),
    "checkpoint": (
        Checkpoint,
        (
            ("agent_id", _STR),
            ("conversation_summary", _OPT_STR),
            ("pending_work", _LIST),
            ("recent_context", _OPT_STR),
            ("checkpoint_at", _OPT_STR),
            ("accomplishments", _LIST),
            ("files_edited", _LIST),
        ),
    ),
    "dm": (
        DirectMessage,
        (
            ("id", _STR),
            ("from_agent", _STR),
            ("type", _STR),
            ("message", _STR),
            ("timestamp", _STR),
            ("read", _BOOL),
        ),
    ),
    "memory": (
        Memory,
        (("id", _STR), ("category", _STR), ("content", _STR), ("tags", _LIST), ("created_at", _STR)),
    ),
    "lock": (
        Lock,
        (
            ("resource_path", _STR),
            ("locked_by", _STR),
            ("reason", _OPT_STR),
            ("locked_at", _STR),
            ("expires_at", _STR),
            ("resource_type", _STR),
        ),
    ),
}

_LEGACY_SPELLED: Final = frozenset(k for k, v in m.HANDOFF_STATUS_TO_DO.items() if k != v)
"""Handoff statuses in their legacy spelling (`submitted`, `integrated`): they read back as
another status."""

_NO_ONE: Final = "any"
"""The legacy `toAgent` of a handoff addressed to no one."""

# domain -> (attribute, which part of the key it must equal) for identities taken from the key
_IDENTITY: Final = {
    "agent": ("agent_id", "id"),
    "zone": ("zone_id", "id"),
    "lock": ("resource_path", "id"),
    "checkpoint": ("agent_id", "scope"),
}

# domain -> (the mapping's field spec, the writer's key order, the attribute its write context
# starts with): what `*_to_legacy` passes to the mapping's write engine
_SPECS: Final[dict[str, tuple[Any, tuple[str, ...], str | None]]] = {
    "agent": (m._AGENT, m.AGENT_ORDER, "agent_id"),  # the mapping's own tables
    "task": (m._TASK, m.TASK_ORDER, "created_at"),
    "zone": (m._ZONE, m.ZONE_ORDER, "zone_id"),
    "claim": (m._CLAIM, m.CLAIM_ORDER, None),
    "handoff": (m._HANDOFF, m.HANDOFF_ORDER, None),
    "checkpoint": (m._CHECKPOINT, m.CHECKPOINT_ORDER, "agent_id"),
    "dm": (m._DM, m.DM_ORDER, None),
    "memory": (m._MEMORY, m.MEMORY_ORDER, None),
    "lock": (m._LOCK, m.LOCK_ORDER, "resource_path"),
}

# the mapping's own renderers, for what the compiled ones leave to them (an extra remembering a
# legacy spelling)
_GENERIC: Final[dict[str, Callable[[EntityKey, Any], dict[str, Any]]]] = {
    "agent": lambda _k, e: m.agent_to_legacy(e),
    "task": lambda _k, e: m.task_to_legacy(e),
    "zone": lambda _k, e: m.zone_to_legacy(e),
    "claim": lambda _k, e: m.claim_to_legacy(e),
    "handoff": lambda _k, e: m.handoff_to_legacy(e),
    "checkpoint": lambda _k, e: m.checkpoint_to_legacy(e),
    "dm": lambda k, e: m.dm_to_legacy(e, k.scope),
    "memory": lambda k, e: m.memory_to_legacy(e, k.scope),
    "lock": lambda _k, e: m.lock_to_legacy(e),
}

_RENDER_ERRORS: Final = (TypeError, ValueError, KeyError, AttributeError)

_Form = Callable[[EntityKey, Any], "dict[str, Any] | None"]


def _conversation_id(a: str, b: str) -> str:
    """`mapping.conversation_id`, without encoding when both ids are ASCII (whose UTF-16 order
    is their order as text)."""
    if a.isascii() and b.isascii():
        return f"dm-{a}-{b}" if a <= b else f"dm-{b}-{a}"
    return m.conversation_id(a, b)


_INLINE_WRITES: Final = {
    id(m._as_is): "out[{k}] = v{i}",
    id(m._omit_none): "if v{i} is not None: out[{k}] = v{i}",
    id(m._blank_if_none): "out[{k}] = '' if v{i} is None else v{i}",
    id(m._nonempty_list): "if v{i}: out[{k}] = v{i}",
}
"""The mapping's write conversions the compiled renderers spell out (by identity); any other
is called as the engine calls it."""


def _compile(domain: str) -> _Form:  # noqa: PLR0912 - one code generator
    """The legacy form of an entity of `domain`, or None (see `legacy_form`), as one generated
    function: the guard spelled out attribute by attribute, then the mapping's write engine
    (`mapping._write_plain`) unrolled over the domain's fields. What the engine would do
    otherwise (an `extra` remembering a legacy spelling) is left to the mapping's own renderer.
    `tests/checker/test_fast_path.py` holds it to the mapping's renderers on any entity."""
    cls, guard = _GUARDS[domain]
    spec, order, ctx_attr = _SPECS[domain]
    env: dict[str, Any] = {
        "CLS": cls,
        "U": UNDEFINED,
        "META": m.META,
        "GENERIC": _GENERIC[domain],
        "CONV": _conversation_id,
        "SPELLED": _LEGACY_SPELLED,
        "KNOWN": frozenset(f.key for f in spec),
        "ORDER": tuple(order),
        "ORDERED": frozenset(order),
    }
    lines = ["def form(key, e):", "    if type(e) is not CLS: return None", "    extra = e.extra"]
    lines.append("    if type(extra) is not dict: return None")
    for n, (attr, types) in enumerate(guard):
        if len(types) == 1:
            env[f"T{n}"] = next(iter(types))
            lines.append(f"    if type(e.{attr}) is not T{n}: return None")
        else:
            env[f"T{n}"] = types
            lines.append(f"    if type(e.{attr}) not in T{n}: return None")
    identity = _IDENTITY.get(domain)
    if identity is not None:
        lines.append(f"    if e.{identity[0]} != key.{identity[1]}: return None")
    if domain == "handoff":
        lines.append(f"    if e.to_agent == {_NO_ONE!r} or e.status in SPELLED: return None")
    if domain == "dm":  # what dm_to_legacy(dm, to) adds to the extra
        lines += [
            "    extra = dict(extra)",
            "    if 'conversationId' not in extra: extra['conversationId'] = CONV(e.from_agent, key.scope)",
            "    extra['to'] = key.scope",
            "    if not e.read: extra.pop('readAt', None)",
        ]
    elif domain == "memory":  # what memory_to_legacy(mem, agent) adds
        lines += [
            "    extra = dict(extra)",
            "    if 'createdBy' not in extra: extra['createdBy'] = key.scope",
        ]
    lines.append("    if extra.get(META): return GENERIC(key, e)")
    calls = any(f.attr is None or id(f.write) not in _INLINE_WRITES for f in spec)
    if calls:
        lines.append("    ctx = {}" if ctx_attr is None else f"    ctx = {{{ctx_attr!r}: e.{ctx_attr}}}")
    # every value in the engine's (the spec's) order, into locals
    emit: dict[str, str] = {}
    for i, f in enumerate(spec):
        k = repr(f.key)
        if f.attr is not None:
            lines.append(f"    v{i} = e.{f.attr}")
            if calls:
                lines.append(f"    ctx[{f.attr!r}] = v{i}")
        else:
            env[f"R{i}"] = f.read
            lines.append(f"    v{i} = extra.get({k}, U)")
            lines.append(f"    if v{i} is U: v{i} = R{i}(U, ctx)")
        inline = _INLINE_WRITES.get(id(f.write))
        if inline is not None:
            emit[f.key] = "    " + inline.format(i=i, k=k)
        else:
            env[f"W{i}"] = f.write
            lines.append(f"    c{i} = W{i}(v{i}, ctx)")
            emit[f.key] = f"    if c{i} is not U: out[{k}] = c{i}"
    # the dict in the writer's final order: `order` first, then the spec's other keys
    lines.append("    out = {}")
    lines += [emit[k] for k in order if k in emit]
    lines += [emit[f.key] for f in spec if f.key not in order]
    lines += [
        "    if not extra: return out",
        "    moved = False",
        "    for ek, ev in extra.items():",
        "        if ek != META and ek not in KNOWN:",
        "            out[ek] = ev",
        "            if ek in ORDERED: moved = True",
        "    if not moved: return out",
        "    head = [x for x in ORDER if x in out]",
        "    return {x: out[x] for x in head + [x for x in out if x not in ORDERED]}",
    ]
    exec("\n".join(lines), env)  # noqa: S102 - our own code, made from the mapping's tables
    return cast("_Form", env["form"])


_FORMS: Final[dict[str, _Form]] = {d: _compile(d) for d in _GUARDS}


def legacy_form(key: EntityKey, entity: Entity) -> dict[str, Any] | None:
    """The legacy value `entity` is written as under `key`, or None when a Redis value equal to
    it could still read back as a different entity (see the module doc): no fast path then."""
    form = _FORMS.get(key.domain)
    if form is None:
        return None
    try:
        return form(key, entity)
    except _RENDER_ERRORS:
        return None


def same_as_read(key: EntityKey, raw: str | dict[str, Any], entity: Entity) -> bool:
    """Whether the Redis value `raw` (text, or a DM's message object) is exactly the legacy form
    of `entity`: then the pair is the same. False says nothing (the canonical path decides)."""
    form = legacy_form(key, entity)
    if form is None:
        return False
    try:
        text = orjson.dumps(form)
        if isinstance(raw, str):
            return text.decode() == raw
        return text == orjson.dumps(raw)
    except TypeError:  # not JSON orjson writes (integers beyond 64 bits, lone surrogates)
        return False
