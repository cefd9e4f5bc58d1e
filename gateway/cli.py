"""The `agent-coord` command line.

    agent-coord serve [--host H] [--port N] [--data-dir DIR] [--config FILE]
                      [--redis-url URL] [--phase PHASE]
    agent-coord version        (or agent-coord --version)

Flags are overrides on top of the config file and the environment (see gateway.settings); they
are passed to `load_settings` as strings so that a bad value is reported like any other, naming
the setting and the flag. Exit codes: 0 success, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from consistency.cli import add_check_parser
from gateway import __version__

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the gateway could not start (another owner, a phase that needs Redis)
EXIT_USAGE: Final = 2  # argparse's code for bad usage; a bad setting is bad usage too

# serve flag -> the setting it overrides.
_SERVE_OVERRIDES: Final = {
    "host": ("server.host", "--host"),
    "port": ("server.port", "--port"),
    "data_dir": ("storage.data_dir", "--data-dir"),
    "redis_url": ("legacy.redis_url", "--redis-url"),
    "phase": ("migration.phase", "--phase"),
}

_Handler = Callable[[argparse.Namespace], int]


def startup_line(settings: Settings) -> dict[str, str]:
    """What the first log line says about the stores the gateway runs on."""
    if settings.legacy.redis_url is None:
        return {
            "store": "actors",
            "message": "running on the embedded SQLite actor store alone (no legacy Redis configured)",
        }
    return {
        "store": "actors+legacy",
        "message": "running in front of the legacy Redis store; the migration phase decides which serves",
    }


def _serve(args: argparse.Namespace) -> int:
    """Load the settings, configure logging and run the gateway until it is stopped."""
    from gateway.errors import ActorOwnedElsewhere, StartupRefused  # noqa: PLC0415 - see `main`
    from gateway.logs import configure_logging, get_logger  # noqa: PLC0415
    from gateway.settings import SettingsError, describe, load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {}
    labels: dict[str, str] = {}
    for attr, (dotted, flag) in _SERVE_OVERRIDES.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[dotted] = value
            labels[dotted] = flag
    try:
        settings = load_settings(
            config_path=args.config,
            overrides=overrides,
            override_labels=labels,
            config_label="--config",
        )
    except SettingsError as exc:
        sys.stderr.write(f"agent-coord: error: {exc}\n")
        return EXIT_USAGE
    configure_logging(settings.log)
    # Imported here so that the CLI (and `--help`) work without loading the whole service.
    from gateway.app import run_app  # noqa: PLC0415

    get_logger(__name__).info(
        "gateway.starting",
        **startup_line(settings),
        data_dir=str(settings.storage.data_dir),
        version=__version__,
        settings=describe(settings),
    )

    try:
        run_app(settings)
    except (ActorOwnedElsewhere, StartupRefused) as exc:
        get_logger(__name__).error("gateway.refused_to_start", error=exc.message)
        sys.stderr.write(f"agent-coord: error: {exc.message}\n")
        return EXIT_FAILED
    return EXIT_OK


def _version(_args: argparse.Namespace) -> int:
    sys.stdout.write(f"agent-coord {__version__}\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand stores its handler in `handler`."""
    # the commands' modules are imported here, not with this module (see `main`)
    from gateway.actors.inspect_cli import add_actors_parser  # noqa: PLC0415
    from gateway.backup.backup_cli import add_backup_parsers  # noqa: PLC0415
    from gateway.docs_cli import add_docs_parser  # noqa: PLC0415
    from gateway.domain.phase import PHASES  # noqa: PLC0415
    from gateway.legacy.seed_cli import add_dev_commands  # noqa: PLC0415
    from gateway.phases.cli import add_phase_parser  # noqa: PLC0415
    from migrate.cli import add_migrate_parser  # noqa: PLC0415

    parser = _top_parser()
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (HTTP + WebSocket)",
        description="Run the gateway. Flags override the config file and AGENT_COORD_* variables.",
    )
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", help="TCP port to listen on (server.port)")
    serve.add_argument("--data-dir", help="directory of the actor SQLite files (storage.data_dir)")
    serve.add_argument(
        "--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG, else none)"
    )
    serve.add_argument("--redis-url", help="legacy Redis URL (legacy.redis_url); '' for none")
    serve.add_argument("--phase", help=f"migration phase at start-up: {', '.join(PHASES)} (migration.phase)")
    serve.set_defaults(handler=_serve)

    add_migrate_parser(commands)  # `migrate export|import|copy` (migrate/cli.py)
    add_check_parser(commands)  # `check` (consistency/cli.py)

    add_phase_parser(commands)  # `phase show|set|history` (gateway/phases/cli.py)
    add_actors_parser(commands)  # `actors` (gateway/actors/inspect_cli.py)
    add_backup_parsers(commands)  # `backup`, `restore` (gateway/backup/backup_cli.py)
    add_dev_commands(commands)  # `dev seed-legacy` (gateway/legacy/seed_cli.py)
    add_docs_parser(commands)  # `docs openapi|config|config-toml` (gateway/docs_cli.py)

    version = commands.add_parser("version", help="print the version and exit")
    version.set_defaults(handler=_version)
    return parser


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-coord",
        description="agent-coord gateway: the Durable-Objects API served from per-actor SQLite, "
        "in front of the legacy Redis store.",
    )
    parser.add_argument("--version", action="version", version=f"agent-coord {__version__}")
    return parser


def check_parser() -> argparse.ArgumentParser:
    """`agent-coord` with its `check` command only: the same parsing and help of `check`,
    without importing the other commands' modules."""
    parser = _top_parser()
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    add_check_parser(commands)  # `check` (consistency/cli.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `agent-coord`; returns the process exit code.

    `agent-coord check` is parsed by `check_parser`: the check's second process (`--jobs 2`)
    starts once its arguments are read, and the other commands' modules (backup, actors,
    migrate: about 0.1 s of imports) would only delay it."""
    argv = sys.argv[1:] if argv is None else argv
    args = (check_parser() if argv[:1] == ["check"] else build_parser()).parse_args(argv)
    handler: _Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
