"""The upstream conformance recording replayed against a real gateway process: 0 differ."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared").resolve()
CONFORMANCE = SHARED / "conformance"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CONFORMANCE / "conformance.py").is_file(),
        reason=f"the shared conformance kit is not present at {CONFORMANCE}",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    """`agent-coord serve` as a subprocess on a free loopback port, stopped with SIGTERM."""
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gateway did not start: {(tmp_path / 'gateway.log').read_text()}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.timeout(120)
def test_conformance_zero_differ(gateway_url: str, tmp_path: Path) -> None:
    """Every recorded upstream step matches, improves or is an intended deviation."""
    report = tmp_path / "report.md"
    done = subprocess.run(  # noqa: S603 - the shared player with our interpreter
        [
            sys.executable,
            str(CONFORMANCE / "conformance.py"),
            "compare",
            "--base",
            gateway_url,
            "--golden",
            str(CONFORMANCE / "golden-public.json"),
            "--intended",
            str(CONFORMANCE / "intended.json"),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not last.endswith(" 0 differ"):
        detail = report.read_text() if report.exists() else ""
        pytest.fail(f"exit {done.returncode}: {last}\n{done.stdout}\n{done.stderr}\n{detail}")
    print(last)  # noqa: T201 - the result line, for the test log
