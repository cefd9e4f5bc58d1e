"""`agent-coord check`: compare the legacy Redis store with the actor store, report, repair.

The actors are read through a running gateway's admin API when one answers (at `--url`, default
`http://<server.host>:<server.port>`, with the admin token), else from the data directory.
Reports go to `<data_dir>/consistency/` (docs/consistency.md), where the gateway's read-switch
guard reads the newest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from gateway.bulk.gc_pause import fewer_collections, no_collections
from gateway.domain.entities import DOMAINS
from gateway.settings import Settings

if TYPE_CHECKING:
    from consistency.legacy_child import Child

EXIT_CLEAN: Final = 0
EXIT_DIFFERENCES: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNFINISHED: Final = 3
HKEYS_UNBOUNDED: Final = 2**32 - 1
"""`--whole-hashes`: `legacy.hkeys_max` above any hash's size (Redis holds at most 2**32 - 1 fields)."""

EPILOG: Final = """\
exit status:
  0  clean: no difference but the expected ones (docs/mapping.md rules)
  1  differences found (after the re-check rounds; after --repair: still found by the re-check)
  2  bad usage or settings
  3  a store could not be reached, or the check could not finish (the report is marked
     incomplete; continue it with --resume)

Reports: <data_dir>/consistency/report-*.json (+ .md or .html), documented in docs/consistency.md.
"""


def add_check_parser(sub: Any) -> None:
    """Register `check` on the top-level subparsers."""
    p = sub.add_parser(
        "check",
        help="compare the legacy Redis store with the actor store (and repair)",
        description="Compare both stores entity by entity through the mapping's canonical forms, "
        "re-check differences, write a report, and optionally repair.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG)")
    p.add_argument("--data-dir", help="the data directory: actors (without a gateway) and reports")
    p.add_argument("--redis-url", help="the legacy Redis (default: legacy.redis_url)")
    p.add_argument("--url", help="a running gateway (default: http://<server.host>:<server.port>)")
    p.add_argument("--token", help="admin token (default: migration.admin_token or <data_dir>/admin-token)")
    p.add_argument("--domain", action="append", choices=DOMAINS, help="compare this domain only (repeatable)")
    p.add_argument("--agent", action="append", help="compare this agent's own data only (repeatable)")
    p.add_argument("--sample", type=float, default=1.0, help="compare this share of the keys (0 < rate <= 1)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (the same seed, the same keys)")
    p.add_argument("--rounds", type=int, default=3, help="re-check rounds for differences (default 3)")
    p.add_argument(
        "--recheck-delay", type=float, default=2.0, help="seconds before each re-check round (default 2)"
    )
    p.add_argument("--batch", type=int, default=500, help="entities per read (default 500)")
    p.add_argument("--samples", type=int, default=20, help="mismatch samples kept per domain (default 20)")
    p.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2 if (os.cpu_count() or 1) > 1 else 1,
        help="processes: 2 reads Redis in a second one (default 2 on a machine with several CPUs)",
    )
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished check of this scope")
    p.add_argument("--format", choices=("md", "html"), default="md", help="the readable report file")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument(
        "--repair",
        action="store_true",
        help="copy each difference from the authoritative store of the phase (or --from), then check again",
    )
    p.add_argument(
        "--from",
        dest="source",
        choices=("legacy", "actors"),
        help="repair from this store (default: the phase's authoritative store)",
    )
    p.add_argument("--dry-run", action="store_true", help="with --repair: list each change, write nothing")
    p.add_argument(
        "--whole-hashes",
        action="store_true",
        help="list each legacy hash with one HKEYS, however large (legacy.hkeys_max unbounded): "
        "faster, above all sampled, on a server without HSCAN NOVALUES (Redis before 7.4, Valkey "
        "before 8), but each call holds Redis for its whole hash (about 100 ms for 300,000 fields); "
        "only while nothing else needs that Redis",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none when not a terminal)")
    p.set_defaults(handler=_handler)


def _usage_error(err: TextIO, message: str) -> int:
    err.write(f"agent-coord check: error: {message}\n")
    return EXIT_USAGE


def _handler(args: argparse.Namespace) -> int:
    if (args.source or args.dry_run) and not args.repair:
        return _usage_error(sys.stderr, "--from and --dry-run go with --repair")
    if not 0 < args.sample <= 1:
        return _usage_error(sys.stderr, f"--sample must be in (0, 1], not {args.sample}")
    if args.rounds < 0 or args.recheck_delay < 0 or args.batch < 1 or args.samples < 0:
        return _usage_error(sys.stderr, "--rounds, --recheck-delay and --samples must be >= 0, --batch >= 1")
    from consistency.legacy_child import PART_IMPORTS, Child  # noqa: PLC0415 - the standard library only

    # the second process starts its interpreter and imports while this one loads its settings,
    # imports the stores' modules and opens them: the second part of a check of the data
    # directory (`consistency.split`), or else (beside a gateway) the legacy scan
    early = Child.start(PART_IMPORTS) if args.jobs > 1 else None
    try:
        return _check(args, early)
    finally:
        if early is not None and not early.sent:  # no scan ran (bad settings, the stores unreachable)
            early.discard()


def _check(args: argparse.Namespace, early: Child | None) -> int:
    """The check itself, once the arguments are valid (`early`: see `_handler`)."""
    from gateway.settings import SettingsError, load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    if args.redis_url:
        overrides["legacy.redis_url"] = args.redis_url
    if args.whole_hashes:
        overrides["legacy.hkeys_max"] = HKEYS_UNBOUNDED
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except SettingsError as e:
        return _usage_error(sys.stderr, str(e))
    from gateway.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log)  # to stderr: stdout holds the table or the JSON document
    if not settings.legacy.redis_url:
        return _usage_error(sys.stderr, "no legacy Redis: pass --redis-url or set legacy.redis_url")
    with no_collections():  # the stores' modules: all of it lives on
        from consistency.run import run_check  # noqa: PLC0415 - the stores are loaded only to check

    with fewer_collections():
        return asyncio.run(run_check(args, settings, early=early))


@contextmanager
def progress_bar(enabled: bool, total: int | None) -> Iterator[Any]:
    """A tqdm bar on stderr (rate and ETA), or None."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415

    bar = tqdm(total=total, unit=" keys", unit_scale=True, desc="checking", file=sys.stderr, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()


def wants_progress(args: argparse.Namespace, settings: Settings) -> bool:
    del settings
    return not args.no_progress and not args.json and sys.stderr.isatty()
