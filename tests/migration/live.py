"""Helpers of the migration tests that run real processes: `agent-coord migrate` as a subprocess,
and a writer that keeps changing entities through a running gateway's HTTP API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout

from gateway.bulk.items import parse_cursor
from gateway.domain.entities import EntityKey
from gateway.domain.jscompat import parse_js_date


def migrate_process(*argv: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`agent-coord migrate ...` as a process of its own (stdout and stderr into `log`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    clean.update(env or {})
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway.cli", "migrate", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean,
            cwd=Path.cwd(),
        )


@dataclass
class Acked:
    """The newest write the gateway acknowledged for each entity: its version (greater is newer,
    the rule of `gateway.bulk.versions`) and the fields it answered with."""

    versions: dict[EntityKey, tuple[int, ...]] = field(default_factory=dict)
    values: dict[EntityKey, dict[str, Any]] = field(default_factory=dict)
    during_import: int = 0


def _ms(text: Any) -> int:
    return (parse_js_date(str(text)) or 0) if text else 0


class Writer:
    """Changes entities through the gateway while an import is paused on a batch it has read
    (`gateway.bulk.pause`): for each batch, a few of its tasks (a PATCH moves `updatedAt`),
    agents (a registration moves `lastSeen`) and checkpoints, then the go-ahead. So the import
    always holds an older copy of something the gateway has just acknowledged."""

    PER_BATCH = 4

    def __init__(self, base_url: str, tasks: list[str], agents: list[str]) -> None:
        self.base = base_url.rstrip("/")
        self.tasks = set(tasks)
        self.agents = set(agents)
        self.acked = Acked()
        self.errors: list[str] = []
        self.batches = 0
        self._n = 0

    async def _call(self, session: ClientSession, method: str, path: str, body: Any) -> Any:
        data = None if body is None else orjson.dumps(body)
        async with session.request(method, self.base + path, data=data) as resp:
            raw = await resp.read()
            if resp.status != 200:
                self.errors.append(f"{method} {path} -> {resp.status} {raw[:200]!r}")
                return None
            return orjson.loads(raw)

    def _ack(self, key: EntityKey, version: tuple[int, ...], value: dict[str, Any]) -> None:
        if version >= self.acked.versions.get(key, ()):
            self.acked.versions[key] = version
            self.acked.values[key] = value
        self.acked.during_import += 1

    def _mine(self, key: EntityKey) -> bool:
        if key.domain == "task":
            return key.id in self.tasks
        if key.domain == "agent":
            return key.id in self.agents
        return key.domain == "checkpoint" and key.scope in self.agents

    async def change(self, session: ClientSession, key: EntityKey) -> None:
        """One acknowledged change of `key`, recorded with the version it gave the entity."""
        self._n += 1
        n = self._n
        if key.domain == "task":
            statuses = ["in-progress", "blocked", "done", "pending"]
            body = {"id": key.id, "status": statuses[n % len(statuses)], "assignee": f"writer-{n}"}
            got = await self._call(session, "PATCH", "/coordinator/tasks", body)
            if got is not None:
                task = got["task"]
                self._ack(key, (_ms(task["updatedAt"]),), task)
            return
        # neither answer below carries the new version: read it back (only this writer writes)
        if key.domain == "agent":
            body = {"agentId": key.id, "currentTask": f"t-{n}"}
            if await self._call(session, "POST", "/coordinator/agents", body) is not None:
                listed = await self._call(session, "GET", "/coordinator/agents", None)
                a = next(x for x in listed["agents"] if x.get("agentId", x.get("id")) == key.id)
                self._ack(key, (_ms(a["lastSeen"]),), a)
            return
        saved = {"conversationSummary": f"round {n}", "pendingWork": [f"w-{n}"]}
        if await self._call(session, "POST", f"/agent/{key.scope}/checkpoint", saved) is not None:
            cp = (await self._call(session, "GET", f"/agent/{key.scope}/checkpoint", None))["checkpoint"]
            self._ack(key, (_ms(cp["checkpointAt"]),), cp)

    async def follow(self, pause_dir: Path, proc: subprocess.Popen[bytes], *, timeout_s: float) -> int:
        """Serve the import's pause points until it exits; its exit status."""
        deadline = time.monotonic() + timeout_s
        headers = {"Content-Type": "application/json"}
        async with ClientSession(timeout=ClientTimeout(total=30), headers=headers) as session:
            n = 1
            while True:
                batch = pause_dir / f"{n}.keys"
                if batch.exists():
                    cursors = batch.read_text(encoding="utf-8").splitlines()
                    keys = [parse_cursor(c) for c in cursors]
                    for key in [k for k in keys if self._mine(k)][: self.PER_BATCH]:
                        await self.change(session, key)
                    (pause_dir / f"{n}.go").touch()
                    self.batches += 1
                    n += 1
                    continue
                if proc.poll() is not None:
                    return int(proc.returncode)
                if time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"migrate did not finish in {timeout_s} s")
                await asyncio.sleep(0.01)
