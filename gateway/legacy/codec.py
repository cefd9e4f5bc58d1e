"""Tolerant reads and exact writes of legacy Redis values (legacy-redis.md §0.1, Appendix C).

Reads mirror the legacy readers (Upstash auto-deserialisation, then the code's own `JSON.parse`):

* a value is `json.loads`-ed; when that gives a `str` that looks like JSON (`{` or `[`), it is
  decoded once more, because the legacy readers would accept such a double-encoded value. Only a
  *whole* value is decoded twice: fields inside a value are never touched (a checkpoint's
  `recentContext` holding JSON text stays a string; migration.md, "Decoding").
* the presence hash holds bare words (`online`/`offline`), not JSON.
* a value that cannot be decoded, or has the wrong JSON type for its family, becomes a `Corrupt`
  result carrying key, field and reason. The caller reports it to a `CorruptionLog` (a structlog
  warning plus per-key counts) and skips it. Unlike the legacy API (§10.15), nothing is ever
  deleted because it could not be read, and a corrupt value never fails a request.

Writes mirror JS `JSON.stringify` of the legacy writers: compact, raw UTF-8 (not ASCII-escaped),
keys in insertion order (the mapping builds dicts in the legacy writers' order), integral numbers
without `.0`, and properties whose value is `UNDEFINED` left out (JS drops `undefined`, keeps
`null`).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog

__all__ = [
    "UNDEFINED",
    "Corrupt",
    "CorruptionLog",
    "Undefined",
    "decode",
    "decode_array",
    "decode_object",
    "decode_presence",
    "dumps",
    "loads",
]

_SAFE_INT: Final = 2**53
_PREVIEW_CHARS: Final = 120
_PRESENCE_WORDS: Final = frozenset({"online", "offline"})
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class Undefined:
    """The JS `undefined`: a property holding it is left out of the JSON (see `dumps`)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = Undefined()


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A legacy value that could not be read: where it is and why. It is skipped, never deleted."""

    key: str
    field: str | None
    reason: str
    preview: str = ""


class _Undecodable(ValueError):
    """Internal: the text is not JSON."""


def _reject_constant(name: str) -> Any:
    raise _Undecodable(f"not JSON: {name} is not a JSON value")


def _parse(text: str | bytes) -> Any:
    """orjson first (fast); the stdlib for what orjson refuses but `JSON.parse` accepts
    (escaped lone surrogates, integers beyond 64 bits). Both refuse NaN and Infinity, as JS does."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as first:
        if isinstance(text, str) and _LONE_SURROGATE.search(text):
            # raw surrogates come from bytes that are not UTF-8 (the client's surrogateescape)
            raise _Undecodable("not valid UTF-8") from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            raise _Undecodable(f"not JSON: {first}") from None


def loads(raw: str | bytes) -> Any:
    """Decode a legacy value like the legacy readers do, decoding double-encoded JSON once more.

    Raises ValueError when the text (or, for a double-encoded value, the inner text) is not JSON.
    """
    value = _parse(raw)
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            value = _parse(value)
        except _Undecodable as exc:
            raise _Undecodable(f"double-encoded value whose inner text is {exc}") from None
    return value


def _preview(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return text[:_PREVIEW_CHARS]


def decode(raw: str | bytes, *, key: str, field: str | None = None) -> Any | Corrupt:
    """The decoded value, or a `Corrupt` naming `key`/`field` when it is not JSON."""
    try:
        return loads(raw)
    except ValueError as exc:
        return Corrupt(key, field, str(exc), _preview(raw))


def decode_object(raw: str | bytes, *, key: str, field: str | None = None) -> dict[str, Any] | Corrupt:
    """A value that must be a JSON object (every hash value of sections 1-8 except the arrays)."""
    value = decode(raw, key=key, field=field)
    if isinstance(value, Corrupt | dict):
        return value
    return Corrupt(key, field, f"expected a JSON object, got {type(value).__name__}", _preview(raw))


def decode_array(raw: str | bytes, *, key: str, field: str | None = None) -> list[Any] | Corrupt:
    """A value that must be a JSON array (`dm:messages`, `dm:user-convos`)."""
    value = decode(raw, key=key, field=field)
    if isinstance(value, Corrupt | list):
        return value
    return Corrupt(key, field, f"expected a JSON array, got {type(value).__name__}", _preview(raw))


def decode_presence(raw: str | bytes, *, key: str, field: str) -> str | Corrupt:
    """A presence value: the bare word `online`/`offline` (a JSON-quoted word is accepted too)."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    word = text.strip()
    if len(word) >= 2 and word[0] == word[-1] == '"':  # noqa: PLR2004 - the two quotes
        word = word[1:-1]
    if word in _PRESENCE_WORDS:
        return word
    return Corrupt(key, field, "presence is neither 'online' nor 'offline'", _preview(raw))


# --- writes ----------------------------------------------------------------------------------------


_PLAIN: Final = frozenset({str, int, bool, type(None)})
"""Types `_js_ready` hands back as they are (tested by exact type first: the common case)."""


def _js_ready(value: Any) -> Any:
    """A copy without UNDEFINED properties and with integral floats as ints (JS prints `3`)."""
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _js_ready(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list | tuple):
        # JSON.stringify writes undefined array elements as null.
        return [v if type(v) in _PLAIN else None if v is UNDEFINED else _js_ready(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _SAFE_INT:
        return int(value)
    return value


def dumps(value: Any) -> str:
    """JS `JSON.stringify(value)`: compact, raw UTF-8, insertion order, no UNDEFINED properties."""
    ready = _js_ready(value)
    try:
        return orjson.dumps(ready).decode("utf-8")
    except TypeError:
        # orjson refuses lone surrogates (legal in JS strings); JSON.stringify escapes them.
        text = json.dumps(ready, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- reporting -------------------------------------------------------------------------------------


class CorruptionLog:
    """Where corrupt values are reported: a structlog warning each, counts per key, a few samples."""

    def __init__(self, *, max_samples: int = 100) -> None:
        self._log = structlog.get_logger("gateway.legacy")
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: collections.deque[Corrupt] = collections.deque(maxlen=max_samples)

    def report(self, corrupt: Corrupt) -> None:
        """Log and count one corrupt value; the value is left in Redis untouched."""
        self.counts[corrupt.key] += 1
        self.samples.append(corrupt)
        self._log.warning(
            "corrupt legacy value skipped",
            key=corrupt.key,
            field=corrupt.field,
            reason=corrupt.reason,
            preview=corrupt.preview,
        )

    @property
    def total(self) -> int:
        """How many corrupt values were reported."""
        return sum(self.counts.values())

    def as_dict(self) -> Mapping[str, int]:
        """Counts per key, for metrics and admin status."""
        return dict(self.counts)
