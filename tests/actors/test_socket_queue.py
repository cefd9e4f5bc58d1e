"""A socket's send queue is bounded in bytes: a client that stops reading is closed, not buffered."""

from __future__ import annotations

import asyncio

from gateway.actors import ActorRef, HostedSocket

REF = ActorRef("c", "a")


class StalledSocket:
    """A server-side socket whose peer never reads: every send waits until `unblock` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = False
        self.close_code: int | None = None
        self.unblock = asyncio.Event()

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self.unblock.wait()
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        self.close_code = code
        return True


async def test_a_reader_that_stops_is_closed_once_its_queue_passes_the_byte_limit() -> None:
    """Ten 100 KB frames to a peer that reads nothing, with a 256 KiB queue: the socket is closed
    with 1013 at once and its queue dropped, long before the frame count limit."""
    ws = StalledSocket()
    hs = HostedSocket(ws, REF, [], max_queued_bytes=262_144)
    frame = "x" * 100_000
    for _ in range(10):
        hs.enqueue(frame)
        await asyncio.sleep(0)
    await hs.flush(1.0)  # the peer still reads nothing: the close does not wait for it
    assert ws.close_code == 1013
    assert ws.sent == []
    assert (hs.queued, hs.queued_bytes) == (0, 0)
    hs.enqueue(frame)  # later frames are dropped
    assert hs.queued == 0


async def test_a_reader_that_keeps_up_is_not_closed() -> None:
    """The same frames to a peer that reads each one pass; the queue never holds more than one."""
    ws = StalledSocket()
    ws.unblock.set()
    hs = HostedSocket(ws, REF, [], max_queued_bytes=262_144)
    for _ in range(10):
        hs.enqueue("x" * 100_000)
        await hs.flush(1.0)
    assert len(ws.sent) == 10
    assert ws.close_code is None


async def test_one_frame_larger_than_the_limit_still_goes_to_an_idle_socket() -> None:
    """A single frame over the limit (a large state-sync) is sent when nothing else is queued."""
    ws = StalledSocket()
    ws.unblock.set()
    hs = HostedSocket(ws, REF, [], max_queued_bytes=1000)
    hs.enqueue("y" * 5000)
    await hs.flush(1.0)
    assert ws.sent == ["y" * 5000]
    assert ws.close_code is None
