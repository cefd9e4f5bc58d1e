"""The actor store: the `Store` and `SocketHost` seams over the actor host, and its wiring.

`ActorStore` runs each data operation as one strict turn of the actor that owns the data (the
coordinator, the agent's actor, the resource's lock actor); `ActorSockets` holds the two
WebSockets on the host and runs their messages as turns too, and, while the legacy store
serves, lets the phase router hold sockets and push frames without a turn (`SocketHub`).
`build_actor_host` wires the three DO actor kinds into an `ActorHost`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway.actors import Actor, ActorContext, ActorHost, HostLimits, TableSpec
from gateway.clock import Clock
from gateway.do import COORDINATOR, agent_ref, lock_ref
from gateway.do.agent_state import TABLES as AGENT_TABLES
from gateway.do.agent_state import AgentStateActor
from gateway.do.coordinator import CoordinatorActor
from gateway.do.resource_lock import TABLES as LOCK_TABLES
from gateway.do.resource_lock import ResourceLockActor
from gateway.domain import commands as c
from gateway.domain.model import (
    Agent,
    AgentStateView,
    ChatPage,
    Checkpoint,
    Claim,
    ClaimOutcome,
    DirectMessage,
    GroupMessage,
    Handoff,
    HandoffOutcome,
    LockAcquireOutcome,
    LockCheck,
    LockHistory,
    LockReleaseOutcome,
    Memory,
    Task,
    WorkBundle,
    Zone,
)
from gateway.settings import LimitSettings
from gateway.store import SocketHandle

__all__ = ["ActorSockets", "ActorStore", "build_actor_host"]


class ActorStore:
    """`Store` over the actor host: each operation is one strict turn of one actor."""

    def __init__(self, host: ActorHost) -> None:
        self.host = host

    # -- coordinator ------------------------------------------------------------------------------

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        await self.host.call(COORDINATOR, lambda a: a.register_agent(cmd))

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        result: list[Agent] = await self.host.call(COORDINATOR, lambda a: a.list_agents(now_ms, limit))
        return result

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        result: GroupMessage = await self.host.call(COORDINATOR, lambda a: a.post_chat(cmd))
        return result

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        result: ChatPage = await self.host.call(COORDINATOR, lambda a: a.get_chat(q))
        return result

    async def create_task(self, cmd: c.CreateTask) -> Task:
        result: Task = await self.host.call(COORDINATOR, lambda a: a.create_task(cmd))
        return result

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        result: Task = await self.host.call(COORDINATOR, lambda a: a.update_task(cmd))
        return result

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        result: list[Task] = await self.host.call(COORDINATOR, lambda a: a.list_tasks(q))
        return result

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        result: WorkBundle = await self.host.call(COORDINATOR, lambda a: a.work_bundle(q))
        return result

    # -- zones, claims, handoffs --------------------------------------------------------------------

    async def find_zone(self, path: str) -> Zone | None:
        result: Zone | None = await self.host.call(COORDINATOR, lambda a: a.find_zone(path))
        return result

    async def list_zones(self, q: c.ZoneQuery) -> list[Zone]:
        result: list[Zone] = await self.host.call(COORDINATOR, lambda a: a.list_zones(q))
        return result

    async def claim_zone(self, cmd: c.ZoneClaim) -> Zone:
        result: Zone = await self.host.call(COORDINATOR, lambda a: a.claim_zone(cmd))
        return result

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        result: bool = await self.host.call(COORDINATOR, lambda a: a.release_zone(cmd))
        return result

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        result: Claim | None = await self.host.call(COORDINATOR, lambda a: a.get_claim(what, now_ms))
        return result

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        result: list[Claim] = await self.host.call(COORDINATOR, lambda a: a.list_claims(q))
        return result

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        result: ClaimOutcome = await self.host.call(COORDINATOR, lambda a: a.claim(cmd))
        return result

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        result: bool = await self.host.call(COORDINATOR, lambda a: a.release_claim(cmd))
        return result

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        result: Handoff | None = await self.host.call(COORDINATOR, lambda a: a.get_handoff(handoff_id))
        return result

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        result: list[Handoff] = await self.host.call(COORDINATOR, lambda a: a.list_handoffs(q))
        return result

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        result: Handoff = await self.host.call(COORDINATOR, lambda a: a.create_handoff(cmd))
        return result

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        result: HandoffOutcome = await self.host.call(COORDINATOR, lambda a: a.claim_handoff(cmd))
        return result

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        result: HandoffOutcome = await self.host.call(COORDINATOR, lambda a: a.complete_handoff(cmd))
        return result

    # -- agent ------------------------------------------------------------------------------------

    async def get_checkpoint(self, agent_id: str) -> Checkpoint | None:
        result: Checkpoint | None = await self.host.call(agent_ref(agent_id), lambda a: a.get_checkpoint())
        return result

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        await self.host.call(agent_ref(cmd.agent_id), lambda a: a.save_checkpoint(cmd))

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        result: DirectMessage = await self.host.call(agent_ref(cmd.agent_id), lambda a: a.send_dm(cmd))
        return result

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        result: list[DirectMessage] = await self.host.call(agent_ref(q.agent_id), lambda a: a.list_dms(q))
        return result

    async def mark_dms_read(self, cmd: c.MarkDmsRead) -> None:
        await self.host.call(agent_ref(cmd.agent_id), lambda a: a.mark_read(cmd))

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        result: Memory = await self.host.call(agent_ref(cmd.agent_id), lambda a: a.add_memory(cmd))
        return result

    async def search_memory(self, q: c.MemoryQuery) -> list[Memory]:
        result: list[Memory] = await self.host.call(agent_ref(q.agent_id), lambda a: a.search_memory(q))
        return result

    async def agent_state(self, agent_id: str) -> AgentStateView:
        result: AgentStateView = await self.host.call(agent_ref(agent_id), lambda a: a.state())
        return result

    # -- locks ------------------------------------------------------------------------------------

    async def check_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        result: LockCheck = await self.host.call(lock_ref(resource_path), lambda a: a.check(now_ms))
        return result

    async def acquire_lock(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        result: LockAcquireOutcome = await self.host.call(
            lock_ref(cmd.resource_path), lambda a: a.acquire(cmd)
        )
        return result

    async def release_lock(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        result: LockReleaseOutcome = await self.host.call(
            lock_ref(cmd.resource_path), lambda a: a.release(cmd)
        )
        return result

    async def lock_history(self, resource_path: str, limit: int) -> LockHistory:
        result: LockHistory = await self.host.call(lock_ref(resource_path), lambda a: a.history(limit))
        return result


class ActorSockets:
    """`SocketHost` over the actor host: each socket message is a turn of its actor; also the
    `SocketHub` through which the phase router holds sockets while the legacy store serves."""

    def __init__(self, host: ActorHost) -> None:
        self.host = host

    async def open_coordinator_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        result: SocketHandle = await self.host.call(
            COORDINATOR, lambda a: a.socket_open(ws, agent_id, now_ms)
        )
        return result

    async def coordinator_ping(self, handle: SocketHandle, now_ms: int) -> None:
        if not handle.closed:
            await self.host.call(COORDINATOR, lambda a: a.socket_ping(handle, now_ms))

    async def coordinator_set_status(self, handle: SocketHandle, status: str, now_ms: int) -> None:
        if not handle.closed:
            await self.host.call(COORDINATOR, lambda a: a.socket_status(handle, status, now_ms))

    async def close_coordinator_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        await self.host.deliver_ws_close(COORDINATOR, handle, code, reason)

    async def open_agent_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        result: SocketHandle = await self.host.call(agent_ref(agent_id), lambda a: a.socket_open(ws, now_ms))
        return result

    async def agent_socket_checkpoint(self, handle: SocketHandle, cmd: c.SaveCheckpoint) -> None:
        if not handle.closed:
            await self.host.call(agent_ref(cmd.agent_id), lambda a: a.socket_checkpoint(handle, cmd))

    async def close_agent_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        await self.host.deliver_ws_close(handle.ref, handle, code, reason)

    # -- SocketHub ----------------------------------------------------------------------------------

    def hold_coordinator_socket(self, ws: Any, agent_id: str) -> SocketHandle:
        return self.host.accept_websocket(COORDINATOR, ws, [agent_id])

    def hold_agent_socket(self, ws: Any, agent_id: str) -> SocketHandle:
        return self.host.accept_websocket(agent_ref(agent_id), ws, [])

    def forget(self, handle: SocketHandle) -> None:
        self.host.forget_websocket(handle)

    def agent_connected(self, agent_id: str) -> bool:
        return bool(self.host.get_websockets(COORDINATOR, agent_id))

    def broadcast(self, text: str) -> None:
        self.host.send(self.host.get_websockets(COORDINATOR), text)

    def push_to_agent(self, agent_id: str, text: str) -> None:
        self.host.send(self.host.get_websockets(agent_ref(agent_id)), text)


SHARDED_TABLES: Final[dict[str, tuple[TableSpec, ...]]] = {
    "agent": tuple(AGENT_TABLES),
    "lock": tuple(LOCK_TABLES),
}
"""The sharded kinds and their tables (`ActorHost`'s `sharded`; a `ShardReader` reads the same)."""


def build_actor_host(
    data_dir: Path,
    limits: LimitSettings,
    *,
    clock: Clock | None = None,
    host_limits: HostLimits | None = None,
    synchronous: str = "NORMAL",
    shards: int = 8,
    on_lock_alarm_expiry: Callable[[str], None] | None = None,
    fire_alarms: bool = True,
    checkpoint_helper: bool = True,
) -> ActorHost:
    """An `ActorHost` serving the three DO actor kinds: the coordinator in its own database,
    agents and locks in `shards` shard files.

    The lock actor sends `lock-update` frames to the coordinator's sockets, which it finds
    through the host itself, and tells `on_lock_alarm_expiry` the path of every lock its alarm
    expires (a change no request made, which the phase router replicates to Redis).
    `fire_alarms=False` builds a tool's host, which keeps alarms but never fires them.
    """

    def coordinator(ctx: ActorContext) -> Actor:
        return CoordinatorActor(ctx, limits)

    def agent(ctx: ActorContext) -> Actor:
        return AgentStateActor(ctx, limits)

    def lock(ctx: ActorContext) -> Actor:
        return ResourceLockActor(
            ctx, watchers=lambda: host.get_websockets(COORDINATOR), on_alarm_expiry=on_lock_alarm_expiry
        )

    host = ActorHost(
        data_dir,
        {"coordinator": coordinator, "agent": agent, "lock": lock},
        clock=clock,
        limits=host_limits,
        synchronous=synchronous,
        sharded=SHARDED_TABLES,
        shards=shards,
        fire_alarms=fire_alarms,
        checkpoint_helper=checkpoint_helper,
    )
    return host
