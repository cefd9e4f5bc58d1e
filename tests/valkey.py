"""A Valkey 8 server binary for the tests of what newer servers offer (HSCAN NOVALUES, which Redis
has from 7.4 and this machine's Redis 7.0 has not).

`valkey_binary()`: `$AGENT_COORD_VALKEY_SERVER` if set, else `valkey-server` on PATH, else the copy
this module unpacked before, else Debian's package (bookworm-backports' current valkey-tools, from
the archive every machine of this project reaches) downloaded and unpacked into `.venv/valkey/`
(git-ignored, beside the environment `.ci/test` builds) with `dpkg-deb`: no system package is
installed. None, with the
reason, when none of that works; the tests that need it are skipped saying so.
"""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Final

BINARY_ENV_VAR: Final = "AGENT_COORD_VALKEY_SERVER"
ARCHIVE: Final = "http://deb.debian.org/debian/"
INDEX_URL: Final = ARCHIVE + "dists/bookworm-backports/main/binary-amd64/Packages.xz"
"""bookworm-backports' package index: where its current valkey-tools package lies."""
PACKAGE_URL: Final = ARCHIVE + "pool/main/v/valkey/valkey-tools_8.0.1+dfsg1-1~bpo12+1_amd64.deb"
"""Debian's valkey-tools 8.0.1 for bookworm (amd64), the version the index named when these tests
were written: asked for when the index cannot be read. It holds the server binary, which the
valkey-server package only links to (`valkey-server` is `valkey-check-rdb` under another name)."""
CACHE: Final = Path(__file__).resolve().parent.parent / ".venv" / "valkey"
DOWNLOAD_TIMEOUT_S: Final = 60.0


def valkey_binary() -> tuple[str | None, str]:  # noqa: PLR0911 - one answer per place looked
    """(the path of a valkey-server binary, or None; where it came from, or why there is none)."""
    configured = os.environ.get(BINARY_ENV_VAR)
    if configured:
        if os.access(configured, os.X_OK):
            return configured, f"${BINARY_ENV_VAR}"
        return None, f"${BINARY_ENV_VAR}={configured!r} is not an executable file"
    found = shutil.which("valkey-server")
    if found:
        return found, "PATH"
    server = CACHE / "usr" / "bin" / "valkey-server"
    if server.exists():
        return str(server), str(CACHE)
    if os.uname().machine != "x86_64":
        return None, "no valkey-server on PATH, and the package fetched here is Debian's for amd64 only"
    if shutil.which("dpkg-deb") is None:
        return None, "no valkey-server on PATH and no dpkg-deb to unpack Debian's package"
    url = _package_url()
    try:
        _unpack(url, server)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"no valkey-server on PATH, and {url} could not be fetched or unpacked: {e}"
    return str(server), url


def _package_url() -> str:
    """The current valkey-tools package of bookworm-backports (its index's `Filename`), else
    `PACKAGE_URL`."""
    try:
        with urllib.request.urlopen(INDEX_URL, timeout=DOWNLOAD_TIMEOUT_S) as answer:  # noqa: S310 - http of the archive
            index = lzma.decompress(answer.read()).decode("utf-8", "replace")
    except (OSError, lzma.LZMAError):
        return PACKAGE_URL
    for stanza in index.split("\n\n"):
        if stanza.startswith("Package: valkey-tools\n"):
            for line in stanza.splitlines():
                if line.startswith("Filename: "):
                    return ARCHIVE + line.removeprefix("Filename: ").strip()
    return PACKAGE_URL


def _unpack(url: str, server: Path) -> None:
    """Debian's package at `url` downloaded and unpacked into `CACHE` (whole or not at all)."""
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        deb = Path(tmp) / "valkey-tools.deb"
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer:  # noqa: S310 - http of the archive
            deb.write_bytes(answer.read())
        tree = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=60)  # noqa: S603, S607
        if not (tree / "usr" / "bin" / "valkey-server").exists():
            (tree / "usr" / "bin" / "valkey-server").symlink_to("valkey-check-rdb")
        version = [str(tree / "usr" / "bin" / "valkey-server"), "--version"]
        subprocess.run(version, check=True, capture_output=True, timeout=30)  # noqa: S603 - just unpacked
        if CACHE.exists():
            shutil.rmtree(CACHE)
        tree.rename(CACHE)
    if not server.exists():
        raise OSError(f"{server} is missing from the unpacked package")
