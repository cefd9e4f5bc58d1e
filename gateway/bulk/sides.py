"""Opening the two stores for bulk work: `open_legacy_side` and `open_actor_side`.

The actor side is the running gateway's admin API when a gateway answers at `url` (the tool then
never opens actor files), and otherwise the data directory on a host of the tool's own, which
refuses to start while another process (a gateway) owns the directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway.bulk.legacy_side import LegacySource
from gateway.clock import Clock, SystemClock
from gateway.errors import StoreUnavailable
from gateway.legacy.store import LegacyStore
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.bulk.actor_side import ActorSide
    from gateway.bulk.remote import RemoteActorSide

__all__ = ["ActorEndpoint", "open_actor_side", "open_legacy_side"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ActorEndpoint:
    """Where the actor store is: a gateway's admin API (`url` + `token`), or a data directory."""

    url: str | None = None
    token: str | None = None
    data_dir: Path | None = None


@contextlib.asynccontextmanager
async def open_actor_side(
    settings: Settings, where: ActorEndpoint, *, clock: Clock | None = None, fire_alarms: bool = True
) -> AsyncIterator[ActorSide | RemoteActorSide]:
    """The actor store: through the gateway at `where.url` when one answers there, else the data
    directory (`where.data_dir`, default `storage.data_dir`) on a host of this process.

    `fire_alarms=False` (the checker): that host keeps the stored alarms but fires none, so
    opening the directory changes nothing in it (a due lock alarm would delete the lock); the
    gateway's next start fires them.

    Raises `ActorOwnedElsewhere` when the directory belongs to a running gateway that did not
    answer at the URL, and `StoreUnavailable` when a URL was given explicitly and nothing answers.

    The actor side's modules (the host, the admin API client with aiohttp) are imported here, not
    with this module: the check's legacy scan process opens only the legacy side.
    """
    if where.url is not None and where.token:
        from gateway.bulk.remote import RemoteActorSide  # noqa: PLC0415 - see above

        remote = RemoteActorSide(where.url, where.token)
        try:
            await remote.ping()
        except StoreUnavailable:
            await remote.close()
            if where.data_dir is None:
                raise
            log.info("bulk.gateway_not_answering", url=where.url)
        else:
            log.info("bulk.actor_side", mode="admin-api", url=where.url)
            try:
                yield remote
            finally:
                await remote.close()
            return
    from gateway.bulk.actor_side import ActorSide  # noqa: PLC0415 - see above
    from gateway.do.actor_store import build_actor_host  # noqa: PLC0415
    from gateway.do.replica import ActorReplica  # noqa: PLC0415

    data_dir = where.data_dir or settings.storage.data_dir
    host = build_actor_host(
        data_dir,
        settings.limits,
        clock=clock or SystemClock(),
        synchronous=settings.storage.sqlite_synchronous,
        shards=settings.storage.shards,
        fire_alarms=fire_alarms,
        checkpoint_helper=settings.storage.checkpoint_helper,
    )
    await host.start()  # ActorOwnedElsewhere while a gateway holds the directory
    log.info("bulk.actor_side", mode="data-dir", data_dir=str(data_dir))
    try:
        yield ActorSide(ActorReplica(host))
    finally:
        await host.close()


@contextlib.asynccontextmanager
async def open_legacy_side(
    settings: Settings, redis_url: str, *, clock: Clock | None = None
) -> AsyncIterator[LegacySource]:
    """The legacy Redis at `redis_url` as an entity source (and sink)."""
    clk = clock or SystemClock()
    store = LegacyStore.from_url(redis_url, settings, clock=clk)
    try:
        yield LegacySource(store.records, clk, hkeys_max=settings.legacy.hkeys_max)
    finally:
        await store.close()
