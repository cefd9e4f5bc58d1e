"""Raw HTTP/1.1 over a socket, for requests no HTTP client will send: bytes that are not UTF-8 in
a header, a request line of 70 KB, an unknown method, a body cut off halfway.

`exchange` writes the bytes as given and reads one answer (to the end of its body, or until the
server closes), within a timeout.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

_LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n", re.IGNORECASE)

__all__ = ["RawAnswer", "exchange", "read_answer", "send_and_hang_up"]


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One HTTP answer as it came over the wire."""

    status: int
    headers: dict[str, str]  # names lowercased; the last of repeated headers wins
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip()


async def exchange(host: str, port: int, data: bytes, *, timeout_s: float = 10.0) -> RawAnswer:
    """Send `data` as is and read the answer's status line, headers and body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout_s)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await asyncio.wait_for(_read_chunked(reader), timeout_s)
        else:
            body = await asyncio.wait_for(reader.read(), timeout_s)
        return RawAnswer(status, headers, body)
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def send_and_hang_up(host: str, port: int, data: bytes, *, timeout_s: float = 10.0) -> None:
    """Send `data` (say, the head of a request and half its body) and close the connection."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader, *, timeout_s: float = 10.0) -> tuple[bytes, bytes]:
    """One answer of a keep-alive connection: its head as sent, and its body (by its
    Content-Length; none: no body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    match = _LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    body = await asyncio.wait_for(reader.readexactly(length), timeout_s) if length else b""
    return head, body
