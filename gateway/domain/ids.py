"""Generated ids in the DO formats of do-api.md section 1, unique within this process.

Upstream builds ids from `Date.now()` and a few characters of `Math.random()` (or none at all, for
lock history rows), so two ids made in the same millisecond can collide and fail a PRIMARY KEY.
Here the random part of each width starts at a random value per millisecond and then counts up,
so every id made by one process in one millisecond is distinct (36^4 = 1.7 M per millisecond for
the four-character forms) while the text keeps its upstream shape. Lock history rows gain a
random part (`lock-<ms>-<rand4>`), a deliberate fix listed in docs/compatibility.md.
"""

from __future__ import annotations

import random
from typing import Final

from gateway.domain.jscompat import to_base36

__all__ = ["IdGenerator", "ids"]


class _Width:
    """The per-millisecond counter of one random-part width."""

    __slots__ = ("counter", "modulus", "ms", "start", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.modulus = 36**width
        self.ms = -1
        self.start = 0
        self.counter = 0


class IdGenerator:
    """Makes the DO id forms; `rng` is injectable for reproducible tests."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - uniqueness, not secrecy
        self._widths: dict[int, _Width] = {}

    def rand(self, ms: int, width: int) -> str:
        """`width` base-36 characters, distinct from every other call for the same ms and width."""
        w = self._widths.get(width)
        if w is None:
            w = self._widths[width] = _Width(width)
        if w.ms != ms:
            w.ms = ms
            w.start = self._rng.randrange(w.modulus)
            w.counter = 0
        value = (w.start + w.counter) % w.modulus
        w.counter += 1
        return to_base36(value).rjust(width, "0")

    def chat(self, ms: int) -> str:
        """Group chat message: `<ms>-<rand6>`."""
        return f"{ms}-{self.rand(ms, 6)}"

    def task(self, ms: int) -> str:
        """Task: `task-<ms>-<rand4>`."""
        return f"task-{ms}-{self.rand(ms, 4)}"

    def dm(self, ms: int) -> str:
        """Direct message: `msg-<ms>-<rand4>`."""
        return f"msg-{ms}-{self.rand(ms, 4)}"

    def memory(self, ms: int) -> str:
        """Memory: `mem-<ms>-<rand4>`."""
        return f"mem-{ms}-{self.rand(ms, 4)}"

    def handoff(self, ms: int) -> str:
        """Handoff: `handoff-<ms>-<rand4>`."""
        return f"handoff-{ms}-{self.rand(ms, 4)}"

    def lock_history(self, ms: int) -> str:
        """Lock history row: `lock-<ms>-<rand4>` (upstream: `lock-<ms>`, which collides)."""
        return f"lock-{ms}-{self.rand(ms, 4)}"

    def trace(self, ms: int) -> str:
        """Work trace session: `trace-<ms>-<rand4>`."""
        return f"trace-{ms}-{self.rand(ms, 4)}"

    def step(self, ms: int) -> str:
        """Work step: `step-<ms>-<rand4>`."""
        return f"step-{ms}-{self.rand(ms, 4)}"

    def escalation(self, ms: int) -> str:
        """Escalation: `esc-<ms>-<rand4>`."""
        return f"esc-{ms}-{self.rand(ms, 4)}"

    def heartbeat(self, ms: int) -> str:
        """Heartbeat log entry: `hb-<ms>-<rand4>`."""
        return f"hb-{ms}-{self.rand(ms, 4)}"

    def goal(self, ms: int) -> str:
        """Goal: `goal-<ms>-<rand6>`."""
        return f"goal-{ms}-{self.rand(ms, 6)}"

    def anon_agent(self, ms: int) -> str:
        """Anonymous WebSocket agent: `anon-<ms>-<rand4>` (upstream: `anon-<ms>`)."""
        return f"anon-{ms}-{self.rand(ms, 4)}"


ids: Final = IdGenerator()
"""The process-wide generator (one counter per process is what makes the ids unique)."""
