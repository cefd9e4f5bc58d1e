"""The coordinator and agent WebSockets with real clients (do-api.md 8)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
from typing import Any

import orjson
import pytest
from aiohttp import ClientWebSocketResponse, ClientWSTimeout, WSMsgType, WSServerHandshakeError

from gateway.clock import FakeClock
from gateway.do import COORDINATOR
from gateway.settings import Settings

from .conftest import Api, start_api, with_limits

OFFLINE_X = {
    "type": "agent-update",
    "payload": {"agentId": "x", "status": "offline"},
    "timestamp": "2026-11-25T17:28:47.041Z",
}


async def recv(ws: ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def test_welcome_ping_and_close(api: Api, clock: FakeClock) -> None:
    """Welcome agent-update with the newcomer; pong without payload; the close handshake completes."""
    ws = await api.ws("/coordinator?agentId=alice")
    welcome = await recv(ws)
    assert list(welcome) == ["type", "payload", "timestamp"]
    assert welcome["type"] == "agent-update"
    assert welcome["payload"]["message"] == "Welcome alice!"
    assert [a["agentId"] for a in welcome["payload"]["agents"]] == ["alice"]
    await ws.send_str('{"type":"ping"}')
    assert await recv(ws) == {"type": "pong", "timestamp": "2026-11-25T17:28:47.041Z"}
    await ws.send_str("not json")
    await ws.send_str('{"type":"ping","payload":{},"timestamp":"2026-01-01T00:00:00.000Z"}')
    assert (await recv(ws))["type"] == "pong"
    await ws.close()
    assert ws.close_code == 1000


async def test_two_clients_see_chat_and_tasks_in_order(api: Api, clock: FakeClock) -> None:
    """Chat over WS and HTTP and task updates reach both sockets, the sender too, in order."""
    a = await api.ws("/coordinator?agentId=a")
    b = await api.ws("/coordinator?agentId=b")
    await recv(a)
    await recv(b)
    await a.send_str(orjson.dumps({"type": "chat", "payload": {"author": "a", "message": "one"}}).decode())
    # a WS frame and a later request on another connection have no order until the frame is
    # processed (as with any server): wait for the sender's own copy before posting "two"
    first_on_a = await recv(a)
    await api.post("/coordinator/chat", {"author": "b", "message": "two"})
    await api.post("/coordinator/tasks", {"id": "t1", "title": "T"})
    await api.call("PATCH", "/coordinator/tasks", {"id": "t1", "status": "done"})
    for ws in (a, b):
        frames = [first_on_a] if ws is a else []
        frames += [await recv(ws) for _ in range(4 - len(frames))]
        assert [f["type"] for f in frames] == ["chat", "chat", "task-update", "task-update"]
        assert [f["payload"]["message"] for f in frames[:2]] == ["one", "two"]
        assert frames[0]["timestamp"] == frames[0]["payload"]["timestamp"]
        assert frames[2]["payload"]["id"] == "t1"
        assert "description" not in frames[2]["payload"]
        assert frames[3]["payload"]["status"] == "done"
    await a.close()
    await b.close()


async def test_closed_socket_marks_agent_offline(api: Api, clock: FakeClock) -> None:
    """Closing a socket marks its agent offline and tells the others; a second socket keeps it online."""
    watcher = await api.ws("/coordinator?agentId=w")
    await recv(watcher)
    first = await api.ws("/coordinator?agentId=x")
    second = await api.ws("/coordinator?agentId=x")
    await recv(first)
    await recv(second)
    await first.close()
    await api.get("/health")
    assert "x" in [a["agentId"] for a in (await api.get("/coordinator/agents"))[1]["agents"]]
    await second.close()
    frame = await recv(watcher)
    assert frame["type"] == "agent-update"
    assert frame["payload"] == {"agentId": "x", "status": "offline"}
    assert [a["agentId"] for a in (await api.get("/coordinator/agents"))[1]["agents"]] == ["w"]
    await watcher.close()


async def test_close_survives_the_cancellation_of_its_handler(api: Api) -> None:
    """A socket whose handler is cancelled (its client went away) while the close waits for the
    busy coordinator still closes: its agent goes offline and the others are told."""
    watcher = await api.ws("/coordinator?agentId=w")
    await recv(watcher)
    x = await api.ws("/coordinator?agentId=x")
    await recv(x)
    # a coordinator write without frames: once answered, the socket opens have fully run
    await api.post("/coordinator/zones", {"action": "claim", "zoneId": "z", "path": "p", "owner": "w"})
    release = asyncio.Event()
    busy = asyncio.ensure_future(api.host.call(COORDINATOR, lambda _actor: release.wait()))
    await asyncio.sleep(0.01)  # the coordinator is now in that turn
    await x.close()  # the handler's close waits for the coordinator; the connection then drops
    await asyncio.sleep(0.05)  # aiohttp cancels the handler (TestServer: handler_cancellation)
    release.set()
    await busy
    assert await recv(watcher) == OFFLINE_X
    assert [a["agentId"] for a in (await api.get("/coordinator/agents"))[1]["agents"]] == ["w"]
    await watcher.close()


async def test_open_survives_the_cancellation_of_its_handler(api: Api) -> None:
    """A client that goes away while its socket is still being opened (the coordinator is busy)
    leaves no socket held: the open finishes, then the close runs, and the agent is offline."""
    watcher = await api.ws("/coordinator?agentId=w")
    await recv(watcher)
    await api.post("/coordinator/zones", {"action": "claim", "zoneId": "z", "path": "p", "owner": "w"})
    release = asyncio.Event()
    busy = asyncio.ensure_future(api.host.call(COORDINATOR, lambda _actor: release.wait()))
    await asyncio.sleep(0.01)
    x = await api.session.ws_connect(
        api.url("/coordinator?agentId=x"), timeout=ClientWSTimeout(ws_close=0.05)
    )
    await x.close()  # no answer while the open waits: the client gives up and drops the connection
    await asyncio.sleep(0.05)
    release.set()
    await busy
    assert await recv(watcher) == OFFLINE_X
    assert [(h.tags, h.closed) for h in api.host.get_websockets(COORDINATOR)] == [(("w",), False)]
    await watcher.close()


async def test_a_ping_does_not_read_mentions(api: Api, clock: FakeClock) -> None:
    """A socket ping refreshes presence but leaves the mention cursor (compatibility.md 17)."""
    await api.post("/coordinator/agents", {"agentId": "alice"})
    ws = await api.ws("/coordinator?agentId=alice")
    await recv(ws)
    await clock.advance(1)
    await api.post("/coordinator/chat", {"author": "bob", "message": "@alice look"})
    await recv(ws)
    await clock.advance(1)
    await ws.send_str('{"type":"ping"}')
    assert (await recv(ws))["type"] == "pong"
    await api.settle()
    inbox = (await api.get("/coordinator/chat?agentId=alice&inbox=true"))[1]
    await ws.close()
    assert [m["message"] for m in inbox["messages"]] == ["@alice look"]


async def test_client_agent_update_sets_status_silently(api: Api) -> None:
    """A client agent-update frame sets the status with no broadcast and no reply."""
    a = await api.ws("/coordinator?agentId=a")
    await recv(a)
    await a.send_str('{"type":"agent-update","payload":{"status":"idle"}}')
    await a.send_str('{"type":"chat","payload":{"author":"a","message":"barrier"}}')
    assert (await recv(a))["type"] == "chat"  # frames run in order: the update ran before this
    assert (await api.get("/coordinator/agents"))[1]["agents"][0]["status"] == "idle"
    await a.close()


async def test_anonymous_socket(api: Api) -> None:
    """Any /coordinator sub-path upgrades; without agentId the agent is anon-<ms>-<rand>."""
    ws = await api.ws("/coordinator/any/sub/path")
    welcome = await recv(ws)
    assert welcome["payload"]["message"].startswith("Welcome anon-1795627727041-")
    await ws.close()


async def test_lock_updates_are_broadcast(api: Api, clock: FakeClock) -> None:
    """lock-update frames on lock, unlock and expiry reach coordinator sockets."""
    ws = await api.ws("/coordinator?agentId=w")
    await recv(ws)
    await api.post("/lock/p/lock", {"agentId": "a", "ttlMs": 60000})
    await api.post("/lock/p/unlock", {"agentId": "a"})
    await api.post("/lock/p/lock", {"agentId": "b", "ttlMs": 1000})
    await clock.advance(1000)
    await api.host.wait_idle()
    frames = [await recv(ws) for _ in range(4)]
    assert [f["type"] for f in frames] == ["lock-update"] * 4
    assert [f["payload"]["action"] for f in frames] == ["locked", "unlocked", "locked", "expired"]
    assert frames[0]["payload"]["lock"]["lockedBy"] == "a"
    assert frames[3]["payload"] == {
        "action": "expired",
        "resourcePath": "p",
        "previousOwner": "b",
        "releaseReason": "expired",
    }
    await ws.close()


async def test_agent_socket(api: Api, clock: FakeClock) -> None:
    """state-sync on connect, DMs pushed as `chat` to every socket, checkpoint-save answered."""
    e1 = await api.ws("/agent/wsa/ws")
    e2 = await api.ws("/agent/wsa")
    sync = await recv(e1)
    assert sync["type"] == "state-sync"
    assert sync["payload"] == {
        "agentId": "wsa",
        "checkpoint": None,
        "unreadMessages": [],
        "recentMemories": [],
    }
    await recv(e2)
    await api.post("/agent/wsa/messages", {"from": "alice", "message": "push me"})
    for ws in (e1, e2):
        frame = await recv(ws)
        assert frame["type"] == "chat"
        assert frame["payload"]["message"] == "push me"
    await e1.send_str('{"type":"checkpoint-save","payload":{"conversationSummary":"ws","pendingWork":["x"]}}')
    assert await recv(e1) == {"type": "checkpoint-saved", "timestamp": "2026-11-25T17:28:47.041Z"}
    cp = (await api.get("/agent/wsa/checkpoint"))[1]["checkpoint"]
    assert (cp["conversationSummary"], cp["pendingWork"]) == ("ws", ["x"])
    await e1.close()
    await e2.close()


async def test_lock_path_does_not_upgrade(api: Api) -> None:
    """An upgrade request on a lock path gets the plain JSON answer."""
    resp = await api.request(
        "GET", "/lock/p/check", headers={"Upgrade": "websocket", "Connection": "Upgrade"}
    )
    assert resp.status == 200
    assert await resp.json() == {"locked": False, "resourcePath": "p"}


@pytest.mark.actors_only("closes the actor host under the running app")
async def test_a_socket_that_cannot_be_opened_after_the_upgrade_is_closed_with_a_code(api: Api) -> None:
    """When the store refuses a socket after the 101 (the host is shutting down), the client gets a
    close frame 1013 (try again later) instead of an HTTP answer written into the socket."""
    await api.host.close(1.0)
    ws = await api.ws("/coordinator?agentId=late")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE
    assert ws.close_code == 1013
    await ws.close()


async def test_sockets_per_agent_are_capped_before_the_upgrade(settings: Settings, clock: FakeClock) -> None:
    """With websockets_per_agent = 3, a fourth socket of one agent (coordinator or agent socket)
    is a 429 JSON answer before the upgrade; when one closes, the next is accepted; other agents
    are not affected."""
    server, session = await start_api(with_limits(settings, websockets_per_agent=3), clock)
    try:
        api = Api(server, session)
        held = [await api.ws("/coordinator?agentId=x") for _ in range(2)]
        held.append(await api.ws("/agent/x"))
        for path in ("/coordinator?agentId=x", "/agent/x"):
            with pytest.raises(WSServerHandshakeError) as refused:
                await api.ws(path)
            assert refused.value.status == 429
        resp = await api.request("GET", "/agent/x", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        assert (resp.status, (await resp.json())["maxSockets"]) == (429, 3)
        other = await api.ws("/agent/y")
        await held.pop().close()
        await api.settle()
        again = await api.ws("/agent/x")
        assert (await recv(again))["type"] == "state-sync"
        for ws in (*held, other, again):
            await ws.close()
    finally:
        await session.close()
        await server.close()


async def open_raw_socket(api: Api, path: str) -> socket.socket:
    """A WebSocket handshake over a plain socket with a 4 KiB receive buffer, which then reads
    nothing: a client that stopped reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (api.server.host, api.server.port))
    key = base64.b64encode(b"0123456789abcdef").decode()
    await loop.sock_sendall(
        sock,
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.mark.actors_only("looks at the sockets the actor host holds")
async def test_a_client_that_stops_reading_is_closed_and_its_frames_dropped(
    settings: Settings, clock: FakeClock
) -> None:
    """A coordinator socket that reads nothing while 8 MB of chat is posted: its queued frames never
    pass the 256 KiB limit, it is closed, and a reading socket gets every message."""
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, ws_send_queue_max_bytes=262_144)
    )
    server, session = await start_api(settings, clock)
    try:
        api = Api(server, session)
        stalled = await open_raw_socket(api, "/coordinator?agentId=stalled")
        reader = await api.ws("/coordinator?agentId=reader")
        await recv(reader)
        [held] = api.host.get_websockets(COORDINATOR, "stalled")
        most_queued = 0
        for i in range(130):
            await api.post("/coordinator/chat", {"author": "a", "message": f"{i:03d}" + "x" * 60_000})
            most_queued = max(most_queued, held.queued_bytes)
            assert (await recv(reader))["payload"]["message"].startswith(f"{i:03d}")
        assert most_queued <= 262_144
        assert held.closed or held.queued == 0
        assert api.host.get_websockets(COORDINATOR, "stalled") in ([], [held])
        stalled.close()
        await reader.close()
    finally:
        await session.close()
        await server.close()
