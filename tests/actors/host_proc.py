"""An actor host in its own process, for tests that need a real second process or a real crash.

Run as `python tests/actors/host_proc.py COMMAND DATA_DIR [ARG]`. It writes one JSON object per
line on stdout (logs go to stderr) and exits 0, or 3 when the directory is owned elsewhere. With
`AGENT_COORD_CRASH_AT` set it dies at that crash point with `CRASH_EXIT_CODE`.

Commands (all on the actor kind `rec`, whose table `rows(n)` the tests read back):

- `hold`: start, print `started`, then wait to be killed.
- `start`: start, print `started`, close; or print `owned_elsewhere` and exit 3.
- `write-turn`: one turn inserting rows 1, 2, 3 into `rec:crash`, then print `committed`.
- `set-alarm`: set the alarm of `rec:alarm` to a past time, wait until it was handled.
- `run-alarms`: start, wait until no alarm is pending, print `done`.
- `slow-turn GRACE_S`: begin a turn on `rec:slow` that inserts rows 1-3, prints `in_turn`,
  sleeps `SLOW_TURN_S`, inserts rows 4-6; on SIGTERM close the host with that grace and print
  `closed` with the turn's outcome (`ok` or the error's class name).

Commands on the sharded kind `acct` (2 shard files; SYNC is `NORMAL` or `FULL`). A turn of
version v on an actor sets its cells `k0`-`k3` to v, appends log row v and sets its alarm to
`ALARM_BASE_MS + v`, yielding to the loop between statements (so turns of several actors queue
for the shard and commit in groups): an actor's state says which of its turns committed.

- `shard-crash SYNC POINT`: version 1 on every actor, print `acked` 1, then arm `POINT` (a
  SIGKILL there) and run version 2 on every actor concurrently.
- `shard-rounds SYNC [ROUNDS]`: versions 1, 2, ... on every actor concurrently, printing `acked`
  after each, until killed; or, given ROUNDS, that many, then `done`, closing the host.
- `shard-rounds-checkpointing SYNC`: `shard-rounds` with the WAL checkpointed every few
  kilobytes, so the checkpoint helper process runs rounds (held ones too) all the time; each
  `acked` also says the helper's pid and its rounds so far.
- `shard-dump SYNC`: print every actor's state as its turns read it (`states`).

The alarm handler appends its `retry_count` to `<DATA_DIR>.alarm-runs` before writing its row,
so a test can tell that the handler ran even when its turn never committed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from gateway.actors import Actor, ActorContext, ActorHost, ActorRef, AlarmInfo, wal
from gateway.actors.crash import arm
from gateway.actors.tables import TableSpec
from gateway.errors import ActorOwnedElsewhere

EXIT_OWNED_ELSEWHERE = 3
SLOW_TURN_S = 1.0
WAIT_S = 10.0
SHARDS = 2
ACCOUNTS = [f"a{i}" for i in range(8)]
CELLS = ("k0", "k1", "k2", "k3")
ALARM_BASE_MS = 4_000_000_000_000  # the year 2096: never due during a test
ACCT_TABLES = [
    TableSpec("cell", "k TEXT NOT NULL, v INTEGER NOT NULL", key=("k",)),
    TableSpec("log", "v INTEGER NOT NULL", key=("v",)),
]


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def marker_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".alarm-runs")


class Recorder(Actor):
    """Inserts rows; its alarm handler leaves a trace outside the database first."""

    marker: Path | None = None  # set by main()

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        ctx.sql.exec("CREATE TABLE IF NOT EXISTS rows (n INTEGER NOT NULL)")

    def insert(self, *ns: int) -> None:
        for n in ns:
            self.ctx.sql.exec("INSERT INTO rows (n) VALUES (?)", n)

    async def alarm(self, info: AlarmInfo) -> None:
        if self.marker is not None:
            with self.marker.open("a") as f:
                f.write(f"{info.retry_count}\n")
        self.insert(100 + info.retry_count)


class Account(Actor):
    """A sharded actor whose turns write several rows and its alarm (see the module docstring)."""

    async def write_version(self, v: int) -> None:
        t = self.ctx.tables
        for k in CELLS:
            t.insert("cell", {"k": k, "v": v}, conflict="update")
            await asyncio.sleep(0)  # mid-turn: other turns queue for the shard meanwhile
        t.insert("log", {"v": v})
        await asyncio.sleep(0)
        self.ctx.set_alarm(ALARM_BASE_MS + v)

    def state(self) -> dict[str, Any]:
        t = self.ctx.tables
        return {
            "cells": {str(r[0]): int(r[1]) for r in t.select("cell", "k, v", order="k")},
            "log": [int(r[0]) for r in t.select("log", "v", order="v")],
            "alarm": self.ctx.get_alarm(),
        }


async def write_round(host: ActorHost, v: int) -> None:
    async def turn(actor: Account) -> None:
        await actor.write_version(v)

    await asyncio.gather(*(host.call(ActorRef("acct", name), turn) for name in ACCOUNTS))


async def shard_main(command: str, data_dir: Path, args: list[str]) -> int:
    if command == "shard-rounds-checkpointing":
        wal.CHECKPOINT_INTERVAL_S = 0.01
        wal.CHECKPOINT_WAL_BYTES = 8 * 1024
    host = ActorHost(
        data_dir, {"acct": Account}, sharded={"acct": ACCT_TABLES}, shards=SHARDS, synchronous=args[0]
    )
    await host.start()
    try:
        if command == "shard-crash":
            await write_round(host, 1)
            emit("acked", version=1)
            arm(args[1], sigkill=True)
            await write_round(host, 2)
            emit("survived")  # the armed point was never reached
            return 1
        if command == "shard-rounds":
            rounds = int(args[1]) if len(args) > 1 else 1_000_000
            for v in range(1, rounds + 1):
                await write_round(host, v)
                emit("acked", version=v)
            emit("done")
            return 0
        if command == "shard-rounds-checkpointing":
            helper = host.checkpoint_helper
            assert helper is not None  # on by default
            for v in range(1, 1_000_000):
                await write_round(host, v)
                emit("acked", version=v, helper_pid=helper.pid, helper_rounds=helper.rounds)
            return 1
        if command == "shard-dump":

            async def read(actor: Account) -> dict[str, Any]:
                return actor.state()

            states = {name: await host.call(ActorRef("acct", name), read) for name in ACCOUNTS}
            emit("states", states=states)
            return 0
        emit("unknown_command", command=command)
        return 2
    finally:
        await host.close(5.0)


async def wait_until_no_alarm(host: ActorHost) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while host.pending_alarms:
        if loop.time() > deadline:
            raise TimeoutError("alarms still pending")
        await asyncio.sleep(0.01)
    await host.wait_idle()


async def main(command: str, data_dir: Path, args: list[str]) -> int:
    if command.startswith("shard-"):
        return await shard_main(command, data_dir, args)
    Recorder.marker = marker_path(data_dir)
    host = ActorHost(data_dir, {"rec": Recorder})
    try:
        await host.start()
    except ActorOwnedElsewhere as e:
        emit("owned_elsewhere", error=str(e))
        return EXIT_OWNED_ELSEWHERE
    try:
        return await run(command, host, args)
    finally:
        await host.close(5.0)


async def run(command: str, host: ActorHost, args: list[str]) -> int:  # noqa: PLR0911 - a dispatcher
    if command == "hold":
        emit("started")
        await asyncio.Event().wait()
        return 0
    if command == "start":
        emit("started")
        return 0
    if command == "write-turn":

        async def write(actor: Recorder) -> None:
            actor.insert(1, 2, 3)

        await host.call(ActorRef("rec", "crash"), write)
        emit("committed")
        return 0
    if command == "set-alarm":

        async def arm(actor: Recorder) -> None:
            actor.ctx.set_alarm(actor.ctx.clock.now_ms() - 1)

        await host.call(ActorRef("rec", "alarm"), arm)
        emit("alarm_set")
        await wait_until_no_alarm(host)
        emit("handled")
        return 0
    if command == "run-alarms":
        emit("started", pending=host.pending_alarms)
        await wait_until_no_alarm(host)
        emit("done")
        return 0
    if command == "slow-turn":
        return await slow_turn(host, float(args[0]))
    emit("unknown_command", command=command)
    return 2


async def slow_turn(host: ActorHost, grace_s: float) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def slow(actor: Recorder) -> None:
        actor.insert(1, 2, 3)
        emit("in_turn")
        await asyncio.sleep(SLOW_TURN_S)
        actor.insert(4, 5, 6)

    task = asyncio.ensure_future(host.call(ActorRef("rec", "slow"), slow))
    await stop.wait()
    await host.close(grace_s)
    try:
        await asyncio.wait_for(task, WAIT_S)
        outcome = "ok"
    except Exception as e:  # noqa: BLE001 - the outcome is what the test checks
        outcome = type(e).__name__
    emit("closed", turn=outcome)
    return 0


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])))
