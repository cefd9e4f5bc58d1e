"""Entities as JSON, losslessly: the export file's lines and the admin API's streamed batches.

An entity is written as its domain model's fields (`value`, the dataclass attribute names) and
the properties the other store carries (`extra`, left out when empty), so a value read from one
store, written to a file and imported into the other is the same entity, legacy-only properties
and legacy spellings included. `mapping.canonical` gives the comparison form of any entity read
back from either; the file keeps the full value so nothing is lost on the way.

Reading checks every field's JSON type against the model, so a line of the wrong shape is
refused with a reason instead of reaching a store.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, Final

import orjson

from gateway.domain.entities import OWNERS, Entity, EntityKey, Unreadable
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
from gateway.domain.progress_records import CredentialRecord, ProgressRecord

_KEY_PARTS: Final = 3  # [domain, scope, id]

__all__ = [
    "TYPES",
    "BadLine",
    "entity_from_json",
    "entity_to_json",
    "item_from_json",
    "item_to_json",
    "key_from_json",
    "key_to_json",
]

Json = dict[str, Any]

TYPES: Final[dict[str, type]] = {
    "agent": Agent,
    "chat": GroupMessage,
    "task": Task,
    "zone": Zone,
    "claim": Claim,
    "handoff": Handoff,
    "checkpoint": Checkpoint,
    "dm": DirectMessage,
    "memory": Memory,
    "lock": Lock,
    "soul": ProgressRecord,
    "trace": ProgressRecord,
    "heartbeat": ProgressRecord,
    "shadow": ProgressRecord,
    "goal": ProgressRecord,
    "credential": CredentialRecord,
}
"""domain -> its model class (the actor-only domains: their agent actor rows, as stored)."""


class BadLine(ValueError):
    """A line (or a streamed record) that is not an entity of this format."""


def key_to_json(key: EntityKey) -> list[str]:
    return [key.domain, key.scope, key.id]


def key_from_json(value: Any) -> EntityKey:
    if not (isinstance(value, list) and len(value) == _KEY_PARTS and all(isinstance(x, str) for x in value)):
        raise BadLine("key must be [domain, scope, id], three strings")
    if value[0] not in OWNERS:
        raise BadLine(f"unknown domain {value[0]!r}")
    return EntityKey(value[0], value[1], value[2])


def entity_to_json(entity: Entity) -> Json:
    """The entity's fields (without `extra`), by attribute name."""
    cls: type = type(entity)
    return {name: getattr(entity, name) for name in _spec(cls).names}


Check = Callable[[Any], bool]


@cache
def _check(hint: Any) -> Check:  # noqa: PLR0911 - one exit per kind of type
    """Whether a JSON value fits the type `hint` (made once per hint)."""
    if hint is Any:
        return lambda _v: True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        parts = tuple(_check(h) for h in typing.get_args(hint))
        return lambda v: any(p(v) for p in parts)
    if hint is type(None):
        return lambda v: v is None
    if origin is list or hint is list:
        return lambda v: isinstance(v, list)
    if origin is dict or hint is dict:
        return lambda v: isinstance(v, dict)
    if hint is bool:
        return lambda v: isinstance(v, bool)
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint is str:
        return lambda v: isinstance(v, str)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return lambda v: v in allowed
    return lambda v: isinstance(v, hint)


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    """A model class's fields without `extra`: their names, the check of each, and those with
    a default (which a line may leave out)."""

    names: tuple[str, ...]
    checks: tuple[tuple[str, Check], ...]
    known: frozenset[str]
    defaults: frozenset[str]


@cache
def _spec(cls: type) -> _Spec:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
    return _Spec(
        tuple(f.name for f in fields),
        tuple((f.name, _check(hints[f.name])) for f in fields),
        frozenset(f.name for f in fields),
        frozenset(f.name for f in fields if f.default is not dataclasses.MISSING),
    )


def entity_from_json(domain: str, value: Any, extra: Any = None) -> Entity:
    """The entity of `domain` from its fields; BadLine naming the first field that is wrong."""
    cls = TYPES.get(domain)
    if cls is None:
        raise BadLine(f"unknown domain {domain!r}")
    if not isinstance(value, dict):
        raise BadLine(f"{domain}: value must be a JSON object")
    if extra is not None and not isinstance(extra, dict):
        raise BadLine(f"{domain}: extra must be a JSON object")
    spec = _spec(cls)
    if not spec.known.issuperset(value):
        unknown = sorted(set(value) - spec.known)
        raise BadLine(f"{domain}: unknown field {unknown[0]!r}")
    for name, check in spec.checks:
        if name not in value:
            if name in spec.defaults:
                continue
            raise BadLine(f"{domain}: missing field {name!r}")
        if not check(value[name]):
            raise BadLine(f"{domain}: field {name!r} has the wrong type ({type(value[name]).__name__})")
    entity: Entity = cls(**value, extra=dict(extra or {}))
    return entity


def item_to_json(key: EntityKey, value: Entity | Unreadable | None) -> Json:
    """One line: `{"key": [...], "value": {...}, "extra": {...}}`; an unreadable value as
    `{"key", "unreadable": {"raw", "reason"}}`; a missing one as `{"key", "value": null}`."""
    out: Json = {"key": key_to_json(key)}
    if isinstance(value, Unreadable):
        out["unreadable"] = {"raw": value.raw, "reason": value.reason}
    elif value is None:
        out["value"] = None
    else:
        out["value"] = entity_to_json(value)
        if value.extra:
            out["extra"] = value.extra
    return out


def item_from_json(data: Any) -> tuple[EntityKey, Entity | Unreadable | None]:
    """The inverse of `item_to_json`; BadLine for anything else."""
    if not isinstance(data, dict):
        raise BadLine("an entity line must be a JSON object")
    key = key_from_json(data.get("key"))
    bad = data.get("unreadable")
    if bad is not None:
        if not isinstance(bad, dict):
            raise BadLine("unreadable must be an object")
        return key, Unreadable(key, str(bad.get("raw", "")), str(bad.get("reason", "")))
    if "value" not in data:
        raise BadLine("an entity line needs a value")
    if data["value"] is None:
        return key, None
    return key, entity_from_json(key.domain, data["value"], data.get("extra"))


def dumps_line(data: Json) -> bytes:
    """One NDJSON line (with its newline)."""
    return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
