"""Raw-path routing (do-api.md 2.2, 11.1, 12.2)."""

from __future__ import annotations

import pytest

from gateway.http.paths import (
    QUERY_CACHE_SIZE,
    ROUTE_CACHE_SIZE,
    ROUTE_CACHE_TARGET_MAX,
    _parse_query,
    _parse_query_cached,
    _route,
    _route_cached,
    decode_component,
    parse_query,
    remove_dot_segments,
    route,
)

ROUTE_CASES = [
    ("/", "root", "/", "/", ""),
    ("/health", "health", "/health", "/", ""),
    ("/health/", "not_found", "/health/", "/", ""),
    ("//health", "not_found", "//health", "/", ""),
    ("/coordinator", "coordinator", "/coordinator", "/", ""),
    ("/coordinator/", "coordinator", "/coordinator/", "/", ""),
    ("/coordinatorX/agents", "coordinator", "/coordinatorX/agents", "/X/agents", ""),
    ("/coordinator/../health", "health", "/health", "/", ""),
    ("/lock/%2E%2E/check", "not_found", "/check", "/", ""),
    ("/agent/x/%2e%2e/y/health", "agent", "/agent/y/health", "/health", "y"),
    ("/lock/..%2Fx/check", "lock", "/lock/..%2Fx/check", "/check", "../x"),
    ("/lock/src%2Fa.ts", "lock", "/lock/src%2Fa.ts", "/check", "src/a.ts"),
    ("/lock/src/a.ts/lock", "lock", "/lock/src/a.ts/lock", "/a.ts/lock", "src"),
    ("/lock/a%252Fb/check", "lock", "/lock/a%252Fb/check", "/check", "a%2Fb"),
    ("/agent/a+b/health", "agent", "/agent/a+b/health", "/health", "a+b"),
    ("/agent/%C3%BCber", "agent", "/agent/%C3%BCber", "/state", "über"),
    ("/agent/", "bad_agent", "/agent/", "/", ""),
    ("/lock/", "bad_lock", "/lock/", "/", ""),
    ("/agent/%ZZ/state", "bad_agent", "/agent/%ZZ/state", "/", ""),
    ("/lock/%E0%A4%A/check", "bad_lock", "/lock/%E0%A4%A/check", "/", ""),
    ("/nope%20x", "not_found", "/nope%20x", "/", ""),
    ("/a b", "not_found", "/a%20b", "/", ""),
    ("/agent", "not_found", "/agent", "/", ""),
]


@pytest.mark.parametrize(("raw", "kind", "path", "sub", "target"), ROUTE_CASES)
def test_route(raw: str, kind: str, path: str, sub: str, target: str) -> None:
    """Dispatch on the still-encoded path after WHATWG dot-segment removal."""
    r = route(raw)
    assert (r.kind, r.path, r.sub, r.target) == (kind, path, sub, target)


def test_query_is_split_off_and_bare_question_mark_is_empty() -> None:
    """The query string is kept raw; a bare '?' gives an empty query."""
    assert route("/coordinator/tasks?").query == ""
    assert route("/coordinator/tasks?status=todo").query == "status=todo"
    assert route("/coordinator/tasks?").sub == "/tasks"


def test_parse_query_follows_urlsearchparams() -> None:
    """'+' is a space, %-escapes decode leniently, the first value of a name wins."""
    assert parse_query("assignee=a+b&x=1&x=2&e=%ZZ&u=%C3%BC") == {
        "assignee": "a b",
        "x": "1",
        "e": "%ZZ",
        "u": "ü",
    }
    assert parse_query("") == {}


def test_decode_component_is_strict() -> None:
    """decodeURIComponent: malformed escapes and bad UTF-8 fail; '+' stays."""
    assert decode_component("a+b") == "a+b"
    assert decode_component("%F0%9F%98%80") == "\U0001f600"
    assert decode_component("%") is None
    assert decode_component("%C3") is None
    assert decode_component("%ED%A0%80") is None


def test_remove_dot_segments_edges() -> None:
    """Trailing dot segments leave a trailing slash; '..' at the root stays at the root."""
    assert remove_dot_segments("/a/.") == "/a/"
    assert remove_dot_segments("/a/..") == "/"
    assert remove_dot_segments("/..") == "/"
    assert remove_dot_segments("/a/./b") == "/a/b"


def test_routes_kept_for_targets_asked_again_match_a_fresh_parse_and_stay_bounded() -> None:
    """Targets asked again get the route a fresh parse gives (the cases above, in any order,
    after the kept routes have turned over), and no more than ROUTE_CACHE_SIZE are kept."""
    cases = [raw for raw, *_ in ROUTE_CASES]
    for raw in cases + cases[::-1]:
        assert route(raw) == _route(raw), raw
    for i in range(ROUTE_CACHE_SIZE + 100):
        assert route(f"/lock/src%2Ff{i}.ts/check").target == f"src/f{i}.ts"
    assert _route_cached.cache_info().currsize <= ROUTE_CACHE_SIZE
    for raw in cases:
        assert route(raw) == _route(raw), raw
    assert route("/lock/src%2Ff0.ts/check") == _route("/lock/src%2Ff0.ts/check")


def test_queries_kept_for_texts_asked_again_match_a_fresh_parse_each_in_a_dict_of_its_own() -> None:
    """A query text asked again is answered from its kept parse (no parse_qsl), equal to a fresh
    one, in a new dict each time (a caller changing its dict changes no other caller's); long
    texts are parsed every time and not kept; no more than QUERY_CACHE_SIZE are kept."""
    _parse_query_cached.cache_clear()
    texts = ["limit=50", "status=todo", "agentId=a+b&agentId=c", "e=%ZZ&u=%C3%BC", "x", "=1&a="]
    for text in texts + texts[::-1]:
        assert parse_query(text) == _parse_query(text), text
    assert _parse_query_cached.cache_info().hits == len(texts)
    first = parse_query("limit=50")
    first["limit"] = "1"
    assert parse_query("limit=50") == {"limit": "50"}
    assert parse_query("limit=50") is not parse_query("limit=50")
    long = "q=" + "x" * ROUTE_CACHE_TARGET_MAX
    before = _parse_query_cached.cache_info().currsize
    assert parse_query(long) == {"q": "x" * ROUTE_CACHE_TARGET_MAX}
    assert _parse_query_cached.cache_info().currsize == before
    for i in range(QUERY_CACHE_SIZE + 100):
        assert parse_query(f"agentId=a{i}") == {"agentId": f"a{i}"}
    assert _parse_query_cached.cache_info().currsize <= QUERY_CACHE_SIZE


def test_long_targets_are_routed_but_not_kept() -> None:
    """A target longer than ROUTE_CACHE_TARGET_MAX is routed like any other, and the kept routes
    do not grow with it: long request lines cannot fill memory through the route cache."""
    resource = "d/" * 2000
    raw = "/lock/" + resource.replace("/", "%2F") + "/check"
    assert len(raw) > ROUTE_CACHE_TARGET_MAX
    _route_cached.cache_clear()
    for _ in range(3):
        assert route(raw).target == resource
    assert _route_cached.cache_info().currsize == 0
    assert route("/lock/short/check").target == "short"
    assert _route_cached.cache_info().currsize == 1
