"""`agent-coord check` carried out: open both stores, check, keep and print the report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog

from consistency.check import CheckAborted, Checker, CheckOptions
from consistency.cli import EXIT_CLEAN, EXIT_DIFFERENCES, EXIT_UNFINISHED, progress_bar, wants_progress
from consistency.legacy_child import PART_IMPORTS
from consistency.legacy_proc import Child, ProcessScan
from consistency.render import html_page, markdown, terminal_table
from consistency.repair import RepairResult, authoritative, repair
from consistency.report import Report, prune, save
from consistency.split import SplitWalk, splits
from consistency.stores import LegacyExpectations
from gateway.bulk.actor_side import ActorSide
from gateway.bulk.items import Selection
from gateway.bulk.legacy_side import WHOLE_MAX, LegacySource
from gateway.bulk.legacy_sink import LegacySink
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import Clock, SystemClock
from gateway.domain.entities import DOMAINS
from gateway.errors import ActorOwnedElsewhere, GatewayError
from gateway.http.token_file import cli_token
from gateway.phases.control import read_phase
from gateway.settings import Settings

log = structlog.get_logger(__name__)


def redacted(url: str) -> str:
    """A URL without its password, for reports and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def admin_token(args: argparse.Namespace, settings: Settings) -> str | None:
    return cli_token(args.token, settings.migration.admin_token, settings.storage.data_dir)


def options(args: argparse.Namespace, stores: dict[str, str]) -> CheckOptions:
    return CheckOptions(
        domains=tuple(d for d in DOMAINS if not args.domain or d in args.domain),
        agents=tuple(args.agent or ()),
        sample=args.sample,
        seed=args.seed,
        rounds=args.rounds,
        delay_s=args.recheck_delay,
        batch=args.batch,
        max_samples=args.samples,
        resume=args.resume,
        stores=stores,
    )


def finish(report: Report, args: argparse.Namespace, settings: Settings, out: TextIO) -> None:
    """Keep the report in the data directory (and only the newest reports there) and print it."""
    data_dir = Path(settings.storage.data_dir)
    readable = markdown(report) if args.format == "md" else None
    page = html_page(report) if args.format == "html" else None
    save(report, data_dir, readable, page)
    keep = settings.migration.consistency_keep_reports
    gone = prune(data_dir, keep)
    if gone:
        log.info("consistency.reports_pruned", deleted=len(gone), kept=keep)
    if args.json:
        import json  # noqa: PLC0415

        out.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(terminal_table(report))


async def run_check(
    args: argparse.Namespace,
    settings: Settings,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    early: Child | None = None,
) -> int:
    """The check the arguments ask for; returns the exit status. `early`: the legacy scan's
    process, started already (`consistency.cli`); else one is started here (with `--jobs 2`)."""
    out = out or sys.stdout
    err = err or sys.stderr
    redis_url = str(settings.legacy.redis_url)
    data_dir = Path(settings.storage.data_dir)
    token = admin_token(args, settings)
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    where = ActorEndpoint(url=url if token else None, token=token, data_dir=data_dir)
    clock = SystemClock()
    # the legacy scan's process starts its interpreter while this one opens the stores
    if early is None and getattr(args, "jobs", 1) > 1:
        early = Child.start(PART_IMPORTS)
    try:
        async with (
            open_legacy_side(settings, redis_url, clock=clock) as legacy,
            open_actor_side(settings, where, clock=clock, fire_alarms=False) as actors,
        ):
            mode = f"data dir {data_dir}" if isinstance(actors, ActorSide) else url
            opts = options(args, {"legacy": redacted(redis_url), "actors": mode})
            checker = _checker(args, settings, legacy, actors, opts, early=early, clock=clock)
            await _warn_whole_hashes(args, actors, settings, data_dir, err)
            total = await _estimate(legacy, actors, opts) if wants_progress(args, settings) else None
            with progress_bar(wants_progress(args, settings), total) as bar:
                report = await checker.run(opts, progress=_updater(bar))
            for line in checker.not_resumed:
                err.write(f"agent-coord check: {line}\n")
            if args.repair:
                source_name = args.source or authoritative(await _phase(actors, settings, data_dir))
                if source_name == "legacy":
                    result = await repair(checker.findings, legacy, actors, dry_run=args.dry_run)
                else:
                    target = LegacySink(legacy, clock)
                    result = await repair(checker.findings, actors, target, dry_run=args.dry_run)
                report.repair = result.to_json()
                _print_repair(result, out)
                if not args.dry_run and result.planned:
                    finish(report, args, settings, out)  # the check that found them, with the repair
                    with progress_bar(wants_progress(args, settings), total) as bar:
                        after = await checker.run(dataclasses.replace(opts, resume=False), _updater(bar))
                    after.repair = {"repairedBy": report.run_id, **result.to_json()}
                    report = after
    except CheckAborted as e:
        for line in checker.not_resumed:
            err.write(f"agent-coord check: {line}\n")
        finish(e.report, args, settings, out)
        err.write(f"agent-coord check: the check did not finish: {e}\n")
        return EXIT_UNFINISHED
    except (ActorOwnedElsewhere, GatewayError, OSError) as e:
        message = getattr(e, "message", None) or str(e)
        err.write(f"agent-coord check: cannot open the stores: {message}\n")
        log.warning("consistency.stores_unreachable", error=message)
        return EXIT_UNFINISHED
    finally:
        if early is not None and not early.sent:  # no scan ran (the stores could not be opened)
            await asyncio.get_running_loop().run_in_executor(None, early.discard)
    finish(report, args, settings, out)
    return EXIT_CLEAN if report.clean else EXIT_DIFFERENCES


def _checker(
    args: argparse.Namespace,
    settings: Settings,
    legacy: LegacySource,
    actors: Any,
    opts: CheckOptions,
    *,
    early: Child | None,
    clock: Clock,
) -> Checker:
    """The checker of these stores: with `--jobs 2`, its walk split by domain over two
    processes when it reads the actors from the data directory (`consistency.split`), else
    its legacy scan in the second process (`consistency.legacy_proc`)."""
    redis_url = str(settings.legacy.redis_url)
    data_dir = Path(settings.storage.data_dir)
    second, scan = None, None
    if isinstance(actors, ActorSide) and getattr(args, "jobs", 1) > 1 and splits(opts):
        shards = actors.replica.host.shard_count
        second = SplitWalk(settings, redis_url, data_dir, shards, started=early, on_end=legacy.learned)
    elif early is not None:
        scan = ProcessScan(legacy, settings, redis_url, early)
    return Checker(
        legacy,
        actors,
        clock,
        LegacyExpectations(legacy),
        data_dir=data_dir,
        legacy_scan=scan,
        second=second,
    )


async def _warn_whole_hashes(
    args: argparse.Namespace, actors: Any, settings: Settings, data_dir: Path, err: TextIO
) -> None:
    """With `--whole-hashes`, or `legacy.hkeys_max` raised above its default (a config file, the
    environment), warn when the gateway's phase writes the legacy store."""
    flag = bool(getattr(args, "whole_hashes", False))
    limit = settings.legacy.hkeys_max
    if flag or limit > WHOLE_MAX:
        phase = await _phase(actors, settings, data_dir)
        if phase != "cutover":  # every other phase writes the legacy store
            err.write(whole_hashes_warning(phase, None if flag else limit))


def whole_hashes_warning(phase: str, hkeys_max: int | None = None) -> str:
    """What listing large hashes whole costs a gateway that writes the legacy store (every phase
    but cutover): its writes wait while each is listed. `hkeys_max`: the raised setting's value
    (None: `--whole-hashes`, unbounded)."""
    what = (
        "--whole-hashes lists each legacy hash"
        if hkeys_max is None
        else f"legacy.hkeys_max is {hkeys_max:,} (default {WHOLE_MAX:,}): each legacy hash of "
        "up to that many fields is listed"
    )
    return (
        f"agent-coord check: warning: {what} with one HKEYS, which "
        "holds Redis for the whole hash (about 0.35 us a field: about 100 ms for 300,000); in phase "
        f"{phase} the gateway writes that Redis, and its writes wait meanwhile\n"
    )


async def _phase(actors: Any, settings: Settings, data_dir: Path) -> str:
    """The gateway's phase: asked from a running gateway, else the data directory's, else the
    configured one."""
    if not isinstance(actors, ActorSide):  # the admin API (`RemoteActorSide`)
        async with actors._request("GET", "/admin/phase") as resp:
            return str((await resp.json())["phase"])
    return read_phase(data_dir) or str(settings.migration.phase)


def _print_repair(result: RepairResult, out: TextIO) -> None:
    for change in result.changes:
        out.write(("would " if result.dry_run else "") + change.line(result.target, result.source) + "\n")
    for key, reason in result.unrepairable:
        out.write(f"cannot repair {key}: the {result.source} value cannot be read ({reason})\n")
    for key in result.skipped:
        out.write(
            f"left alone {key}: {result.target} holds a newer version (a live write), "
            "or cannot take this change (see the log)\n"
        )
    verb = "would write" if result.dry_run else "wrote"
    out.write(
        f"repair from {result.source} to {result.target}: {verb} {result.written}, "
        f"{result.unchanged} already equal, {len(result.skipped)} left alone, "
        f"{len(result.unrepairable)} unreadable\n"
    )


async def _estimate(legacy: Any, actors: Any, opts: CheckOptions) -> int | None:
    """The number of keys the walk will visit, roughly (the larger store's count)."""
    selection = Selection.of(opts.domains, opts.agents or None)
    try:
        counts = [await legacy.count(selection), await actors.count(selection)]
    except Exception:  # noqa: BLE001 - an estimate only: the check reports a store failure itself
        return None
    sums = [sum(c.values()) for c in counts if c]
    return max(sums) if sums else None


def _updater(bar: Any) -> Any:
    if bar is None:
        return None
    done = [0]

    def update(walked: int) -> None:
        bar.update(walked - done[0])
        done[0] = walked

    return update
