"""The legacy Redis store as an entity source, in scan order (the sink: `gateway.bulk.legacy_sink`).

Every family is read in chunks (HSCAN, HMGET, LRANGE), so memory stays bounded by the batch plus
one sorted list of the ids of a domain (needed for the scan order, which both stores share):

* agents, tasks, zones, handoffs, locks, checkpoints: the hash's field names (HKEYS for a small
  hash; else HSCAN NOVALUES where the server has it, else a keys-only HSCAN run as a script,
  1,000 at a time), sorted, then HMGET per batch;
* claims: one HSCAN pass groups the `{by}:{what}` fields by the value's own `what`; per batch
  the fields are read again and the DO claim of each `what` is chosen (`LegacyRecords.winner`);
  the other fields of a `what` are known conflicts (`conflicts`), reported and left in Redis;
* memories: one HSCAN pass sorts (owner, id) by `createdBy`; then HMGET per batch;
* DMs: the conversation lists of `dm:user-convos`, one user at a time (the DO inbox of X is
  the messages to X in X's conversations); conversations no user lists are checked for
  corruption and otherwise reported as unreachable;
* chat: LRANGE in chunks of 1,000 (the list is capped near 1,000 by the legacy writer).

Values go through `gateway.legacy.mapping`; a value it cannot read comes back `Unreadable` with
its raw text and the reason. Nothing is ever written while reading.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from functools import partial
from itertools import compress
from typing import Any, Final, cast

import orjson
import structlog
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from gateway.bulk.items import Item, Selection, order_key, parse_cursor
from gateway.clock import Clock
from gateway.domain.entities import LEGACY_DOMAINS, Entity, EntityKey, Unreadable, actor_only, storable
from gateway.domain.model import Memory
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_array, decode_object
from gateway.legacy.records import LegacyRecords
from gateway.settings import LegacySettings

__all__ = ["Deferred", "KnownConflict", "LegacySource"]

log = structlog.get_logger(__name__)

_FIELDS_LUA: Final = """
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {}
for i = 1, #r[2], 2 do out[#out + 1] = r[2][i] end
return {r[1], out}
"""
"""A keys-only HSCAN step for a server without HSCAN NOVALUES (Redis before 7.4, Valkey before 8):
the values never cross the wire."""

_CHUNK: Final = 1000

WHOLE_MAX: Final = LegacySettings().hkeys_max
"""A hash of at most this many fields has its names listed with one HKEYS, not in HSCAN steps
(the default of the setting `legacy.hkeys_max`, `LegacySource.hkeys_max`).

Redis 7.0 has no HSCAN NOVALUES (Redis 7.4 and Valkey 8 have: `LegacySource.novalues`, then the
steps carry the names alone): a plain HSCAN sends every value to be dropped, and the keys-only
Lua step costs Redis more again (it copies each value into Lua). HKEYS sends the
names only; on the 1,000,000 data set it lists the 20,000 conversations of `dm:messages`
(7.4 KB of JSON each) in 2 ms of Redis CPU instead of 230 ms (HSCAN) or 480 ms (the Lua step).
One call blocks Redis for the whole hash, so only for small hashes: about 0.35 us a field, at
most about 12 ms here, no longer than one HSCAN step of `dm:messages` (1,000 such values) took.
Larger hashes are listed in steps as before, unless the operator raises the setting for a Redis
that nothing else needs meanwhile (`agent-coord check --whole-hashes`): then the 300,000 tasks
are one HKEYS of about 100 ms, and a sampled check reads a tenth of their values, not all."""

KEEP_MAX: Final = 32 * 1024 * 1024
"""Bytes of values a sampled listing keeps (`LegacySource._sampled_fields`): the HSCAN steps of a
large hash carry every value, so the chosen fields' values are kept from them instead of being
read again by HMGET (about a tenth of the hash at `--sample 0.1`: 10.5 MB of the 300,000 tasks'
105 MB). A larger share is dropped and read by HMGET per batch, so memory stays bounded."""


_client_text: Final = partial(bytes.decode, encoding="utf-8", errors="surrogateescape")
"""A value's text as the client decodes it (`decode_responses`, `encoding_errors`)."""


class _Kept:
    """Values a sampled scan has read once already (`KEEP_MAX` bytes at most), which its batches
    take instead of reading them again; `values` None: read them by HMGET."""

    __slots__ = ("size", "values")

    def __init__(self) -> None:
        self.values: dict[str, str] | None = {}
        self.size = 0

    def add(self, name: str, raw: str) -> None:
        if self.values is None:
            return
        self.values[name] = raw
        self.size += len(raw)
        if self.size > KEEP_MAX:
            self.drop()

    def add_page(self, names: list[str], raws: list[bytes] | None) -> None:
        """The values `raws` (undecoded, as an HSCAN step sent them; None: the listing had none)
        of the fields `names`, decoded as the client decodes (UTF-8, surrogateescape); C calls
        only, no Python frame per value."""
        if self.values is None:
            return
        if raws is None:
            self.drop()
            return
        self.size += sum(map(len, raws))
        if self.size > KEEP_MAX:
            self.drop()
            return
        self.values.update(zip(names, map(_client_text, raws), strict=True))

    def drop(self) -> None:
        self.values = None

    async def get(self, source: LegacySource, key: str, names: Sequence[str]) -> list[str | None]:
        """The values of fields `names` of hash `key`: those kept, else read (HMGET)."""
        if self.values is not None:
            return [self.values.get(n) for n in names]
        return await source._hmget(key, names)


_DM_GROUP: Final = 200
"""Conversation arrays read in one HMGET by a DM scan (the inboxes of several users): fewer round
trips than one per user, and few enough arrays (up to 500 messages each) held at once."""

_Parse = Callable[[str, dict[str, Any]], Entity]
"""The entity of one hash field's decoded value: `parse(field, value)`."""

_MEMORY: Final[_Parse] = lambda _f, v: m.memory_from_legacy(v)  # noqa: E731 - a table entry

# domain -> (hash key, parse)
_SIMPLE: Final[dict[str, tuple[str, _Parse]]] = {
    "agent": (keys.ACTIVE_AGENTS, m.agent_from_legacy),
    "task": (keys.TASKS, lambda _f, v: m.task_from_legacy(v)),
    "zone": (keys.ZONES, m.zone_from_legacy),
    "handoff": (keys.HANDOFFS, lambda _f, v: m.handoff_from_legacy(v)),
    "checkpoint": (keys.CHECKPOINTS, m.checkpoint_from_legacy),
    "lock": (keys.LOCKS, m.lock_from_legacy),
}


_PARSE_BY_HASH: Final[dict[str, _Parse]] = dict(_SIMPLE.values()) | {keys.SHARED_MEMORY: _MEMORY}


def _key(domain: str, fld: str) -> EntityKey:
    """The key of a simple hash field (a checkpoint's field is its agent: the scope)."""
    return EntityKey(domain, fld, "") if domain == "checkpoint" else EntityKey(domain, "", fld)


class Deferred:
    """A value a deferring scan read but did not decode or map (`LegacySource.defer`).

    `raw` is the hash value's text (of field `field` of hash `hash_key`), or for a DM
    (`hash_key` None) its message object as the conversation array held it, kept as the JSON
    text orjson writes of it (`_message_text`); `entity()` makes
    what the scan would otherwise have yielded (the entity, or `Unreadable`). Plain data, so it
    can be sent to another process. The consistency checker compares `raw` with the other
    store's legacy form first and maps only the values that differ.
    """

    __slots__ = ("field", "hash_key", "key", "now", "raw")

    def __init__(
        self,
        key: EntityKey,
        raw: str | dict[str, Any],
        hash_key: str | None = None,
        field: str = "",
        now: int = 0,
    ) -> None:
        self.key = key
        self.raw = raw
        self.hash_key = hash_key
        self.field = field
        self.now = now  # a claim's `stale` is computed for this time

    def entity(self) -> Entity | Unreadable:
        """The entity (or the reason it cannot be read), as the scan would have yielded it."""
        if self.hash_key is None:
            raw = self.raw
            message = orjson.loads(raw) if isinstance(raw, str) else raw  # the object it was made of
            return LegacySource._dm_entity(self.key, cast("dict[str, Any]", message))
        if self.hash_key == keys.CLAIMS:
            parse = LegacySource._claim_parse(self.now)
        else:
            parse = _PARSE_BY_HASH[self.hash_key]
        return LegacySource._entity(self.key, cast("str", self.raw), self.hash_key, self.field, parse)


def _message_text(message: dict[str, Any]) -> str | dict[str, Any]:
    """A DM's message object as a deferring scan keeps it: its JSON text as orjson writes it
    (what the checker's fast path compares it as; one string to send to the checking process
    instead of a dict of a dozen; the object freed with its conversation's array), or the object
    itself when orjson cannot write it (an integer beyond 64 bits, a lone surrogate).
    `Deferred.entity` loads the text back into an equal object. A str, not orjson's bytes: those
    are allocated outside Python's small-object arenas, and a full check's second process held
    about 15 MB more of them than of the objects."""
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # orjson.JSONEncodeError
        return message


class KnownConflict:
    """Several legacy claim fields for one `what`: the DO claim and the fields left aside."""

    def __init__(self, what: str, winner: str, others: list[str]) -> None:
        self.what = what
        self.winner = winner
        self.others = others

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "kept": self.winner, "leftInRedis": self.others}


class LegacySource:
    """Streams the entities of the legacy layout (docs/mapping.md) in scan order."""

    name = "legacy"

    def __init__(self, records: LegacyRecords, clock: Clock, *, hkeys_max: int = WHOLE_MAX) -> None:
        self.records = records
        self.clock = clock
        self.hkeys_max = hkeys_max
        """A hash of at most this many fields is listed with one HKEYS (`WHOLE_MAX`)."""
        self.conflicts: list[KnownConflict] = []
        self.unreachable_conversations: list[str] = []
        self._fields_script = records.client.redis.register_script(_FIELDS_LUA)
        self.novalues: bool | None = None
        """Does the server take `HSCAN ... NOVALUES` (Redis 7.4 and later, Valkey 8 and later)?
        Asked at the first hash listed in steps, until an answer decides it (`_has_novalues`);
        then the steps carry the names alone."""
        self.defer = False
        """When set, scans yield `Deferred` values (typed as entities) in place of the entities
        of hash values, single-field claims and DMs, for a consumer that handles them (the
        consistency checker). Reads by key always map."""

    # -- plumbing ---------------------------------------------------------------------------------

    async def _whole_names(self, key: str) -> list[bytes] | None:
        """The field names of hash `key` (undecoded) when it has at most `hkeys_max` fields
        (one HKEYS), else None: the caller lists it in steps."""
        limit = self.hkeys_max

        async def op(r: Redis) -> list[bytes] | None:
            if int(await r.hlen(key)) > limit:
                return None
            got = await r.execute_command("HKEYS", key, **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
            return cast("list[bytes]", got)

        return await self.records.run(f"HKEYS {key}", op)

    async def _has_novalues(self, key: str) -> bool:
        """Whether the server takes HSCAN's NOVALUES (`novalues`): one step of `key` of one field
        asked with it, until it is decided. An older server answers a syntax error; any error
        counts as no, so the listing goes on the way it did before the question. A reply with no
        name decides nothing (Redis 7.0 answers a key that is gone, deleted since its HLEN, with
        an empty step before it reads the options): this hash is listed without, and the next
        one asks again."""
        if self.novalues is None:

            async def op(r: Redis) -> bool | None:
                try:
                    _, names = await r.execute_command(  # type: ignore[no-untyped-call]
                        "HSCAN", key, 0, "COUNT", 1, "NOVALUES", no_values=True, **{NEVER_DECODE: True}
                    )
                except ResponseError:
                    return False
                return True if names else None

            answer = await self.records.run(f"HSCAN {key} NOVALUES", op)
            if answer is None:
                return False
            self.novalues = answer
            log.info("legacy.hscan_novalues", supported=answer)
        return self.novalues

    async def _flat_steps(self, key: str, *options: str) -> AsyncIterator[list[bytes]]:
        """The replies of HSCAN steps of hash `key`, undecoded, as the flat list Redis sends
        (redis-py's `no_values` reply shape; no dict made of the page): names and values in
        turn, or names alone with the option NOVALUES."""
        cursor = 0
        while True:
            step = cursor

            async def op(r: Redis, step: int = step) -> tuple[int, list[bytes]]:
                got = await r.execute_command(  # type: ignore[no-untyped-call]
                    "HSCAN", key, step, "COUNT", _CHUNK, *options, no_values=True, **{NEVER_DECODE: True}
                )
                return cast("tuple[int, list[bytes]]", got)

            cursor, flat = await self.records.run(f"HSCAN {key}", op)
            yield flat
            if not cursor:
                return

    async def _field_names(self, key: str) -> list[str]:
        """Every field name of hash `key`, sorted (HKEYS when small, else HSCAN NOVALUES steps
        where the server has them, else keys-only HSCAN steps of a script)."""
        whole = await self._whole_names(key)
        if whole is not None:
            return sorted(set(map(_client_text, whole)))
        names: list[str] = []
        if await self._has_novalues(key):
            async for page in self._flat_steps(key, "NOVALUES"):
                names.extend(map(_client_text, page))
            return sorted(set(names))
        cursor = "0"
        while True:
            step = cursor

            async def op(r: Redis, step: str = step) -> Any:
                return await self._fields_script(keys=[key], args=[step, _CHUNK], client=r)

            cursor_raw, page = await self.records.run(f"HSCAN {key}", op)
            cursor = cursor_raw.decode() if isinstance(cursor_raw, bytes) else str(cursor_raw)
            names.extend(_client_text(x) if isinstance(x, bytes) else str(x) for x in page)
            if cursor == "0":
                break
        return sorted(set(names))

    async def _sampled_names(
        self,
        key: str,
        selection: Selection,
        pre: str,
        suf: str = "",
        *,
        suffixes: bool = False,
        kept: _Kept | None = None,
    ) -> list[str]:
        """The field names of hash `key` that the sample keeps, sorted: those whose text
        `pre + field + suf` is in it (with `suffixes`, also those where the text `pre` + the
        text after one of its colons is: a claim field `{by}:{what}` whose `what` is). Listed
        undecoded (`_name_pages`: HKEYS for a small hash, else a plain HSCAN, since Redis 7.0
        has no HSCAN NOVALUES and a keys-only Lua step costs Redis more than sending the values)
        and hashed here as bytes, a page at a time (`Selection.sampled_texts`: CRC-32 in C); only
        the chosen names are decoded. With `kept`, the chosen fields' values the HSCAN steps
        carried are kept there (text as the client decodes it), so they are not read again
        (none when HKEYS or HSCAN NOVALUES listed the names)."""
        names: list[str] = []
        async for page, values in self._name_pages(key):
            raws: list[bytes] | None = None
            if suffixes:
                keep = selection.suffixes_kept(pre, page)
                chosen = list(compress(page, keep))
                raws = None if values is None else list(compress(values, keep))
            elif values is None:
                chosen = selection.sampled_texts(pre, page, suf)
            else:
                chosen, raws = selection.sampled_with(pre, page, values, suf)
            decoded = list(map(_client_text, chosen))
            names += decoded
            if kept is not None:
                kept.add_page(decoded, raws)
        return sorted(set(names))

    async def _name_pages(self, key: str) -> AsyncIterator[tuple[list[bytes], list[bytes] | None]]:
        """The field names of hash `key`, undecoded, a page at a time, with the page's values (one
        per name) when it has them: one HKEYS for a small hash (`hkeys_max`; no values), else
        HSCAN NOVALUES steps where the server has them (no values), else plain HSCAN steps, each
        reply split into names and values."""
        whole = await self._whole_names(key)
        if whole is not None:
            yield whole, None
            return
        if await self._has_novalues(key):
            async for names in self._flat_steps(key, "NOVALUES"):
                yield names, None
            return
        async for flat in self._flat_steps(key):
            yield flat[0::2], flat[1::2]

    async def _hscan(self, key: str) -> AsyncIterator[list[tuple[str, str]]]:
        """(field, raw value) pages of hash `key`."""
        cursor = 0
        while True:
            step = cursor

            async def op(r: Redis, step: int = step) -> tuple[int, dict[str, str]]:
                return cast("tuple[int, dict[str, str]]", await r.hscan(key, step, count=_CHUNK))

            cursor, page = await self.records.run(f"HSCAN {key}", op)
            yield list(page.items())
            if not cursor:
                return

    async def _hmget(self, key: str, fields: Sequence[str]) -> list[str | None]:
        if not fields:
            return []

        async def op(r: Redis) -> list[str | None]:
            return cast("list[str | None]", await r.hmget(key, list(fields)))

        return await self.records.run(f"HMGET {key}", op)

    def learned(self, conflicts: list[tuple[str, str, list[str]]], unreachable: list[str]) -> None:
        """What a scan of this store in another process found (its claim conflicts, as plain
        tuples, and its unreachable conversations), added as if this source had scanned."""
        self.conflicts.extend(KnownConflict(w, k, o) for w, k, o in conflicts)
        self.unreachable_conversations.extend(unreachable)

    @staticmethod
    def _entity(key: EntityKey, raw: str, hash_key: str, fld: str, parse: _Parse) -> Entity | Unreadable:
        if not storable(fld):  # read as the client decodes it; no actor can hold it
            name = fld.encode("utf-8", "surrogateescape")
            return Unreadable(key, raw, f"{hash_key} {name!r}: the field name is not valid UTF-8")
        value = decode_object(raw, key=hash_key, field=fld)
        if isinstance(value, Corrupt):
            return Unreadable(key, raw, f"{hash_key} {fld}: {value.reason}")
        try:
            return parse(fld, value)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            return Unreadable(key, raw, f"{hash_key} {fld}: unmappable value: {e!r}")

    def _scanned(  # noqa: PLR0917 - the value and where it is
        self, key: EntityKey, raw: str, hash_key: str, fld: str, parse: _Parse, now: int = 0
    ) -> Entity | Unreadable:
        """A scanned hash value: mapped, or deferred (`defer`)."""
        if self.defer:
            return cast("Entity", Deferred(key, raw, hash_key, fld, now))
        return self._entity(key, raw, hash_key, fld, parse)

    # -- scan -------------------------------------------------------------------------------------

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        after = None if start_after is None else parse_cursor(start_after)
        buf: list[Item] = []
        for domain in selection.domains:
            if actor_only(domain):
                continue  # Redis has no such family
            if after is not None and order_key(EntityKey(domain, "\U0010ffff", "")) <= order_key(after):
                continue  # the whole domain lies before the cursor
            async for items in self._domain(domain, selection, after, batch):
                buf.extend(
                    it
                    for it in items
                    if (after is None or order_key(it[0]) > order_key(after))
                    and selection.wants_scope(domain, it[0].scope, it[0].id)
                )
                while len(buf) >= batch:
                    yield buf[:batch]
                    buf = buf[batch:]
        if buf:
            yield buf

    def _domain(
        self, domain: str, selection: Selection, after: EntityKey | None, batch: int
    ) -> AsyncIterator[list[Item]]:
        if domain in _SIMPLE:
            return self._simple(domain, selection, after, batch)
        if domain == "claim":
            return self._claims(selection, after, batch)
        if domain == "memory":
            return self._memories(selection, after, batch)
        if domain == "dm":
            return self._dms(selection, after)
        if domain == "chat":
            return self._chat()
        raise ValueError(f"the legacy store has no domain {domain!r}")

    def _start(self, domain: str, sorted_keys: list[EntityKey], after: EntityKey | None) -> int:
        if after is None or after.domain != domain:
            return 0
        return bisect.bisect_right([order_key(k) for k in sorted_keys], order_key(after))

    async def _simple(
        self, domain: str, selection: Selection, after: EntityKey | None, batch: int
    ) -> AsyncIterator[list[Item]]:
        hash_key, parse = _SIMPLE[domain]
        kept = _Kept()
        if selection.sampled:  # the sampled keys are chosen before any value is decoded
            suf = ":" if domain == "checkpoint" else ""  # a checkpoint's text: checkpoint:<agent>:
            names = await self._sampled_names(hash_key, selection, f"{domain}:", suf, kept=kept)
        else:
            kept.drop()
            names = await self._field_names(hash_key)
        if selection.agents is not None:
            names = [n for n in names if n in selection.agents]
        first = self._start(domain, [_key(domain, n) for n in names], after) if after is not None else 0
        for i in range(first, len(names), batch):
            chunk = names[i : i + batch]
            raws = await kept.get(self, hash_key, chunk)
            out: list[Item] = []
            for fld, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue  # deleted since the field list was read
                key = _key(domain, fld)
                out.append((key, self._scanned(key, raw, hash_key, fld, parse)))
            yield out

    async def _claims(
        self, selection: Selection, after: EntityKey | None, batch: int
    ) -> AsyncIterator[list[Item]]:
        now = self.clock.now_ms()
        by_what: dict[str, list[str]] = {}
        corrupt: dict[str, Unreadable] = {}
        kept = _Kept()  # a sample's values, read once
        async for page in self._claim_pages(selection, kept):
            for fld, raw in page:
                value = decode_object(raw, key=keys.CLAIMS, field=fld)
                what = value.get("what") if isinstance(value, dict) else None
                if not isinstance(what, str):
                    reason = value.reason if isinstance(value, Corrupt) else "claim without a `what`"
                    key = EntityKey("claim", "", fld)
                    corrupt[fld] = Unreadable(key, raw, f"{keys.CLAIMS} {fld}: {reason}")
                    continue
                by_what.setdefault(what, []).append(fld)
        ids = sorted(set(by_what) | set(corrupt))
        if selection.sampled:
            ids = selection.sampled_ids("claim", "", ids)
        first = self._start("claim", [EntityKey("claim", "", i) for i in ids], after)
        for i in range(first, len(ids), batch):
            chunk = ids[i : i + batch]
            fields = [f for what in chunk for f in by_what.get(what, [])]
            raws = dict(zip(fields, await kept.get(self, keys.CLAIMS, fields), strict=True))
            out: list[Item] = []
            for what in chunk:
                if what in corrupt and what not in by_what:
                    out.append((corrupt[what].key, corrupt[what]))
                    continue
                out.extend(self._claim_of(what, by_what[what], raws, now))
            yield out

    async def _claim_pages(self, selection: Selection, kept: _Kept) -> AsyncIterator[list[tuple[str, str]]]:
        """(field, raw value) pages of the claims hash; a sampled scan reads the values of the
        fields that may belong to the sample only: a claim is sampled by its `what`, which a
        field `{by}:{what}` ends with, so the fields where the text after a colon is in the
        sample are kept (and the field itself, for a value that turns out unreadable), their
        values left in `kept` too (`_chosen_pages`)."""
        if not selection.sampled:
            kept.drop()  # the batches read them again: a full scan holds no values
            async for page in self._hscan(keys.CLAIMS):
                yield page
            return
        async for page in self._chosen_pages(keys.CLAIMS, selection, "claim:", kept, suffixes=True):
            yield page

    async def _chosen_pages(
        self, key: str, selection: Selection, pre: str, kept: _Kept, *, suffixes: bool = False
    ) -> AsyncIterator[list[tuple[str, str]]]:
        """(field, raw value) pages of the fields of hash `key` a sampled scan keeps
        (`_sampled_names`), each value read once: as the HSCAN listing carried it, else by
        HMGET; the values are left in `kept` for the scan's batches (up to `KEEP_MAX` bytes)."""
        names = await self._sampled_names(key, selection, pre, suffixes=suffixes, kept=kept)
        if kept.values is not None:
            yield [(n, kept.values[n]) for n in names]
            return
        kept.values, kept.size = {}, 0
        async for page in self._values_of(key, names):
            for n, raw in page:
                kept.add(n, raw)
            yield page

    async def _values_of(self, key: str, names: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        """(field, raw value) of the fields `names` of hash `key`, in chunks."""
        for i in range(0, len(names), _CHUNK):
            part = names[i : i + _CHUNK]
            raws = await self._hmget(key, part)
            yield [(n, raw) for n, raw in zip(part, raws, strict=True) if raw is not None]

    def _claim_of(self, what: str, fields: list[str], raws: dict[str, str | None], now: int) -> list[Item]:
        key = EntityKey("claim", "", what)
        if self.defer and len(fields) == 1:  # no conflict to resolve: the one field is the claim
            raw = raws.get(fields[0])
            if raw is None:
                return []
            return [(key, self._scanned(key, raw, keys.CLAIMS, fields[0], self._claim_parse(now), now))]
        group: list[tuple[str, Any]] = []
        for fld in fields:
            raw = raws.get(fld)
            if raw is None:
                continue
            claim = self._entity(key, raw, keys.CLAIMS, fld, self._claim_parse(now))
            if isinstance(claim, Unreadable):
                return [(key, claim)]
            group.append((fld, claim))
        if not group:
            return []
        winner = LegacyRecords.winner(group)
        if len(group) > 1:
            kept = next(f for f, c in group if c is winner)
            self.conflicts.append(KnownConflict(what, kept, [f for f, _ in group if f != kept]))
        return [(key, winner)]

    @staticmethod
    def _claim_parse(now: int) -> _Parse:
        return lambda _f, v: m.claim_from_legacy(v, now_ms=now)

    async def _memories(
        self, selection: Selection, after: EntityKey | None, batch: int
    ) -> AsyncIterator[list[Item]]:
        owned: list[tuple[str, str]] = []  # (owner, id), each owner's name held once
        owners: dict[str, str] = {}
        corrupt: dict[str, Unreadable] = {}
        kept = _Kept()  # a sample's values, read once
        async for page in self._memory_pages(selection, kept):
            for fld, raw in page:
                value = decode_object(raw, key=keys.SHARED_MEMORY, field=fld)
                if isinstance(value, Corrupt):
                    key = EntityKey("memory", "", fld)
                    corrupt[fld] = Unreadable(key, raw, f"{keys.SHARED_MEMORY} {fld}: {value.reason}")
                    owned.append(("", fld))
                    continue
                owner = value.get("createdBy")
                owner = owner if isinstance(owner, str) else "unknown"
                owned.append((owners.setdefault(owner, owner), fld))
        del owners
        if selection.agents is not None:
            owned = [(o, i) for o, i in owned if o in selection.agents]
        owned.sort()  # the scan order: (owner, id); the keys are made a batch at a time
        if selection.sampled:
            owned = list(compress(owned, selection.keeps("memory", "", [i for _, i in owned])))
        first = 0
        if after is not None and after.domain == "memory":
            first = bisect.bisect_right(owned, (after.scope, after.id))
        for i in range(first, len(owned), batch):
            chunk = [EntityKey("memory", o, ident) for o, ident in owned[i : i + batch]]
            raws = await kept.get(self, keys.SHARED_MEMORY, [k.id for k in chunk])
            out: list[Item] = []
            for key, text in zip(chunk, raws, strict=True):
                if key.scope == "" and key.id in corrupt:
                    out.append((key, corrupt[key.id]))
                elif text is not None:
                    out.append((key, self._scanned(key, text, keys.SHARED_MEMORY, key.id, _MEMORY)))
            yield out

    async def _memory_pages(self, selection: Selection, kept: _Kept) -> AsyncIterator[list[tuple[str, str]]]:
        """(id, raw value) pages of the shared memory hash; a sampled scan reads the ids first
        and the values of the sampled ones only (a memory is sampled by its id: `in_sample`),
        once: they are left in `kept` for its batches (`_chosen_pages`)."""
        if not selection.sampled:
            kept.drop()  # the batches read them again: a full scan holds no values
            async for page in self._hscan(keys.SHARED_MEMORY):
                yield page
            return
        async for page in self._chosen_pages(keys.SHARED_MEMORY, selection, "memory:", kept):
            yield page

    async def _dm_lists(self) -> tuple[dict[str, list[str]], list[Item]]:
        """Each user's conversation ids (`dm:user-convos`), and the lists that are unreadable."""
        lists: dict[str, list[str]] = {}
        corrupt: list[Item] = []
        async for page in self._hscan(keys.DM_USER_CONVOS):
            for user, raw in page:
                convs = decode_array(raw, key=keys.DM_USER_CONVOS, field=user)
                if isinstance(convs, Corrupt):
                    key = EntityKey("dm", user, "#conversations")
                    reason = f"{keys.DM_USER_CONVOS} {user}: {convs.reason}"
                    corrupt.append((key, Unreadable(key, raw, reason)))
                    continue
                lists[user] = [str(c) for c in convs]
        return lists, corrupt

    async def _dm_orphans(self, listed: Collection[str], selection: Selection) -> list[Item]:
        """Conversations no user lists: no inbox serves them; a corrupt one is unreadable. A
        sampled scan looks at the conversations in the sample only (`dm:<id>`)."""
        if selection.sampled:
            names = await self._sampled_names(keys.DM_MESSAGES, selection, "dm:")
        else:
            names = await self._field_names(keys.DM_MESSAGES)
        orphans = [c for c in names if c not in listed]
        out: list[Item] = []
        for conv, text in zip(orphans, await self._hmget(keys.DM_MESSAGES, orphans), strict=True):
            if text is None:
                continue
            msgs = decode_array(text, key=keys.DM_MESSAGES, field=conv)
            if isinstance(msgs, Corrupt):
                key = EntityKey("dm", "", conv)
                out.append((key, Unreadable(key, text, f"{keys.DM_MESSAGES} {conv}: {msgs.reason}")))
            else:
                self.unreachable_conversations.append(conv)
        return out

    async def _dms(self, selection: Selection, after: EntityKey | None) -> AsyncIterator[list[Item]]:
        lists, corrupt_lists = await self._dm_lists()
        first_lister: dict[str, str] = {}
        for user in sorted(lists):
            for conv in lists[user]:
                first_lister.setdefault(conv, user)
        head = [*await self._dm_orphans(first_lister, selection), *corrupt_lists]
        if selection.sampled:
            head = [it for it in head if selection.in_sample(it[0])]
        if head:
            yield sorted(head, key=lambda it: order_key(it[0]))
        users = sorted(lists)
        if selection.agents is not None:
            users = [u for u in users if u in selection.agents]
        if selection.sampled:  # a DM is sampled by its inbox: no other conversation is read
            users = selection.sampled_texts("dm:", users)
        if after is not None and after.domain == "dm":
            users = users[bisect.bisect_left(users, after.scope) :]
        group: list[str] = []
        size = 0
        for user in users:
            if group and size + len(lists[user]) > _DM_GROUP:
                yield await self._inboxes(group, lists, first_lister)
                group, size = [], 0
            group.append(user)
            size += len(lists[user])
        if group:
            yield await self._inboxes(group, lists, first_lister)

    async def _inboxes(
        self, users: list[str], lists: dict[str, list[str]], first_lister: dict[str, str]
    ) -> list[Item]:
        """The messages to each of `users` (sorted) in their conversations, in scan order: one
        HMGET of the arrays of their conversations (about `_DM_GROUP`)."""
        convs = list(dict.fromkeys(c for u in users for c in lists[u]))
        texts = dict(zip(convs, await self._hmget(keys.DM_MESSAGES, convs), strict=True))
        items: list[Item] = []
        for user in users:
            for conv in lists[user]:
                text = texts.get(conv)
                if text is not None:
                    items.extend(self._inbox_part(user, conv, text, first_lister.get(conv) == user))
        items.sort(key=lambda it: order_key(it[0]))
        return items

    def _inbox_part(self, user: str, conv: str, text: str, report_corrupt: bool) -> list[Item]:
        """The messages to `user` of one conversation's array (its first lister reports it
        when it is unreadable, so it is counted once)."""
        msgs = decode_array(text, key=keys.DM_MESSAGES, field=conv)
        if isinstance(msgs, Corrupt):
            key = EntityKey("dm", user, conv)
            reason = f"{keys.DM_MESSAGES} {conv}: {msgs.reason}"
            return [(key, Unreadable(key, text, reason))] if report_corrupt else []
        out: list[Item] = []
        for x in msgs:
            if isinstance(x, dict) and x.get("to") == user:
                key = EntityKey("dm", user, str(x.get("id")))
                if self.defer:
                    out.append((key, cast("Entity", Deferred(key, _message_text(x)))))
                else:
                    out.append((key, self._dm_entity(key, x)))
        return out

    @staticmethod
    def _dm_entity(key: EntityKey, x: dict[str, Any]) -> Entity | Unreadable:
        try:
            return m.dm_from_legacy(x)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            return Unreadable(key, str(x)[:2000], f"unmappable DM: {e!r}")

    async def _chat(self) -> AsyncIterator[list[Item]]:
        out: list[Item] = []
        start = 0
        while True:
            texts = await self.records.chat_texts(start, start + _CHUNK - 1)
            for raw in texts:
                value = decode_object(raw, key=keys.MESSAGES)
                if isinstance(value, Corrupt):
                    key = EntityKey("chat", "", "#" + hashlib.sha256(raw.encode()).hexdigest()[:16])
                    out.append((key, Unreadable(key, raw, f"{keys.MESSAGES}: {value.reason}")))
                    continue
                try:
                    msg = m.chat_from_legacy(value)
                except (TypeError, ValueError, KeyError, AttributeError) as e:
                    key = EntityKey("chat", "", "#" + hashlib.sha256(raw.encode()).hexdigest()[:16])
                    out.append((key, Unreadable(key, raw, f"{keys.MESSAGES}: unmappable value: {e!r}")))
                    continue
                out.append((EntityKey("chat", "", msg.id), msg))
            if len(texts) < _CHUNK:
                break
            start += _CHUNK
        unique = {it[0]: it for it in out}  # a message id twice in the list: one entity
        yield sorted(unique.values(), key=lambda it: order_key(it[0]))

    # -- reads by key -------------------------------------------------------------------------------

    async def read_many(self, keys_: Sequence[EntityKey]) -> dict[EntityKey, Entity | Unreadable | None]:
        out: dict[EntityKey, Entity | Unreadable | None] = {}
        by_domain: dict[str, list[EntityKey]] = {}
        for k in keys_:
            by_domain.setdefault(k.domain, []).append(k)
        for domain, ks in by_domain.items():
            if domain in _SIMPLE or domain == "memory":
                out.update(await self._read_hash(domain, ks))
            elif domain == "claim":
                now = self.clock.now_ms()
                for k in ks:
                    group = await self.records.claims_on(k.id, now)
                    out[k] = None if not group else LegacyRecords.winner(group)
            elif domain == "dm":
                inboxes: dict[str, dict[str, Entity]] = {}
                for k in ks:
                    if k.scope not in inboxes:
                        inboxes[k.scope] = {d.id: d for d in await self.records.inbox(k.scope)}
                    out[k] = inboxes[k.scope].get(k.id)
            elif domain == "chat":
                window = {msg.id: msg for msg in await self.records.chat_window(1 << 30)}
                out.update((k, window.get(k.id)) for k in ks)
            else:
                out.update(dict.fromkeys(ks))  # an actor-only domain: Redis holds none of it
        return out

    async def _read_hash(
        self, domain: str, ks: list[EntityKey]
    ) -> dict[EntityKey, Entity | Unreadable | None]:
        hash_key, parse = _SIMPLE.get(domain, (keys.SHARED_MEMORY, _MEMORY))
        flds = [k.scope if domain == "checkpoint" else k.id for k in ks]
        out: dict[EntityKey, Entity | Unreadable | None] = {}
        for k, fld, text in zip(ks, flds, await self._hmget(hash_key, flds), strict=True):
            got = None if text is None else self._entity(k, text, hash_key, fld, parse)
            if isinstance(got, Memory) and m.memory_owner(got) != k.scope:
                got = None  # another agent's memory: not where this key says
            out[k] = got
        return out

    async def count(self, selection: Selection) -> dict[str, int] | None:
        """HLEN/LLEN per domain (an estimate: claims count fields, DMs are left out)."""
        hashes = {d: k for d, (k, _p) in _SIMPLE.items()} | {
            "claim": keys.CLAIMS,
            "memory": keys.SHARED_MEMORY,
        }

        async def op(r: Redis) -> list[int]:
            async with r.pipeline(transaction=False) as pipe:
                for d in selection.domains:
                    if d in hashes:
                        _ = pipe.hlen(hashes[d])
                    elif d == "chat":
                        _ = pipe.llen(keys.MESSAGES)
                return cast("list[int]", await pipe.execute())

        if selection.agents is not None:
            return None
        counts = await self.records.run("HLEN", op)
        wanted = [d for d in selection.domains if d in hashes or d == "chat"]
        return dict(zip(wanted, (int(c) for c in counts), strict=True))


assert set(_SIMPLE) | {"claim", "memory", "dm", "chat"} == LEGACY_DOMAINS  # noqa: S101 - every domain
