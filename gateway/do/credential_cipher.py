"""Encryption at rest of the credentials agents store (`/agent/<id>/credentials`).

AES-256-GCM (the `cryptography` package): each value gets a fresh 96-bit nonce, and the agent id
and credential key are authenticated with it, so a ciphertext moved to another agent or key, or
altered, does not decrypt. A stored value is `v1:<base64 nonce+ciphertext+tag>` text.

The key comes from `auth.credentials_key` (base64 of 32 bytes, best from the environment); with
none configured, the gateway creates `<data_dir>/credentials.key` (mode 0600) at its first start
and logs a warning that the key belongs apart from the data. A value decrypted with the wrong key
raises `CredentialKeyError` (a clear error, never garbage). Plaintext never goes into a log.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Final

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import GatewayError, StartupRefused

__all__ = ["KEY_FILE", "CredentialCipher", "CredentialKeyError", "load_key", "mask"]

log = structlog.get_logger(__name__)

KEY_FILE: Final = "credentials.key"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
PREFIX: Final = "v1:"


class CredentialKeyError(GatewayError):
    """A stored credential does not decrypt with the configured key (wrong key, or altered).

    A 500 whose public message says so (the log has which agent and key); never the value."""

    public_message = (
        "Stored credentials do not decrypt with the configured key (auth.credentials_key): "
        "wrong key, or the data was altered"
    )


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StartupRefused(f"{source}: the credentials key must be base64 of {KEY_BYTES} bytes") from None
    if len(key) != KEY_BYTES:
        raise StartupRefused(
            f"{source}: the credentials key must be base64 of {KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def load_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else the key file of the data directory (created, mode 0600, with a
    warning, on first use)."""
    if configured:
        return _decode_key(configured, "auth.credentials_key")
    path = data_dir / KEY_FILE
    if path.exists():
        return _decode_key(path.read_text(encoding="ascii"), str(path))
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii") + "\n")
    log.warning(
        "credentials.key_created",
        path=str(path),
        hint="the key encrypting stored credentials is kept beside the data; set auth.credentials_key "
        "(AGENT_COORD_AUTH_CREDENTIALS_KEY) from a secret store instead, and keep a copy",
    )
    return load_key(None, data_dir)


def mask(value: str) -> str:
    """Upstream's preview: the first and last 4 characters of a value longer than 12, else `****`."""
    return f"{value[:4]}...{value[-4:]}" if len(value) > 12 else "****"  # noqa: PLR2004


class CredentialCipher:
    """Encrypts and decrypts credential values of one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "CredentialCipher(<key hidden>)"

    @staticmethod
    def _aad(agent_id: str, key: str) -> bytes:
        return f"{len(agent_id)}:{agent_id}:{key}".encode("utf-8", "surrogatepass")

    def encrypt(self, agent_id: str, key: str, value: str) -> str:
        """The stored form of `value`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8", "surrogatepass"), self._aad(agent_id, key))
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, agent_id: str, key: str, stored: str) -> str:
        """The value of a stored form; CredentialKeyError if it does not decrypt with this key."""
        if not stored.startswith(PREFIX):
            raise CredentialKeyError(
                f"credential {key!r} of agent {agent_id!r} is not in a known encrypted form"
            )
        try:
            raw = base64.b64decode(stored[len(PREFIX) :], validate=True)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(agent_id, key))
        except (InvalidTag, binascii.Error, ValueError):
            raise CredentialKeyError(
                f"credential {key!r} of agent {agent_id!r} does not decrypt with the configured key "
                "(auth.credentials_key or <data_dir>/credentials.key): wrong key, or the value was altered"
            ) from None
        return plain.decode("utf-8", "surrogatepass")
