"""S12 WebSockets held by the host (they survive eviction), frames in order after the commit,
web_socket_close exactly once, and the S17 socket limits (tags, tag length, attachment size)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost, ActorRef, HostedSocket
from gateway.errors import LimitExceeded
from gateway.testing.actors import CountingActor, FakeSocket, host_for

REF = ActorRef("c", "a")


def acceptor(sock: FakeSocket, tags: list[str], attachment: Any = None) -> Any:
    async def turn(actor: CountingActor) -> HostedSocket:
        return actor.ctx.accept_websocket(sock, tags, attachment)

    return turn


async def test_sockets_survive_eviction_and_reactivate_the_actor(
    host: ActorHost, kind: type[CountingActor]
) -> None:
    """After evict, a message on a held socket constructs the actor again, with attachment and tags intact."""
    red1, red2, blue = FakeSocket(), FakeSocket(), FakeSocket()
    hs_red1 = await host.call(REF, acceptor(red1, ["red", "all"], {"agent": "a1"}))
    hs_red2 = await host.call(REF, acceptor(red2, ["red", "all"], {"agent": "a2"}))
    hs_blue = await host.call(REF, acceptor(blue, ["blue", "all"]))

    async def remember(actor: CountingActor) -> None:
        actor.in_memory = 42

    await host.call(REF, remember)
    before = threading.active_count()
    assert await host.evict(REF) is True
    assert host.open_count == 0
    assert threading.active_count() <= before
    assert kind.counters.constructed == 1

    await host.deliver_ws_message(REF, hs_red1, "hello")
    assert kind.counters.constructed == 2
    assert kind.counters.messages == ["hello"]
    await hs_red1.flush(1.0)
    assert red1.sent == ["echo:hello"]
    assert hs_red1.deserialize_attachment() == {"agent": "a1"}

    async def look(actor: CountingActor) -> tuple[int, set[int], set[int]]:
        return (
            actor.in_memory,
            {id(s) for s in actor.ctx.get_websockets("red")},
            {id(s) for s in actor.ctx.get_websockets()},
        )

    in_memory, red, every = await host.call(REF, look)
    assert in_memory == 0, "an in-memory field survived eviction"
    assert red == {id(hs_red1), id(hs_red2)}
    assert every == {id(hs_red1), id(hs_red2), id(hs_blue)}
    assert host.get_websockets(REF, "blue") == [hs_blue]
    assert host.get_websockets(REF, "none") == []


async def test_close_from_the_client_calls_web_socket_close_once(
    host: ActorHost, kind: type[CountingActor]
) -> None:
    """A client close runs web_socket_close once and removes the socket; later events on it are ignored."""
    sock, other = FakeSocket(), FakeSocket()
    hs = await host.call(REF, acceptor(sock, ["t"]))
    keep = await host.call(REF, acceptor(other, ["t"]))
    await host.evict(REF)
    await host.deliver_ws_close(REF, hs, 1001, "going away")
    await host.deliver_ws_close(REF, hs, 1001, "going away")
    await host.deliver_ws_message(REF, hs, "late")
    assert kind.counters.closes == [1001]
    assert kind.counters.messages == []
    assert host.get_websockets(REF) == [keep]
    assert host.get_websockets(REF, "t") == [keep]


async def test_frames_keep_their_order_across_turns(host: ActorHost) -> None:
    """Frames from many turns and from host.send reach a socket in the order they were released."""
    sock = FakeSocket()
    hs = await host.call(REF, acceptor(sock, []))

    def sender(i: int) -> Any:
        async def turn(actor: CountingActor) -> None:
            actor.ctx.send(hs, f"{i}a")
            await asyncio.sleep(0)
            actor.ctx.send(hs, f"{i}b")

        return turn

    await asyncio.gather(*(host.call(REF, sender(i)) for i in range(20)))
    host.send([hs], "pushed")
    await hs.flush(1.0)
    assert sock.sent == [f"{i}{part}" for i in range(20) for part in "ab"] + ["pushed"]


async def test_close_websocket_waits_for_the_commit(host: ActorHost) -> None:
    """ctx.close_websocket closes only if the turn commits; a rolled-back turn leaves the socket open."""
    sock = FakeSocket()
    hs = await host.call(REF, acceptor(sock, []))

    async def close_then_raise(actor: CountingActor) -> None:
        actor.ctx.close_websocket(hs, 4000, "nope")
        raise RuntimeError("rolled back")

    async def close(actor: CountingActor) -> None:
        actor.ctx.send(hs, "bye")
        actor.ctx.close_websocket(hs, 4001, "done")

    with pytest.raises(RuntimeError):
        await host.call(REF, close_then_raise)
    await hs.flush(1.0)
    assert not sock.closed
    await host.call(REF, close)
    await hs.flush(1.0)
    assert sock.sent == ["bye"]
    assert (sock.closed, sock.close_code, sock.close_reason) == (True, 4001, "done")


async def test_a_dead_peer_does_not_break_the_actor(host: ActorHost) -> None:
    """A send that fails because the peer went away does not fail the turn or the actor."""
    sock = FakeSocket()
    hs = await host.call(REF, acceptor(sock, []))
    sock.fail_sends = True

    async def turn(actor: CountingActor) -> str:
        actor.ctx.send(hs, "lost")
        actor.put("k", 1)
        return "done"

    assert await host.call(REF, turn) == "done"
    await hs.flush(1.0)
    assert await host.call(REF, turn) == "done"


async def test_host_close_closes_held_sockets_with_1001(data_dir: Path) -> None:
    """Closing the host sends queued frames and then closes every held socket with 1001."""
    sock = FakeSocket()
    async with host_for(data_dir, {"c": CountingActor}) as host:
        hs = await host.call(REF, acceptor(sock, []))
        host.send([hs], "last")
    assert sock.sent == ["last"]
    assert (sock.closed, sock.close_code) == (True, 1001)


@pytest.mark.parametrize(
    ("tags", "attachment", "ok"),
    [
        (["t"] * 10, None, True),
        (["t"] * 11, None, False),
        (["x" * 256], None, True),
        (["x" * 257], None, False),
        ([], "x" * (16_384 - 2), True),  # JSON adds two quotes: exactly 16 KiB
        ([], "x" * (16_384 - 1), False),
    ],
)
async def test_socket_limits(host: ActorHost, tags: list[str], attachment: Any, ok: bool) -> None:
    """accept_websocket enforces DO's limits: 10 tags of 256 characters, a 16 KiB attachment."""
    turn = acceptor(FakeSocket(), tags, attachment)
    if ok:
        await host.call(REF, turn)
        assert len(host.get_websockets(REF)) == 1
    else:
        with pytest.raises(LimitExceeded):
            await host.call(REF, turn)
        assert host.get_websockets(REF) == []
