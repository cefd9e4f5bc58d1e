"""Bearer tokens: reading one from a request, and comparing it in constant time.

aiohttp decodes header values as UTF-8 with `surrogateescape`, so a header carrying bytes that
are not UTF-8 arrives as a string with lone surrogates, which `str.encode("utf-8")` refuses.
Every token is therefore compared as the exact bytes the client sent.
"""

from __future__ import annotations

import hmac

from aiohttp import web

__all__ = ["bearer_token", "token_matches"]


def bearer_token(request: web.Request) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header, as sent; None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = given.strip().encode("utf-8", "surrogateescape")
    return token or None


def token_matches(given: bytes | None, expected: bytes) -> bool:
    """Whether `given` is `expected`, in time that does not depend on where they differ."""
    return given is not None and hmac.compare_digest(given, expected)
