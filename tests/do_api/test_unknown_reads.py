"""Reads of agents, locks and resources that were never written leave the data directory as it was.

Before shards, each such read created the actor's SQLite file (any client could fill the disk by
reading random paths). Now an actor is stored only once it writes: its answer is the empty one it
always was, and no file, row or byte is added.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from gateway.actors.layout import host_files
from gateway.settings import Settings

from .conftest import Api

pytestmark = pytest.mark.actors_only("about the actor store's files")


def data_state(data_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of the data directory: its size and, but for SQLite's `-shm` reader marks, its bytes."""
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    assert set(files) >= {f.path for f in host_files(data_dir, sidecars=True)}
    return {
        str(p.relative_to(data_dir)): (p.stat().st_size, b"" if p.name.endswith("-shm") else p.read_bytes())
        for p in files
    }


async def test_reads_of_unknown_agents_and_locks_create_nothing(api: Api, settings: Settings) -> None:
    """GETs on 20 new agents and 20 new lock paths answer as before and change no file."""
    data = settings.storage.data_dir
    assert (await api.post("/lock/warm/lock", {"agentId": "w", "ttlMs": 60_000}))[0] == 200
    assert (await api.post("/agent/warm/memory", {"category": "c", "content": "x"}))[0] == 200
    before = data_state(data)
    for i in range(20):
        agent = f"/agent/ghost-{i}"
        lock = f"/lock/{quote(f'never/{i}.ts', safe='')}"
        assert await api.get(f"{agent}/checkpoint") == (200, {"checkpoint": None})
        assert (await api.get(f"{agent}/messages"))[1]["messages"] == []
        assert (await api.get(f"{agent}/messages?unread=true"))[1]["messages"] == []
        assert (await api.get(f"{agent}/memory?category=x&query=y"))[1]["memories"] == []
        assert (await api.get(f"{agent}/state"))[0] == 200
        assert await api.get(f"{lock}/check") == (200, {"locked": False, "resourcePath": f"never/{i}.ts"})
        assert (await api.get(f"{lock}/history"))[1]["history"] == []
        status, _ = await api.post(f"{lock}/unlock", {"agentId": "nobody"})
        assert status in (200, 404)
    assert data_state(data) == before
    assert api.host.list_actors("agent") == ["warm"]
    assert api.host.list_actors("lock") == ["warm"]
