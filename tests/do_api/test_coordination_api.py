"""Zones, claims and handoffs over HTTP (do-api.md 7.1-7.3)."""

from __future__ import annotations

from gateway.clock import FakeClock

from .conftest import Api

Z = "/coordinator/zones"
C = "/coordinator/claims"
H = "/coordinator/handoffs"


async def test_zones(api: Api, clock: FakeClock) -> None:
    """Claim (create form), list (read-back), prefix lookup, steal, release by owner only."""
    status, body = await api.post(Z, {"action": "claim", "zoneId": "z1", "path": "src/comp", "owner": "a"})
    assert status == 200
    assert list(body["zone"]) == ["zoneId", "path", "owner", "claimedAt"]
    await clock.advance(1)
    await api.post(Z, {"action": "claim", "zoneId": "z2", "path": "docs", "owner": "b", "description": "d"})
    zones = (await api.get(f"{Z}?"))[1]["zones"]
    assert [z["zoneId"] for z in zones] == ["z2", "z1"]
    assert list(zones[1]) == ["zoneId", "path", "owner", "description", "claimedAt"]
    assert zones[1]["description"] is None
    assert [z["zoneId"] for z in (await api.get(f"{Z}?owner=a"))[1]["zones"]] == ["z1"]
    assert (await api.get(f"{Z}?path=src/compiler/x.ts&owner=b"))[1]["zone"]["zoneId"] == "z1"
    assert await api.get(f"{Z}?path=elsewhere") == (200, {"zone": None})
    await api.post(Z, {"action": "claim", "zoneId": "z1", "path": "src/comp", "owner": "b"})
    assert await api.post(Z, {"action": "release", "zoneId": "z1", "owner": "a"}) == (200, {"success": False})
    assert await api.post(Z, {"action": "release", "zoneId": "z1", "owner": "b"}) == (200, {"success": True})


async def test_zone_errors(api: Api) -> None:
    """Missing fields and unknown actions are upstream's 400s."""
    assert await api.post(Z, {"action": "claim", "zoneId": "z"}) == (
        400,
        {"error": "zoneId, path, and owner required"},
    )
    assert await api.post(Z, {"action": "release", "zoneId": "z"}) == (
        400,
        {"error": "zoneId and owner required"},
    )
    assert await api.post(Z, {"zoneId": "z"}) == (400, {"error": "Invalid action. Use: claim, release"})


async def test_claims(api: Api, clock: FakeClock) -> None:
    """Claim, 409 for another claimant, refresh, staleness after 30 min, release."""
    status, body = await api.post(C, {"action": "claim", "what": "x", "by": "a", "description": "d"})
    assert status == 200
    assert body == {
        "success": True,
        "claim": {
            "what": "x",
            "by": "a",
            "description": "d",
            "since": "2026-11-25T17:28:47.041Z",
            "stale": False,
        },
    }
    status, body = await api.post(C, {"action": "claim", "what": "x", "by": "b"})
    assert status == 409
    assert body["error"] == "Already claimed by a"
    assert body["claim"]["by"] == "a"
    assert list(body) == ["success", "error", "claim"]
    await api.post(C, {"action": "claim", "what": "x", "by": "a"})
    assert (await api.get(f"{C}?what=x"))[1]["claim"]["description"] is None
    await clock.advance(30 * 60 * 1000 + 1)
    assert (await api.get(C))[1] == {"claims": []}
    stale = (await api.get(f"{C}?includeStale=true"))[1]["claims"]
    assert stale[0]["stale"] is True
    assert (await api.post(C, {"action": "claim", "what": "x", "by": "b"}))[0] == 200
    assert await api.post(C, {"action": "release", "what": "x", "by": "a"}) == (200, {"success": False})
    assert await api.post(C, {"action": "release", "what": "x", "by": "b"}) == (200, {"success": True})
    assert await api.post(C, {"action": "claim", "what": "x"}) == (400, {"error": "what and by required"})
    assert await api.post(C, {"action": "grab"}) == (400, {"error": "Invalid action. Use: claim, release"})


async def test_handoff_lifecycle(api: Api, clock: FakeClock) -> None:
    """Create (create form), read-back nulls, targeted claim, claim, complete with upstream errors."""
    status, body = await api.post(
        H,
        {
            "fromAgent": "a",
            "toAgent": "b",
            "title": "t",
            "context": "c",
            "nextSteps": ["x"],
            "priority": "high",
        },
    )
    assert status == 200
    h = body["handoff"]
    assert list(h) == [
        "id",
        "fromAgent",
        "toAgent",
        "title",
        "context",
        "nextSteps",
        "priority",
        "status",
        "createdAt",
    ]
    hid = h["id"]
    read = (await api.get(f"{H}?id={hid}"))[1]["handoff"]
    assert list(read) == [
        "id",
        "fromAgent",
        "toAgent",
        "title",
        "context",
        "code",
        "filePath",
        "nextSteps",
        "priority",
        "status",
        "claimedBy",
        "createdAt",
        "claimedAt",
        "completedAt",
    ]
    assert read["code"] is None
    open_id = (await api.post(H, {"action": "create", "fromAgent": "b", "title": "o", "context": "c"}))[1][
        "handoff"
    ]["id"]
    assert {x["id"] for x in (await api.get(f"{H}?toAgent=b"))[1]["handoffs"]} == {hid, open_id}
    assert [x["id"] for x in (await api.get(f"{H}?fromAgent=a"))[1]["handoffs"]] == [hid]
    claim = {"action": "claim", "handoffId": hid}
    assert await api.post(H, {**claim, "agentId": "c"}) == (
        409,
        {"success": False, "error": "Handoff is targeted to b"},
    )
    assert await api.post(H, {"action": "claim", "handoffId": "nope", "agentId": "b"}) == (
        409,
        {"success": False, "error": "Handoff not found"},
    )
    assert await api.post(H, {"action": "complete", "handoffId": hid, "agentId": "b"}) == (
        400,
        {"success": False, "error": "Handoff must be claimed first (current: pending)"},
    )
    await clock.advance(5)
    status, body = await api.post(H, {**claim, "agentId": "b"})
    assert status == 200
    assert list(body["handoff"]) == list(read)
    assert (body["handoff"]["status"], body["handoff"]["claimedBy"]) == ("claimed", "b")
    assert body["handoff"]["claimedAt"] == "2026-11-25T17:28:47.046Z"
    assert await api.post(H, {**claim, "agentId": "b"}) == (
        409,
        {"success": False, "error": "Handoff already claimed"},
    )
    assert await api.post(H, {"action": "complete", "handoffId": hid, "agentId": "a"}) == (
        400,
        {"success": False, "error": "Handoff is claimed by b"},
    )
    await clock.advance(5)
    status, body = await api.post(H, {"action": "complete", "handoffId": hid, "agentId": "b"})
    assert status == 200
    done = body["handoff"]
    assert (done["status"], done["claimedBy"]) == ("completed", "b")
    assert (done["claimedAt"], done["completedAt"]) == (
        "2026-11-25T17:28:47.046Z",
        "2026-11-25T17:28:47.051Z",
    )
    assert (await api.get(f"{H}?id={hid}"))[1]["handoff"] == done
    assert await api.post(H, {"action": "complete", "handoffId": "nope", "agentId": "b"}) == (
        400,
        {"success": False, "error": "Handoff not found"},
    )
    assert await api.post(H, {"action": "cancel"}) == (
        400,
        {"error": "Invalid action. Use: create, claim, complete"},
    )
    assert await api.post(H, {"fromAgent": "a", "title": "x"}) == (
        400,
        {"error": "fromAgent, title, and context required"},
    )


async def test_a_handoff_to_any(api: Api) -> None:
    """`toAgent: "any"` is an agent named `any` for the actors, but the legacy spelling of an open
    handoff when Redis serves (docs/compatibility.md, "Serving from the legacy store")."""
    status, body = await api.post(H, {"fromAgent": "a", "toAgent": "any", "title": "t", "context": "c"})
    assert (status, body["handoff"]["toAgent"]) == (200, "any")
    hid = body["handoff"]["id"]
    read = (await api.get(f"{H}?id={hid}"))[1]["handoff"]
    listed = [h["id"] for h in (await api.get(f"{H}?toAgent=b"))[1]["handoffs"]]
    claimed = await api.post(H, {"action": "claim", "handoffId": hid, "agentId": "b"})
    if api.legacy_serves:  # docs/compatibility.md 39
        assert (read["toAgent"], listed, claimed[0]) == (None, [hid], 200)
    else:
        assert (read["toAgent"], listed, claimed) == (
            "any",
            [],
            (409, {"success": False, "error": "Handoff is targeted to any"}),
        )
