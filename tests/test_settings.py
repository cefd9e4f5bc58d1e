"""gateway.settings: defaults, sources and their precedence, validation messages, describe()."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.domain.phase import PHASES
from gateway.settings import (
    ActorSettings,
    LegacySettings,
    LimitSettings,
    LogSettings,
    MigrationSettings,
    ServerSettings,
    Settings,
    SettingsError,
    StorageSettings,
    describe,
    env_var_name,
    load_settings,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "agent-coord.toml"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent-coord.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_sources_gives_embedded_defaults() -> None:
    """With no file, no environment and no flags, the settings are exactly Settings()."""
    assert load_settings(env={}) == Settings()


def test_default_config_file_matches_embedded_defaults() -> None:
    """config/agent-coord.toml holds every default, so it and Settings() cannot drift apart."""
    loaded = load_settings(config_path=DEFAULT_CONFIG, env={})
    assert loaded.config_path == DEFAULT_CONFIG
    assert dataclasses.replace(loaded, config_path=None) == Settings()


def test_default_config_file_lists_every_setting() -> None:
    """Every setting appears in config/agent-coord.toml with a comment naming its env var."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for section in describe(Settings()):
        if section == "config_path":
            continue
        assert f"[{section}]" in text
        for key in describe(Settings())[section]:
            assert f"\n{key} = " in text, f"{section}.{key} missing"
            assert env_var_name(f"{section}.{key}") in text, f"{section}.{key}: env var not documented"


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the config file, which beats the default."""
    config = write_config(tmp_path, '[server]\nport = 1001\nhost = "10.0.0.1"\n[log]\nlevel = "debug"\n')
    env = {"AGENT_COORD_SERVER_PORT": "1002", "AGENT_COORD_SERVER_HOST": "10.0.0.2"}
    settings = load_settings(config_path=config, env=env, overrides={"server.port": "1003"})
    assert settings.server.port == 1003  # flag
    assert settings.server.host == "10.0.0.2"  # environment
    assert settings.log.level == "debug"  # file
    assert settings.server.max_body_bytes == ServerSettings().max_body_bytes  # default
    assert settings.config_path == config


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    """AGENT_COORD_CONFIG names the config file when no path is passed."""
    config = write_config(tmp_path, "[actors]\nmax_open = 7\n")
    settings = load_settings(env={"AGENT_COORD_CONFIG": str(config)})
    assert settings.actors.max_open == 7
    assert settings.config_path == config


def test_environment_values_are_coerced() -> None:
    """Strings from the environment become ints, floats, paths, None and tuples."""
    env = {
        "AGENT_COORD_SERVER_PORT": "9000",
        "AGENT_COORD_SERVER_SHUTDOWN_GRACE_S": "2.5",
        "AGENT_COORD_STORAGE_DATA_DIR": "/srv/actors",
        "AGENT_COORD_STORAGE_SQLITE_SYNCHRONOUS": "full",
        "AGENT_COORD_LEGACY_REDIS_URL": "redis://127.0.0.1:6390/1",
        "AGENT_COORD_MIGRATION_PHASE": "write-through",
        "AGENT_COORD_MIGRATION_ADMIN_TOKEN": "",
        "AGENT_COORD_MIGRATION_ROLLOUT_AGENTS": "alice, bob,,carol",
        "AGENT_COORD_LOG_FORMAT": "JSON",
    }
    settings = load_settings(env=env)
    assert settings.server.port == 9000
    assert settings.server.shutdown_grace_s == 2.5
    assert settings.storage.data_dir == Path("/srv/actors")
    assert settings.storage.sqlite_synchronous == "FULL"
    assert settings.legacy.redis_url == "redis://127.0.0.1:6390/1"
    assert settings.migration.phase == "write-through"
    assert settings.migration.admin_token is None
    assert settings.migration.rollout_agents == ("alice", "bob", "carol")
    assert settings.log.format == "json"


def test_config_file_types_are_kept(tmp_path: Path) -> None:
    """TOML values of the right type load as is; an integer is accepted for a float."""
    config = write_config(
        tmp_path,
        '[migration]\nrollout_agents = ["a", "b"]\nrollout_percent = 50\n'
        'phase = "read-switch"\nadmin_token = "t0k"\n'
        '[legacy]\nredis_url = "redis://localhost:6390"\n',
    )
    settings = load_settings(config_path=config, env={})
    assert settings.migration == MigrationSettings(
        phase="read-switch", admin_token="t0k", rollout_agents=("a", "b"), rollout_percent=50.0
    )


def test_every_phase_loads_with_a_redis_url() -> None:
    """Each of the four phases is accepted when a legacy Redis URL is configured."""
    for phase in PHASES:
        settings = load_settings(
            env={}, overrides={"migration.phase": phase, "legacy.redis_url": "redis://127.0.0.1:6390/0"}
        )
        assert settings.migration.phase == phase


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("AGENT_COORD_SERVER_PORT", "abc", "server.port: must be an integer in 1..65535, got 'abc'"),
        ("AGENT_COORD_SERVER_PORT", "0", "server.port: must be an integer in 1..65535, got '0'"),
        ("AGENT_COORD_SERVER_PORT", "65536", "server.port: must be an integer in 1..65535"),
        ("AGENT_COORD_SERVER_HOST", "", "server.host: must be a non-empty host"),
        ("AGENT_COORD_SERVER_MAX_BODY_BYTES", "0", "server.max_body_bytes: must be an integer > 0"),
        ("AGENT_COORD_SERVER_SHUTDOWN_GRACE_S", "-1", "server.shutdown_grace_s: must be a number >= 0"),
        ("AGENT_COORD_STORAGE_DATA_DIR", "", "storage.data_dir: must be a non-empty directory path"),
        ("AGENT_COORD_STORAGE_SQLITE_SYNCHRONOUS", "OFF", "storage.sqlite_synchronous: must be one of"),
        ("AGENT_COORD_ACTORS_MAX_OPEN", "-3", "actors.max_open: must be an integer > 0"),
        ("AGENT_COORD_ACTORS_MAILBOX_MAX", "1.5", "actors.mailbox_max: must be an integer > 0"),
        ("AGENT_COORD_ACTORS_IDLE_TIMEOUT_S", "nan", "actors.idle_timeout_s: must be a number > 0"),
        ("AGENT_COORD_LEGACY_POOL_SIZE", "0", "legacy.pool_size: must be an integer > 0"),
        ("AGENT_COORD_LEGACY_REDIS_URL", "http://x", "legacy.redis_url: must be a redis://"),
        ("AGENT_COORD_MIGRATION_PHASE", "later", "migration.phase: must be one of parallel, write-through"),
        (
            "AGENT_COORD_MIGRATION_ROLLOUT_PERCENT",
            "101",
            "migration.rollout_percent: must be a number in 0..100",
        ),
        (
            "AGENT_COORD_MIGRATION_SHADOW_SAMPLE_RATE",
            "1.5",
            "migration.shadow_sample_rate: must be a number in 0..1",
        ),
        ("AGENT_COORD_LOG_LEVEL", "loud", "log.level: must be one of debug, info"),
        ("AGENT_COORD_LOG_FORMAT", "xml", "log.format: must be one of auto, json, console"),
    ],
)
def test_invalid_environment_value_names_setting_and_variable(var: str, value: str, expected: str) -> None:
    """An invalid value from the environment is rejected with the setting and the variable named."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env={var: value})
    message = str(caught.value)
    assert message.startswith(expected)
    assert message.endswith(f"(from {var})")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[server]\nport = "8080"', "server.port: must be an integer in 1..65535, got '8080'"),
        ("[server]\nport = 80.0", "server.port: must be an integer in 1..65535, got 80.0"),
        ('[actors]\nidle_timeout_s = "60"', "actors.idle_timeout_s: must be a number > 0, got '60'"),
        ('[migration]\nrollout_agents = "a,b"', "migration.rollout_agents: must be a list of agent ids"),
        ("[migration]\nrollout_agents = [1]", "migration.rollout_agents: must be a list of agent ids"),
        ("[log]\nlevel = 3", "log.level: must be one of debug, info, warning, error, critical, got 3"),
    ],
)
def test_invalid_file_value_names_setting_and_file(tmp_path: Path, toml: str, expected: str) -> None:
    """A value of the wrong TOML type is rejected with the setting and the file path named."""
    config = write_config(tmp_path, toml + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config_path=config, env={})
    assert str(caught.value).startswith(expected)
    assert str(caught.value).endswith(f"(from {config})")


def test_bool_is_not_an_integer_in_the_file(tmp_path: Path) -> None:
    """`port = true` is a type error, not port 1."""
    config = write_config(tmp_path, "[server]\nport = true\n")
    with pytest.raises(SettingsError, match=r"^server\.port: .* got True"):
        load_settings(config_path=config, env={})


def test_invalid_override_names_setting_and_flag() -> None:
    """An invalid flag value names the setting and the flag it came from."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env={}, overrides={"server.port": "x"}, override_labels={"server.port": "--port"})
    assert str(caught.value) == "server.port: must be an integer in 1..65535, got 'x' (from --port)"


def test_unknown_override_key_is_rejected() -> None:
    """An override for a setting that does not exist is an error, not ignored."""
    with pytest.raises(SettingsError, match=r"^server\.colour: unknown setting"):
        load_settings(env={}, overrides={"server.colour": "red"})


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    """A config section that does not exist is an error naming it and the file."""
    config = write_config(tmp_path, "[sever]\nport = 1\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config_path=config, env={})
    assert str(caught.value).startswith("[sever]: unknown section")
    assert str(config) in str(caught.value)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    """A key that is not a setting of its section is an error naming it and the file."""
    config = write_config(tmp_path, "[server]\nprot = 1\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config_path=config, env={})
    assert str(caught.value) == f"server.prot: unknown setting (from {config})"


def test_unknown_environment_variable_is_rejected() -> None:
    """A misspelt AGENT_COORD_* variable is an error rather than silently ignored."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"AGENT_COORD_SERVER_PROT": "1"})
    assert str(caught.value) == (
        "AGENT_COORD_SERVER_PROT: unknown setting (from environment variable AGENT_COORD_SERVER_PROT)"
    )


def test_unrelated_environment_is_ignored() -> None:
    """Variables without the AGENT_COORD_ prefix, and the non-setting ones, are not settings."""
    env = {
        "PORT": "1",
        "HOME": "/root",
        "AGENT_COORD_REDIS_SERVER": "/usr/bin/redis-server",
        "AGENT_COORD_SHARED": "/work/shared",
    }
    assert load_settings(env=env) == Settings()


def test_missing_config_file_names_path_and_source(tmp_path: Path) -> None:
    """A config file that does not exist is an error naming the path and who asked for it."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"AGENT_COORD_CONFIG": str(missing)})
    assert str(caught.value) == f"config file {missing} does not exist (from AGENT_COORD_CONFIG)"


def test_malformed_config_file_names_path(tmp_path: Path) -> None:
    """A file that is not valid TOML is an error naming the file."""
    config = write_config(tmp_path, "[server\nport = 1\n")
    with pytest.raises(SettingsError, match="is not valid TOML") as caught:
        load_settings(config_path=config, env={})
    assert str(config) in str(caught.value)


def test_non_cutover_phase_needs_redis_url() -> None:
    """Every phase but cutover needs a legacy Redis; the error names the phase and its source."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"AGENT_COORD_MIGRATION_PHASE": "parallel"})
    message = str(caught.value)
    assert message.startswith("migration.phase: phase 'parallel' needs legacy.redis_url")
    assert message.endswith("(from AGENT_COORD_MIGRATION_PHASE)")


def test_empty_redis_url_in_environment_unsets_the_file_value(tmp_path: Path) -> None:
    """AGENT_COORD_LEGACY_REDIS_URL="" means no Redis, even if the file configured one."""
    config = write_config(tmp_path, '[legacy]\nredis_url = "redis://127.0.0.1:6390/0"\n')
    settings = load_settings(config_path=config, env={"AGENT_COORD_LEGACY_REDIS_URL": ""})
    assert settings.legacy.redis_url is None


def test_lock_ttl_default_must_lie_between_min_and_max() -> None:
    """The default lock TTL outside min..max is rejected, naming the setting and its source."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"AGENT_COORD_LIMITS_LOCK_TTL_DEFAULT_MS": "90000000"})
    assert str(caught.value).startswith("limits.lock_ttl_default_ms: must be in")
    assert str(caught.value).endswith("(from AGENT_COORD_LIMITS_LOCK_TTL_DEFAULT_MS)")


def test_settings_are_immutable() -> None:
    """Settings cannot be changed after they are built."""
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]


def test_describe_masks_secrets() -> None:
    """describe() hides the admin token and the Redis password and shows everything else."""
    settings = Settings(
        legacy=LegacySettings(redis_url="redis://user:hunter2@redis.internal:6390/0?password=also"),
        migration=MigrationSettings(phase="parallel", admin_token="s3cr3t"),
    )
    rendered = describe(settings)
    text = repr(rendered)
    assert "hunter2" not in text
    assert "also" not in text
    assert "s3cr3t" not in text
    assert rendered["migration"]["admin_token"] == "***"
    assert rendered["legacy"]["redis_url"] == "redis://user:***@redis.internal:6390/0?password=***"
    assert rendered["migration"]["phase"] == "parallel"


def test_describe_is_plain_data() -> None:
    """describe() renders paths as strings, tuples as lists and None as None."""
    rendered = describe(
        Settings(
            storage=StorageSettings(data_dir=Path("/data")),
            migration=MigrationSettings(rollout_agents=("a",)),
        )
    )
    assert rendered["storage"]["data_dir"] == "/data"
    assert rendered["migration"]["rollout_agents"] == ["a"]
    assert rendered["migration"]["admin_token"] is None
    assert rendered["legacy"]["redis_url"] is None
    assert rendered["config_path"] is None
    assert set(rendered) == {
        "server",
        "storage",
        "auth",
        "actors",
        "limits",
        "legacy",
        "migration",
        "log",
        "config_path",
    }


def test_section_defaults_are_the_documented_values() -> None:
    """The embedded defaults are the values the other modules are written against."""
    assert Settings().server == ServerSettings(host="127.0.0.1", port=8787)
    assert Settings().actors == ActorSettings(max_open=4096, alarm_retry_base_s=2.0, alarm_max_retries=6)
    assert Settings().limits == LimitSettings(lock_ttl_default_ms=7_200_000, chat_limit_default=50)
    assert Settings().log == LogSettings(level="info", format="auto")
    assert Settings().migration.phase == "cutover"
    assert Settings().legacy.redis_url is None
