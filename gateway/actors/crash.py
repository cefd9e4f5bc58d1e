"""Crash points for subprocess tests of durability (S4, S9(g) of the actor runtime spec).

`crash_point("turn.before_commit")` ends the process at once, with no cleanup, when the
environment variable `AGENT_COORD_CRASH_AT` names that point. Tests start a gateway or a host
in a subprocess with the variable set, and check after a restart that what was not committed
is absent and what was committed is present. A test runner may instead `arm` a point once its
set-up turns are done, and ask for a real SIGKILL rather than `os._exit`. The check is one
comparison with None when nothing is armed, so the points can stay in the hot path.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("AGENT_COORD_CRASH_AT") or None
_KILL = False
CRASH_EXIT_CODE = 86


def arm(name: str | None, *, sigkill: bool = False) -> None:
    """Make `name` the crash point from now on (None disarms); with `sigkill` the process
    sends itself SIGKILL there instead of calling `os._exit`."""
    global _TARGET, _KILL
    _TARGET, _KILL = name, sigkill


def crash_point(name: str) -> None:
    """End the process immediately if `name` is the armed point (`AGENT_COORD_CRASH_AT`)."""
    if _TARGET is not None and name == _TARGET:
        if _KILL:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(CRASH_EXIT_CODE)
