"""`agent-coord actors`: list the actors of a data directory (read-only; safe beside a gateway).

    agent-coord actors [--data-dir DIR] [--kind coordinator|agent|lock] [--rows] [--json]

Exit status: 0 listed, 2 bad usage or settings (including a directory with no actor host).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.actors.inspect import ActorInfo, count_rows, iter_actors
from gateway.domain.jscompat import iso_from_ms

EXIT_OK, EXIT_USAGE = 0, 2


def add_actors_parser(sub: Any) -> None:
    """Register `actors` on the top-level subparsers."""
    p = sub.add_parser(
        "actors",
        help="list the actors of a data directory (read-only)",
        description="List the actors recorded in a data directory: kind, name, file size, pending "
        "alarm, and with --rows the rows of each table. Read-only: safe beside a running gateway.",
    )
    p.add_argument("--data-dir", help="the data directory (default: storage.data_dir of the settings)")
    p.add_argument("--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG)")
    p.add_argument("--kind", choices=("coordinator", "agent", "lock"), help="only actors of this kind")
    p.add_argument("--rows", action="store_true", help="count the rows of every table (opens every file)")
    p.add_argument("--json", action="store_true", help="one JSON object per actor")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from gateway.settings import SettingsError, load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {"storage.data_dir": args.data_dir} if args.data_dir else {}
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except SettingsError as e:
        sys.stderr.write(f"agent-coord: error: {e}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(
            list_actors(Path(settings.storage.data_dir), args.kind, rows=args.rows, as_json=args.json)
        )
    except FileNotFoundError as e:
        sys.stderr.write(f"agent-coord: error: {e}\n")
        return EXIT_USAGE


async def list_actors(
    data_dir: Path, kind: str | None, *, rows: bool, as_json: bool, out: TextIO = sys.stdout
) -> int:
    """Print the actors of `data_dir`; returns the exit status."""
    count = 0
    async for info in iter_actors(data_dir, kind):
        if not rows:
            info.rows = {}
        elif not info.sharded:  # a sharded actor's rows were counted with its shard
            info.rows = await count_rows(info.file)
        out.write(_json(info) if as_json else _line(info))
        count += 1
    if not as_json:
        out.write(f"{count} actor(s)\n")
    return EXIT_OK


def _json(info: ActorInfo) -> str:
    doc = {
        "kind": info.kind,
        "name": info.name,
        "file": str(info.file),
        "sizeBytes": info.size_bytes,
        "alarm": None if info.alarm_ms is None else iso_from_ms(info.alarm_ms),
    }
    if info.rows:
        doc["rows"] = info.rows
    return json.dumps(doc, ensure_ascii=False) + "\n"


def _line(info: ActorInfo) -> str:
    alarm = f"  alarm {iso_from_ms(info.alarm_ms)}" if info.alarm_ms is not None else ""
    rows = "  " + ", ".join(f"{t}={n}" for t, n in info.rows.items()) if info.rows else ""
    return f"{info.kind:<11} {info.name!r:<40} {info.size_bytes:>9} B{alarm}{rows}\n"
