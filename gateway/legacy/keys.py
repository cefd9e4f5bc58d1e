"""Every Redis key name of the legacy layout (legacy-redis.md, commit fd85d41).

`TRUTH` are the families the gateway reads and writes (sections 1-8). `LEGACY_ONLY` are the
stale, phantom and unrelated families of sections 1.3, 1.4, 2.3, 7.2 and 11: the gateway never
reads them as the truth and never writes them (migration.md, "Mapping decisions"); the import tool
reports them as not migrated and the checker skips them. `is_legacy_only` classifies a key found by
SCAN, so tools need not repeat these lists.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTIVE_AGENTS",
    "AGENT_PRESENCE",
    "CHAT_MAX",
    "CHECKPOINTS",
    "CLAIMS",
    "DM_CONVOS",
    "DM_MAX",
    "DM_MESSAGES",
    "DM_USER_CONVOS",
    "HANDOFFS",
    "LEGACY_ONLY",
    "LEGACY_ONLY_PREFIXES",
    "LOCKS",
    "MEMORY_TAG_PREFIX",
    "MESSAGES",
    "PREFIX",
    "SHARED_MEMORY",
    "STALE_AGENTS",
    "STALE_GROUP_CHAT",
    "STALE_RESOURCE_LOCKS",
    "TASKS",
    "TRUTH",
    "ZONES",
    "claim_field",
    "is_legacy_only",
    "memory_tag",
    "split_claim_field",
]

PREFIX: Final = "agent-coord:"

# --- the families the gateway serves (sections 1-8) -----------------------------------------------
ACTIVE_AGENTS: Final = PREFIX + "active-agents"  # H agentId -> agent JSON (§1.1)
AGENT_PRESENCE: Final = PREFIX + "agent-presence"  # H agentId -> bare online|offline (§1.2)
MESSAGES: Final = PREFIX + "messages"  # L chat JSON, newest first (§2.1)
TASKS: Final = PREFIX + "tasks"  # H taskId -> task JSON (§3.1)
DM_CONVOS: Final = PREFIX + "dm:convos"  # H conversationId -> conversation JSON (§4.1)
DM_MESSAGES: Final = PREFIX + "dm:messages"  # H conversationId -> JSON array, oldest first (§4.2)
DM_USER_CONVOS: Final = PREFIX + "dm:user-convos"  # H userId -> JSON array of ids (§4.3)
SHARED_MEMORY: Final = PREFIX + "shared-memory"  # H memoryId -> memory JSON (§5.1)
MEMORY_TAG_PREFIX: Final = PREFIX + "memory-index:tag:"  # Set of memory ids per lowercased tag (§5.2)
CHECKPOINTS: Final = PREFIX + "checkpoints"  # H agentId -> checkpoint JSON (§6.1)
LOCKS: Final = PREFIX + "locks"  # H resourcePath -> lock JSON (§7.1)
CLAIMS: Final = PREFIX + "claims"  # H "{by}:{what}" -> claim JSON (§8.1)
ZONES: Final = PREFIX + "zones"  # H zoneId -> zone JSON (§8.2)
HANDOFFS: Final = PREFIX + "handoffs"  # H handoffId -> handoff JSON (§8.3); never LRANGE it

TRUTH: Final = frozenset(
    {
        ACTIVE_AGENTS,
        AGENT_PRESENCE,
        MESSAGES,
        TASKS,
        DM_CONVOS,
        DM_MESSAGES,
        DM_USER_CONVOS,
        SHARED_MEMORY,
        CHECKPOINTS,
        LOCKS,
        CLAIMS,
        ZONES,
        HANDOFFS,
    }
)

CHAT_MAX: Final = 1000  # LTRIM 0 999 after a user post (§2.1)
DM_MAX: Final = 500  # per-conversation message array cap (§4.2)

# --- stale, phantom and legacy-only families: never read as truth, never written -----------------
STALE_AGENTS: Final = PREFIX + "agents"  # §1.4, the pre-1be151a registry
STALE_GROUP_CHAT: Final = PREFIX + "group-chat"  # §2.3, the old chat list
STALE_RESOURCE_LOCKS: Final = PREFIX + "resource-locks"  # §7.2, phantom lock table

LEGACY_ONLY: Final = frozenset(
    {
        STALE_AGENTS,
        STALE_GROUP_CHAT,
        STALE_RESOURCE_LOCKS,
        PREFIX + "heartbeats",
        PREFIX + "heartbeat-history",
        PREFIX + "agent-memory",
        PREFIX + "training-log",
        PREFIX + "agent-context",
        PREFIX + "sessions",
        PREFIX + "spawn-queue",
        PREFIX + "recycled-agents",
        PREFIX + "agent-metrics",
        PREFIX + "metrics-events",
        PREFIX + "safety-events",
        PREFIX + "capabilities",
        PREFIX + "profiles",
        PREFIX + "agent-grades",
        PREFIX + "external-agents",
        PREFIX + "agent-invites",
        PREFIX + "context-clusters",
        PREFIX + "core-agent-context",
        PREFIX + "piston-context",
        PREFIX + "repo-context",
        PREFIX + "roadmap",
        PREFIX + "team",
        PREFIX + "cycles",
        PREFIX + "github-webhook-log",
        PREFIX + "planned-features",
        PREFIX + "feature-tests",
        PREFIX + "test-runs",
        PREFIX + "ui-tests",
        PREFIX + "ui-test-runs",
        PREFIX + "generated-docs",
        PREFIX + "kudos-log",
        PREFIX + "linear-cache",
        PREFIX + "onboarding-rules",
        PREFIX + "orchestrations",
        PREFIX + "resource-registry",
        PREFIX + "connected-repos",
        PREFIX + "threads",
        PREFIX + "users",
        PREFIX + "rules",
        PREFIX + "violations",
        PREFIX + "tasks-archived",
        PREFIX + "workflows",
        PREFIX + "workflow-runs",
        PREFIX + "test-simple",
        PREFIX + "offline-notified",  # Appendix B
    }
)

# Families with a variable suffix (`{agentId}`, `{cacheKey}`, `{repoId}:{cluster}` ...).
LEGACY_ONLY_PREFIXES: Final = (
    PREFIX + "poll-tracking:",
    PREFIX + "metrics:",
    PREFIX + "rate-limits:",
    PREFIX + "context-history:",
    PREFIX + "repo-context:",
    PREFIX + "kudos:",
    PREFIX + "notion-cache:",
    PREFIX + "sentry-cache:",
    PREFIX + "thread-messages:",
    PREFIX + "offline-lock:",  # Appendix B
    "piston:",  # product, fleet and CRM data: out of scope
)


def is_legacy_only(key: str) -> bool:
    """True for a key the gateway must neither serve from nor write (anything not of sections 1-8).

    The tag index sets are part of the memory family (the gateway maintains them on writes), so
    they are not legacy-only even though nothing reads them.
    """
    return not (key in TRUTH or key.startswith(MEMORY_TAG_PREFIX))


def memory_tag(tag: str) -> str:
    """The tag index set of a tag: lowercased, as the legacy writer does (JS `toLowerCase`)."""
    return MEMORY_TAG_PREFIX + tag.lower()


def claim_field(by: str, what: str) -> str:
    """The claims hash field `{by}:{what}`."""
    return f"{by}:{what}"


def split_claim_field(field: str) -> tuple[str, str]:
    """Best-effort inverse of `claim_field`; the value's own `by` and `what` are authoritative.

    An agent id containing `:` makes the field ambiguous, so readers use the JSON, not this.
    """
    by, _, what = field.partition(":")
    return by, what
