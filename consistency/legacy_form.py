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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

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

__all__ = ["legacy_form", "same_as_read"]

_STR: Final[frozenset[type]] = frozenset({str})
_OPT_STR: Final[frozenset[type]] = frozenset({str, type(None)})
_LIST: Final[frozenset[type]] = frozenset({list})
_OPT_LIST: Final[frozenset[type]] = frozenset({list, type(None)})
_BOOL: Final[frozenset[type]] = frozenset({bool})

_Guard = tuple[tuple[str, frozenset[type]], ...]
_Render = Callable[[EntityKey, Any], dict[str, Any]]

# domain -> (entity class, the types each attribute must have to read back as itself, render)
_FORMS: Final[dict[str, tuple[type, _Guard, _Render]]] = {
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
        lambda _k, e: m.agent_to_legacy(e),
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
        lambda _k, e: m.task_to_legacy(e),
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
        lambda _k, e: m.zone_to_legacy(e),
    ),
    "claim": (
        Claim,
        (("what", _STR), ("by", _STR), ("description", _OPT_STR), ("since", _STR)),
        lambda _k, e: m.claim_to_legacy(e),
    ),
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
        lambda _k, e: m.handoff_to_legacy(e),
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
        lambda _k, e: m.checkpoint_to_legacy(e),
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
        lambda k, e: m.dm_to_legacy(e, k.scope),
    ),
    "memory": (
        Memory,
        (("id", _STR), ("category", _STR), ("content", _STR), ("tags", _LIST), ("created_at", _STR)),
        lambda k, e: m.memory_to_legacy(e, k.scope),
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
        lambda _k, e: m.lock_to_legacy(e),
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

_RENDER_ERRORS: Final = (TypeError, ValueError, KeyError, AttributeError)


def legacy_form(key: EntityKey, entity: Entity) -> dict[str, Any] | None:
    """The legacy value `entity` is written as under `key`, or None when a Redis value equal to
    it could still read back as a different entity (see the module doc): no fast path then."""
    form = _FORMS.get(key.domain)
    if form is None or not _reads_back(key, entity, form[0], form[1]):
        return None
    try:
        return form[2](key, entity)
    except _RENDER_ERRORS:
        return None


def _reads_back(key: EntityKey, entity: Entity, cls: type, guard: _Guard) -> bool:
    """Whether the legacy form of `entity` reads back as `entity` (the module doc's list)."""
    if type(entity) is not cls or type(entity.extra) is not dict:
        return False
    for attr, types in guard:
        if type(getattr(entity, attr)) not in types:
            return False
    identity = _IDENTITY.get(key.domain)
    if identity is not None and getattr(entity, identity[0]) != getattr(key, identity[1]):
        return False
    return not (
        isinstance(entity, Handoff) and (entity.to_agent == _NO_ONE or entity.status in _LEGACY_SPELLED)
    )


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
