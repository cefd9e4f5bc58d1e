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

Sockets are always held by the actor host (`gateway.phases.sockets` routes their messages). When
legacy Redis is authoritative, the router pushes the frames the actors would have pushed (they
only receive replicated entities, which never push), built by the same `gateway.domain.frames`;
when the actors are authoritative they push them themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog

from gateway.actors.crash import crash_point
from gateway.clock import Clock
from gateway.domain import commands as c
from gateway.domain import frames
from gateway.domain.entities import EntityKey, Owner
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
)
from gateway.domain.phase import Phase, StoreName
from gateway.errors import GatewayError
from gateway.keyed_locks import KeyedLocks
from gateway.phases.control import PhaseControl
from gateway.phases.gate import PhaseGate
from gateway.phases.repair import RepairQueue, is_unavailable
from gateway.phases.shadow import ShadowReader
from gateway.settings import MigrationSettings
from gateway.store import Replica, SocketHub, Store

log = structlog.get_logger(__name__)

T = TypeVar("T")

TARGET_DOWN_MS = 1_000  # after a failed write, go straight to the queue for this long


class PresenceStore(Protocol):
    """What the router needs of the legacy store for socket presence (beyond `Store`)."""

    async def touch_agent(self, agent_id: str, now_ms: int, *, advance_cursor: bool) -> None: ...

    async def set_agent_status(self, agent_id: str, status: str, now_ms: int) -> None: ...


class LegacyBackend(Store, PresenceStore, Protocol):
    """The legacy store as the router uses it."""

    async def peek_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        """What `check_lock` answers, without removing an expired lock (`expired_now` says it would)."""
        ...


def in_rollout(agent_id: str, settings: MigrationSettings) -> bool:
    """Is this agent's per-agent data mirrored in `parallel`? (allow-list, else sticky percentage)"""
    if settings.rollout_agents:
        return agent_id in settings.rollout_agents
    if settings.rollout_percent >= 100:  # noqa: PLR2004 - 100 %
        return True
    bucket = int.from_bytes(hashlib.sha256(agent_id.encode("utf-8")).digest()[:4], "big") % 10_000
    return bucket < settings.rollout_percent * 100


def replication_scope(key: EntityKey) -> str:
    """The lock that serialises the replication of `key`: one per agent actor for its data,
    one per resource for a lock, one per entity for the coordinator's (ids are unique).

    The coordinator's entities are named under `coordinator/`: an agent's record (`agent:<id>`)
    must not share a lock with that agent's actor (`agent:<id>`), or a heartbeat or a `/work`
    waits for the agent's DMs and checkpoint saves (issue 13: they did, for up to 2 s)."""
    owner = key.owner
    if owner is Owner.COORDINATOR:
        return f"coordinator/{key}"
    return f"{owner}:{key.owner_name}"


@dataclass(frozen=True, slots=True)
class ByStore(Generic[T]):
    """One operation as each store carries it out (the router picks one by the phase)."""

    actors: Callable[[], Awaitable[T]]
    legacy: Callable[[], Awaitable[T]]

    def on(self, store: StoreName) -> Awaitable[T]:
        return self.actors() if store == "actors" else self.legacy()


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


def _remembering_writes(replica: Replica) -> contextlib.AbstractContextManager[object]:
    """The scope in which `replica` reads what its store's command wrote instead of asking the
    store again (`LegacyReplica.remembering_writes`), for replicas that can; else nothing."""
    remembering: Callable[[], contextlib.AbstractContextManager[object]] | None = getattr(
        replica, "remembering_writes", None
    )
    return contextlib.nullcontext() if remembering is None else remembering()


class PhasedStore:
    """`Store` over both stores, following the phase of `control`."""

    def __init__(
        self,
        *,
        actors: Store,
        legacy: LegacyBackend,
        actor_replica: Replica,
        legacy_replica: Replica,
        hub: SocketHub,
        control: PhaseControl,
        gate: PhaseGate,
        queue: RepairQueue,
        shadow: ShadowReader,
        clock: Clock,
        migration: MigrationSettings,
    ) -> None:
        self.actors = actors
        self.legacy = legacy
        self.replicas: dict[StoreName, Replica] = {"actors": actor_replica, "legacy": legacy_replica}
        self.hub = hub
        self.control = control
        self.gate = gate
        self.queue = queue
        self.shadow = shadow
        self.clock = clock
        self.migration = migration
        self._locks = KeyedLocks()
        self._down_until: dict[StoreName, int] = {"actors": 0, "legacy": 0}
        self._repair_failing: dict[StoreName, bool] = {"actors": False, "legacy": False}
        self._background: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {
            "replicated": 0,
            "queued": 0,
            "mirror_failed": 0,
            "mirror_skipped_rollout": 0,
        }

    # -- the two paths --------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current phase (read once per operation, inside the gate)."""
        return self.control.phase

    def _both(self, op: Callable[[Store], Awaitable[T]]) -> ByStore[T]:
        """A data operation, the same on either store."""
        return ByStore(lambda: op(self.actors), lambda: op(self.legacy))

    async def read(self, domain: str, what: str, run: ByStore[T], *, shadow: bool = True) -> T:
        """Serve a read from the authoritative store; with `shadow`, a sampled shadow read of the
        other store is compared in the background (never for reads with side effects)."""
        await self.gate.enter()
        try:
            phase = self.phase
            result = await run.on(phase.serves)
            other = phase.other
            if other is not None and shadow and self.shadow.sampled():

                async def shadow_read() -> Any:
                    return _to_json(await run.on(other))

                self.shadow.submit(domain, what, _to_json(result), shadow_read)
            return result
        finally:
            self.gate.leave()

    async def write(
        self,
        scope: str,
        run: ByStore[T],
        keys: Sequence[EntityKey],
        push: Callable[[T], None] | None = None,
        *,
        changed: Callable[[T], bool] | None = None,
    ) -> T:
        """Run a write where the phase says and replicate `keys` (the entities it may touch,
        known before it runs: ids are generated before execution); `changed(result)` False
        means the command changed nothing (a lock conflict), so nothing is replicated. `push`
        sends the frames the actors would have sent, when the legacy store ran the command."""
        await self.gate.enter()
        try:
            phase = self.phase
            auth, other = phase.serves, phase.other
            if other is None:
                return await run.on(auth)
            async with self._locks.hold(self._lock_names(keys, scope)):
                if phase.mirrors_in_background:
                    result = await run.on(auth)
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
        run: ByStore[T],
        auth: StoreName,
        other: StoreName,
        keys: Sequence[EntityKey],
        changed: Callable[[T], bool] | None,
    ) -> T:
        intents = self.queue.begin(keys, other)
        settled = False
        try:
            with _remembering_writes(self.replicas[auth]):
                try:
                    result = await run.on(auth)
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
                await self.queue.abandon(intents, "replication interrupted")

    def _target_down(self, target: StoreName) -> bool:
        return self._repair_failing[target] or self.clock.now_ms() < self._down_until[target]

    async def _enqueue(self, key: EntityKey, target: StoreName, error: str) -> None:
        """Queue a repair, due with the worker's next attempt on `target` (no extra probe)."""
        next_probe = self.queue.next_due_ms(target) or 0
        await self.queue.enqueue(key, target, error, not_before_ms=max(self._down_until[target], next_probe))
        self.counters["queued"] += 1

    async def _replicate(self, key: EntityKey, target: StoreName) -> None:
        """Copy `key` from the other store into `target`; on failure queue it for repair."""
        if self._target_down(target):
            await self._enqueue(key, target, f"{target} store recently unavailable")
            return
        try:
            await self.copy(key, target)
            self.counters["replicated"] += 1
        except (GatewayError, OSError) as e:
            if is_unavailable(e):  # not for one entity's failure (an unreadable legacy value)
                self._down_until[target] = self.clock.now_ms() + TARGET_DOWN_MS
            await self._enqueue(key, target, str(e))
            log.warning("replicate.queued", key=str(key), target=target, error=str(e))

    async def copy(self, key: EntityKey, target: StoreName) -> None:
        """Upsert the source store's current value of `key` into `target` (delete when absent)."""
        source: StoreName = "legacy" if target == "actors" else "actors"
        value = await self.replicas[source].read_entity(key)
        await self.replicas[target].write_entity(key, value)

    async def repair_copy(self, key: EntityKey, target: str) -> None:
        """The repair worker's copy: serialised with the entity's writes."""
        if target not in self.replicas:
            raise ValueError(f"unknown repair target {target!r}")
        store: StoreName = "legacy" if target == "legacy" else "actors"
        scope = replication_scope(key)
        try:
            async with self._locks.hold([scope]):
                await self.copy(key, store)
        except Exception as e:
            if is_unavailable(e):
                self._repair_failing[store] = True  # requests queue until a repair succeeds again
            raise
        self._repair_failing[store] = False
        self._down_until[store] = 0

    def _lock_names(self, keys: Sequence[EntityKey], scope: str) -> list[str]:
        return [replication_scope(k) for k in keys] if keys else [scope]

    def _mirror_in_background(self, keys: Sequence[EntityKey], scope: str) -> None:
        wanted = []
        for key in keys:
            if key.owner is Owner.AGENT and not in_rollout(key.scope, self.migration):
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

        self._in_background(mirror())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task that `drain` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def after_lock_alarm_expiry(self, resource_path: str) -> None:
        """A lock expired by its alarm, a change no request made: while the actors are
        authoritative, Redis must follow, so the lock goes to the repair queue (which copies it
        after the alarm's turn has committed; the copy waits for the actor's gate)."""
        if self.phase is Phase.READ_SWITCH:  # not a failure: no `queued` count
            key = EntityKey("lock", "", resource_path)
            self._in_background(self.queue.enqueue(key, "legacy", "lock expired by its alarm"))

    async def drain(self) -> None:
        """Wait for background mirrors (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- coordinator ------------------------------------------------------------------------------

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        await self.write(
            "coordinator",
            self._both(lambda s: s.register_agent(cmd)),
            [EntityKey("agent", "", cmd.agent_id)],
            lambda _: self.hub.broadcast(frames.agent_registered(cmd.raw, iso_from_ms(cmd.now_ms))),
        )

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        return await self.read("agent", "list", self._both(lambda s: s.list_agents(now_ms, limit)))

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.post_chat(cmd)),
            [EntityKey("chat", "", cmd.id)],
            lambda msg: self.hub.broadcast(frames.chat_posted(msg)),
        )

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        run = self._both(lambda s: s.get_chat(q))
        if q.agent_id is None:
            return await self.read("chat", "get", run)
        # reading with agentId marks the agent active: a write
        return await self.write("coordinator", run, [EntityKey("agent", "", q.agent_id)])

    async def create_task(self, cmd: c.CreateTask) -> Task:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.create_task(cmd)),
            [EntityKey("task", "", cmd.id)],
            lambda t: self.hub.broadcast(frames.task_created(t)),
        )

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.update_task(cmd)),
            [EntityKey("task", "", cmd.id)],
            lambda t: self.hub.broadcast(frames.task_updated(t)),
        )

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        return await self.read("task", "list", self._both(lambda s: s.list_tasks(q)))

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        return await self.write(
            "coordinator", self._both(lambda s: s.work_bundle(q)), [EntityKey("agent", "", q.agent_id)]
        )

    # -- zones, claims, handoffs --------------------------------------------------------------------

    async def find_zone(self, path: str) -> Zone | None:
        return await self.read("zone", "find", self._both(lambda s: s.find_zone(path)))

    async def list_zones(self, q: c.ZoneQuery) -> list[Zone]:
        return await self.read("zone", "list", self._both(lambda s: s.list_zones(q)))

    async def claim_zone(self, cmd: c.ZoneClaim) -> Zone:
        return await self.write(
            "coordinator", self._both(lambda s: s.claim_zone(cmd)), [EntityKey("zone", "", cmd.zone_id)]
        )

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        return await self.write(
            "coordinator", self._both(lambda s: s.release_zone(cmd)), [EntityKey("zone", "", cmd.zone_id)]
        )

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        return await self.read("claim", "get", self._both(lambda s: s.get_claim(what, now_ms)))

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        return await self.read("claim", "list", self._both(lambda s: s.list_claims(q)))

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        return await self.write(
            "coordinator", self._both(lambda s: s.claim(cmd)), [EntityKey("claim", "", cmd.what)]
        )

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        return await self.write(
            "coordinator", self._both(lambda s: s.release_claim(cmd)), [EntityKey("claim", "", cmd.what)]
        )

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        return await self.read("handoff", "get", self._both(lambda s: s.get_handoff(handoff_id)))

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        return await self.read("handoff", "list", self._both(lambda s: s.list_handoffs(q)))

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.create_handoff(cmd)),
            [EntityKey("handoff", "", cmd.id)],
            lambda h: self.hub.broadcast(frames.handoff_created(h)),
        )

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.claim_handoff(cmd)),
            [EntityKey("handoff", "", cmd.handoff_id)],
        )

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        return await self.write(
            "coordinator",
            self._both(lambda s: s.complete_handoff(cmd)),
            [EntityKey("handoff", "", cmd.handoff_id)],
        )

    # -- agent ------------------------------------------------------------------------------------

    async def get_checkpoint(self, agent_id: str) -> Checkpoint | None:
        return await self.read("checkpoint", "get", self._both(lambda s: s.get_checkpoint(agent_id)))

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        await self.write(
            f"agent:{cmd.agent_id}",
            self._both(lambda s: s.save_checkpoint(cmd)),
            [EntityKey("checkpoint", cmd.agent_id, "")],
        )

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        return await self.write(
            f"agent:{cmd.agent_id}",
            self._both(lambda s: s.send_dm(cmd)),
            [EntityKey("dm", cmd.agent_id, cmd.id)],
            lambda dm: self.hub.push_to_agent(cmd.agent_id, frames.dm_sent(dm)),
        )

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        return await self.read("dm", "list", self._both(lambda s: s.list_dms(q)))

    async def mark_dms_read(self, cmd: c.MarkDmsRead) -> None:
        await self.write(
            f"agent:{cmd.agent_id}",
            self._both(lambda s: s.mark_dms_read(cmd)),
            [EntityKey("dm", cmd.agent_id, i) for i in dict.fromkeys(cmd.message_ids)],
        )

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        return await self.write(
            f"agent:{cmd.agent_id}",
            self._both(lambda s: s.add_memory(cmd)),
            [EntityKey("memory", cmd.agent_id, cmd.id)],
        )

    async def search_memory(self, q: c.MemoryQuery) -> list[Memory]:
        return await self.read("memory", "search", self._both(lambda s: s.search_memory(q)))

    async def agent_state(self, agent_id: str) -> AgentStateView:
        return await self.read("agent-state", "get", self._both(lambda s: s.agent_state(agent_id)))

    # -- locks ------------------------------------------------------------------------------------

    async def check_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        peeked = await self._peek_lock(resource_path, now_ms)
        if peeked is not None:
            return peeked
        # a check may release an expired lock (a write), so it replicates the lock entity too
        return await self.write(
            f"lock:{resource_path}",
            self._both(lambda s: s.check_lock(resource_path, now_ms)),
            [EntityKey("lock", "", resource_path)],
            changed=lambda r: r.expired_now is not None,
        )

    async def _peek_lock(self, resource_path: str, now_ms: int) -> LockCheck | None:
        """While legacy Redis serves, a check that finds no expired lock to remove changes
        nothing: it is answered as a read (no intent, no wait for the lock's other writes, nothing
        to replicate; most checks of issue 13's mix, 14 of every 100 requests). None: run the
        check as a write (actors serve, or the lock has expired)."""
        await self.gate.enter()
        try:
            if self.phase.serves != "legacy":
                return None
            check = await self.legacy.peek_lock(resource_path, now_ms)
            return check if check.expired_now is None else None
        finally:
            self.gate.leave()

    async def acquire_lock(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        def push(out: LockAcquireOutcome) -> None:
            if out.acquired:
                self.hub.broadcast(frames.lock_acquired(out.lock, iso_from_ms(cmd.now_ms)))

        return await self.write(
            f"lock:{cmd.resource_path}",
            self._both(lambda s: s.acquire_lock(cmd)),
            [EntityKey("lock", "", cmd.resource_path)],
            push,
            changed=lambda out: out.acquired,
        )

    async def release_lock(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        def push(out: LockReleaseOutcome) -> None:
            if out.lock is not None and out.outcome in ("released", "expired"):
                reason = out.release_reason or "manual"
                self.hub.broadcast(frames.lock_released(out.lock, reason, iso_from_ms(cmd.now_ms)))

        return await self.write(
            f"lock:{cmd.resource_path}",
            self._both(lambda s: s.release_lock(cmd)),
            [EntityKey("lock", "", cmd.resource_path)],
            push,
            changed=lambda out: out.outcome != "none",
        )

    async def lock_history(self, resource_path: str, limit: int) -> LockHistory:
        # the legacy store keeps no lock history: history is always the actors'
        return await self.actors.lock_history(resource_path, limit)
