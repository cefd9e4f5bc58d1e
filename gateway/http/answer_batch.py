"""The answers of one turn of the event loop sent together, at the next turn, not one by one.

Under load the event loop reads the requests of many connections in one poll, then runs their
handlers one after another. Written as each handler ends, their answers leave spread over the
whole turn, and a client on the same machine (wrk under issue 13's mix, an agent's tool beside
the gateway) is woken for each one: it reads that answer, sends its next request and sleeps
again before the next answer comes. Waking a sleeping process on the other core is the most
expensive part of a send (an inter-processor interrupt; in a virtual machine an exit to the
hypervisor): under the mix it was about 12 % of the gateway's CPU (perf, docs/benchmarks.md,
fifteenth pass). Sent back to back at the start of the next turn, the answers find the client
awake after the first: the same number of sends, one wake-up a turn instead of one an answer.

`AnswerBatch` holds the answers of the turn while other requests the loop has read are still
waiting for their handlers (`waiting`: requests the connections parsed, less those whose
handling began), and sends them, in the order they were made, by a callback scheduled when the
first was held: at the start of the next turn, after that turn's poll has read what arrived
meanwhile and before any of it runs. The last answer of a batch joins it. A request alone (one
client, one request at a time) is never held: nothing is waiting when it is answered, and
nothing is held, so it is written at once.

Why not send the batch with its last answer, at the end of the turn itself: then the loop, with
nothing left to run, blocks in its poll, wakes for the first of the clients' next requests and
serves a turn of one or two, answered at once, while the rest arrive for the turn after; the
turns fragment and the requests of the large ones wait about two turns. Tried (`eac50a3`): p99
x3.47-4.96 of the floor in eleven runs against x3.71-4.29 in four sent at the next turn
(docs/benchmarks.md, fifteenth pass).

Only `JsonAnswer`'s one-step answers are held (`gateway/http/responses.py`), and only when
nothing can come between the answer and its send on that connection: no pipelined request is
queued behind it, the connection is not closing or about to be closed, the request's body was
read to its end. Any other write on a connection happens in a later turn of its task, after the
callback. The counts only decide whether to hold; an answer is never lost or reordered by them
being off, which a lost connection can make them (they correct themselves: `waiting` is never
below 0).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import structlog
from aiohttp import http_writer

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

__all__ = ["AnswerBatch"]

log = structlog.get_logger(__name__)

_Held = tuple[asyncio.Transport, bytes, bytes]
_ALONE: Final = 1  # at most this many answers held: sent at once, no batch to speak of


class AnswerBatch:
    """Answers of a turn held until the start of the next (see the module docstring)."""

    __slots__ = ("_held", "_scheduled", "batches", "held_total", "received", "started", "unsent")

    def __init__(self) -> None:
        self.received = 0  # requests the connections parsed (data_received)
        self.started = 0  # requests whose handling began (or that will never begin)
        self._held: list[_Held] = []
        self._scheduled = False
        self.held_total = 0  # answers held, then sent with the turn's others (tests)
        self.batches = 0  # sends of more than one answer
        self.unsent = 0  # held answers whose connection closed before their send

    @property
    def waiting(self) -> int:
        """Requests read whose handling has not begun."""
        return max(0, self.received - self.started)

    def answer(self, protocol: RequestHandler, head: bytes, body: bytes, body_read: bool) -> bool:
        """Send `head` and `body` on `protocol`'s connection, now or with the turn's other
        answers at the start of the next. False, having done nothing, if the connection cannot
        take it (closing): the caller writes through aiohttp, which reports it."""
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return False
        if (
            (self.received > self.started or self._held)  # others of this turn: with them
            and body_read
            and not protocol._messages  # no pipelined request behind this one
            and not protocol._close
            and not protocol._force_close
        ):
            self._held.append((transport, head, body))
            self.held_total += 1
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_scheduled)
            return True
        self.send()  # what was held first (nothing of this connection can be among it)
        _write(transport, head, body)
        # a request counted as begun but never as read (a count gone wrong) is forgotten here
        self.received = max(self.received, self.started)
        return True

    def send(self) -> None:
        """Send every held answer now, in the order they were made."""
        held = self._held
        if not held:
            return
        self._held = []
        if len(held) > _ALONE:
            self.batches += 1
        for transport, head, body in held:
            if transport.is_closing():  # the client went away meanwhile: as if it had before
                self.unsent += 1
                log.debug("http.answer_unsent", bytes=len(head) + len(body))
                continue
            try:
                _write(transport, head, body)
            except Exception:  # one broken transport must not keep the others' answers back
                self.unsent += 1
                log.exception("http.answer_send_failed")

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.send()


def _write(transport: asyncio.Transport, head: bytes, body: bytes) -> None:
    """What aiohttp's `StreamWriter._writelines` does with the two parts."""
    if http_writer.SKIP_WRITELINES or len(head) + len(body) < http_writer.MIN_PAYLOAD_FOR_WRITELINES:
        transport.write(head + body)
    else:
        transport.writelines((head, body))
