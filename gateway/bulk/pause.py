"""A pause point for subprocess tests of bulk writes beside a live gateway.

`await pause_point("migrate.before_write", keys)` does nothing unless the environment variable
`AGENT_COORD_PAUSE_AT` names that point and `AGENT_COORD_PAUSE_DIR` a directory. Then it writes
`<dir>/<n>.keys` (the batch's keys, one cursor per line, n counting from 1) and waits until the
test creates `<dir>/<n>.go`: the test changes some of those entities through the gateway in the
meantime, so a write that races the batch happens every time instead of by chance. The check
is one comparison, so the points can stay in the write path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from gateway.bulk.items import cursor_of
from gateway.domain.entities import EntityKey

__all__ = ["pause_point"]

_TARGET = os.environ.get("AGENT_COORD_PAUSE_AT") or None
_DIR = os.environ.get("AGENT_COORD_PAUSE_DIR") or None
_WAIT_S: Final = 60.0
_count = 0


async def pause_point(name: str, keys: Iterable[EntityKey]) -> None:
    """Wait for the test's go-ahead at `name` (only when `AGENT_COORD_PAUSE_AT` names it)."""
    global _count  # noqa: PLW0603 - one counter per process, as the points it numbers
    if _TARGET is None or _DIR is None or name != _TARGET:
        return
    _count += 1
    where = Path(_DIR)
    tmp = where / f"{_count}.tmp"
    tmp.write_text("".join(cursor_of(k) + "\n" for k in keys), encoding="utf-8")
    tmp.replace(where / f"{_count}.keys")
    deadline = time.monotonic() + _WAIT_S
    while not (where / f"{_count}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pause point {name}: no go-ahead for batch {_count} in {_WAIT_S} s")
        await asyncio.sleep(0.01)
