"""Crash points for subprocess tests of durability (S4, S9(g) of the actor runtime spec).

`crash_point("turn.before_commit")` ends the process at once, with no cleanup, when the
environment variable `AGENT_COORD_CRASH_AT` names that point. Tests start a gateway or a host
in a subprocess with the variable set, and check after a restart that what was not committed
is absent and what was committed is present. The check is one string comparison, so the points
can stay in the hot path.
"""

from __future__ import annotations

import os

_TARGET = os.environ.get("AGENT_COORD_CRASH_AT") or None
CRASH_EXIT_CODE = 86


def crash_point(name: str) -> None:
    """Exit the process immediately (`os._exit`) if `AGENT_COORD_CRASH_AT` equals `name`."""
    if _TARGET is not None and name == _TARGET:
        os._exit(CRASH_EXIT_CODE)
