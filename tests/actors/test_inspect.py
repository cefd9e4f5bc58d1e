"""`agent-coord actors`: read-only listing of a data directory's actors (aiosqlite)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef
from gateway.actors.inspect import count_rows, iter_actors
from gateway.actors.inspect_cli import list_actors
from gateway.cli import main
from gateway.testing.actors import KV_TABLES, CountingActor, KvActor, counting_kind


async def _fill(data_dir: Path, kind: type[CountingActor]) -> ActorHost:
    host = ActorHost(data_dir, {"c": kind, "d": kind})
    await host.start()
    for name in ("src/a.ts", "b", "../x"):

        async def put(actor: CountingActor, name: str = name) -> None:
            actor.put(name, 1)
            actor.put("other", 2)

        await host.call(ActorRef("c", name), put)

    async def alarm(actor: CountingActor) -> None:
        actor.ctx.set_alarm(1_800_000_000_000)

    await host.call(ActorRef("d", "with-alarm"), alarm)
    return host


async def test_lists_every_actor_with_rows_and_alarms_beside_a_live_host(tmp_path: Path) -> None:
    """Names, kinds, alarms and row counts are read while the host still runs (WAL readers)."""
    host = await _fill(tmp_path, counting_kind())
    try:
        infos = [i async for i in iter_actors(tmp_path)]
        assert [(i.kind, i.name) for i in infos] == [
            ("c", "../x"),
            ("c", "b"),
            ("c", "src/a.ts"),
            ("d", "with-alarm"),
        ]
        assert [i.alarm_ms for i in infos] == [None, None, None, 1_800_000_000_000]
        assert all(i.size_bytes > 0 and i.file.is_relative_to(tmp_path) for i in infos)
        assert await count_rows(infos[2].file) == {"kv": 2}
        only_d = [i.name async for i in iter_actors(tmp_path, "d")]
        assert only_d == ["with-alarm"]
    finally:
        await host.close(1.0)


async def test_json_output_has_one_object_per_actor(tmp_path: Path) -> None:
    """--json prints one parseable object per actor, with rows when asked."""
    host = await _fill(tmp_path, counting_kind())
    await host.close(1.0)
    out = io.StringIO()
    assert await list_actors(tmp_path, "c", rows=True, as_json=True, out=out) == 0
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["name"] for d in docs] == ["../x", "b", "src/a.ts"]
    assert docs[0]["rows"] == {"kv": 2}
    assert docs[0]["alarm"] is None


def test_a_directory_without_a_host_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointing the command at an empty directory says so and exits 2."""
    assert main(["actors", "--data-dir", str(tmp_path)]) == 2
    assert "no actor host index" in capsys.readouterr().err


async def test_sharded_actors_are_listed_with_their_rows_and_alarm(tmp_path: Path) -> None:
    """Actors kept in shard files are listed beside file actors, with rows per table, the bytes
    of their values and their alarm; an actor that only read is not listed."""
    host = ActorHost(tmp_path, {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=2)
    await host.start()
    try:

        async def fill(actor: KvActor) -> None:
            actor.put("k1", 1)
            actor.put("k2", 2)
            actor.ctx.set_alarm(1_800_000_000_000)

        await host.call(ActorRef("kv", "b"), fill)
        await host.call(ActorRef("kv", "a"), lambda actor: asyncio.sleep(0, actor.put("k", 1)))
        await host.call(ActorRef("kv", "reader"), lambda actor: asyncio.sleep(0, actor.get("k")))
    finally:
        await host.close(1.0)
    infos = [i async for i in iter_actors(tmp_path, "kv")]
    assert [(i.name, i.rows, i.alarm_ms) for i in infos] == [
        ("a", {"kv": 1, "log": 0}, None),
        ("b", {"kv": 2, "log": 0}, 1_800_000_000_000),
    ]
    assert infos[1].size_bytes > infos[0].size_bytes > 0
    out = io.StringIO()
    assert await list_actors(tmp_path, None, rows=True, as_json=True, out=out) == 0
    assert [json.loads(line)["rows"] for line in out.getvalue().splitlines()] == [
        {"kv": 1, "log": 0},
        {"kv": 2, "log": 0},
    ]
