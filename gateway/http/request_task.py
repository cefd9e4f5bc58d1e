"""Each request handled in its connection's task, not in a task of its own.

aiohttp's `RequestHandler.start` (the task that serves one connection) wraps every request in a
new task, `loop.create_task(self._handle_request(...))`, and waits for it: on Python 3.12 and
later with `eager_start=True`, so the handler runs at once and a task is only scheduled if it has
to wait; on 3.11, which has no eager tasks, as a plain task. That costs every request a `Task`
object, one more turn of the loop before the handler starts (its first step is scheduled with
`call_soon`), and one more when it ends (the connection's task is woken by a done callback).
aiohttp takes the task for one reason only: the handler's context variables must not leak into
the next request of the same connection (aiohttp #3406).

`inline_request_factory` is a task factory for the event loop that recognises that one
coroutine (by its code object, nothing else) and, instead of a task, hands back an
`InlineRequest`: an awaitable that runs the coroutine inside the task awaiting it, the
connection's, each of its steps in a copy of the context taken when the factory was called, as
a new task would have. Every other coroutine gets the task the loop would have made.

What stays the same: the handler's context variables are its own (copied from the
connection's, never written back); cancelling the connection's task (aiohttp does when the
client goes away and `handler_cancellation` is on, or at shutdown) cancels the handler, as
cancelling the awaited task did; an exception or a return ends the await as it ended the task's.
What differs: `asyncio.current_task()` inside a handler is the connection's task (aiohttp's
`request.task` was already that one), and `asyncio.timeout` inside a handler cancels and
uncancels the connection's task, which is what it is for.

On Python 3.12 and later aiohttp's eager task already runs the handler at once; the factory is
installed on 3.11 only (`install`).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, Final

from aiohttp.web_protocol import RequestHandler

__all__ = ["InlineRequest", "inline_request_factory", "install"]

_HANDLE_REQUEST_CODE: Final = RequestHandler._handle_request.__code__


class InlineRequest:
    """Awaiting it runs `coro` to its end in the awaiting task, every step in `context`."""

    __slots__ = ("_context", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> None:
        self._coro = coro
        self._context = context

    def __await__(self) -> Generator[Any, None, Any]:
        coro = self._coro
        run = self._context.run
        send = coro.send
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    yielded = run(send, value)
                else:
                    yielded = run(coro.throw, error)
                    error = None
            except StopIteration as stop:
                return stop.value
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()  # the awaiting task is being closed: close the handler with it
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on: the handler gets it, cancellation too
                error = exc
                value = None


def inline_request_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    *,
    context: contextvars.Context | None = None,
    **kwargs: Any,
) -> Any:
    """The loop's task factory: aiohttp's per-request coroutine becomes an `InlineRequest`,
    any other coroutine a task, as without a factory."""
    if getattr(coro, "cr_code", None) is _HANDLE_REQUEST_CODE:
        return InlineRequest(coro, contextvars.copy_context() if context is None else context)
    return asyncio.Task(coro, loop=loop, context=context, **kwargs)


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Set the factory on `loop` where it helps (Python 3.11, and no factory set already);
    returns whether it did."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return False
    loop.set_task_factory(inline_request_factory)  # type: ignore[arg-type]  # not a Future for one coroutine
    return True
