"""The admin token's file name in the data directory, apart from the admin API's module.

The command-line tools that only read the token (`agent-coord check`, `phase`, `migrate`) import
this instead of `gateway.http.admin`, which imports aiohttp (about 0.25 s at start-up).
"""

from __future__ import annotations

from typing import Final

TOKEN_FILE: Final = "admin-token"  # noqa: S105 - a file name, not a secret
