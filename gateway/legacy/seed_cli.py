"""`agent-coord dev seed-legacy`: fill a Redis with a realistic legacy data set (dev tooling).

    agent-coord dev seed-legacy --redis-url URL --scale N [--seed S] [--base ISO] [--flush]

Prints the summary (values written per family, agent shapes, quirks) as JSON on stdout and, for
large scales, a progress line on stderr. Refuses to write to a non-empty database unless `--flush`
is given (FLUSHDB first) or `--append` says to add to what is there, so a mistyped URL cannot
silently mix generated data into a real store. Exit codes: 0 done, 1 Redis unreachable or
refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Final, TextIO

import orjson

from gateway.domain.jscompat import parse_js_date
from gateway.settings import mask_url

# redis and gateway.legacy.generator (about 0.2 s of imports) are imported when the command runs:
# `agent-coord` builds this parser for every command it runs.

__all__ = ["add_dev_commands", "main", "seed_legacy"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
_PROGRESS_FROM: Final = 10_000  # below this scale a run takes well under a second
_PROGRESS_EVERY_S: Final = 0.5
SCALE_100_VALUES: Final = 1_110  # gateway.legacy.generator.plan(100).total, for --help (a test checks it)


class _Progress:
    """A throttled `done/total (pct%)` line on stderr, rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        self._stream.write(f"\rseed-legacy: {done:,}/{total:,} ({100 * done // max(total, 1)}%)")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


async def seed_legacy(
    redis_url: str,
    *,
    scale: int,
    seed: int,
    base_ms: int | None = None,
    flush: bool = False,
    append: bool = False,
    progress_stream: TextIO | None = None,
) -> dict[str, object]:
    """Run the generator against `redis_url` and return its summary as plain data.

    Raises RuntimeError when the database is not empty and neither `flush` nor `append` is set.
    """
    import redis.asyncio  # noqa: PLC0415 - see the note at the imports

    from gateway.legacy.generator import BASE_MS, generate  # noqa: PLC0415

    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        if not flush and not append and await client.dbsize():
            raise RuntimeError(
                f"{mask_url(redis_url)} is not empty: pass --flush to empty it first, "
                "or --append to add to what is there"
            )
        progress = None
        if progress_stream is not None and scale >= _PROGRESS_FROM:
            progress = _Progress(progress_stream)
        started = time.monotonic()
        summary = await generate(
            client,
            scale=scale,
            seed=seed,
            base_ms=BASE_MS if base_ms is None else base_ms,
            flush=flush,
            progress=progress,
        )
        out = summary.as_dict()
        out["seconds"] = round(time.monotonic() - started, 3)
        return out
    finally:
        await client.aclose()


def _run(args: argparse.Namespace) -> int:
    import redis.exceptions  # noqa: PLC0415 - see the note at the imports

    base_ms = None
    if args.base is not None:
        parsed = parse_js_date(args.base)
        if parsed is None:
            sys.stderr.write(f"agent-coord: error: --base {args.base!r} is not an ISO date-time\n")
            return EXIT_USAGE
        base_ms = parsed
    if args.scale < 1:
        sys.stderr.write(f"agent-coord: error: --scale must be >= 1, got {args.scale}\n")
        return EXIT_USAGE
    try:
        summary = asyncio.run(
            seed_legacy(
                args.redis_url,
                scale=args.scale,
                seed=args.seed,
                base_ms=base_ms,
                flush=args.flush,
                append=args.append,
                progress_stream=sys.stderr,
            )
        )
    except RuntimeError as exc:
        sys.stderr.write(f"agent-coord: error: {exc}\n")
        return EXIT_FAILED
    except redis.exceptions.RedisError as exc:
        sys.stderr.write(f"agent-coord: error: legacy Redis {mask_url(args.redis_url)}: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


def add_dev_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dev seed-legacy` on the `agent-coord` subcommand list (handler in `handler`)."""
    dev = commands.add_parser("dev", help="developer tooling (test data ...)")
    dev_commands = dev.add_subparsers(title="dev commands", dest="dev_command", required=True)
    seed = dev_commands.add_parser(
        "seed-legacy",
        help="fill a Redis with a realistic, reproducible legacy agent-coord data set",
        description="Write every legacy key family (legacy-redis.md sections 1-8) with every writer "
        "shape and the section-10 quirks. Same --seed and --scale give the same data.",
    )
    seed.add_argument("--redis-url", required=True, help="the Redis to fill (redis://host:port/db)")
    seed.add_argument(
        "--scale",
        type=int,
        required=True,
        help=f"primary entities to write (e.g. 50 for tests, 1000000 for benchmarks); "
        f"scale 100 writes {SCALE_100_VALUES:,} values",
    )
    seed.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    seed.add_argument(
        "--base",
        help="the data set's 'now' as an ISO date-time (default 2025-12-03T20:00:00.000Z); "
        "every timestamp is relative to it",
    )
    mode = seed.add_mutually_exclusive_group()
    mode.add_argument("--flush", action="store_true", help="FLUSHDB before writing")
    mode.add_argument("--append", action="store_true", help="write into a non-empty database")
    seed.set_defaults(handler=_run)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m gateway.legacy.seed_cli dev seed-legacy ...`)."""
    parser = argparse.ArgumentParser(prog="agent-coord")
    add_dev_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
