"""The actor store of a running gateway, through its token-protected admin entity routes.

The gateway owns its data directory; this client never touches it. It pages through
`GET /admin/entities` (NDJSON, resumable by cursor), reads keys with `POST /admin/entities/read`
and writes batches with `POST /admin/entities` (NDJSON, split to stay under the gateway's body
limit). The gateway runs the same `ActorSide` a tool runs on a stopped gateway's directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import aiohttp
import orjson

from gateway.bulk.items import SAMPLE_RULE, Item, Selection, WriteResult
from gateway.bulk.wire import BadLine, dumps_line, item_from_json, item_to_json, key_to_json
from gateway.domain.entities import Entity, EntityKey, Unreadable
from gateway.errors import StoreUnavailable

__all__ = ["MAX_BODY", "AdminRejected", "RemoteActorSide"]

MAX_BODY: Final = 768 * 1024
"""A write request's body stays under this (the gateway refuses bodies over server.max_body_bytes,
1 MiB by default); a batch is split into several requests when needed."""


class AdminRejected(Exception):
    """The gateway answered an admin entity request with an error (wrong token, bad request)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the gateway answered {status}: {message}")
        self.status = status


class RemoteActorSide:
    """`EntitySource` and `EntitySink` over a running gateway's admin API."""

    name = "actors"

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ping(self) -> None:
        """Check that the gateway answers and takes the token (raises otherwise)."""
        async with self._request("GET", "/admin/phase") as resp:
            await resp.read()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        return _Call(self._http(), method, self.base_url + path, kw)

    @staticmethod
    def _query(selection: Selection) -> dict[str, str]:
        q = {"domain": ",".join(selection.domains)}
        if selection.agents is not None:
            q["agent"] = ",".join(sorted(selection.agents))
        if selection.sampled:
            q |= {"sample": repr(selection.sample), "seed": str(selection.seed)}
            q["sampleRule"] = str(SAMPLE_RULE)  # a gateway of another rule refuses (400)
        return q

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        after = start_after
        while True:
            query = self._query(selection) | {"limit": str(batch)}
            if after is not None:
                query["after"] = after
            items: list[Item] = []
            nxt: str | None = None
            async with self._request("GET", "/admin/entities", params=query) as resp:
                async for raw in resp.content:
                    data = orjson.loads(raw)
                    if isinstance(data, dict) and "next" in data and "key" not in data:
                        nxt = data["next"]
                        break
                    key, value = item_from_json(data)
                    if value is None:
                        raise BadLine("the gateway streamed a key without a value")
                    items.append((key, value))
            if items:
                yield items
            if nxt is None:
                return
            after = nxt

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity | Unreadable | None]:
        out: dict[EntityKey, Entity | Unreadable | None] = {}
        for i in range(0, len(keys), 2000):
            body = orjson.dumps({"keys": [key_to_json(k) for k in keys[i : i + 2000]]})
            async with self._request("POST", "/admin/entities/read", data=body) as resp:
                async for raw in resp.content:
                    key, value = item_from_json(orjson.loads(raw))
                    out[key] = value
        return out

    async def count(self, selection: Selection) -> dict[str, int] | None:
        async with self._request("GET", "/admin/entities/count", params=self._query(selection)) as resp:
            data = orjson.loads(await resp.read())
        counts = data.get("counts") if isinstance(data, dict) else None
        return None if counts is None else {str(k): int(v) for k, v in counts.items()}

    async def record_reverse_sync(self, *, started_ms: int, finished_ms: int, entities: int) -> None:
        """Tell the gateway that Redis was refilled from its actors (`POST /admin/reverse-sync`)."""
        body = orjson.dumps({"startedMs": started_ms, "finishedMs": finished_ms, "entities": entities})
        async with self._request("POST", "/admin/reverse-sync", data=body) as resp:
            await resp.read()

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        result = WriteResult()
        body: list[bytes] = []
        size = 0
        params = {"dry_run": "1"} if dry_run else {}

        async def send() -> None:
            async with self._request("POST", "/admin/entities", data=b"".join(body), params=params) as resp:
                result.merge(WriteResult.from_json(orjson.loads(await resp.read())))

        for key, value in items:
            line = dumps_line(item_to_json(key, value))
            if body and size + len(line) > MAX_BODY:
                await send()
                body, size = [], 0
            body.append(line)
            size += len(line)
        if body:
            await send()
        return result


class _Call:
    """One admin request as an async context manager: errors become AdminRejected (an answer)
    or StoreUnavailable (no answer)."""

    def __init__(self, session: aiohttp.ClientSession, method: str, url: str, kw: dict[str, Any]) -> None:
        self._cm = session.request(method, url, **kw)
        self._url = url
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            resp = await self._cm.__aenter__()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise StoreUnavailable(f"the gateway at {self._url} cannot be reached: {e}") from e
        self._resp = resp
        if resp.status != 200:  # noqa: PLR2004 - every admin entity route answers 200
            text = (await resp.read()).decode("utf-8", "replace")
            try:
                message = str(orjson.loads(text).get("error", text))
            except (orjson.JSONDecodeError, AttributeError):
                message = text[:200]
            await self._cm.__aexit__(None, None, None)
            raise AdminRejected(resp.status, message)
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)
