"""`agent-coord migrate export | import | copy`: the one-shot migration (docs/migrate.md).

    agent-coord migrate export --from legacy|actors --out FILE[.gz]
    agent-coord migrate import --to actors|legacy --in FILE[.gz]
    agent-coord migrate copy --from legacy --to actors      (or --from actors --to legacy)

Common options: --domain/--agent (filters), --dry-run, --rate N, --resume, --batch N,
--summary FILE, --quarantine FILE, --redis-url, --data-dir, --url/--token (a running gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Final, TextIO

from gateway.bulk.gc_pause import fewer_collections
from gateway.domain.entities import DOMAINS

__all__ = [
    "EXIT_OK",
    "EXIT_QUARANTINED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_migrate_parser",
    "default_jobs",
]

EXIT_OK: Final = 0
EXIT_QUARANTINED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

EPILOG: Final = """\
exit status:
  0  done (a second run that finds everything in place writes nothing and says so)
  1  done, but some records could not be read: they are in the quarantine file
  2  bad usage or settings, or an input file that cannot be imported (nothing was written)
  3  a store could not be reached (or a running gateway owns the data directory and did not
     answer at --url), or the reader process (--jobs 2) failed; continue with --resume once
     it is back

The actor store is reached through a running gateway's admin API when one answers at --url
(default http://<server.host>:<server.port>, with the admin token), else through the data
directory, which the tool opens itself only while no gateway owns it. File format, checkpoints,
quarantine and the newer-write rule: docs/migrate.md.
"""

STORES: Final = ("legacy", "actors")


def add_migrate_parser(sub: Any) -> None:
    """Register `migrate` and its subcommands on the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG)")
    common.add_argument("--redis-url", help="the legacy Redis (default: legacy.redis_url)")
    common.add_argument("--data-dir", help="the actor data directory (default: storage.data_dir)")
    common.add_argument("--url", help="a running gateway (default: http://<server.host>:<server.port>)")
    common.add_argument(
        "--token", help="admin token (default: migration.admin_token or <data_dir>/admin-token)"
    )
    common.add_argument(
        "--domain", action="append", choices=DOMAINS, help="this domain only (repeatable; default all)"
    )
    common.add_argument("--agent", action="append", help="this agent's own data only (repeatable)")
    common.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    common.add_argument("--rate", type=float, help="at most N entities per second")
    common.add_argument("--batch", type=int, default=500, help="entities per batch (default 500)")
    common.add_argument(
        "--resume", action="store_true", help="continue the interrupted run from its checkpoint"
    )
    common.add_argument("--state-dir", type=Path, help="checkpoint directory (default: <data_dir>/migrate)")
    common.add_argument(
        "--quarantine", type=Path, help="unreadable records (default: <state-dir>/quarantine.ndjson)"
    )
    common.add_argument("--summary", type=Path, help="write the summary as JSON to this file")
    common.add_argument("--no-progress", action="store_true", help="no progress bar (none off a terminal)")
    common.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=default_jobs(),
        help="2: read and map the source in a second process, write in this one (default 2 on a "
        "machine with several CPUs, else 1)",
    )

    p = sub.add_parser(
        "migrate",
        help="copy every entity between the legacy Redis and the actors (export / import / copy)",
        description="The one-shot migration between the legacy Redis store and the actor store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="migrate_command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    export = cmds.add_parser(
        "export",
        parents=[common],
        help="write one store's entities to an NDJSON file",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    export.add_argument("--from", dest="source", choices=STORES, required=True)
    export.add_argument("--out", type=Path, required=True, help="the file (gzip when it ends in .gz)")
    imp = cmds.add_parser(
        "import",
        parents=[common],
        help="write an export file's entities to a store",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    imp.add_argument("--to", dest="target", choices=STORES, required=True)
    imp.add_argument("--in", dest="infile", type=Path, required=True, help="an export file (.gz too)")
    copy = cmds.add_parser(
        "copy",
        parents=[common],
        help="copy from one store to the other, without a file",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    copy.add_argument("--from", dest="source", choices=STORES, required=True)
    copy.add_argument("--to", dest="target", choices=STORES, required=True)
    p.set_defaults(handler=_handler)


def default_jobs() -> int:
    """Two processes where there are two CPUs to run them."""
    return 2 if (os.cpu_count() or 1) > 1 else 1


def usage_error(err: TextIO, message: str) -> int:
    err.write(f"agent-coord migrate: error: {message}\n")
    return EXIT_USAGE


def _handler(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging  # noqa: PLC0415
    from gateway.settings import SettingsError, load_settings  # noqa: PLC0415

    cmd = args.migrate_command
    if cmd == "copy" and args.source == args.target:
        return usage_error(sys.stderr, "--from and --to must name different stores")
    if args.batch < 1 or (args.rate is not None and args.rate <= 0):
        return usage_error(sys.stderr, "--batch must be >= 1 and --rate > 0")
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    if args.redis_url:
        overrides["legacy.redis_url"] = args.redis_url
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except SettingsError as e:
        return usage_error(sys.stderr, str(e))
    uses_legacy = "legacy" in (getattr(args, "source", None), getattr(args, "target", None))
    if uses_legacy and not settings.legacy.redis_url:
        return usage_error(sys.stderr, "no legacy Redis: pass --redis-url or set legacy.redis_url")
    configure_logging(settings.log)
    from migrate.run import run_migrate  # noqa: PLC0415 - the stores load only to migrate

    with fewer_collections():
        return asyncio.run(run_migrate(args, settings))
