"""When a claim is stale: the one rule of claims that the legacy mapping needs as well.

It lives apart from `gateway.domain.rules` (which re-exports it) so that the legacy side can be
imported without the rules' commands: the consistency checker's second process imports the
mapping and no command (issue 12: each module of dataclasses imported costs its start-up).
"""

from __future__ import annotations

from typing import Final

from gateway.domain.jscompat import parse_js_date

__all__ = ["CLAIM_STALE_MS", "claim_is_stale"]

CLAIM_STALE_MS: Final = 30 * 60 * 1000
"""A claim older than this is stale: listed only with `includeStale`, and anyone may take it over."""


def claim_is_stale(since: str, now_ms: int) -> bool:
    """Is a claim made at `since` stale at `now_ms`? (Older than 30 minutes; an unreadable time is.)"""
    since_ms = parse_js_date(since) if since else None
    return since_ms is None or now_ms - since_ms > CLAIM_STALE_MS
