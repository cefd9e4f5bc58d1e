"""docs/operations.md against what it describes: the systemd unit (verified and started), and
every exported metric."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import LegacySettings, MigrationSettings, Settings, StorageSettings
from gateway.testing.gateway_process import free_port

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "agent-coord.service"
OPERATIONS = REPO / "docs" / "operations.md"
AGENT_COORD = Path(sys.executable).with_name("agent-coord")


def unit_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"{key}=")
    ]


def test_the_unit_in_the_docs_is_the_committed_one() -> None:
    """operations.md shows config/agent-coord.service exactly."""
    assert f"```ini\n{UNIT.read_text(encoding='utf-8')}```" in OPERATIONS.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this installation)."""
    unit = tmp_path / "agent-coord.service"
    [exec_start] = unit_lines("ExecStart")
    text = UNIT.read_text(encoding="utf-8").replace(exec_start.split()[0], str(AGENT_COORD))
    unit.write_text(text, encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    done = subprocess.run(  # noqa: S603 - a fixed system tool on our own file
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "agent-coord.service" not in done.stderr, done.stderr  # no warnings about the unit


@pytest.mark.slow
def test_the_unit_command_and_environment_serve_and_stop_cleanly(tmp_path: Path) -> None:
    """The unit's ExecStart with its Environment= (data directory and port moved to the test's)
    serves /ready, and SIGTERM stops it with exit code 0 within the unit's TimeoutStopSec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    for assignment in unit_lines("Environment"):
        name, _, value = assignment.partition("=")
        env[name] = value
    port = free_port()
    env["AGENT_COORD_STORAGE_DATA_DIR"] = str(tmp_path / "data")
    env["AGENT_COORD_SERVER_PORT"] = str(port)
    [exec_start] = unit_lines("ExecStart")
    command = [str(AGENT_COORD), *exec_start.split()[1:]]
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, OSError):
                assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                assert time.monotonic() < deadline, "the gateway did not become ready"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        [stop_timeout] = unit_lines("TimeoutStopSec")
        assert proc.wait(float(stop_timeout)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


async def test_every_exported_metric_is_described(tmp_path: Path, redis_url: str) -> None:
    """Each metric family /admin/metrics exports (with Redis, shadow reads and replication on) has
    a row in operations.md, and each row names a metric that exists."""
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path / "data"),
        legacy=LegacySettings(redis_url=redis_url),
        migration=MigrationSettings(phase="write-through", admin_token="t", shadow_sample_rate=1.0),
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        base = f"http://{server.host}:{server.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/coordinator/agents", json={"agentId": "a"}) as resp:
                assert resp.status == 200
            async with session.get(f"{base}/coordinator/agents") as resp:
                assert resp.status == 200
            async with session.get(f"{base}/admin/metrics", headers={"Authorization": "Bearer t"}) as resp:
                text = await resp.text()
    finally:
        await server.close()
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    rows = OPERATIONS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `((?:agent_coord|process|python)_[a-z_]+)", rows, re.MULTILINE))
    assert exported == documented
