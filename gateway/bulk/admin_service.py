"""The server side of the admin entity routes: `ActorSide` on the gateway's own host.

A running gateway owns its data directory, so tools never open actor files under it; they
stream entities through these routes instead (`gateway.bulk.remote` is the client):

    GET  /admin/entities?domain=a,b&agent=x,y&after=CURSOR&limit=N
         NDJSON: one item per line (gateway.bulk.wire), then {"next": CURSOR | null}
    POST /admin/entities/read      {"keys": [[domain, scope, id], ...]} -> NDJSON, one per key
    POST /admin/entities[?dry_run=1]   NDJSON entity lines -> {"written", "unchanged", "skipped", ...}
    GET  /admin/entities/count?domain=&agent=      {"counts": {...} | null}

Every answer is built by the same `ActorSide` a tool runs on a stopped gateway's directory, so
both modes read and write the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import orjson

from gateway.bulk.actor_side import ActorSide
from gateway.bulk.items import SAMPLE_RULE, Selection, cursor_of, parse_cursor
from gateway.bulk.wire import BadLine, dumps_line, item_from_json, item_to_json, key_from_json
from gateway.domain.entities import Entity, EntityKey, Unreadable

__all__ = ["MAX_LIMIT", "EntityAdmin", "selection_from_query"]

MAX_LIMIT: Final = 5000
MAX_KEYS: Final = 5000


def _csv(query: Mapping[str, str], name: str) -> list[str] | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    return [x for x in raw.split(",") if x]


def selection_from_query(query: Mapping[str, str]) -> Selection:
    """`domain=` and `agent=` (comma-separated), `sample=` (a rate in (0, 1]), `seed=` and
    `sampleRule=` (when given, this gateway's `SAMPLE_RULE`: a checker of another version would
    choose other keys); ValueError for an unknown domain or a bad rate, seed or rule."""
    selection = Selection.of(_csv(query, "domain"), _csv(query, "agent"))
    raw_rate, raw_seed = query.get("sample"), query.get("seed", "0")
    if raw_rate is None:
        return selection
    try:
        rate, seed = float(raw_rate), int(raw_seed)
    except ValueError:
        raise ValueError("sample must be a number in (0, 1] and seed an integer") from None
    if not 0 < rate <= 1:
        raise ValueError("sample must be a number in (0, 1]")
    rule = query.get("sampleRule")
    if rule is not None and rule != str(SAMPLE_RULE):
        raise ValueError(
            f"sampleRule {rule!r}: this gateway samples by rule {SAMPLE_RULE}; "
            "run the checker of the gateway's version"
        )
    return dataclasses.replace(selection, sample=rate, seed=seed)


class EntityAdmin:
    """Implements the admin API's `EntityService` on the gateway's actor host."""

    def __init__(self, side: ActorSide) -> None:
        self.side = side

    async def scan(self, query: Mapping[str, str]) -> AsyncIterator[bytes]:
        """One page of the scan as NDJSON lines; ValueError (-> 400) for bad parameters."""
        selection = selection_from_query(query)
        raw_limit = query.get("limit", "500")
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer in 1..{MAX_LIMIT}")
        limit = int(raw_limit)
        after = query.get("after") or None
        if after is not None:
            parse_cursor(after)
        return self._scan(selection, after, limit)

    async def _scan(self, selection: Selection, after: str | None, limit: int) -> AsyncIterator[bytes]:
        last: EntityKey | None = None
        count = 0
        async for items in self.side.scan(selection, start_after=after, batch=limit):
            for key, value in items:
                yield dumps_line(item_to_json(key, value))
                last = key
                count += 1
            break  # one page
        more = count >= limit and last is not None
        yield dumps_line({"next": cursor_of(last) if more and last is not None else None})

    async def read(self, body: bytes) -> AsyncIterator[bytes]:
        """The entities of `{"keys": [...]}` as NDJSON lines, in the order asked."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ValueError('the body must be a JSON object {"keys": [...]}') from e
        raw_keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(raw_keys, list) or len(raw_keys) > MAX_KEYS:
            raise ValueError(f"keys must be a list of at most {MAX_KEYS} [domain, scope, id] arrays")
        try:
            keys = [key_from_json(k) for k in raw_keys]
        except BadLine as e:
            raise ValueError(str(e)) from e
        found = await self.side.read_many(keys)
        return self._lines(keys, found)

    @staticmethod
    async def _lines(
        keys: list[EntityKey], found: Mapping[EntityKey, Entity | Unreadable | None]
    ) -> AsyncIterator[bytes]:
        for k in keys:
            yield dumps_line(item_to_json(k, found.get(k)))

    async def write(self, body: bytes, query: Mapping[str, str]) -> dict[str, Any]:
        """Write a batch of NDJSON entity lines; all lines are checked before any is written."""
        items: list[tuple[EntityKey, Entity | None]] = []
        for n, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                key, value = item_from_json(orjson.loads(line))
            except (orjson.JSONDecodeError, BadLine) as e:
                raise ValueError(f"line {n}: {e}") from e
            if isinstance(value, Unreadable):
                raise ValueError(f"line {n}: an unreadable value cannot be written")  # noqa: TRY004 - a 400
            items.append((key, value))
        dry_run = query.get("dry_run") in ("1", "true")
        result = await self.side.write_batch(items, dry_run=dry_run)
        return result.to_json()

    async def count(self, query: Mapping[str, str]) -> dict[str, Any]:
        return {"counts": await self.side.count(selection_from_query(query))}
