"""One hash field decided on the value this process last saw, written with a compare-and-set.

A lock acquire, a lock check that removes an expired lock and a checkpoint save each decide on
one field of a legacy hash and write it back. Reading the field first would cost a round trip
each time, so they decide on the hint (`LegacyRecords.hint`: the text this process last read or
wrote there) and write with `LegacyRecords.cas_or_current`, which writes only if Redis still
holds that text and otherwise answers what it holds now, to decide again on. What the hint
alone cannot settle is confirmed by a read first: an answer that writes nothing (a refused
acquire, a lock that is not expired) and a value that cannot be read (the 409). The three
callers had this loop written out each; it is here once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.errors import StoreUnavailable
from gateway.legacy.records import CAS_ATTEMPTS, LegacyRecords

__all__ = ["Answer", "Write", "decide_on_hint"]

V = TypeVar("V")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Answer(Generic[R]):
    """Answer `result` and write nothing: given only once a read of Redis confirmed the value."""

    result: R


@dataclass(frozen=True, slots=True)
class Write(Generic[R]):
    """Write `text` (None removes the field) if Redis still holds the value decided on, then
    answer `result`."""

    result: R
    text: str | None


async def decide_on_hint(
    records: LegacyRecords,
    key: str,
    fld: str,
    *,
    read: Callable[[], Awaitable[tuple[V | None, str | None]]],
    parse: Callable[[str | None], V | None],
    decide: Callable[[V | None], Answer[R] | Write[R]],
    unreadable: Callable[[], Exception],
    what: str,
    idempotent: bool = False,
) -> R:
    """`decide` on the field's value and persist what it says with a compare-and-set.

    `read` reads Redis (the value and its text), `parse` maps a text (None: missing) to a value,
    None for a text it cannot read. A decision on the hint that writes nothing, or a hint that
    cannot be read, is taken again on a read; a lost compare-and-set decides again on the text
    it found. A field this process never saw is taken as missing (a guess like any hint).
    `unreadable()` is raised for a value Redis holds that cannot be read;
    `StoreUnavailable` after `CAS_ATTEMPTS` decisions. `idempotent`: the compare-and-set may be
    sent again after a lost reply (see `cas_or_current`)."""
    known, raw = records.hint(key, fld)
    # a field never seen is taken as missing, as `update_conversation` does: a new lock or a
    # first checkpoint is one round trip (the compare-and-set alone), and a wrong guess costs
    # the read it saved (the compare-and-set answers what Redis holds); one attempt more for it
    guessed, known = not known, True
    fresh = False  # is `raw` what Redis held a moment ago (not a guess)?
    for _ in range(CAS_ATTEMPTS + guessed):
        if not known:
            value, raw = await read()
            known = fresh = True
        else:
            value = parse(raw)
        if value is None and raw is not None:
            if not fresh:
                known = False
                continue
            raise unreadable()
        step = decide(value)
        if isinstance(step, Answer):
            if not fresh:
                known = False
                continue
            return step.result
        done, raw = await records.cas_or_current(key, fld, raw, step.text, idempotent=idempotent)
        if done:
            return step.result
        fresh = True
    raise StoreUnavailable(f"legacy store unavailable: {what} too contended")
