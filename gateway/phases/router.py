"""The phase router: a `Store` that sends each operation where the current phase says.

    phase          reads from   writes go to                   the other store
    parallel       legacy       legacy, then actors (background) best effort, not repaired
    write-through  legacy       legacy, then actors             a failure is queued for repair
    read-switch    actors       actors, then legacy             a failure is queued for repair
    cutover        actors       actors only                     not written

One execution, then replication: the authoritative store runs the command (with its business
rules); every entity the command touched is then read back from it and upserted into the other
store (or deleted there), never re-executed, so both hold the same ids, timestamps and
outcomes. Writes that touch the same entity are serialised while they replicate (per
coordinator entity, per agent actor for its own data, per resource for a lock), so two writes
of one entity cannot cross on their way to the other store, while writes of different
entities (two chat posts, a /work beside a task update) do not wait for each other.

A failure of the authoritative store fails the request and writes nothing to the other. A
failure of the other store does not fail the request: the entity goes to the durable repair
queue, whose worker copies the source's current value later. While a target store is known to
be down (a replication failed less than `TARGET_DOWN_MS` ago, or the repair worker's last
attempt on it failed), replication goes straight to the queue, joining the worker's next attempt,
instead of waiting for a timeout per request. Before the authoritative store runs a command,
the entities it may touch are recorded as intents in the repair queue's database, so a gateway
killed between the two writes repairs them at its next start.

Sockets are always held by the actor host. When legacy Redis is authoritative, the router
pushes the frames the actors would have pushed (they only receive replicated entities, which
never broadcast); when the actors are authoritative they push them themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import orjson
import structlog

from gateway.actors import ActorHost, HostedSocket
from gateway.actors.crash import crash_point
from gateway.clock import Clock
from gateway.do import COORDINATOR, agent_ref
from gateway.domain import commands as c
from gateway.domain.jscompat import iso_from_ms
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
    frame,
)
from gateway.errors import GatewayError
from gateway.phases.control import PhaseControl
from gateway.phases.entities import EntityKey
from gateway.phases.gate import PhaseGate
from gateway.phases.repair import RepairQueue, is_unavailable
from gateway.phases.shadow import ShadowReader
from gateway.settings import LimitSettings, MigrationSettings
from gateway.store import SocketHandle, Store

log = structlog.get_logger(__name__)

T = TypeVar("T")

AGENT_SCOPED = frozenset({"checkpoint", "dm", "memory"})
TARGET_DOWN_MS = 1_000  # after a failed write, go straight to the queue for this long


class Replica(Protocol):
    """Entity-level access to one store (the unit of replication and repair)."""

    async def read_entity(self, key: EntityKey) -> Any: ...

    async def write_entity(self, key: EntityKey, value: Any) -> None: ...


class PresenceStore(Protocol):
    """What the router needs of the legacy store for socket presence (beyond `Store`)."""

    async def touch_agent(self, agent_id: str, now_ms: int, *, advance_cursor: bool) -> None: ...

    async def set_agent_status(self, agent_id: str, status: str, now_ms: int) -> None: ...


class LegacyBackend(Store, PresenceStore, Protocol):
    """The legacy store as the router uses it."""


def in_rollout(agent_id: str, settings: MigrationSettings) -> bool:
    """Is this agent's per-agent data mirrored in `parallel`? (allow-list, else sticky percentage)"""
    if settings.rollout_agents:
        return agent_id in settings.rollout_agents
    if settings.rollout_percent >= 100:  # noqa: PLR2004 - 100 %
        return True
    bucket = int.from_bytes(hashlib.sha256(agent_id.encode("utf-8")).digest()[:4], "big") % 10_000
    return bucket < settings.rollout_percent * 100


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _to_json(value: Any) -> Any:
    """The wire form of a store result, for shadow comparison."""
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if to_json is not None:
        return to_json()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _to_json(getattr(value, k)) for k in value.__dataclass_fields__ if k != "extra"}
    return value


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """Named asyncio locks that exist only while someone holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, names: Iterable[str]) -> AsyncIterator[None]:
        """Hold every named lock (taken in sorted order, so two holders never deadlock)."""
        entries: list[tuple[str, _Held]] = []
        for name in sorted(set(names)):
            entry = self._locks.get(name)
            if entry is None:
                entry = self._locks[name] = _Held()
            entry.users += 1
            entries.append((name, entry))
        held: list[_Held] = []
        try:
            for _, entry in entries:
                await entry.lock.acquire()
                held.append(entry)
            yield
        finally:
            for entry in reversed(held):
                entry.lock.release()
            for name, entry in entries:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[name]


class PhasedStore:
    """`Store` over both stores, following the phase of `control`."""

    def __init__(
        self,
        *,
        actors: Store,
        legacy: LegacyBackend,
        actor_replica: Replica,
        legacy_replica: Replica,
        host: ActorHost,
        control: PhaseControl,
        gate: PhaseGate,
        queue: RepairQueue,
        shadow: ShadowReader,
        clock: Clock,
        migration: MigrationSettings,
        limits: LimitSettings,
    ) -> None:
        self.actors = actors
        self.legacy = legacy
        self.replicas: dict[str, Replica] = {"actors": actor_replica, "legacy": legacy_replica}
        self.host = host
        self.control = control
        self.gate = gate
        self.queue = queue
        self.shadow = shadow
        self.clock = clock
        self.migration = migration
        self.limits = limits
        self._locks = KeyedLocks()
        self._down_until: dict[str, int] = {"actors": 0, "legacy": 0}
        self._repair_failing: dict[str, bool] = {"actors": False, "legacy": False}
        self._background: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {
            "replicated": 0,
            "queued": 0,
            "mirror_failed": 0,
            "mirror_skipped_rollout": 0,
        }

    # -- the two paths --------------------------------------------------------------------------

    def _authoritative(self, phase: str) -> tuple[str, str]:
        """(authoritative, other) store names for `phase`."""
        if phase in ("parallel", "write-through"):
            return "legacy", "actors"
        return "actors", "legacy"

    def _store(self, name: str) -> Any:
        return self.legacy if name == "legacy" else self.actors

    async def _read(
        self, domain: str, what: str, run: Callable[[Any], Awaitable[T]], *, shadow: bool = True
    ) -> T:
        """Serve a read from the authoritative store; with `shadow`, a sampled shadow read of the
        other store is compared in the background (never for reads with side effects)."""
        await self.gate.enter()
        try:
            phase = self.control.phase
            if phase == "cutover":
                return await run(self.actors)
            auth, other = self._authoritative(phase)
            result = await run(self._store(auth))
            if shadow and self.shadow.sampled():
                other_store = self._store(other)

                async def shadow_read() -> Any:
                    return _to_json(await run(other_store))

                self.shadow.submit(domain, what, _to_json(result), shadow_read)
            return result
        finally:
            self.gate.leave()

    async def _write(
        self,
        scope: str,
        run: Callable[[Any], Awaitable[T]],
        keys: Sequence[EntityKey],
        push: Callable[[T], None] | None = None,
        *,
        changed: Callable[[T], bool] | None = None,
    ) -> T:
        """Run a write where the phase says and replicate `keys` (the entities it may touch,
        known before it runs: ids are generated before execution); `changed(result)` False
        means the command changed nothing (a lock conflict), so nothing is replicated."""
        await self.gate.enter()
        try:
            phase = self.control.phase
            if phase == "cutover":
                return await run(self.actors)
            auth, other = self._authoritative(phase)
            async with self._locks.hold(self._lock_names(keys, scope)):
                if phase == "parallel":
                    result = await run(self._store(auth))
                    if changed is None or changed(result):
                        self._mirror_in_background(keys, scope)
                else:
                    result = await self._run_and_replicate(run, auth, other, keys, changed)
            if auth == "legacy" and push is not None:
                push(result)
            return result
        finally:
            self.gate.leave()

    async def _run_and_replicate(
        self,
        run: Callable[[Any], Awaitable[T]],
        auth: str,
        other: str,
        keys: Sequence[EntityKey],
        changed: Callable[[T], bool] | None,
    ) -> T:
        intents = self.queue.begin(keys, other)
        settled = False
        try:
            try:
                result = await run(self._store(auth))
            except GatewayError:
                settled = True  # the store refused or failed the command: nothing to replicate
                raise
            crash_point("router.before_replicate")
            if changed is None or changed(result):
                for key in keys:
                    await self._replicate(key, other)
            settled = True
            return result
        finally:
            if settled:
                self.queue.end(intents)
            else:  # cancelled, or an unexpected error: the command may have run
                self.queue.abandon(intents, "replication interrupted")

    def _target_down(self, target: str) -> bool:
        return self._repair_failing[target] or self.clock.now_ms() < self._down_until[target]

    def _enqueue(self, key: EntityKey, target: str, error: str) -> None:
        """Queue a repair, due with the worker's next attempt on `target` (no extra probe)."""
        next_probe = self.queue.next_due_ms(target) or 0
        self.queue.enqueue(key, target, error, not_before_ms=max(self._down_until[target], next_probe))
        self.counters["queued"] += 1

    async def _replicate(self, key: EntityKey, target: str) -> None:
        """Copy `key` from the other store into `target`; on failure queue it for repair."""
        if self._target_down(target):
            self._enqueue(key, target, f"{target} store recently unavailable")
            return
        try:
            await self.copy(key, target)
            self.counters["replicated"] += 1
        except (GatewayError, OSError) as e:
            if is_unavailable(e):  # not for one entity's failure (an unreadable legacy value)
                self._down_until[target] = self.clock.now_ms() + TARGET_DOWN_MS
            self._enqueue(key, target, str(e))
            log.warning("replicate.queued", key=str(key), target=target, error=str(e))

    async def copy(self, key: EntityKey, target: str) -> None:
        """Upsert the source store's current value of `key` into `target` (delete when absent)."""
        source = "legacy" if target == "actors" else "actors"
        value = await self.replicas[source].read_entity(key)
        await self.replicas[target].write_entity(key, value)

    async def repair_copy(self, key: EntityKey, target: str) -> None:
        """The repair worker's copy: serialised with the entity's writes."""
        scope = self._scope_of(key)
        try:
            async with self._locks.hold([scope]):
                await self.copy(key, target)
        except Exception as e:
            if is_unavailable(e):
                self._repair_failing[target] = True  # requests queue until a repair succeeds again
            raise
        self._repair_failing[target] = False
        self._down_until[target] = 0

    @staticmethod
    def _scope_of(key: EntityKey) -> str:
        """The lock that serialises the replication of `key`: one per agent actor for its data,
        one per resource for a lock, one per entity for the coordinator's (ids are unique)."""
        if key.domain in AGENT_SCOPED:
            return f"agent:{key.scope}"
        if key.domain == "lock":
            return f"lock:{key.id}"
        return str(key)

    def _lock_names(self, keys: Sequence[EntityKey], scope: str) -> list[str]:
        return [self._scope_of(k) for k in keys] if keys else [scope]

    def _mirror_in_background(self, keys: Sequence[EntityKey], scope: str) -> None:
        wanted = []
        for key in keys:
            if key.domain in AGENT_SCOPED and not in_rollout(key.scope, self.migration):
                self.counters["mirror_skipped_rollout"] += 1
            else:
                wanted.append(key)
        if not wanted:
            return

        async def mirror() -> None:
            async with self._locks.hold(self._lock_names(wanted, scope)):
                for key in wanted:
                    try:
                        await self.copy(key, "actors")
                        self.counters["replicated"] += 1
                    except (GatewayError, OSError) as e:
                        self.counters["mirror_failed"] += 1
                        log.info("mirror.failed", key=str(key), error=str(e))

        task = asyncio.get_running_loop().create_task(mirror())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def after_lock_alarm_expiry(self, resource_path: str) -> None:
        """A lock expired by its alarm, a change no request made: while the actors are
        authoritative, Redis must follow, so the lock goes to the repair queue (which copies it
        after the alarm's turn has committed; the copy waits for the actor's gate)."""
        if self.control.phase == "read-switch":  # not a failure: no `queued` count
            self.queue.enqueue(EntityKey("lock", "", resource_path), "legacy", "lock expired by its alarm")

    async def drain(self) -> None:
        """Wait for background mirrors (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- frames the actors would push (used while legacy is authoritative) ------------------------

    def _broadcast(self, kind: str, payload: Any, timestamp: str) -> None:
        socks = self.host.get_websockets(COORDINATOR)
        if socks:
            self.host.send(socks, _dumps(frame(kind, payload, timestamp)))

    # -- coordinator ------------------------------------------------------------------------------

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        await self._write(
            "coordinator",
            lambda s: s.register_agent(cmd),
            [EntityKey("agent", "", cmd.agent_id)],
            lambda _: self._broadcast("agent-update", cmd.raw, iso_from_ms(cmd.now_ms)),
        )

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        return await self._read("agent", "list", lambda s: s.list_agents(now_ms, limit))

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        return await self._write(
            "coordinator",
            lambda s: s.post_chat(cmd),
            [EntityKey("chat", "", cmd.id)],
            lambda m: self._broadcast("chat", m.to_json(), m.timestamp),
        )

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        if q.agent_id is None:
            return await self._read("chat", "get", lambda s: s.get_chat(q))
        agent_id = q.agent_id  # reading with agentId marks the agent active: a write
        return await self._write("coordinator", lambda s: s.get_chat(q), [EntityKey("agent", "", agent_id)])

    async def create_task(self, cmd: c.CreateTask) -> Task:
        return await self._write(
            "coordinator",
            lambda s: s.create_task(cmd),
            [EntityKey("task", "", cmd.id)],
            lambda t: self._broadcast("task-update", t.create_json(), t.created_at),
        )

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        return await self._write(
            "coordinator",
            lambda s: s.update_task(cmd),
            [EntityKey("task", "", cmd.id)],
            lambda t: self._broadcast("task-update", t.to_json(), t.updated_at),
        )

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        return await self._read("task", "list", lambda s: s.list_tasks(q))

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        return await self._write(
            "coordinator", lambda s: s.work_bundle(q), [EntityKey("agent", "", q.agent_id)]
        )

    # -- zones, claims, handoffs --------------------------------------------------------------------

    async def find_zone(self, path: str) -> Zone | None:
        return await self._read("zone", "find", lambda s: s.find_zone(path))

    async def list_zones(self, q: c.ZoneQuery) -> list[Zone]:
        return await self._read("zone", "list", lambda s: s.list_zones(q))

    async def claim_zone(self, cmd: c.ZoneClaim) -> Zone:
        return await self._write(
            "coordinator", lambda s: s.claim_zone(cmd), [EntityKey("zone", "", cmd.zone_id)]
        )

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        return await self._write(
            "coordinator", lambda s: s.release_zone(cmd), [EntityKey("zone", "", cmd.zone_id)]
        )

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        return await self._read("claim", "get", lambda s: s.get_claim(what, now_ms))

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        return await self._read("claim", "list", lambda s: s.list_claims(q))

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        return await self._write("coordinator", lambda s: s.claim(cmd), [EntityKey("claim", "", cmd.what)])

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        return await self._write(
            "coordinator", lambda s: s.release_claim(cmd), [EntityKey("claim", "", cmd.what)]
        )

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        return await self._read("handoff", "get", lambda s: s.get_handoff(handoff_id))

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        return await self._read("handoff", "list", lambda s: s.list_handoffs(q))

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        return await self._write(
            "coordinator",
            lambda s: s.create_handoff(cmd),
            [EntityKey("handoff", "", cmd.id)],
            lambda h: self._broadcast(
                "task-update", {"action": "handoff-created", "handoff": h.create_json()}, h.created_at
            ),
        )

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        return await self._write(
            "coordinator",
            lambda s: s.claim_handoff(cmd),
            [EntityKey("handoff", "", cmd.handoff_id)],
        )

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        return await self._write(
            "coordinator",
            lambda s: s.complete_handoff(cmd),
            [EntityKey("handoff", "", cmd.handoff_id)],
        )

    # -- agent ------------------------------------------------------------------------------------

    async def get_checkpoint(self, agent_id: str) -> Checkpoint | None:
        return await self._read("checkpoint", "get", lambda s: s.get_checkpoint(agent_id))

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        await self._write(
            f"agent:{cmd.agent_id}",
            lambda s: s.save_checkpoint(cmd),
            [EntityKey("checkpoint", cmd.agent_id, "")],
        )

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        def push(dm: DirectMessage) -> None:
            socks = self.host.get_websockets(agent_ref(cmd.agent_id))
            if socks:
                self.host.send(socks, _dumps(frame("chat", dm.to_json(), iso_from_ms(cmd.now_ms))))

        return await self._write(
            f"agent:{cmd.agent_id}",
            lambda s: s.send_dm(cmd),
            [EntityKey("dm", cmd.agent_id, cmd.id)],
            push,
        )

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        return await self._read("dm", "list", lambda s: s.list_dms(q))

    async def mark_dms_read(self, cmd: c.MarkDmsRead) -> None:
        await self._write(
            f"agent:{cmd.agent_id}",
            lambda s: s.mark_dms_read(cmd),
            [EntityKey("dm", cmd.agent_id, i) for i in dict.fromkeys(cmd.message_ids)],
        )

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        return await self._write(
            f"agent:{cmd.agent_id}",
            lambda s: s.add_memory(cmd),
            [EntityKey("memory", cmd.agent_id, cmd.id)],
        )

    async def search_memory(self, q: c.MemoryQuery) -> list[Memory]:
        return await self._read("memory", "search", lambda s: s.search_memory(q))

    async def agent_state(self, agent_id: str) -> AgentStateView:
        return await self._read("agent-state", "get", lambda s: s.agent_state(agent_id))

    # -- locks ------------------------------------------------------------------------------------

    async def check_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        # a check may release an expired lock (a write), so it replicates the lock entity too
        return await self._write(
            f"lock:{resource_path}",
            lambda s: s.check_lock(resource_path, now_ms),
            [EntityKey("lock", "", resource_path)],
            changed=lambda r: r.expired_now is not None,
        )

    async def acquire_lock(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        def push(out: LockAcquireOutcome) -> None:
            if out.acquired:
                payload = {
                    "action": "locked",
                    "resourcePath": cmd.resource_path,
                    "lock": out.lock.create_json(),
                }
                self._broadcast("lock-update", payload, iso_from_ms(cmd.now_ms))

        return await self._write(
            f"lock:{cmd.resource_path}",
            lambda s: s.acquire_lock(cmd),
            [EntityKey("lock", "", cmd.resource_path)],
            push,
            changed=lambda out: out.acquired,
        )

    async def release_lock(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        def push(out: LockReleaseOutcome) -> None:
            if out.lock is not None and out.outcome in ("released", "expired"):
                reason = out.release_reason or "manual"
                payload = {
                    "action": "expired" if reason == "expired" else "unlocked",
                    "resourcePath": cmd.resource_path,
                    "previousOwner": out.lock.locked_by,
                    "releaseReason": reason,
                }
                self._broadcast("lock-update", payload, iso_from_ms(cmd.now_ms))

        return await self._write(
            f"lock:{cmd.resource_path}",
            lambda s: s.release_lock(cmd),
            [EntityKey("lock", "", cmd.resource_path)],
            push,
            changed=lambda out: out.outcome != "none",
        )

    async def lock_history(self, resource_path: str, limit: int) -> LockHistory:
        # the legacy store keeps no lock history: history is always the actors'
        return await self.actors.lock_history(resource_path, limit)

    # -- WebSockets -------------------------------------------------------------------------------

    async def open_coordinator_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        async def run(store: Any) -> SocketHandle:
            if store is self.actors:
                hs: SocketHandle = await self.actors.open_coordinator_socket(ws, agent_id, now_ms)
                return hs
            await self.legacy.touch_agent(agent_id, now_ms, advance_cursor=False)
            hs = self.host.accept_websocket(COORDINATOR, ws, [agent_id])
            agents = await self.legacy.list_agents(now_ms, self.limits.list_limit_max)
            payload = {"agents": [a.to_json() for a in agents], "message": f"Welcome {agent_id}!"}
            hs.enqueue(_dumps(frame("agent-update", payload, iso_from_ms(now_ms))))
            return hs

        return await self._write("coordinator", run, [EntityKey("agent", "", agent_id)])

    async def coordinator_ping(self, handle: SocketHandle, now_ms: int) -> None:
        agent_id = socket_agent(handle)

        async def run(store: Any) -> None:
            if store is self.actors:
                await self.actors.coordinator_ping(handle, now_ms)
                return
            handle.enqueue(_dumps({"type": "pong", "timestamp": iso_from_ms(now_ms)}))
            if agent_id is not None:
                await self.legacy.touch_agent(
                    agent_id, now_ms, advance_cursor=False
                )  # as the actors: presence only

        await self._write("coordinator", run, _agent_keys(agent_id))

    async def coordinator_set_status(self, handle: SocketHandle, status: str, now_ms: int) -> None:
        agent_id = socket_agent(handle)

        async def run(store: Any) -> None:
            if store is self.actors:
                await self.actors.coordinator_set_status(handle, status, now_ms)
            elif agent_id is not None:
                await self.legacy.set_agent_status(agent_id, status, now_ms)

        await self._write("coordinator", run, _agent_keys(agent_id))

    async def close_coordinator_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        agent_id = socket_agent(handle)
        now_ms = self.clock.now_ms()

        async def run(store: Any) -> bool:
            if store is self.actors:
                await self.actors.close_coordinator_socket(handle, code, reason)
                return False
            self.host.forget_websocket(handle)
            if agent_id is None or self.host.get_websockets(COORDINATOR, agent_id):
                return False  # another socket of this agent is still open: it stays online
            await self.legacy.set_agent_status(agent_id, "offline", now_ms)
            return True

        def push(went_offline: bool) -> None:
            if went_offline:
                self._broadcast(
                    "agent-update", {"agentId": agent_id, "status": "offline"}, iso_from_ms(now_ms)
                )

        await self._write("coordinator", run, _agent_keys(agent_id), push)

    async def open_agent_socket(self, ws: Any, agent_id: str, now_ms: int) -> SocketHandle:
        async def run(store: Any) -> SocketHandle:
            if store is self.actors:
                hs: SocketHandle = await self.actors.open_agent_socket(ws, agent_id, now_ms)
                return hs
            hs = self.host.accept_websocket(agent_ref(agent_id), ws, [])
            view = await self.legacy.agent_state(agent_id)
            hs.enqueue(_dumps(frame("state-sync", view.to_json(), iso_from_ms(now_ms))))
            return hs

        # no shadow read: opening a socket accepts it and sends `state-sync` (a second one would
        # be held, pushed to and closed beside the first)
        return await self._read("agent-state", "socket", run, shadow=False)

    async def agent_socket_checkpoint(self, handle: SocketHandle, cmd: c.SaveCheckpoint) -> None:
        async def run(store: Any) -> None:
            if store is self.actors:
                await self.actors.agent_socket_checkpoint(handle, cmd)
                return
            await self.legacy.save_checkpoint(cmd)
            handle.enqueue(_dumps({"type": "checkpoint-saved", "timestamp": iso_from_ms(cmd.now_ms)}))

        await self._write(f"agent:{cmd.agent_id}", run, [EntityKey("checkpoint", cmd.agent_id, "")])

    async def close_agent_socket(self, handle: SocketHandle, code: int, reason: str) -> None:
        if handle.closed:
            return
        if self.control.phase in ("parallel", "write-through"):
            self.host.forget_websocket(handle)
        else:
            await self.actors.close_agent_socket(handle, code, reason)


def _agent_keys(agent_id: str | None) -> list[EntityKey]:
    return [] if agent_id is None else [EntityKey("agent", "", agent_id)]


def socket_agent(hs: HostedSocket) -> str | None:
    """The agent a coordinator socket was opened for (its first tag)."""
    return hs.tags[0] if hs.tags else None
