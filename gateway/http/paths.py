"""Routing on the raw, still percent-encoded request path, as the upstream Worker does.

Upstream sees `new URL(request.url).pathname`: the WHATWG URL parser has already removed dot
segments (including their percent-encoded spellings `%2e`/`%2E`) and percent-encoded characters
that may not appear in a path, but `%2F` is still encoded. The router then dispatches on that
string (do-api.md 2.2 and 12.2) and strictly decodes only the id segment of `/agent/<id>` and
`/lock/<p>` (`decodeURIComponent`: UTF-8, `+` stays `+`). Query strings follow URLSearchParams
(`+` is a space, first value wins, malformed escapes stay as they are).

aiohttp's own router would decode and normalise the path first, so everything is routed here
from `request.raw_path`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote

__all__ = ["Route", "decode_component", "parse_query", "remove_dot_segments", "route", "whatwg_path"]

RouteKind = Literal["root", "health", "coordinator", "agent", "lock", "not_found", "bad_agent", "bad_lock"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the normalised path, the DO sub-path, the decoded id, the query."""

    kind: RouteKind
    path: str
    sub: str = "/"
    target: str = ""
    query: str = ""


_SINGLE_DOT: Final = frozenset({".", "%2e", "%2E"})
_DOUBLE_DOT: Final = frozenset({"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e"})
# WHATWG path percent-encode set: C0 controls, space, " # < > ? ` { } and everything above ~.
_NEEDS_ENCODING: Final = re.compile(r'[\x00-\x20"#<>?`{}\x7f-\U0010ffff]')
_AGENT: Final = re.compile(r"^/agent/([^/]+)(/.*)?$", re.DOTALL)
_LOCK: Final = re.compile(r"^/lock/([^/]+)(/.*)?$", re.DOTALL)
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _encode_char(m: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8", "surrogateescape"))


def whatwg_path(raw: str) -> str:
    """The pathname the WHATWG URL parser makes of a request-target's path part."""
    path = raw.replace("\\", "/")  # http is a special scheme: a backslash is a separator
    if not path.startswith("/"):
        path = "/" + path
    if _NEEDS_ENCODING.search(path):
        path = _NEEDS_ENCODING.sub(_encode_char, path)
    return remove_dot_segments(path) if "." in path or "%2" in path else path


def remove_dot_segments(path: str) -> str:
    """WHATWG path-state dot-segment handling (`.`/`..` and their `%2e` spellings)."""
    segs = path[1:].split("/")
    if not any(s in _SINGLE_DOT or s in _DOUBLE_DOT for s in segs):
        return path
    out: list[str] = []
    last = len(segs) - 1
    for i, seg in enumerate(segs):
        if seg in _DOUBLE_DOT:
            if out:
                out.pop()
            if i == last:
                out.append("")
        elif seg in _SINGLE_DOT:
            if i == last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def decode_component(s: str) -> str | None:
    """JS `decodeURIComponent` (strict UTF-8, `+` kept); None where JS throws URIError."""
    if "%" not in s:
        return s
    if _BAD_ESCAPE.search(s):
        return None
    try:
        return unquote(s, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def parse_query(query: str) -> dict[str, str]:
    """URLSearchParams: `+` is a space, lenient UTF-8, the first value of a name wins.

    Kept per query text as routes are (`QUERY_CACHE_SIZE`; the realistic mix asks a few hundred
    over and over, `?limit=50`, `?status=todo`, `?agentId=...`): `parse_qsl` costs 1-2 us, a kept
    one a lookup and a copy. Every call gets a dict of its own."""
    if not query:
        return {}
    if len(query) > ROUTE_CACHE_TARGET_MAX:
        return _parse_query(query)
    return dict(_parse_query_cached(query))


def _parse_query(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True, errors="replace"):
        out.setdefault(k, v)
    return out


def _absolute_form(target: str) -> str:
    """The path of an absolute-form request-target (`http://host/path`), else the target."""
    low = target[:8].lower()
    if low.startswith(("http://", "https://")):
        rest = target.split("//", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return target


ROUTE_CACHE_SIZE: Final = 8192
"""Request-targets whose routes are kept (issue 13): a route is a pure function of the target,
and the realistic mix asks for a few thousand targets (agents and lock paths) over and over;
parsing one costs 2-6 us, a kept one about 0.1 us. Least recently used targets are dropped."""

ROUTE_CACHE_TARGET_MAX: Final = 512
"""Longer request-targets are parsed every time and never kept, so the kept routes stay within
a few MiB whatever clients send (aiohttp admits request lines of about 8 KiB)."""


def route(raw_target: str) -> Route:
    """Route a raw request-target (path and query, still encoded) per do-api.md 2.2."""
    if len(raw_target) > ROUTE_CACHE_TARGET_MAX:
        return _route(raw_target)
    return _route_cached(raw_target)


def _route(raw_target: str) -> Route:  # noqa: PLR0911 - one exit per route kind
    target = _absolute_form(raw_target)
    raw_path, sep, query = target.partition("?")
    if "#" in raw_path:
        raw_path = raw_path.split("#", 1)[0]
    query = query.split("#", 1)[0] if sep else ""
    path = whatwg_path(raw_path)
    if path.startswith("/coordinator"):
        sub = path[len("/coordinator") :]
        if not sub.startswith("/"):
            sub = "/" + sub
        return Route("coordinator", path, sub=sub, query=query)
    if path.startswith("/agent/"):
        m = _AGENT.match(path)
        if m is None:
            return Route("bad_agent", path, query=query)
        agent_id = decode_component(m.group(1))
        if agent_id is None:
            return Route("bad_agent", path, query=query)
        return Route("agent", path, sub=m.group(2) or "/state", target=agent_id, query=query)
    if path.startswith("/lock/"):
        m = _LOCK.match(path)
        if m is None:
            return Route("bad_lock", path, query=query)
        resource = decode_component(m.group(1))
        if resource is None:
            return Route("bad_lock", path, query=query)
        return Route("lock", path, sub=m.group(2) or "/check", target=resource, query=query)
    if path == "/health":
        return Route("health", path, query=query)
    if path == "/":
        return Route("root", path, query=query)
    return Route("not_found", path, query=query)


_route_cached = functools.lru_cache(maxsize=ROUTE_CACHE_SIZE)(_route)

QUERY_CACHE_SIZE: Final = 4096
"""Query texts whose parse is kept (`parse_query`); the least recently used are dropped."""

_parse_query_cached = functools.lru_cache(maxsize=QUERY_CACHE_SIZE)(_parse_query)
