"""The DO API's business rules, decided once: what a command does, given the records it finds.

Each rule is a pure function of the current record(s) and the command: it builds the new record
or says why the command is refused, and nothing else. The actor store (`gateway.do`) and the
legacy store (`gateway.legacy.store`) load the records, call the rule and persist what it
returns; neither decides again. So the phases cannot disagree on what a lock, a claim or a
handoff transition does: a changed rule changes every phase at once.

Deliberate differences from upstream (docs/compatibility.md) are decided here too: a re-lock by
the holder extends and never shortens, an unlock of someone else's expired lock releases it as
expired.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Final

from gateway.domain import commands as c
from gateway.domain.claim_age import CLAIM_STALE_MS, claim_is_stale
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    ClaimOutcome,
    DirectMessage,
    GroupMessage,
    Handoff,
    HandoffOutcome,
    Lock,
    LockAcquireOutcome,
    LockCheck,
    LockReleaseOutcome,
    Memory,
    Zone,
)

__all__ = [
    "CLAIM_STALE_MS",
    "DEFAULT_RESOURCE_TYPE",
    "RECENT_CHAT",
    "RECENT_MEMORIES",
    "MentionMatcher",
    "acquire_lock",
    "check_lock",
    "claim_handoff",
    "claim_is_stale",
    "claim_work",
    "complete_handoff",
    "lock_expired",
    "mention_pattern",
    "new_dm",
    "new_handoff",
    "new_memory",
    "new_message",
    "new_zone",
    "register_agent",
    "release_lock",
    "save_checkpoint",
]

RECENT_CHAT: Final = 20
"""`/work`'s `recentChat`: the newest this many messages (docs/compatibility.md entry 16)."""

RECENT_MEMORIES: Final = 10
"""`/state`'s `recentMemories`: the newest this many memories."""

DEFAULT_RESOURCE_TYPE: Final = "file-lock"

# JS `\b` (no `u` flag) is an ASCII word boundary; Python's `\b` is Unicode-aware. The test was
# first one regex per agent, `@<id>B|@allB|@everyoneB|@teamB` with B the boundary spelled
# `(?:(?<=[A-Za-z0-9_])(?![A-Za-z0-9_])|(?<![A-Za-z0-9_])(?=[A-Za-z0-9_]))`, case-insensitive.
# Compiling it took 2-10 ms per agent (sixteen character classes under IGNORECASE), paid on each
# agent's first /work or chat read of a process (docs/benchmarks.md, issue 13). `MentionMatcher`
# decides exactly the same: only the literal `@<id>` is compiled per agent, and the boundary is a
# set lookup. Under IGNORECASE `[A-Za-z0-9_]` also matches these four non-ASCII letters, so the
# set has them too (tests/test_mentions.py compares both on generated texts).
_WORD_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_\u0130\u0131\u017f\u212a"
)
_GROUP_MENTIONS: Final = tuple(re.compile(f"@{name}", re.IGNORECASE) for name in ("all", "everyone", "team"))


class MentionMatcher:
    """Upstream's mention test `/@<id>\\b|@all\\b|@everyone\\b|@team\\b/i` (id escaped) as
    `search(text)`: does `text` mention the agent (docs/compatibility.md entry 18)?

    At each `@`, each of the four literals is tried in turn (case-insensitively, as the regex's
    alternatives were) and a match counts when a JS word boundary follows it: the characters on
    either side of its end are not both word characters or both not.
    """

    __slots__ = ("_literals",)

    def __init__(self, agent_id: str) -> None:
        self._literals = (re.compile("@" + re.escape(agent_id), re.IGNORECASE), *_GROUP_MENTIONS)

    def search(self, text: str) -> bool:
        """Whether `text` mentions the agent (or @all, @everyone, @team)."""
        at = text.find("@")
        while at >= 0:
            for literal in self._literals:
                m = literal.match(text, at)
                if m is not None:
                    end = m.end()
                    before = text[end - 1] in _WORD_CHARS
                    after = end < len(text) and text[end] in _WORD_CHARS
                    if before != after:
                        return True
            at = text.find("@", at + 1)
        return False


@lru_cache(maxsize=1024)
def mention_pattern(agent_id: str) -> MentionMatcher:
    """The mention test of `agent_id` (kept per id: it is asked on every /work and chat read)."""
    return MentionMatcher(agent_id)


# -- new records: what a create command stores (both stores store exactly this) --------------------


def new_message(cmd: c.PostChat) -> GroupMessage:
    """POST /chat: the message, stamped with the command's time, no reactions."""
    return GroupMessage(cmd.id, cmd.author, cmd.author_type, cmd.message, iso_from_ms(cmd.now_ms), [])


def new_zone(cmd: c.ZoneClaim) -> Zone:
    """POST /zones claim: the zone as claimed now (a claim of a known zoneId replaces it)."""
    return Zone(cmd.zone_id, cmd.path, cmd.owner, cmd.description, iso_from_ms(cmd.now_ms))


def new_handoff(cmd: c.CreateHandoff) -> Handoff:
    """POST /handoffs create: a `pending` handoff, not claimed."""
    return Handoff(
        cmd.id,
        cmd.from_agent,
        cmd.to_agent,
        cmd.title,
        cmd.context,
        cmd.code,
        cmd.file_path,
        cmd.next_steps,
        cmd.priority,
        "pending",
        None,
        iso_from_ms(cmd.now_ms),
        None,
        None,
    )


def new_dm(cmd: c.SendDm) -> DirectMessage:
    """POST /agent/<id>/messages: the message, unread."""
    return DirectMessage(cmd.id, cmd.from_agent, cmd.type, cmd.message, iso_from_ms(cmd.now_ms), False)


def new_memory(cmd: c.AddMemory) -> Memory:
    """POST /agent/<id>/memory: the memory."""
    return Memory(cmd.id, cmd.category, cmd.content, cmd.tags, iso_from_ms(cmd.now_ms))


# -- upserts: what a command keeps of the record it finds --------------------------------------------


def register_agent(existing: Agent | None, cmd: c.RegisterAgent) -> Agent:
    """POST /agents: upstream's upsert: `currentTask` and `workingOn` kept when not given, the
    status, arrays and `lastSeen` replaced (extra fields of the record kept)."""
    # built directly rather than with `dataclasses.replace`, which walks the fields by name on
    # every call: 6 us of every heartbeat (issue 13); every field is named, so a field added to
    # `Agent` later must be added here too (`extra` kept as is)
    base = existing or Agent(cmd.agent_id)
    return Agent(
        agent_id=base.agent_id,
        status=cmd.status,
        current_task=cmd.current_task or base.current_task,
        working_on=cmd.working_on or base.working_on,
        last_seen=iso_from_ms(cmd.now_ms),
        capabilities=cmd.capabilities,
        offers=cmd.offers,
        needs=cmd.needs,
        extra=base.extra,
    )


def save_checkpoint(old: Checkpoint | None, cmd: c.SaveCheckpoint) -> Checkpoint:
    """POST /checkpoint: the summary and the recent context kept when not given, the arrays
    replaced, stamped now (extra fields of the record kept)."""
    return Checkpoint(
        cmd.agent_id,
        cmd.conversation_summary or (old.conversation_summary if old else None),
        cmd.accomplishments,
        cmd.pending_work,
        cmd.recent_context or (old.recent_context if old else None),
        cmd.files_edited,
        iso_from_ms(cmd.now_ms),
        extra=dict(old.extra) if old else {},
    )


# -- claims -----------------------------------------------------------------------------------------
# `claim_is_stale` and `CLAIM_STALE_MS` are `gateway.domain.claim_age`'s, re-exported here.


def claim_work(existing: Iterable[Claim], cmd: c.ClaimWork) -> ClaimOutcome:
    """POST /claims claim, given the claims already on `cmd.what`: a conflict with the newest fresh
    claim of another agent, else the new claim (the agent's own claim is renewed; stale claims of
    others are taken over)."""
    holders = [cl for cl in existing if cl.by != cmd.by and not cl.stale]
    if holders:
        return ClaimOutcome(max(holders, key=lambda cl: cl.since), conflict=True)
    return ClaimOutcome(Claim(cmd.what, cmd.by, cmd.description, iso_from_ms(cmd.now_ms), stale=False))


# -- handoffs ---------------------------------------------------------------------------------------


def claim_handoff(h: Handoff | None, cmd: c.ClaimHandoff) -> HandoffOutcome:
    """POST /handoffs claim: a `pending` handoff open to the agent becomes `claimed` by it; else
    upstream's error text (answered with 409)."""
    if h is None:
        return HandoffOutcome(None, "Handoff not found")
    if h.status != "pending":
        return HandoffOutcome(None, f"Handoff already {h.status}")
    if h.to_agent and h.to_agent != cmd.agent_id:
        return HandoffOutcome(None, f"Handoff is targeted to {h.to_agent}")
    return HandoffOutcome(
        replace(h, status="claimed", claimed_by=cmd.agent_id, claimed_at=iso_from_ms(cmd.now_ms))
    )


def complete_handoff(h: Handoff | None, cmd: c.CompleteHandoff) -> HandoffOutcome:
    """POST /handoffs complete: only its claimant completes a `claimed` handoff; else upstream's
    error text (answered with 400)."""
    if h is None:
        return HandoffOutcome(None, "Handoff not found")
    if h.status != "claimed":
        return HandoffOutcome(None, f"Handoff must be claimed first (current: {h.status})")
    if h.claimed_by != cmd.agent_id:
        return HandoffOutcome(None, f"Handoff is claimed by {h.claimed_by}")
    return HandoffOutcome(replace(h, status="completed", completed_at=iso_from_ms(cmd.now_ms)))


# -- locks ------------------------------------------------------------------------------------------


def lock_expired(lock: Lock, now_ms: int) -> bool:
    """Has the lock run out? (At its expiry instant it has: a new lock may take it.)"""
    return now_ms >= lock.expires_ms


def check_lock(lock: Lock | None, resource_path: str, now_ms: int) -> LockCheck:
    """/check: a lock past its expiry is reported gone (`expired_now`: the store removes it)."""
    if lock is not None and now_ms > lock.expires_ms:
        return LockCheck(resource_path, None, now_ms, expired_now=lock)
    return LockCheck(resource_path, lock, now_ms)


def acquire_lock(current: Lock | None, cmd: c.AcquireLock) -> LockAcquireOutcome:
    """/lock: refused (not `acquired`, the holder's lock) while someone else holds it; otherwise a
    new lock, a takeover of an expired one (`expired_previous`), or the holder's re-lock
    (`relock`: same `lockedAt`, the reason kept unless a new one is given, the expiry the later
    of the old one and now + ttl, never shorter)."""
    now = cmd.now_ms
    expired: Lock | None = None
    if current is not None:
        if not lock_expired(current, now) and current.locked_by != cmd.agent_id:
            return LockAcquireOutcome(False, current, cmd.ttl_ms, now)
        if lock_expired(current, now):
            expired, current = current, None
    ttl_expiry = int(now + cmd.ttl_ms)
    if current is not None:
        expires_ms = max(current.expires_ms, ttl_expiry)
        lock = Lock(
            cmd.resource_path,
            cmd.resource_type or current.resource_type,
            current.locked_by,
            cmd.reason if cmd.reason is not None else current.reason,
            current.locked_at,
            iso_from_ms(expires_ms),
            expires_ms,
            extra=current.extra,
        )
        return LockAcquireOutcome(True, lock, cmd.ttl_ms, now, relock=True)
    lock = Lock(
        cmd.resource_path,
        cmd.resource_type or DEFAULT_RESOURCE_TYPE,
        cmd.agent_id,
        cmd.reason,
        iso_from_ms(now),
        iso_from_ms(ttl_expiry),
        ttl_expiry,
    )
    return LockAcquireOutcome(True, lock, cmd.ttl_ms, now, expired_previous=expired)


def release_lock(current: Lock | None, cmd: c.ReleaseLock) -> LockReleaseOutcome:
    """/unlock: the holder releases (`manual`), `force` steals (`stolen`), someone else's expired
    lock is released as `expired`; otherwise `not_owner` (403), or `none` without a lock."""
    if current is None:
        return LockReleaseOutcome("none")
    is_owner = current.locked_by == cmd.agent_id
    if not is_owner and lock_expired(current, cmd.now_ms):
        return LockReleaseOutcome("expired", current, "expired")
    if not is_owner and not cmd.force:
        return LockReleaseOutcome("not_owner", current)
    return LockReleaseOutcome("released", current, "manual" if is_owner else "stolen")
