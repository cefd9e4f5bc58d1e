"""The actor-only domains through the bulk layer's replica: every soul, trace, heartbeat, shadow,
goal and credential record read from one data directory and written into another is served
there the same (credentials as ciphertext: they read back with the same key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.actors import ActorRef
from gateway.clock import FakeClock
from gateway.do.actor_store import build_actor_host
from gateway.do.credential_cipher import KEY_FILE, CredentialCipher, load_key
from gateway.do.progress_store import ActorProgressStore
from gateway.do.replica import ActorReplica
from gateway.domain.entities import ACTOR_ONLY, DOMAINS, EntityKey, Unreadable, actor_only
from gateway.domain.progress_records import HIDDEN, CredentialRecord
from gateway.settings import LimitSettings, Settings

from .conftest import Api

A = "/agent/alice"
SECRET = "sk-live-abcdefghijklmnop"


@pytest.mark.actors_only("copies one actor data directory into another")
async def test_records_carry_every_actor_only_domain(
    api: Api, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Scan each actor-only domain of one agent, write every record into another data directory,
    and read the agent's data back there through the progress store."""
    await api.post(f"{A}/soul", {"name": "A"})
    await api.call("PATCH", f"{A}/soul", {"action": "add-xp", "xp": 7})
    await api.post(f"{A}/trace", {"task": "t", "sessionId": "s1"})
    for _ in range(3):
        await api.post(f"{A}/trace/s1/step", {"tool": "grep", "outcome": "nothing"})
    await api.post(f"{A}/heartbeat", {"tokensUsed": 5})
    await api.post(f"{A}/shadow", {"action": "register-shadow", "shadowId": "bob"})
    await api.post(f"{A}/goals", {"action": "create", "title": "g", "xpReward": 3})
    await api.post(f"{A}/credentials", {"key": "K", "value": SECRET})
    await api.settle()
    assert set(ACTOR_ONLY) == {"soul", "trace", "heartbeat", "shadow", "goal", "credential"}
    assert all(actor_only(d) and d in DOMAINS for d in ACTOR_ONLY)

    source = ActorReplica(api.host)
    ref = ActorRef("agent", "alice")
    records = []
    for domain in ACTOR_ONLY:
        got = await source.scan(ref, domain, None, 100)
        assert got, domain
        records += got
    cred = next(v for k, v in records if k.domain == "credential")
    assert isinstance(cred, CredentialRecord)
    assert SECRET not in str(cred.rows)
    assert cred.to_json()["rows"]["credentials"][0]["value"] == HIDDEN

    target_dir = tmp_path / "copy"
    target_dir.mkdir()
    shutil.copy(settings.storage.data_dir / KEY_FILE, target_dir / KEY_FILE)
    host = build_actor_host(target_dir, LimitSettings())
    await host.start()
    try:
        target = ActorReplica(host)
        for key, value in records:
            assert not isinstance(value, Unreadable)
            await target.write_entity(key, value)
        for key, value in records:
            assert await target.read_entity(key) == value, key
        store = ActorProgressStore(host, CredentialCipher(load_key(None, target_dir)))
        now = clock.now_ms()
        soul = await store.soul("alice", now)
        assert soul is not None
        assert soul["totalXP"] == 7
        trace = await store.trace("alice", "s1")
        assert len(trace["steps"]) == 3
        assert len(await store.escalations("alice", "s1")) == 1
        assert await store.credential("alice", "K") == SECRET
        assert [g["title"] for g in await store.goals("alice", None, 10)] == ["g"]
        assert (await store.shadow("alice", now))["shadowId"] == "bob"
        assert (await store.heartbeat("alice", now))["heartbeatCount"] == 1
        # removing a record removes its rows
        await target.write_entity(EntityKey("trace", "alice", "s1"), None)
        assert await target.read_entity(EntityKey("trace", "alice", "s1")) is None
    finally:
        await host.close(1.0)
