"""The gateway's configuration: one immutable `Settings` value, built in one place.

`load_settings` layers four sources, each overriding the one before::

    embedded defaults (Settings())  <  config file (TOML)  <  environment  <  overrides (CLI flags)

The config file has one table per section (`[server]`, `[storage]`, `[actors]`, `[limits]`, `[auth]`,
`[legacy]`, `[migration]`, `[log]`) with the field names below as keys; `config/agent-coord.toml`
lists every setting with its default. Every setting can also be set from the environment as
`AGENT_COORD_<SECTION>_<KEY>` (for example `AGENT_COORD_SERVER_PORT`), and `AGENT_COORD_CONFIG`
names the config file. Anything unknown or invalid raises `SettingsError`, whose message names
the setting by its dotted name and the source it came from, so an operator can fix it at once.

Settings built directly (`Settings(...)`, as tests do) are not validated; only `load_settings`
validates, because only it knows where each value came from.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.domain.phase import PHASES

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "MASK",
    "NON_SETTING_ENV_VARS",
    "ActorSettings",
    "AuthSettings",
    "LegacySettings",
    "LimitSettings",
    "LogSettings",
    "MigrationSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "describe",
    "env_var_name",
    "load_settings",
    "mask_url",
    "must_be",
    "setting_names",
]

ENV_PREFIX: Final = "AGENT_COORD_"
CONFIG_ENV_VAR: Final = "AGENT_COORD_CONFIG"
# AGENT_COORD_* variables that are read elsewhere and are not settings; every other
# AGENT_COORD_* variable must name a setting, so a typo is an error rather than silently ignored.
NON_SETTING_ENV_VARS: Final = frozenset(
    {
        CONFIG_ENV_VAR,
        "AGENT_COORD_REDIS_SERVER",  # gateway.testing.redis_server: the redis-server binary for tests
        "AGENT_COORD_CRASH_AT",  # gateway.actors.crash: subprocess durability tests
        "AGENT_COORD_PAUSE_AT",  # gateway.bulk.pause: bulk writes racing a live gateway, in tests
        "AGENT_COORD_PAUSE_DIR",
        "AGENT_COORD_SHARED",  # tests/do_api/test_conformance.py: the shared kit, from a worktree
    }
)

MASK: Final = "***"


class SettingsError(ValueError):
    """A setting is unknown or invalid; the message names the setting and where it came from."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The HTTP/WebSocket listener."""

    host: str = "127.0.0.1"
    port: int = 8787
    shutdown_grace_s: float = 10.0
    max_body_bytes: int = 1_048_576
    # Bytes of frames one WebSocket may have waiting to be sent; a client that falls this far
    # behind is closed with 1013. A few MiB: dozens of the largest chat frames.
    ws_send_queue_max_bytes: int = 4_194_304


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where the actor SQLite files live and how hard each commit is flushed."""

    data_dir: Path = Path("./var/agent-coord")
    # NORMAL (WAL) survives a crash of the process; FULL also survives power loss, at the cost of
    # an fsync per commit. DO's storage is replicated, so a crash-safe default is the fair match.
    sqlite_synchronous: str = "NORMAL"
    # agents and locks share this many SQLite files (rows keyed by the actor's name); fixed once a
    # data directory holds data (docs/actor-host.md, "Shards")
    shards: int = 8
    # WAL checkpoints (and the syncs they and the next write cost) run in a child process, so a
    # slow disk holds only the checkpointed actor's turns, not the event loop (docs/actor-host.md)
    checkpoint_helper: bool = True


@dataclass(frozen=True, slots=True)
class ActorSettings:
    """The actor host: how many databases stay open, mailbox bound and alarm retry policy."""

    max_open: int = 4096
    idle_timeout_s: float = 60.0
    mailbox_max: int = 1000
    alarm_retry_base_s: float = 2.0  # DO: 2 s, doubling, 6 retries
    alarm_max_retries: int = 6


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """API limits that the DO implementation lacked (see do-api.md, the recommendations)."""

    lock_ttl_min_ms: int = 1
    lock_ttl_max_ms: int = 86_400_000
    lock_ttl_default_ms: int = 7_200_000  # the DO default: 2 h
    agent_offline_after_s: float = 1800.0
    list_limit_max: int = 1000
    chat_limit_default: int = 50
    # Largest text a client may store, in UTF-8 bytes; a list answer is at most list_limit_max of
    # them. Generous: agents' chat lines and notes are a few KiB at most.
    chat_message_max_bytes: int = 65_536
    dm_message_max_bytes: int = 65_536
    memory_content_max_bytes: int = 65_536
    checkpoint_max_bytes: int = 262_144  # each of a checkpoint's fields (a list: all its items)
    websockets_per_agent: int = 32  # coordinator and agent sockets of one agent id together
    # each other text a client stores: agents' currentTask/workingOn/capabilities, task, zone,
    # claim and handoff texts, a lock's reason (a list: all its items)
    text_max_bytes: int = 65_536
    progress_text_max_bytes: int = 65_536  # each text of a soul, trace, heartbeat or goal body
    credential_value_max_bytes: int = 16_384  # one stored credential value
    onboard_parallel_reads: int = 8  # teammates' actors onboarding reads at once


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Bearer tokens for the DO API: off unless `token` or `agent_tokens_file` is set."""

    # One token shared by every client: each DO API request then needs it.
    token: str | None = None
    # A file of "<agent-id> <token>" lines: each request needs the token of the agent it acts as.
    agent_tokens_file: Path | None = None
    # Force-unlock and taking over another owner's zone need the admin API token.
    admin_only_force: bool = False
    # The key that encrypts stored agent credentials (base64 of 32 bytes); empty: a key file in
    # the data directory, created at first start.
    credentials_key: str | None = None


@dataclass(frozen=True, slots=True)
class LegacySettings:
    """The legacy Redis store; `redis_url=None` means the gateway runs on the actor store alone."""

    redis_url: str | None = None
    pool_size: int = 32
    timeout_s: float = 2.0
    retries: int = 3
    cache_listings: bool = True
    hkeys_max: int = 32_768


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """The migration phase at start-up and its knobs (see spec/migration.md)."""

    phase: str = "cutover"
    admin_token: str | None = None
    shadow_sample_rate: float = 0.0
    rollout_agents: tuple[str, ...] = ()
    rollout_percent: float = 100.0
    consistency_max_age_s: float = 86400.0
    # `agent-coord check` keeps this many newest reports in <data_dir>/consistency; 0 keeps all.
    consistency_keep_reports: int = 100
    # /ready answers 503 while more entities than this wait in the repair queue.
    ready_repair_queue_max: int = 1000
    # A repair entry whose entity itself fails this many times moves to the dead-letter list.
    repair_max_attempts: int = 10


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log level and format: `auto` is JSON lines unless the stream is a terminal."""

    level: str = "info"
    format: str = "auto"  # auto|json|console


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the gateway; `Settings()` is the embedded default configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    actors: ActorSettings = field(default_factory=ActorSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    legacy: LegacySettings = field(default_factory=LegacySettings)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    log: LogSettings = field(default_factory=LogSettings)
    config_path: Path | None = None


SECTIONS: Final[dict[str, type[Any]]] = {
    "server": ServerSettings,
    "storage": StorageSettings,
    "actors": ActorSettings,
    "limits": LimitSettings,
    "auth": AuthSettings,
    "legacy": LegacySettings,
    "migration": MigrationSettings,
    "log": LogSettings,
}

MAX_PORT: Final = 65535
MAX_PERCENT: Final = 100.0
SYNCHRONOUS_MODES: Final = ("NORMAL", "FULL")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
REDIS_URL_SCHEMES: Final = ("redis", "rediss", "unix")


def env_var_name(dotted: str) -> str:
    """The environment variable that sets a setting: `server.port` -> `AGENT_COORD_SERVER_PORT`."""
    return ENV_PREFIX + dotted.replace(".", "_").replace("-", "_").upper()


# --- values and where they came from -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """One value as a source gave it, before coercion, and a label for that source."""

    value: object
    source: str
    # Environment variables and flags are text to be parsed; TOML values come typed, and a string
    # where the setting wants a number or a list is a mistake in the file.
    parse_text: bool = True


class _InvalidError(Exception):
    """Raised by coercion and rules; turned into a SettingsError naming setting and source."""


@dataclass(frozen=True, slots=True)
class _Rule:
    """What a setting must be: the phrase for messages, and an optional check and normaliser."""

    must_be: str
    check: Callable[[Any], bool] = lambda _value: True
    normalise: Callable[[Any], Any] = lambda value: value


def _one_of(choices: tuple[str, ...], *, case: Callable[[str], str]) -> _Rule:
    return _Rule(
        must_be="one of " + ", ".join(choices),
        normalise=case,
        check=lambda value: value in choices,
    )


def _positive_int() -> _Rule:
    return _Rule("an integer > 0", check=lambda value: value > 0)


def _non_negative_int() -> _Rule:
    return _Rule("an integer >= 0", check=lambda value: value >= 0)


def _positive_number() -> _Rule:
    return _Rule("a number > 0", check=lambda value: value > 0)


def _non_negative_number() -> _Rule:
    return _Rule("a number >= 0", check=lambda value: value >= 0)


def _redis_url_ok(value: str | None) -> bool:
    if value is None:
        return True
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if parts.scheme not in REDIS_URL_SCHEMES:
        return False
    return bool(parts.path) if parts.scheme == "unix" else bool(parts.hostname)


_RULES: Final[dict[str, _Rule]] = {
    "server.host": _Rule("a non-empty host name or address", check=bool),
    "server.port": _Rule(f"an integer in 1..{MAX_PORT}", check=lambda value: 1 <= value <= MAX_PORT),
    "server.shutdown_grace_s": _non_negative_number(),
    "server.max_body_bytes": _positive_int(),
    "server.ws_send_queue_max_bytes": _positive_int(),
    "storage.data_dir": _Rule("a non-empty directory path"),
    "storage.sqlite_synchronous": _one_of(SYNCHRONOUS_MODES, case=str.upper),
    "storage.shards": _positive_int(),
    "actors.max_open": _positive_int(),
    "actors.idle_timeout_s": _positive_number(),
    "actors.mailbox_max": _positive_int(),
    "actors.alarm_retry_base_s": _positive_number(),
    "actors.alarm_max_retries": _non_negative_int(),
    "limits.lock_ttl_min_ms": _positive_int(),
    "limits.lock_ttl_max_ms": _positive_int(),
    "limits.lock_ttl_default_ms": _positive_int(),
    "limits.agent_offline_after_s": _positive_number(),
    "limits.list_limit_max": _positive_int(),
    "limits.chat_limit_default": _positive_int(),
    "limits.chat_message_max_bytes": _positive_int(),
    "limits.dm_message_max_bytes": _positive_int(),
    "limits.memory_content_max_bytes": _positive_int(),
    "limits.checkpoint_max_bytes": _positive_int(),
    "limits.websockets_per_agent": _positive_int(),
    "limits.text_max_bytes": _positive_int(),
    "limits.progress_text_max_bytes": _positive_int(),
    "limits.credential_value_max_bytes": _positive_int(),
    "limits.onboard_parallel_reads": _positive_int(),
    "auth.token": _Rule("a token (or empty for none)"),
    "auth.credentials_key": _Rule("a base64 key of 32 bytes (or empty for the key file)"),
    "auth.agent_tokens_file": _Rule("a file path (or empty for none)"),
    "legacy.redis_url": _Rule(
        "a redis://, rediss:// or unix:// URL (or empty for none)", check=_redis_url_ok
    ),
    "legacy.pool_size": _positive_int(),
    "legacy.timeout_s": _positive_number(),
    "legacy.retries": _non_negative_int(),
    "legacy.hkeys_max": _non_negative_int(),
    "migration.phase": _one_of(PHASES, case=str.lower),
    "migration.admin_token": _Rule("a token (or empty for none)"),
    "migration.shadow_sample_rate": _Rule("a number in 0..1", check=lambda value: 0.0 <= value <= 1.0),
    "migration.rollout_agents": _Rule(
        "a list of agent ids", check=lambda value: all(agent for agent in value)
    ),
    "migration.rollout_percent": _Rule(
        f"a number in 0..{MAX_PERCENT:g}", check=lambda value: 0.0 <= value <= MAX_PERCENT
    ),
    "migration.consistency_max_age_s": _positive_number(),
    "migration.consistency_keep_reports": _non_negative_int(),
    "migration.ready_repair_queue_max": _non_negative_int(),
    "migration.repair_max_attempts": _positive_int(),
    "log.level": _one_of(LOG_LEVELS, case=str.lower),
    "log.format": _one_of(LOG_FORMATS, case=str.lower),
}


def _field_types() -> dict[str, dict[str, Any]]:
    """Resolved annotations of every section's fields (the annotations are strings here)."""
    return {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


_TYPES: Final = _field_types()

_TYPE_PHRASES: Final[dict[Any, str]] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path",
    bool: "true or false",
    tuple[str, ...]: "a list of strings",
    str | None: "a string",
    Path | None: "a path",
}


def _coerce_str(value: object) -> str:
    if not isinstance(value, str):
        raise _InvalidError
    return value


def _coerce_optional_str(value: object) -> str | None:
    if value is None:
        return None
    return _coerce_str(value) or None  # a config file or a shell cannot say None: "" means unset


def _coerce_path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    text = _coerce_str(value)
    if not text:  # Path("") would quietly mean the working directory
        raise _InvalidError
    return Path(text)


def _coerce_optional_path(value: object) -> Path | None:
    if value is None or value == "":  # "" means unset, as for optional strings
        return None
    return _coerce_path(value)


def _coerce_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    raise _InvalidError


def _coerce_int(value: object) -> int:
    if isinstance(value, bool):  # bool is an int subclass; `port = true` is a mistake
        raise _InvalidError
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _InvalidError from None
    raise _InvalidError


def _coerce_float(value: object) -> float:
    if isinstance(value, bool):
        raise _InvalidError
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _InvalidError from None
    else:
        raise _InvalidError
    if not math.isfinite(number):
        raise _InvalidError
    return number


def _coerce_str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):  # the environment and flags give comma-separated lists
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _InvalidError


# How a value from TOML, the environment or a flag becomes the field's type (or _InvalidError).
# Strings (environment, flags) are parsed; TOML values must already have the right type, except
# that an integer is accepted for a float and a string for a path. A new field type needs an entry.
_COERCERS: Final[dict[object, Callable[[object], object]]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
    Path: _coerce_path,
    str | None: _coerce_optional_str,
    Path | None: _coerce_optional_path,
    tuple[str, ...]: _coerce_str_tuple,
}


_NOT_TEXT: Final = frozenset({bool, int, float, tuple[str, ...]})


def _coerce(raw: _Raw, tp: object) -> object:
    if not raw.parse_text and isinstance(raw.value, str) and tp in _NOT_TEXT:
        raise _InvalidError
    return _COERCERS[tp](raw.value)


def _error(dotted: str, must_be: str, raw: _Raw) -> SettingsError:
    return SettingsError(f"{dotted}: must be {must_be}, got {raw.value!r} (from {raw.source})")


def _resolve(dotted: str, raw: _Raw) -> object:
    """Coerce, normalise and check one value, or raise SettingsError naming setting and source."""
    section, key = dotted.split(".", 1)
    tp = _TYPES[section][key]
    rule = _RULES.get(dotted, _Rule(_TYPE_PHRASES.get(tp, str(tp))))
    try:
        value = rule.normalise(_coerce(raw, tp))
    except _InvalidError:
        raise _error(dotted, rule.must_be, raw) from None
    if value is not None and not rule.check(value):
        raise _error(dotted, rule.must_be, raw)
    return value


# --- the sources ---------------------------------------------------------------------------------


def _from_file(path: Path, label: str) -> dict[str, _Raw]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist (from {label})") from None
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc} (from {label})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    source = str(path)
    out: dict[str, _Raw] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            known = ", ".join(f"[{name}]" for name in SECTIONS)
            raise SettingsError(f"[{section}]: unknown section, expected one of {known} (from {source})")
        if not isinstance(table, dict):
            raise SettingsError(f"{section}: must be a table [{section}], got {table!r} (from {source})")
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if key not in _TYPES[section]:
                raise SettingsError(f"{dotted}: unknown setting (from {source})")
            out[dotted] = _Raw(value, source, parse_text=False)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, _Raw]:
    by_var = {env_var_name(dotted): dotted for dotted in _all_dotted()}
    out: dict[str, _Raw] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in NON_SETTING_ENV_VARS:
            continue
        dotted = by_var.get(var)
        if dotted is None:
            raise SettingsError(f"{var}: unknown setting (from environment variable {var})")
        out[dotted] = _Raw(env[var], var)
    return out


def _from_overrides(overrides: Mapping[str, object], labels: Mapping[str, str]) -> dict[str, _Raw]:
    out: dict[str, _Raw] = {}
    for dotted, value in overrides.items():
        source = labels.get(dotted, f"override {dotted}")
        section, _, key = dotted.partition(".")
        if section not in _TYPES or key not in _TYPES[section]:
            raise SettingsError(f"{dotted}: unknown setting (from {source})")
        out[dotted] = _Raw(value, source)
    return out


def _all_dotted() -> list[str]:
    return [f"{section}.{key}" for section, hints in _TYPES.items() for key in hints]


def setting_names() -> list[str]:
    """Every setting's dotted name (`server.port`), section by section, in definition order."""
    return _all_dotted()


def must_be(dotted: str) -> str:
    """What values a setting takes, as error messages say it (`an integer in 1..65535`)."""
    section, key = dotted.split(".", 1)
    tp = _TYPES[section][key]
    return _RULES.get(dotted, _Rule(_TYPE_PHRASES.get(tp, str(tp)))).must_be


def _config_path(
    config_path: Path | None, env: Mapping[str, str], config_label: str | None
) -> tuple[Path | None, str]:
    if config_path is not None:
        return config_path, config_label or "config_path argument"
    from_env = env.get(CONFIG_ENV_VAR, "")
    if from_env:
        return Path(from_env), CONFIG_ENV_VAR
    return None, ""


# --- assembling and checking ---------------------------------------------------------------------


def _cross_checks(settings: Settings, raws: Mapping[str, _Raw]) -> None:
    """Rules that involve two settings; the message names the one most likely to be wrong."""

    def source(dotted: str) -> str:
        raw = raws.get(dotted)
        return raw.source if raw is not None else "default"

    limits = settings.limits
    if limits.lock_ttl_min_ms > limits.lock_ttl_max_ms:
        raise SettingsError(
            f"limits.lock_ttl_min_ms: must be <= limits.lock_ttl_max_ms ({limits.lock_ttl_max_ms}), "
            f"got {limits.lock_ttl_min_ms} (from {source('limits.lock_ttl_min_ms')})"
        )
    if not limits.lock_ttl_min_ms <= limits.lock_ttl_default_ms <= limits.lock_ttl_max_ms:
        raise SettingsError(
            f"limits.lock_ttl_default_ms: must be in limits.lock_ttl_min_ms..limits.lock_ttl_max_ms "
            f"({limits.lock_ttl_min_ms}..{limits.lock_ttl_max_ms}), got {limits.lock_ttl_default_ms} "
            f"(from {source('limits.lock_ttl_default_ms')})"
        )
    if limits.chat_limit_default > limits.list_limit_max:
        raise SettingsError(
            f"limits.chat_limit_default: must be <= limits.list_limit_max ({limits.list_limit_max}), "
            f"got {limits.chat_limit_default} (from {source('limits.chat_limit_default')})"
        )
    auth = settings.auth
    if auth.token is not None and auth.agent_tokens_file is not None:
        raise SettingsError(
            f"auth.token: set either auth.token (one shared token) or auth.agent_tokens_file (a token "
            f"per agent), not both (from {source('auth.token')} and {source('auth.agent_tokens_file')})"
        )
    phase = settings.migration.phase
    if phase != "cutover" and settings.legacy.redis_url is None:
        raise SettingsError(
            f"migration.phase: phase {phase!r} needs legacy.redis_url (set it, or "
            f"{env_var_name('legacy.redis_url')}), only 'cutover' runs without Redis "
            f"(from {source('migration.phase')})"
        )


def load_settings(
    *,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    override_labels: Mapping[str, str] | None = None,
    config_label: str | None = None,
) -> Settings:
    """Build the one `Settings` value: defaults < config file < environment < overrides.

    `env` defaults to `os.environ`. The config file is `config_path` if given, else the file named
    by `AGENT_COORD_CONFIG`, else none (embedded defaults). `overrides` maps dotted names
    (`"server.port"`) to values, typically strings from CLI flags; `override_labels` names the
    flag each came from (`{"server.port": "--port"}`) and `config_label` the source of
    `config_path`, so that error messages point at what the operator typed.

    Raises SettingsError for unknown sections, keys or AGENT_COORD_* variables, values of the
    wrong type and invalid values; the message names the setting and its source.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    path, path_label = _config_path(config_path, environ, config_label)

    raws: dict[str, _Raw] = {}
    if path is not None:
        raws.update(_from_file(path, path_label))
    raws.update(_from_env(environ))
    raws.update(_from_overrides(overrides or {}, override_labels or {}))

    defaults = Settings()
    sections: dict[str, Any] = {}
    for section in SECTIONS:
        changes = {
            dotted.partition(".")[2]: _resolve(dotted, raw)
            for dotted, raw in raws.items()
            if dotted.partition(".")[0] == section
        }
        sections[section] = replace(getattr(defaults, section), **changes)
    settings = Settings(**sections, config_path=path)
    _cross_checks(settings, raws)
    return settings


# --- rendering for logs --------------------------------------------------------------------------

_SECRET_SETTINGS: Final = frozenset({"migration.admin_token", "auth.token", "auth.credentials_key"})
_URL_SETTINGS: Final = frozenset({"legacy.redis_url"})
_SECRET_QUERY_KEYS: Final = frozenset({"password", "passwd", "pass", "token", "secret"})


def mask_url(url: str) -> str:
    """The URL with its password (in the user-info part or a `password=` query) replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK  # unparseable: it could hold anything
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(key, MASK if key.lower() in _SECRET_QUERY_KEYS else value) for key, value in pairs],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON-able data for a start-up log line, with secrets masked.

    `migration.admin_token` becomes "***" when set, and a password in `legacy.redis_url`
    becomes "***"; everything else is shown as loaded.
    """
    out: dict[str, Any] = {}
    for section in SECTIONS:
        rendered: dict[str, object] = {}
        for item in fields(getattr(settings, section)):
            dotted = f"{section}.{item.name}"
            value = getattr(getattr(settings, section), item.name)
            if value is not None and dotted in _SECRET_SETTINGS:
                value = MASK
            elif isinstance(value, str) and dotted in _URL_SETTINGS:
                value = mask_url(value)
            rendered[item.name] = _plain(value)
        out[section] = rendered
    out["config_path"] = None if settings.config_path is None else str(settings.config_path)
    return out
