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

from gateway.actors import Actor, ActorContext, ActorHost, ActorRef, AlarmInfo
from gateway.errors import ActorOwnedElsewhere

EXIT_OWNED_ELSEWHERE = 3
SLOW_TURN_S = 1.0
WAIT_S = 10.0


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


async def wait_until_no_alarm(host: ActorHost) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while host.pending_alarms:
        if loop.time() > deadline:
            raise TimeoutError("alarms still pending")
        await asyncio.sleep(0.01)
    await host.wait_idle()


async def main(command: str, data_dir: Path, args: list[str]) -> int:
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
