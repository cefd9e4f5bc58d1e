"""gateway.cli: argument parsing, settings errors as exit code 2, and the hand-off to run_app."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import build_parser, main
from gateway.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_env", "restore_logging")


def test_help_lists_serve(capsys: pytest.CaptureFixture[str]) -> None:
    """`agent-coord --help` exits 0 and lists the serve command."""
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    assert "serve" in capsys.readouterr().out


def test_serve_help_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`agent-coord serve --help` documents every override flag."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--data-dir", "--config", "--redis-url", "--phase"):
        assert flag in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`agent-coord version` and `--version` print the package version."""
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"agent-coord {__version__}\n"
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the CLI exits 2 with a usage message."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_flag_value_exits_2_naming_setting_and_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --port abc` exits 2 and says server.port is wrong and came from --port."""
    assert main(["serve", "--port", "abc"]) == 2
    err = capsys.readouterr().err
    assert "server.port: must be an integer in 1..65535, got 'abc' (from --port)" in err


def test_bad_environment_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad AGENT_COORD_* variable makes serve exit 2, naming the setting and the variable."""
    monkeypatch.setenv("AGENT_COORD_LOG_LEVEL", "loud")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "log.level" in err
    assert "AGENT_COORD_LOG_LEVEL" in err


def test_phase_without_redis_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --phase parallel` without a Redis URL exits 2 naming migration.phase and --phase."""
    assert main(["serve", "--phase", "parallel"]) == 2
    err = capsys.readouterr().err
    assert "migration.phase" in err
    assert "(from --phase)" in err


def test_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`serve --config` with a missing file exits 2 naming the file and the flag."""
    missing = tmp_path / "missing.toml"
    assert main(["serve", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "--config" in err


def test_serve_passes_flags_to_run_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """serve builds the settings from its flags and hands exactly them to gateway.app.run_app."""
    received: list[Settings] = []
    fake_app = types.ModuleType("gateway.app")
    fake_app.run_app = received.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.app", fake_app)

    argv = [
        "serve",
        "--host", "127.0.0.2",
        "--port", "9123",
        "--data-dir", str(tmp_path / "data"),
        "--redis-url", "redis://127.0.0.1:6390/0",
        "--phase", "write-through",
    ]  # fmt: skip
    assert main(argv) == 0
    [settings] = received
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 9123
    assert settings.storage.data_dir == tmp_path / "data"
    assert settings.legacy.redis_url == "redis://127.0.0.1:6390/0"
    assert settings.migration.phase == "write-through"


def test_check_is_parsed_without_the_other_commands_modules(capsys: pytest.CaptureFixture[str]) -> None:
    """`agent-coord check` is parsed by a parser of `check` alone, so its second process starts
    before the other commands' modules (and redis, structlog) are imported; its help and its
    errors are those of the full parser."""
    code = (
        "import sys; from gateway.cli import check_parser; "
        "check_parser().parse_args(['check', '--sample', '0.1']); "
        "print(sorted(m for m in ('redis', 'structlog', 'migrate.cli', "
        "'gateway.backup.backup_cli', 'gateway.actors.inspect_cli', 'gateway.phases.cli') "
        "if m in sys.modules))"
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
    for argv in (["check", "--help"], ["check", "--domain", "nope"]):
        with pytest.raises(SystemExit) as alone:
            main(argv)
        said = capsys.readouterr()
        with pytest.raises(SystemExit) as full:
            build_parser().parse_args(argv)
        assert (alone.value.code, said) == (full.value.code, capsys.readouterr())
