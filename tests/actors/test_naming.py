"""S16 a safe, injective name -> file mapping, and listing the names the host holds per kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef, actor_path
from gateway.errors import InvalidActorName
from gateway.testing.actors import CountingActor, host_for

TRICKY = [
    "main",
    "src/a.ts",
    "src\\a.ts",
    "a/b",
    "a_b",
    "a%2Fb",
    "..",
    ".",
    "../../etc/passwd",
    "/etc/passwd",
    "~root",
    "a\0b",
    "a\0c",
    "",
    " ",
    "\n",
    "Résumé",
    "Re\u0301sume\u0301",  # the same word, decomposed: a different name
    "MAIN",
    "日本語/パス",
    "🙂",
    "x" * 10_000,
    "x" * 9_999 + "y",
]


async def test_tricky_names_map_inside_the_data_dir_without_collisions(
    host: ActorHost, data_dir: Path
) -> None:
    """Names with '/', '..', NUL, unicode or 10,000 characters get distinct files inside the data dir."""
    paths = [actor_path(data_dir, ActorRef("c", name)) for name in TRICKY]
    assert len(set(paths)) == len(TRICKY)
    assert_inside(paths, data_dir / "c")

    async def remember(actor: CountingActor) -> None:
        actor.ctx.sql.exec("CREATE TABLE IF NOT EXISTS me (name TEXT)")
        actor.ctx.sql.exec("INSERT INTO me (name) VALUES (?)", actor.ctx.ref.name)

    async def recall(actor: CountingActor) -> list[str]:
        return [str(row[0]) for row in actor.ctx.sql.exec("SELECT name FROM me").all()]

    for name in TRICKY:
        await host.call(ActorRef("c", name), remember)
    for name in TRICKY:
        assert await host.call(ActorRef("c", name), recall) == [name]
    assert actor_files(data_dir) == {p.resolve() for p in paths}, "a file was created outside the mapping"


def assert_inside(paths: list[Path], root: Path) -> None:
    for path in paths:
        assert path.resolve().is_relative_to(root.resolve())
        assert len(path.name) < 100


def actor_files(data_dir: Path) -> set[Path]:
    return {p.resolve() for p in data_dir.rglob("*.sqlite")} - {(data_dir / "host.sqlite").resolve()}


async def test_list_actors_returns_every_name_of_a_kind(tmp_path: Path) -> None:
    """list_actors(kind) returns exactly the names activated under that kind, tricky ones included."""
    async with host_for(tmp_path / "data", {"c": CountingActor, "d": CountingActor}) as host:

        async def noop(actor: CountingActor) -> None:
            pass

        for name in TRICKY:
            await host.call(ActorRef("c", name), noop)
        await host.call(ActorRef("d", "only-d"), noop)
        await host.call(ActorRef("c", "main"), noop)  # activating again does not list twice
        assert sorted(host.list_actors("c")) == sorted(TRICKY)
        assert host.list_actors("d") == ["only-d"]
        assert host.list_actors("unknown") == []


def test_same_name_different_kinds_get_different_files(tmp_path: Path) -> None:
    """The kind is part of the mapping: agent 'x' and lock 'x' never share a file."""
    assert actor_path(tmp_path, ActorRef("agent", "x")) != actor_path(tmp_path, ActorRef("lock", "x"))


def test_mapping_is_pinned(tmp_path: Path) -> None:
    """The mapping never changes between versions (a changed hash would orphan every actor file)."""
    digest = "58766cb19d56b83ba9157da7a7f78e3d3cb0eb31c3b668037450be3d1f66f2e6"
    assert actor_path(tmp_path, ActorRef("c", "src/a.ts")) == tmp_path / "c" / "58" / f"{digest}.sqlite"


async def test_unencodable_name_is_rejected_without_a_file(host: ActorHost, data_dir: Path) -> None:
    """A name that is not valid text (a lone surrogate) fails with InvalidActorName and creates nothing."""

    async def noop(actor: CountingActor) -> None:
        pass

    with pytest.raises(InvalidActorName):
        await host.call(ActorRef("c", "bad\ud800"), noop)
    assert not (data_dir / "c").exists()


async def test_a_file_of_another_name_is_refused(host: ActorHost, data_dir: Path) -> None:
    """If the file at a name's path belongs to another name (copied or tampered), activation refuses it."""

    async def noop(actor: CountingActor) -> None:
        pass

    a, b = ActorRef("c", "a"), ActorRef("c", "b")
    await host.call(a, noop)
    await host.evict(a)
    target = actor_path(data_dir, b)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(actor_path(data_dir, a), target)
    with pytest.raises(InvalidActorName):
        await host.call(b, noop)
    assert not host.is_active(b)
