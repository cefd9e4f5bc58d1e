"""Heartbeats and shadow agents: the agent actor's `heartbeat_log` and `shadow_monitor`.

A heartbeat log entry per POST /heartbeat, pruned to the newest HEARTBEAT_KEEP; the shadow
monitor row holds the last heartbeat, the stall threshold and the shadow relationship
(register-shadow, become-shadow, takeover, configure). Upstream's shapes (do-api.md 7.5).

Deliberate difference: register-shadow without `shadowId` and become-shadow without
`primaryAgent` are a 400 (upstream stored a null and answered "Shadow undefined registered").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from gateway.domain.soul import js_number, js_round

__all__ = [
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_STALL_MS",
    "HEARTBEAT_KEEP",
    "RECENT_HEARTBEATS",
    "Heartbeat",
    "ShadowMonitor",
    "become_shadow",
    "configure",
    "heartbeat_status",
    "register_shadow",
    "shadow_status",
    "takeover",
]

HEARTBEAT_KEEP: Final = 100
"""The heartbeat log keeps the newest this many entries."""
RECENT_HEARTBEATS: Final = 10
DEFAULT_STALL_MS: Final = 300_000
DEFAULT_INTERVAL_MS: Final = 60_000


@dataclass(slots=True)
class Heartbeat:
    """One `heartbeat_log` entry."""

    id: str
    timestamp: str
    tokens_used: int
    current_task: str | None
    status: str


@dataclass(slots=True)
class ShadowMonitor:
    """The `shadow_monitor` row (one per agent actor)."""

    shadow_id: str | None = None
    shadow_status: str = "none"
    primary_agent: str | None = None
    is_shadow: bool = False
    last_heartbeat: str | None = None
    last_heartbeat_ms: int | None = None
    heartbeat_interval_ms: int = DEFAULT_INTERVAL_MS
    stall_threshold_ms: int = DEFAULT_STALL_MS
    registered_at: str | None = None
    takeover_at: str | None = None


def _stalled(monitor: ShadowMonitor, now_ms: int) -> int:
    return now_ms if monitor.last_heartbeat_ms is None else now_ms - monitor.last_heartbeat_ms


def heartbeat_status(
    monitor: ShadowMonitor | None, recent: list[Heartbeat], count: int, now_ms: int
) -> dict[str, Any]:
    """GET /heartbeat (and the dashboard's `heartbeat`)."""
    m = monitor or ShadowMonitor()
    stalled = _stalled(m, now_ms)
    return {
        "lastHeartbeat": m.last_heartbeat,
        "isHealthy": stalled < m.stall_threshold_ms,
        "stalledForMs": stalled,
        "stalledForMinutes": js_number(js_round(stalled / 60000 * 10) / 10),
        "heartbeatCount": count,
        "recentHeartbeats": [{"timestamp": h.timestamp, "status": h.status} for h in recent],
    }


def shadow_status(monitor: ShadowMonitor | None, now_ms: int) -> dict[str, Any]:
    """GET /shadow (and the dashboard's `shadow`); without a monitor row, healthy and empty."""
    if monitor is None:
        return {
            "hasShadow": False,
            "shadowId": None,
            "shadowStatus": "none",
            "isShadow": False,
            "primaryAgent": None,
            "lastHeartbeat": None,
            "isHealthy": True,
            "stallThresholdMs": DEFAULT_STALL_MS,
            "heartbeatIntervalMs": DEFAULT_INTERVAL_MS,
            "registeredAt": None,
            "takeoverAt": None,
        }
    return {
        "hasShadow": bool(monitor.shadow_id),
        "shadowId": monitor.shadow_id,
        "shadowStatus": monitor.shadow_status or "none",
        "isShadow": monitor.is_shadow,
        "primaryAgent": monitor.primary_agent,
        "lastHeartbeat": monitor.last_heartbeat,
        "isHealthy": _stalled(monitor, now_ms) < monitor.stall_threshold_ms,
        "stallThresholdMs": monitor.stall_threshold_ms,
        "heartbeatIntervalMs": monitor.heartbeat_interval_ms,
        "registeredAt": monitor.registered_at,
        "takeoverAt": monitor.takeover_at,
    }


def beat(monitor: ShadowMonitor | None, now_iso: str, now_ms: int) -> ShadowMonitor:
    """A heartbeat: the monitor's last heartbeat is now."""
    return replace(monitor or ShadowMonitor(), last_heartbeat=now_iso, last_heartbeat_ms=now_ms)


def register_shadow(
    monitor: ShadowMonitor | None, shadow_id: str, stall_ms: int | None, interval_ms: int | None, now_iso: str
) -> tuple[ShadowMonitor, dict[str, Any]]:
    """register-shadow: this agent is monitored by `shadow_id`."""
    m = replace(
        monitor or ShadowMonitor(),
        shadow_id=shadow_id,
        shadow_status="monitoring",
        stall_threshold_ms=stall_ms or DEFAULT_STALL_MS,
        heartbeat_interval_ms=interval_ms or DEFAULT_INTERVAL_MS,
        registered_at=now_iso,
    )
    return m, {
        "success": True,
        "message": f"Shadow {shadow_id} registered for monitoring",
        "shadow": {"shadowId": shadow_id, "status": "monitoring", "registeredAt": now_iso},
    }


def become_shadow(
    monitor: ShadowMonitor | None, primary: str, now_iso: str
) -> tuple[ShadowMonitor, dict[str, Any]]:
    """become-shadow: this agent shadows `primary`."""
    m = replace(monitor or ShadowMonitor(), primary_agent=primary, is_shadow=True, registered_at=now_iso)
    return m, {
        "success": True,
        "message": f"Now shadowing {primary}",
        "config": {"primaryAgent": primary, "isShadow": True, "registeredAt": now_iso},
    }


def takeover(monitor: ShadowMonitor | None, now_iso: str) -> tuple[ShadowMonitor | None, dict[str, Any]]:
    """takeover: the shadow becomes primary (without a monitor row nothing is stored, as upstream)."""
    previous = "none" if monitor is None else (monitor.shadow_status or "none")
    m = None if monitor is None else replace(monitor, shadow_status="taken-over", takeover_at=now_iso)
    return m, {
        "success": True,
        "message": "Takeover executed - shadow is now primary",
        "takeover": {"takeoverAt": now_iso, "previousStatus": previous},
    }


def configure(
    monitor: ShadowMonitor | None, stall_ms: int | None, interval_ms: int | None
) -> tuple[ShadowMonitor, dict[str, Any]]:
    """configure: new stall threshold and heartbeat interval (unset ones kept)."""
    m = monitor or ShadowMonitor()
    m = replace(
        m,
        stall_threshold_ms=stall_ms or m.stall_threshold_ms,
        heartbeat_interval_ms=interval_ms or m.heartbeat_interval_ms,
    )
    return m, {
        "success": True,
        "config": {"stallThresholdMs": m.stall_threshold_ms, "heartbeatIntervalMs": m.heartbeat_interval_ms},
    }
