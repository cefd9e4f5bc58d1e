"""The admin token's file name in the data directory, and how the command-line tools find the token.

The command-line tools that only read the token (`agent-coord check`, `phase`, `migrate`,
`backup`) import this instead of `gateway.http.admin`, which imports aiohttp (about 0.25 s at
start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

TOKEN_FILE: Final = "admin-token"  # noqa: S105 - a file name, not a secret


def cli_token(given: str | None, configured: str | None, data_dir: str | Path) -> str | None:
    """The token a command-line tool sends: `--token`, else `migration.admin_token`, else the one
    the gateway keeps in its data directory; None when there is none of them."""
    if given:
        return given
    if configured:
        return configured
    path = Path(data_dir) / TOKEN_FILE
    return path.read_text(encoding="utf-8").strip() if path.exists() else None
