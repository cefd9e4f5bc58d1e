"""The upstream conformance recording replayed against a real gateway process: 0 differ, on the
actor store alone (`cutover`) and in `write-through` with a real Redis serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.http.token_file import TOKEN_FILE
from gateway.testing.gateway_process import GatewayProcess, GatewayProcessError

REPO = Path(__file__).resolve().parents[2]
# The kit beside the clone (as CI has it), or where AGENT_COORD_SHARED says (a git worktree
# elsewhere, e.g. /work/wt/<name>, has no ../shared of its own).
SHARED = Path(os.environ.get("AGENT_COORD_SHARED") or REPO / ".." / "shared").resolve()
CONFORMANCE = SHARED / "conformance"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CONFORMANCE / "conformance.py").is_file(),
        reason=f"the shared conformance kit is not present at {CONFORMANCE} (set AGENT_COORD_SHARED)",
    ),
]


@pytest.fixture
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    """`agent-coord serve` as a subprocess on a free loopback port in `request.param`'s phase
    (with the test's private Redis unless `cutover`), stopped with SIGTERM."""
    phase: str = request.param
    redis_url: str | None = None if phase == "cutover" else request.getfixturevalue("redis_url")
    proc = GatewayProcess(tmp_path / "data", redis_url=redis_url, phase=phase, log_path=tmp_path / "gw.log")
    try:
        proc.start()
    except GatewayProcessError as e:
        pytest.fail(str(e))
    try:
        yield proc
    finally:
        proc.stop()


LOCAL_INTENDED = Path(__file__).with_name("conformance_intended.json")
"""The steps our deliberate fixes answer differently from the recording (docs/compatibility.md),
beyond the shared `intended.json`'s."""


def intended_file(tmp_path: Path) -> Path:
    """The shared intended file without its deferred `groups` (every route is served now), plus
    the project's own intended steps."""
    shared = json.loads((CONFORMANCE / "intended.json").read_text(encoding="utf-8"))
    local = json.loads(LOCAL_INTENDED.read_text(encoding="utf-8"))
    merged = {"about": shared.get("about", ""), "steps": {**shared.get("steps", {}), **local["steps"]}}
    path = tmp_path / "intended.json"
    path.write_text(json.dumps(merged), encoding="utf-8")
    return path


def admin_status(gateway: GatewayProcess) -> dict[str, object]:
    token = (gateway.data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"{gateway.url}/admin/status", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
        status: dict[str, object] = json.loads(r.read())
    return status


@pytest.mark.timeout(120)
@pytest.mark.parametrize("gateway", ["cutover", "write-through"], indirect=True)
def test_conformance_zero_differ(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Every recorded upstream step matches, improves or is an intended deviation; with Redis
    serving, every write also reached the actors (nothing waits in the repair queue)."""
    report = tmp_path / "report.md"
    done = subprocess.run(  # noqa: S603 - the shared player with our interpreter
        [
            sys.executable,
            str(CONFORMANCE / "conformance.py"),
            "compare",
            "--base",
            gateway.url,
            "--golden",
            str(CONFORMANCE / "golden-public.json"),
            "--intended",
            str(intended_file(tmp_path)),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not last.endswith(" 0 deferred, 0 differ"):
        detail = report.read_text() if report.exists() else ""
        pytest.fail(f"exit {done.returncode}: {last}\n{done.stdout}\n{done.stderr}\n{detail}")
    print(last)  # noqa: T201 - the result line, for the test log
    status = admin_status(gateway)
    queue = status["repairQueue"]
    assert status["phase"] == gateway.phase
    assert isinstance(queue, dict)
    assert queue["depth"] == 0
