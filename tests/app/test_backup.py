"""`agent-coord backup` and `agent-coord restore` with real processes (issue 15, "Build").

A gateway process serves writes from several threads while `agent-coord backup` (its own
process) takes a snapshot through the admin API; the backup is restored into a fresh directory, a
second gateway starts on it and answers every write acknowledged before the backup began. Without
a gateway the command copies the directory itself; a corrupted backup, a directory a gateway owns
and a non-empty one are refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backup.snapshot import MANIFEST
from gateway.testing.gateway_process import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_env")]


def agent_coord(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.cli ARGS` as its own process, as an operator runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **(env or {})},
    )


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        return resp.status, json.loads(resp.read() or b"null")


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.kill()


WARM_UP = 40  # writes acknowledged before the backup starts


class Writers:
    """Threads that create tasks and save checkpoints until stopped; what was acknowledged when."""

    def __init__(self, url: str, threads: int = 4, per_thread: int = 120) -> None:
        self.url = url
        self.stop = threading.Event()
        self.acked: list[str] = []  # task ids, in the order their 200 arrived
        self.warmed_up = threading.Event()  # set once WARM_UP writes were acknowledged
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i, per_thread)) for i in range(threads)]

    def _run(self, i: int, per_thread: int) -> None:
        for n in range(per_thread):
            if self.stop.is_set():
                return
            task_id = f"t-{i}-{n}"
            status, _ = call("POST", f"{self.url}/coordinator/tasks", {"id": task_id, "title": f"task {n}"})
            assert status == 200
            status, _ = call(
                "POST", f"{self.url}/agent/agent-{i}/checkpoint", {"conversationSummary": task_id}
            )
            assert status == 200
            with self.lock:
                self.acked.append(task_id)
                if len(self.acked) >= WARM_UP:
                    self.warmed_up.set()

    def acknowledged(self) -> list[str]:
        with self.lock:
            return list(self.acked)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_a_backup_under_write_load_restores_into_a_gateway_that_has_the_data(
    tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    """Through the running gateway (found by its lock, reached at the configured port): every
    write acknowledged before the backup began is served by a gateway started on the restore."""
    source = tmp_path / "a" / "data"
    source.parent.mkdir()
    proc = GatewayProcess(source)
    gateways.append(proc)
    proc.start()
    archive = tmp_path / "backup.tar.gz"
    with Writers(proc.url) as writers:
        assert writers.warmed_up.wait(timeout=60), "no writes acknowledged"
        before = writers.acknowledged()
        ran = agent_coord(
            "backup", "--out", str(archive), "--data-dir", str(source),
            env={"AGENT_COORD_SERVER_PORT": str(proc.port)},
        )  # fmt: skip
        during = len(writers.acknowledged()) - len(before)
    assert ran.returncode == 0, ran.stderr
    assert "through the gateway" in ran.stdout
    assert "verified" in ran.stdout
    assert during > 0, "the writers kept writing while the backup ran"
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert (manifest["phase"], manifest["source"]) == ("cutover", "gateway")
    paths = {f["path"] for f in manifest["files"]}
    assert {"host.sqlite", "control.sqlite", "repair.sqlite"} <= paths
    assert not paths & {"host.lock", "admin-token", "credentials.key"}

    restored = tmp_path / "b" / "data"
    done = agent_coord("restore", str(archive), "--data-dir", str(restored))
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout
    second = GatewayProcess(restored)
    gateways.append(second)
    second.start()
    _, listed = call("GET", f"{second.url}/coordinator/tasks?limit=1000")
    have = {t["id"] for t in listed["tasks"]}
    assert set(before) <= have
    for i in range(4):
        status, cp = call("GET", f"{second.url}/agent/agent-{i}/checkpoint")
        assert status == 200
        assert cp["checkpoint"]["conversationSummary"] in have  # a saved checkpoint, not none


def test_restore_verifies_and_refuses_what_it_must(tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    """Without a gateway, backup copies the directory itself. A changed byte, a truncated archive,
    a directory a gateway owns and a non-empty one (without --force) are refused, nothing written."""
    source = tmp_path / "a" / "data"
    source.parent.mkdir()
    proc = GatewayProcess(source)
    gateways.append(proc)
    proc.start()
    call("POST", f"{proc.url}/coordinator/tasks", {"id": "kept", "title": "in the backup"})
    assert proc.stop() == 0

    folder = tmp_path / "backup-dir"
    ran = agent_coord("backup", "--out", str(folder), "--data-dir", str(source))
    assert ran.returncode == 0, ran.stderr
    assert "directly (no gateway was running)" in ran.stdout
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"] == "data-dir"

    archive = tmp_path / "backup.tar"
    assert agent_coord("backup", "--out", str(archive), "--data-dir", str(source)).returncode == 0
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = tmp_path / "fresh"
    refused = agent_coord("restore", str(truncated), "--data-dir", str(target))
    assert refused.returncode == 1
    assert "refused" in refused.stderr

    corrupted = folder / "control.sqlite"
    raw = bytearray(corrupted.read_bytes())
    raw[200] ^= 0xFF
    corrupted.write_bytes(bytes(raw))
    refused = agent_coord("restore", str(folder), "--data-dir", str(target))
    assert refused.returncode == 1
    assert "control.sqlite: checksum mismatch" in refused.stderr
    assert not target.exists() or not any(target.iterdir())

    proc.start()  # the source directory is owned again
    owned = agent_coord("restore", str(archive), "--data-dir", str(source), "--force")
    assert owned.returncode == 1
    assert "running gateway owns" in owned.stderr
    assert proc.stop() == 0

    full = agent_coord("restore", str(archive), "--data-dir", str(source))
    assert full.returncode == 1
    assert "not empty" in full.stderr
    forced = agent_coord("restore", str(archive), "--data-dir", str(source), "--force")
    assert forced.returncode == 0, forced.stderr
    proc.start()
    _, listed = call("GET", f"{proc.url}/coordinator/tasks")
    assert [t["id"] for t in listed["tasks"]] == ["kept"]
