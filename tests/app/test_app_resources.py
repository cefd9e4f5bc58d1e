"""gateway.app: each resource is opened and closed by its own cleanup generator."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import HOST, create_app
from gateway.clock import FakeClock
from gateway.do.actor_store import build_actor_host
from gateway.errors import StartupRefused
from gateway.phases.control import PhaseControl
from gateway.settings import LimitSettings, Settings, StorageSettings


async def test_a_start_refused_after_the_host_started_still_closes_the_host(tmp_path: Path) -> None:
    """A data directory left in `write-through` with no Redis configured: the migration runtime
    refuses to start after the actor host started, and the host is closed again (its directory
    lock released, so another host can start there)."""
    data = tmp_path / "data"
    PhaseControl(data, FakeClock(), "write-through").close()  # an operator's phase, persisted
    app = create_app(Settings(storage=StorageSettings(data_dir=data)), clock=FakeClock())
    server = TestServer(app)
    with pytest.raises(StartupRefused, match="write-through"):
        await server.start_server()
    await server.close()  # what aiohttp's runner does after a failed start: the cleanup contexts
    assert HOST in app  # the host had started
    again = build_actor_host(data, LimitSettings())
    await again.start()  # ActorOwnedElsewhere if the first host still held the directory
    await again.close()
