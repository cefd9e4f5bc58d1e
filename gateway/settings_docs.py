"""What each setting means, and the two documents generated from it with the settings definition
(`gateway/settings.py`: names, types, defaults, valid values, environment variables):

- `config_toml()`: `config/agent-coord.toml`, every setting with its default and a comment;
- `reference_markdown()`: the configuration reference in `docs/operations.md`.

`agent-coord docs config` and `agent-coord docs config-toml` print them; tests/test_settings_docs.py
fails when a setting has no description here or a committed file differs from what is generated.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Final

from gateway.settings import SECTIONS, Settings, env_var_name, must_be, setting_names

__all__ = [
    "DOCS",
    "REFERENCE_BEGIN",
    "REFERENCE_END",
    "config_toml",
    "reference_markdown",
    "splice_reference",
]

DOCS: Final[dict[str, str]] = {
    "server.host": "Address the HTTP/WebSocket API listens on (flag --host).",
    "server.port": "TCP port (flag --port).",
    "server.shutdown_grace_s": "Seconds that open requests and WebSockets get to finish on shutdown.",
    "server.max_body_bytes": (
        "Largest request body (and WebSocket frame) accepted, in bytes; larger is a 413."
    ),
    "server.ws_send_queue_max_bytes": (
        "Bytes of frames one WebSocket may have waiting to be sent; a client that falls this far behind "
        "is closed with 1013 (try again later)."
    ),
    "storage.data_dir": (
        "Directory holding the actors' SQLite files (the coordinator's, the shard files of agents and "
        "locks), the phase, the repair queue and the admin token; "
        "relative paths are relative to the working directory (flag --data-dir)."
    ),
    "storage.sqlite_synchronous": (
        'SQLite `synchronous` with WAL: "NORMAL" survives a crash of the process (a commit costs no '
        'fsync), "FULL" also survives power loss at the cost of an fsync per commit.'
    ),
    "storage.shards": (
        "How many SQLite files agents and locks share (an actor's rows live in the file its name hashes "
        "to); fixed when the data directory is created: a start with another value is refused."
    ),
    "storage.checkpoint_helper": (
        "Run the WAL checkpoints of the actor files in a helper process started with the first "
        "checkpoint: their syncs then hold only the checkpointed actor's turns, not every request. "
        "false (or a helper that fails) runs them in the gateway, as before."
    ),
    "actors.max_open": (
        "Most actors active at once (the coordinator's database open, agents and locks in memory); "
        "idle ones are evicted first. An agent or a lock holds no file and about 1.2 KB of memory while "
        "active; a working set above this bound reactivates an actor on most of its events. Open "
        "files stay below 6 x storage.shards + 5 x max_open + 5 (only the coordinator keeps a "
        "database of its own)."
    ),
    "actors.idle_timeout_s": "Seconds without events after which an actor is evicted (its database closed).",
    "actors.mailbox_max": "Most events queued for one actor; beyond it requests get 503 overloaded.",
    "actors.alarm_retry_base_s": (
        "First retry delay of a failing alarm handler, in seconds, doubling each time (Durable Objects: 2 s)."
    ),
    "actors.alarm_max_retries": (
        "Retries of a failing alarm handler before it is given up (Durable Objects: 6)."
    ),
    "limits.lock_ttl_min_ms": "Shortest lock TTL accepted, in milliseconds.",
    "limits.lock_ttl_max_ms": "Longest lock TTL accepted, in milliseconds (24 h).",
    "limits.lock_ttl_default_ms": (
        "Lock TTL when the request gives none, in milliseconds (2 h, as the DO API)."
    ),
    "limits.agent_offline_after_s": (
        "Seconds without activity after which an agent counts as offline (30 min)."
    ),
    "limits.list_limit_max": (
        "Largest `limit` a list request may ask for, and the most items any list answers."
    ),
    "limits.chat_limit_default": "Chat messages returned when the request gives no `limit`.",
    "limits.chat_message_max_bytes": (
        "Largest chat message a client may post, in UTF-8 bytes; larger is a 413 naming the field."
    ),
    "limits.dm_message_max_bytes": "Largest direct message, in UTF-8 bytes.",
    "limits.memory_content_max_bytes": "Largest memory `content`, in UTF-8 bytes.",
    "limits.checkpoint_max_bytes": (
        "Largest field of a checkpoint, in UTF-8 bytes (for a list, all its items together)."
    ),
    "limits.websockets_per_agent": (
        "Most WebSockets (coordinator and agent sockets together) open at once for one agent id; one "
        "more is a 429 before the upgrade."
    ),
    "limits.text_max_bytes": (
        "Most UTF-8 bytes of each other text a client stores: an agent's currentTask, workingOn and "
        "capabilities/offers/needs, a task's title, description, status, priority, tags and files, a zone's "
        "path and description, a claim's description, a handoff's title, context, code, filePath and "
        "nextSteps, a lock's reason; a list counts all its items. Larger is a 413 naming the field."
    ),
    "limits.progress_text_max_bytes": (
        "Largest text (a trace task, a step's intent, a goal's title or description ...) in a soul, "
        "trace, heartbeat, shadow or goal body, in UTF-8 bytes; larger is a 413."
    ),
    "limits.credential_value_max_bytes": "Largest credential value stored, in UTF-8 bytes; larger is a 413.",
    "limits.onboard_parallel_reads": (
        "Onboarding reads each online teammate's actor once for its flow state; this many at once."
    ),
    "auth.token": (
        'A bearer token shared by every DO API client; set, each request needs "Authorization: Bearer '
        '<token>" (a WebSocket may give ?token=). Off by default: upstream clients send none. Prefer the '
        "environment to a file for it. Set this or auth.agent_tokens_file, not both."
    ),
    "auth.credentials_key": (
        "Key that encrypts the credentials agents store (AES-256-GCM), as base64 of 32 bytes. Empty: "
        "the gateway creates <data_dir>/credentials.key (mode 0600) at first start and warns; keep the "
        "key apart from the data (environment or a secrets manager), and keep a copy: without it the "
        "stored credentials cannot be read."
    ),
    "auth.agent_tokens_file": (
        'A file of "<agent-id> <token>" lines (keep it mode 0600); set, each request needs the token of '
        "the agent it acts as (its agentId, author, from, by, owner ...)."
    ),
    "auth.admin_only_force": (
        "true: a force-unlock and a zone claim that takes over another owner's zone need the admin API "
        "token (migration.admin_token)."
    ),
    "legacy.redis_url": (
        'The legacy Redis store, e.g. "redis://:password@host:6379/0"; empty means none, and then only '
        'the "cutover" phase can run (flag --redis-url).'
    ),
    "legacy.pool_size": (
        "Most pooled connections to the legacy Redis, used by WATCH transactions and bulk work "
        "(migrate, check); the gateway's single commands share one pipelined connection of their "
        "own, and the listings cache (legacy.cache_listings) one more."
    ),
    "legacy.timeout_s": "Seconds before one Redis call (with its retries) gives up.",
    "legacy.retries": "Retries of a failed idempotent Redis call.",
    "legacy.cache_listings": (
        "true: the gateway keeps the whole agents and tasks hashes in memory, kept correct by Redis's "
        "client-side caching (CLIENT TRACKING) on one more connection, so /work and the agent and task "
        "listings do not read them on every request; false: every read goes to Redis."
    ),
    "legacy.hkeys_max": (
        "Bulk reads of the legacy Redis (agent-coord migrate, agent-coord check) list the field "
        "names of a hash of at most this many fields with one HKEYS, and of a larger one in HSCAN "
        "steps, which carry every value. One HKEYS holds Redis for the whole hash (about 0.35 us a "
        "field: about 100 ms for 300,000); raise it only while nothing else needs that Redis "
        "(for one check: agent-coord check --whole-hashes)."
    ),
    "migration.phase": (
        "Phase at the first start (later the phase persisted in the data directory wins); every phase "
        'but "cutover" needs legacy.redis_url (flag --phase).'
    ),
    "migration.admin_token": (
        "Bearer token of the admin API (/admin/*, used by `agent-coord phase`). Empty: the gateway "
        "generates one at first start and keeps it in <data_dir>/admin-token (mode 0600). Prefer the "
        "environment to a file for it."
    ),
    "migration.shadow_sample_rate": "Share of reads also read from the other store and compared.",
    "migration.rollout_agents": (
        'Allow-list of agents whose per-agent data is mirrored in "parallel"; empty means no allow-list '
        "(rollout_percent decides). In the environment a comma-separated list."
    ),
    "migration.rollout_percent": 'Sticky percentage of agents (by agent id) mirrored in "parallel".',
    "migration.consistency_max_age_s": (
        'Newest consistency report must be at most this old, in seconds, to move to "read-switch".'
    ),
    "migration.consistency_keep_reports": (
        "`agent-coord check` keeps this many of the newest reports in <data_dir>/consistency and deletes "
        "older ones (with their Markdown or HTML file) after each check; 0 keeps every report."
    ),
    "migration.ready_repair_queue_max": (
        "/ready answers 503 (not ready) while more entities than this wait in the repair queue."
    ),
    "migration.repair_max_attempts": (
        "A repair whose entity itself keeps failing (Redis holds a value the gateway cannot read) moves to "
        "the dead-letter list after this many attempts; failures of an unreachable store do not count."
    ),
    "log.level": (
        "Log level. A request's access line is logged at debug (info when slower than 1 s, warning on a 5xx)."
    ),
    "log.format": (
        '"json" (one JSON object a line), "console" (for people), or "auto": console on a terminal, JSON '
        "otherwise."
    ),
}

_TOML_HEADER: Final = """\
# agent-coord gateway: the default configuration.
#
# Generated from gateway/settings.py and gateway/settings_docs.py by `agent-coord docs config-toml`
# (the tests check that this file is what it prints): edit those, then regenerate.
#
# Use it with `agent-coord serve --config config/agent-coord.toml` or AGENT_COORD_CONFIG=<path>.
# Precedence, lowest first: built-in defaults < this file < environment < command-line flags.
# Each setting can be set from the environment as AGENT_COORD_<SECTION>_<KEY> (named beside it).
# An unknown section or key, or an invalid value, stops the gateway with a message naming it.
# Settings that TOML cannot leave unset use "" for "none".
"""

REFERENCE_BEGIN: Final = "<!-- BEGIN configuration reference: generated by `agent-coord docs config` -->"
REFERENCE_END: Final = "<!-- END configuration reference -->"


def _toml_value(value: object) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value) if isinstance(value, Path) else value
    assert isinstance(text, str)  # noqa: S101 - every setting type is handled above
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default(dotted: str) -> object:
    section, key = dotted.split(".", 1)
    return getattr(getattr(Settings(), section), key)


def config_toml() -> str:
    """config/agent-coord.toml: every setting, its default, what it does and its variable."""
    out = [_TOML_HEADER]
    for section in SECTIONS:
        out.append(f"\n[{section}]\n")
        for dotted in setting_names():
            if dotted.split(".", 1)[0] != section:
                continue
            comment = f"{DOCS[dotted]} Valid: {must_be(dotted)}. {env_var_name(dotted)}"
            out.extend(f"# {line}\n" for line in textwrap.wrap(comment, width=98))
            out.append(f"{dotted.split('.', 1)[1]} = {_toml_value(_default(dotted))}\n")
    return "".join(out)


def reference_markdown() -> str:
    """The configuration reference (Markdown): one list per section."""
    out = [
        REFERENCE_BEGIN,
        "",
        "Every setting, by section: its environment variable, its default, what values it takes and "
        "what it does. Precedence, lowest first: built-in defaults < the config file "
        "(`--config` or `AGENT_COORD_CONFIG`) < the environment < command-line flags.",
    ]
    for section in SECTIONS:
        out += ["", f"### `[{section}]`", ""]
        for dotted in setting_names():
            if dotted.split(".", 1)[0] != section:
                continue
            default = _toml_value(_default(dotted))
            out.append(
                f"- **`{dotted}`** (`{env_var_name(dotted)}`, default `{default}`; "
                f"{must_be(dotted)}): {DOCS[dotted]}"
            )
    out += ["", REFERENCE_END]
    return "\n".join(out) + "\n"


def splice_reference(document: str) -> str:
    """`document` with the text between the reference markers replaced by the generated one."""
    begin = document.index(REFERENCE_BEGIN)
    end = document.index(REFERENCE_END) + len(REFERENCE_END) + 1
    return document[:begin] + reference_markdown() + document[end:]
