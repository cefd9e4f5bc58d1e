"""`ProgressStore` over the actor host: each operation is one strict turn of the agent's actor.

These domains are actor-only (docs/mapping.md): the gateway serves them from here in every
phase, and the phase router never mirrors them. Credential values are encrypted before the
turn that stores them and decrypted after the turn that reads them, so an actor's database (and
anything that copies it, such as the migration tool) only ever holds ciphertext.
"""

from __future__ import annotations

from typing import Any

from gateway.actors import ActorHost
from gateway.do import agent_progress as ap
from gateway.do import agent_ref
from gateway.do.credential_cipher import CredentialCipher, mask
from gateway.do.progress_tables import StoredCredential
from gateway.domain import progress_commands as pc
from gateway.domain.jscompat import iso_from_ms

__all__ = ["ActorProgressStore"]

Json = dict[str, Any]


class ActorProgressStore:
    """The agent actors' progress data (soul, traces, heartbeat, shadow, goals, credentials)."""

    def __init__(self, host: ActorHost, cipher: CredentialCipher) -> None:
        self.host = host
        self.cipher = cipher

    async def _call(self, agent_id: str, fn: Any) -> Any:
        return await self.host.call(agent_ref(agent_id), fn)

    async def soul(self, agent_id: str, now_ms: int) -> Json | None:
        result: Json | None = await self._call(agent_id, lambda a: ap.get_soul(a, now_ms))
        return result

    async def post_soul(self, agent_id: str, cmd: pc.SoulInit, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.post_soul(a, cmd, now_ms))
        return result

    async def patch_soul(self, agent_id: str, cmd: pc.SoulPatch, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.patch_soul(a, cmd, now_ms))
        return result

    async def dashboard(self, agent_id: str, now_ms: int) -> Json | None:
        result: Json | None = await self._call(agent_id, lambda a: ap.get_dashboard(a, now_ms))
        return result

    async def flow_status(self, agent_id: str, now_ms: int) -> str:
        result: str = await self._call(agent_id, lambda a: ap.flow_status(a, now_ms))
        return result

    async def onboard(self, agent_id: str, now_ms: int) -> tuple[bool, Json, Json | None]:
        result: tuple[bool, Json, Json | None] = await self._call(agent_id, lambda a: ap.onboard(a, now_ms))
        return result

    async def traces(self, agent_id: str) -> list[Json]:
        result: list[Json] = await self._call(agent_id, ap.list_traces)
        return result

    async def start_trace(self, agent_id: str, cmd: pc.StartTrace, session_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.start_trace(a, cmd, session_id, now_ms))
        return result

    async def trace(self, agent_id: str, session_id: str) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.get_trace(a, session_id))
        return result

    async def log_step(
        self, agent_id: str, session_id: str, cmd: pc.StepCommand, ids: tuple[str, str], now_ms: int
    ) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.log_step(a, session_id, cmd, ids, now_ms))
        return result

    async def complete_trace(self, agent_id: str, session_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.complete_trace(a, session_id, now_ms))
        return result

    async def resolve_escalation(
        self, agent_id: str, session_id: str, cmd: pc.ResolveEscalation, now_ms: int
    ) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.resolve_escalation(a, session_id, cmd, now_ms))
        return result

    async def escalations(self, agent_id: str, session_id: str) -> list[Json]:
        result: list[Json] = await self._call(agent_id, lambda a: ap.trace_escalations(a, session_id))
        return result

    async def heartbeat(self, agent_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.get_heartbeat(a, now_ms))
        return result

    async def post_heartbeat(self, agent_id: str, cmd: pc.HeartbeatCommand, hb_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.post_heartbeat(a, cmd, hb_id, now_ms))
        return result

    async def shadow(self, agent_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.get_shadow(a, now_ms))
        return result

    async def post_shadow(self, agent_id: str, cmd: pc.ShadowCommand, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.post_shadow(a, cmd, now_ms))
        return result

    async def goals(self, agent_id: str, status: str | None, limit: int) -> list[Json]:
        result: list[Json] = await self._call(agent_id, lambda a: ap.list_goals(a, status, limit))
        return result

    async def next_goal(self, agent_id: str) -> Json | None:
        result: Json | None = await self._call(agent_id, ap.next_goal)
        return result

    async def active_goal(self, agent_id: str) -> Json | None:
        result: Json | None = await self._call(agent_id, ap.active_goal)
        return result

    async def goal_stats(self, agent_id: str) -> dict[str, int]:
        result: dict[str, int] = await self._call(agent_id, ap.goal_stats)
        return result

    async def post_goal(self, agent_id: str, cmd: pc.GoalCommand, goal_id: str, now_ms: int) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.post_goal(a, cmd, goal_id, now_ms))
        return result

    async def delete_goal(self, agent_id: str, goal_id: str) -> Json:
        result: Json = await self._call(agent_id, lambda a: ap.delete_goal(a, goal_id))
        return result

    # -- credentials ---------------------------------------------------------------------------------

    async def credential_list(self, agent_id: str, limit: int) -> list[Json]:
        rows: list[StoredCredential] = await self._call(agent_id, lambda a: ap.credentials(a, limit))
        return [
            {
                "key": r.key,
                "maskedPreview": r.masked_preview,
                "createdAt": r.created_at,
                "updatedAt": r.updated_at,
            }
            for r in rows
        ]

    async def credential(self, agent_id: str, key: str) -> str | None:
        row: StoredCredential | None = await self._call(agent_id, lambda a: ap.credential(a, key))
        return None if row is None else self.cipher.decrypt(agent_id, row.key, row.ciphertext)

    async def credential_bundle(self, agent_id: str, limit: int) -> dict[str, str]:
        rows: list[StoredCredential] = await self._call(agent_id, lambda a: ap.credentials(a, limit))
        return {r.key: self.cipher.decrypt(agent_id, r.key, r.ciphertext) for r in rows}

    async def set_credentials(self, agent_id: str, values: dict[str, str], now_ms: int) -> list[Json]:
        now = iso_from_ms(now_ms)
        items = [
            StoredCredential(k, self.cipher.encrypt(agent_id, k, v), now, now, mask(v))
            for k, v in values.items()
        ]
        await self._call(agent_id, lambda a: ap.put_credentials(a, items))
        return [{"key": i.key, "maskedPreview": i.masked_preview, "updatedAt": now} for i in items]

    async def delete_credential(self, agent_id: str, key: str) -> bool:
        result: bool = await self._call(agent_id, lambda a: ap.delete_credential(a, key))
        return result
