"""Business rules both stores apply, so the actors and the legacy Redis decide alike.

The actor store (`gateway.do`) and the legacy store (`gateway.legacy.store`) each run the DO
API's commands on their own layout; the constants and predicates of the DO rules they share
live here, once, instead of one store importing them from the other.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["CLAIM_STALE_MS", "RECENT_CHAT", "mention_pattern"]

CLAIM_STALE_MS: Final = 30 * 60 * 1000
"""A claim older than this is stale: listed only with `includeStale`, and anyone may take it over."""

RECENT_CHAT: Final = 20
"""`/work`'s `recentChat`: the newest this many messages (docs/compatibility.md entry 16)."""

_WORD = "A-Za-z0-9_"
# JS `\b` (no `u` flag) is an ASCII word boundary; Python's `\b` is Unicode-aware, so spell it out.
_JS_BOUNDARY = f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"


@lru_cache(maxsize=1024)
def mention_pattern(agent_id: str) -> re.Pattern[str]:
    """Upstream's mention test `@<id>\\b|@all\\b|@everyone\\b|@team\\b` (case-insensitive), id escaped
    (docs/compatibility.md entry 18)."""
    alts = [re.escape(agent_id), "all", "everyone", "team"]
    return re.compile("|".join(f"@{a}{_JS_BOUNDARY}" for a in alts), re.IGNORECASE)
