"""Agent credentials (`/agent/<id>/credentials`), done safely: encrypted at rest with AES-GCM,
masked in lists, plaintext only with the admin token, a clear error under a wrong key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from gateway.actors import ActorRef
from gateway.app import GATEWAY
from gateway.do import progress_tables as t
from gateway.do.credential_cipher import KEY_FILE, CredentialCipher, CredentialKeyError, load_key
from gateway.do.progress_store import ActorProgressStore
from gateway.errors import StartupRefused
from gateway.http.token_file import TOKEN_FILE
from gateway.settings import Settings

from .conftest import Api

A = "/agent/alice"
SECRET = "sk-test-1234567890-very-secret"


def admin(settings: Settings) -> dict[str, str]:
    token = (settings.storage.data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    return {"Authorization": f"Bearer {token}"}


def actor_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file() and not p.name.endswith((".key", "admin-token"))]


async def test_set_list_get_bundle_delete(api: Api, settings: Settings) -> None:
    """Upstream's shapes; get and bundle need the admin token (401 without it)."""
    status, body = await api.post(f"{A}/credentials", {"key": "API_KEY", "value": SECRET})
    assert body == {
        "success": True,
        "credential": {
            "key": "API_KEY",
            "maskedPreview": "sk-t...cret",
            "updatedAt": "2026-11-25T17:28:47.041Z",
        },
    }
    status, body = await api.post(
        f"{A}/credentials", {"credentials": {"B": "short", "C": "another-long-value"}}
    )
    assert body == {
        "success": True,
        "set": [{"key": "B", "maskedPreview": "****"}, {"key": "C", "maskedPreview": "anot...alue"}],
    }
    status, body = await api.get(f"{A}/credentials")
    assert [c["key"] for c in body["credentials"]] == ["API_KEY", "B", "C"]
    assert all(set(c) == {"key", "maskedPreview", "createdAt", "updatedAt"} for c in body["credentials"])
    assert SECRET not in str(body)
    for path in (f"{A}/credentials?action=get&key=API_KEY", f"{A}/credentials?action=bundle"):
        status, body = await api.get(path)
        assert status == 401, path
        assert SECRET not in str(body)
        status, body = await api.call("GET", path, headers={"Authorization": "Bearer wrong"})
        assert status == 401
    status, body = await api.call("GET", f"{A}/credentials?action=get&key=API_KEY", headers=admin(settings))
    assert body == {"credential": {"key": "API_KEY", "value": SECRET}}
    status, body = await api.call("GET", f"{A}/credentials?action=bundle", headers=admin(settings))
    assert body == {"credentials": {"API_KEY": SECRET, "B": "short", "C": "another-long-value"}}
    status, _ = await api.call("GET", f"{A}/credentials?action=get&key=NOPE", headers=admin(settings))
    assert status == 404
    assert await api.call("DELETE", f"{A}/credentials?key=B") == (200, {"success": True, "deleted": "B"})
    assert (await api.call("DELETE", f"{A}/credentials"))[0] == 400
    assert (await api.get(f"{A}/credentials?action=steal"))[0] == 400


@pytest.mark.parametrize(
    "body",
    [
        {"key": "K"},
        {"value": "v"},
        {"key": 5, "value": "v"},
        {"key": "K", "value": 5},
        {"key": "K" * 300, "value": "v"},
        {"key": "K", "value": "v" * 20_000},
        {"credentials": []},
        {"credentials": {"K": 1}},
        {"credentials": {}},
    ],
)
async def test_bad_bodies_never_echo_the_value(api: Api, body: dict[str, object]) -> None:
    """Each bad body is a 4xx JSON error that does not contain the value given."""
    status, got = await api.post(f"{A}/credentials", body)
    assert 400 <= status < 500
    assert "error" in got
    assert "v" * 100 not in str(got)


@pytest.mark.actors_only("the database file of the agent actor is what is checked")
async def test_no_plaintext_on_disk(api: Api, settings: Settings) -> None:
    """The SQLite files (and their WAL) hold ciphertext only; the key file is mode 0600."""
    await api.post(f"{A}/credentials", {"key": "API_KEY", "value": SECRET})
    await api.settle()
    files = actor_files(settings.storage.data_dir)
    assert files
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert b"1234567890-very" not in data, path
    key_path = settings.storage.data_dir / KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


@pytest.mark.actors_only("a property of the actor's storage and the cipher")
async def test_a_wrong_key_is_a_clear_error(api: Api, settings: Settings) -> None:
    """Values stored under one key and read under another: a 500 saying so, never garbage."""
    await api.post(f"{A}/credentials", {"key": "API_KEY", "value": SECRET})
    other = CredentialCipher(os.urandom(32))
    host = api.host
    row = await host.call(ActorRef("agent", "alice"), _stored)
    with pytest.raises(CredentialKeyError, match="does not decrypt"):
        other.decrypt("alice", "API_KEY", row)
    right = CredentialCipher(load_key(None, settings.storage.data_dir))
    assert right.decrypt("alice", "API_KEY", row) == SECRET
    with pytest.raises(CredentialKeyError):
        right.decrypt("bob", "API_KEY", row)  # bound to its agent and key
    # the gateway running with another key answers a 500 that says so, without the value
    store = api.app[GATEWAY].progress.progress
    assert isinstance(store, ActorProgressStore)
    store.cipher = other
    status, body = await api.call("GET", f"{A}/credentials?action=bundle", headers=admin(settings))
    assert status == 500
    assert "do not decrypt with the configured key" in body["error"]
    assert SECRET not in str(body)


async def _stored(actor: object) -> str:
    row = t.credential_get(actor.ctx.tables, "API_KEY")  # type: ignore[attr-defined]
    assert row is not None
    return row.ciphertext


def test_key_sources(tmp_path: Path) -> None:
    """A configured key wins; a bad one refuses the start; the generated file is reused."""
    key = base64.b64encode(b"k" * 32).decode()
    assert load_key(key, tmp_path) == b"k" * 32
    assert not (tmp_path / KEY_FILE).exists()
    with pytest.raises(StartupRefused, match="base64 of 32 bytes"):
        load_key("c2hvcnQ=", tmp_path)
    first = load_key(None, tmp_path / "d")
    assert load_key(None, tmp_path / "d") == first
    assert stat.S_IMODE((tmp_path / "d" / KEY_FILE).stat().st_mode) == 0o600
