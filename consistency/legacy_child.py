"""The legacy scan's process started early: `Child`, with nothing but the standard library.

`agent-coord check --jobs 2` starts the second process (`consistency.legacy_proc`) as the first
thing it does once its arguments are read, before it loads its settings and imports the stores'
modules, so the two interpreters' start-ups and imports overlap. This module is what that needs
and no more: importing `consistency.legacy_proc` itself would import the legacy side (Redis,
the mapping) in the checking process first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import IO, TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["PART_IMPORTS", "Child", "wait"]

_BOOT: Final = (
    "import gc, pickle, sys\n"
    "gc.disable()\n"
    "sys.path[:], first = pickle.load(sys.stdin.buffer)\n"
    "from consistency.legacy_proc import child_main\n"
    "child_main(sys.stdin.buffer, first)\n"
)
"""The child's command (`python -c`): the parent's import path first, then `child_main`, which
imports what the scan needs (and the modules `Child.start` named) and waits for its orders
(`Child.send`). The cyclic collector is off until the walk begins (`fewer_collections` turns it
on): the imports' objects all live on (`gateway.bulk.gc_pause.no_collections`)."""


PART_IMPORTS: Final = (
    "consistency.check",
    "consistency.split",
    "gateway.bulk.actor_side",
    "gateway.actors.shard_reader",
)
"""What the second process of a split check (`consistency.split`) imports before its orders."""


class Child:
    """The legacy scan's process, started before it is needed (`start`: while the checking
    process opens its stores, the child starts its interpreter and imports its modules), and
    the read end of its pipe.

    A fresh interpreter (`subprocess`: no fork of this process with its threads, and no
    `multiprocessing` resource tracker, a third process of about 12 MB): it is given this
    process's import path, then its orders (`send`), on its stdin, and writes to a pipe it
    inherits (`pass_fds`)."""

    def __init__(self, proc: subprocess.Popen[bytes], read_fd: int, write_fd: int) -> None:
        self.proc = proc
        self.conn = Connection(read_fd, writable=False)
        self.write_fd = write_fd  # the child's end: its number in the child too
        self.sent = False

    @classmethod
    def start(cls, imports: tuple[str, ...] = ()) -> Child:
        """The child started; it imports the legacy scan's modules and `imports` meanwhile (a
        split check's part: `consistency.split.PART_IMPORTS`)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(  # noqa: S603 - this interpreter, our own code
                [sys.executable, "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,  # stdout holds the report; the child logs to stderr
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        child = cls(proc, read_fd, write_fd)
        child._write(pickle.dumps((list(sys.path), imports)), close=False)
        return child

    def send(self, settings: Settings, url: str, args: Any, *, kind: str = "scan") -> None:
        """The child's orders: it scans (`kind` "scan": `consistency.legacy_proc._child`) or walks
        a part of a check (`kind` "part": `consistency.split.child_part`) once it has them."""
        self.sent = True
        payload = pickle.dumps((kind, settings, url, args), protocol=pickle.HIGHEST_PROTOCOL)
        self._write(pickle.dumps((self.write_fd, payload), protocol=pickle.HIGHEST_PROTOCOL), close=True)

    def _write(self, data: bytes, *, close: bool) -> None:
        stdin = cast("IO[bytes]", self.proc.stdin)
        try:
            stdin.write(data)
            stdin.flush()
            if close:
                stdin.close()
        except OSError:  # the child is gone already: its end of the pipe says so (EOF)
            pass

    def discard(self) -> None:
        """An unused child: no orders (it ends), its pipe closed."""
        with contextlib.suppress(OSError):
            cast("IO[bytes]", self.proc.stdin).close()
        wait(self.proc, 5)
        if self.proc.poll() is None:
            self.proc.kill()
            wait(self.proc, 5)
        self.conn.close()


def wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits for `proc` to end, at most `timeout` seconds."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
