"""`PhasedSockets`: the two WebSockets in every phase (a `SocketHost`).

Sockets are always held by the actor host. What a socket's open, ping, status and close change
(the agent's presence, its checkpoint) is data, and goes where the phase says, through the phase
router's `write`/`read`, like any other command:

* while the actors serve, each message is an actor turn (`ActorSockets`), which also sends the
  welcome, `pong`, `state-sync` and `offline` frames;
* while the legacy Redis serves, the socket is held on the host without a turn (`SocketHub`),
  presence is written to Redis, and the same frames (`gateway.domain.frames`) are sent from here.
"""

from __future__ import annotations

from typing import Any

from gateway.clock import Clock
from gateway.domain import commands as c
from gateway.domain import frames
from gateway.domain.entities import EntityKey
from gateway.domain.jscompat import iso_from_ms
from gateway.phases.router import ByStore, LegacyBackend, PhasedStore
from gateway.settings import LimitSettings
from gateway.store import SocketHandle, SocketHost, SocketHub

__all__ = ["PhasedSockets", "socket_agent"]


def socket_agent(hs: SocketHandle) -> str | None:
    """The agent a coordinator socket was opened for (its first tag)."""
    return hs.tags[0] if hs.tags else None


def _agent_keys(agent_id: str | None) -> list[EntityKey]:
    return [] if agent_id is None else [EntityKey("agent", "", agent_id)]


class PhasedSockets:
    """`SocketHost` over both stores, following the phase of `router`."""

    def __init__(
        self,
        router: PhasedStore,
        *,
        actors: SocketHost,
        legacy: LegacyBackend,
        hub: SocketHub,
        clock: Clock,
        limits: LimitSettings,
    ) -> None:
        self.router = router
        self.actors = actors
        self.legacy = legacy
        self.hub = hub
        self.clock = clock
        self.limits = limits

    async def open_coordinator_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        async def on_legacy() -> SocketHandle:
            await self.legacy.touch_agent(agent_id, now_ms, advance_cursor=False)
            hs = self.hub.hold_coordinator_socket(ws, agent_id)
            team = await self.legacy.list_agents(now_ms, self.limits.list_limit_max)
            hs.enqueue(frames.welcome(agent_id, team, iso_from_ms(now_ms)))
            return hs

        run = ByStore(lambda: self.actors.open_coordinator_socket(ws, agent_id, now_ms), on_legacy)
        return await self.router.write("coordinator", run, [EntityKey("agent", "", agent_id)])

    async def coordinator_ping(self, handle: SocketHandle, now_ms: int) -> None:
        agent_id = socket_agent(handle)

        async def on_legacy() -> None:
            handle.enqueue(frames.pong(iso_from_ms(now_ms)))
            if agent_id is not None:  # as the actors: presence only
                await self.legacy.touch_agent(agent_id, now_ms, advance_cursor=False)

        run = ByStore(lambda: self.actors.coordinator_ping(handle, now_ms), on_legacy)
        await self.router.write("coordinator", run, _agent_keys(agent_id))

    async def coordinator_set_status(self, handle: SocketHandle, status: str, now_ms: int) -> None:
        agent_id = socket_agent(handle)

        async def on_legacy() -> None:
            if agent_id is not None:
                await self.legacy.set_agent_status(agent_id, status, now_ms)

        run = ByStore(lambda: self.actors.coordinator_set_status(handle, status, now_ms), on_legacy)
        await self.router.write("coordinator", run, _agent_keys(agent_id))

    async def close_coordinator_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        agent_id = socket_agent(handle)
        now_ms = self.clock.now_ms()

        async def on_actors() -> bool:
            await self.actors.close_coordinator_socket(handle, code, reason)
            return False  # the coordinator actor told everyone itself

        async def on_legacy() -> bool:
            self.hub.forget(handle)
            if agent_id is None or self.hub.agent_connected(agent_id):
                return False  # another socket of this agent is still open: it stays online
            await self.legacy.set_agent_status(agent_id, "offline", now_ms)
            return True

        def push(went_offline: bool) -> None:
            if went_offline and agent_id is not None:
                self.hub.broadcast(frames.agent_offline(agent_id, iso_from_ms(now_ms)))

        await self.router.write("coordinator", ByStore(on_actors, on_legacy), _agent_keys(agent_id), push)

    async def open_agent_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        async def on_legacy() -> SocketHandle:
            hs = self.hub.hold_agent_socket(ws, agent_id)
            view = await self.legacy.agent_state(agent_id)
            hs.enqueue(frames.state_sync(view, iso_from_ms(now_ms)))
            return hs

        run = ByStore(lambda: self.actors.open_agent_socket(ws, agent_id, now_ms), on_legacy)
        # no shadow read: opening a socket accepts it and sends `state-sync` (a second one would
        # be held, pushed to and closed beside the first)
        return await self.router.read("agent-state", "socket", run, shadow=False)

    async def agent_socket_checkpoint(self, handle: SocketHandle, cmd: c.SaveCheckpoint) -> None:
        async def on_legacy() -> None:
            await self.legacy.save_checkpoint(cmd)
            handle.enqueue(frames.checkpoint_saved(iso_from_ms(cmd.now_ms)))

        run = ByStore(lambda: self.actors.agent_socket_checkpoint(handle, cmd), on_legacy)
        await self.router.write(f"agent:{cmd.agent_id}", run, [EntityKey("checkpoint", cmd.agent_id, "")])

    async def close_agent_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        if handle.closed:
            return
        if self.router.phase.serves == "legacy":
            self.hub.forget(handle)
        else:
            await self.actors.close_agent_socket(handle, code, reason)
