"""`agent-coord backup` and `agent-coord restore` (docs/operations.md, "Backups").

    agent-coord backup --out DIR|FILE.tar[.gz]   [--url URL] [--token T] [--data-dir D]
    agent-coord restore SOURCE                    [--data-dir D] [--force]

`backup` goes through the running gateway's admin API (`POST /admin/backup`) when one owns the
data directory (or `--url` names one): the gateway takes the snapshot while it serves. Without
one it copies the data directory itself, holding the host's lock so no gateway starts meanwhile.
Either way the result is verified against its manifest before the command reports success.

`restore` verifies the backup's checksums, then puts it in place; it refuses a data directory a
running gateway owns, and a non-empty one without `--force`.

Exit status: 0 done, 1 refused or the backup does not verify, 2 bad usage or settings,
3 the gateway cannot be reached or refused the token.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, TextIO

from gateway.actors.layout import HostRunningError, hold_host_lock, host_running
from gateway.backup.archive import extract_archive, is_archive, write_archive
from gateway.backup.restore import restore
from gateway.backup.snapshot import BackupError, Manifest, databases, take_snapshot, verify
from gateway.domain.jscompat import iso_from_ms
from gateway.http.token_file import TOKEN_FILE, cli_token
from gateway.phases.control import read_phase
from gateway.settings import Settings

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
KEY_FILE = "credentials.key"


class _Unreachable(Exception):
    """The gateway could not be reached, or refused the token."""


def add_backup_parsers(commands: Any) -> None:
    """Add `backup` and `restore` to the `agent-coord` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: $AGENT_COORD_CONFIG)")
    common.add_argument("--data-dir", help="the gateway's data directory (default: storage.data_dir)")
    b = commands.add_parser(
        "backup",
        parents=[common],
        help="a consistent snapshot of the data directory, verified (through a running gateway)",
        description="Take a consistent snapshot of the data directory: through the running gateway's "
        "admin API when one owns it (or --url names one), else directly. OUT is a directory (absent or "
        "empty) or an archive named .tar, .tar.gz or .tgz. Exit status: 0 done, 1 refused or not "
        "verified, 2 bad usage, 3 gateway unreachable.",
    )
    b.add_argument("--out", required=True, type=Path, help="a new directory, or FILE.tar / FILE.tar.gz")
    b.add_argument("--url", help="the gateway's base URL (default: http://<server.host>:<server.port>)")
    b.add_argument("--token", help="admin token (default: migration.admin_token, or <data_dir>/admin-token)")
    b.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the gateway")
    b.set_defaults(handler=lambda args: _run(args, run_backup))
    r = commands.add_parser(
        "restore",
        parents=[common],
        help="verify a backup and restore it into a data directory (no gateway may run on it)",
        description="Verify a backup (a directory or an archive) against its manifest and restore it "
        "into the data directory. Refused while a gateway owns the directory, and into a non-empty "
        "one without --force. Exit status: 0 done, 1 refused or not verified, 2 bad usage.",
    )
    r.add_argument("source", type=Path, help="the backup: a directory or a .tar / .tar.gz archive")
    r.add_argument("--force", action="store_true", help="replace what a non-empty data directory holds")
    r.set_defaults(handler=lambda args: _run(args, run_restore))


def _run(args: argparse.Namespace, command: Any) -> int:
    from gateway.settings import SettingsError, load_settings  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["storage.data_dir"] = args.data_dir
    try:
        settings = load_settings(config_path=args.config, overrides=overrides)
    except SettingsError as e:
        sys.stderr.write(f"agent-coord: error: {e}\n")
        return EXIT_USAGE
    return int(command(args, settings))


def run_backup(
    args: argparse.Namespace, settings: Settings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Carry out `agent-coord backup`; returns the exit status."""
    data_dir = Path(settings.storage.data_dir)
    target: Path = args.out
    problem = _out_problem(target)
    if problem:
        err.write(f"agent-coord backup: {problem}\n")
        return EXIT_USAGE
    through_gateway = bool(args.url) or host_running(data_dir)
    try:
        if through_gateway:
            manifest = _through_gateway(args, settings, target)
            how = "through the gateway"
        else:
            manifest = _directly(data_dir, target)
            how = "directly (no gateway was running)"
    except _Unreachable as e:
        err.write(f"agent-coord backup: {e}\n")
        return EXIT_UNREACHABLE
    except BackupError as e:
        err.write(f"agent-coord backup: {e}\n")
        return EXIT_REFUSED
    size = sum(f.size for f in manifest.files)
    out.write(
        f"backup of {data_dir} {how}: phase {manifest.phase or '-'}, {len(manifest.files)} files, "
        f"{size} bytes, verified -> {target}\n"
    )
    if (data_dir / KEY_FILE).exists():
        err.write(
            f"note: {data_dir / KEY_FILE} is not in the backup (a secret): keep a copy of it apart, "
            "or the stored agent credentials cannot be read after a restore\n"
        )
    return EXIT_OK


def _out_problem(target: Path) -> str | None:
    if is_archive(target):
        if target.exists():
            return f"{target} exists already: name a new file"
        if not target.parent.is_dir():
            return f"no directory {target.parent} to write {target.name} into"
        return None
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        return f"{target} exists and is not an empty directory (name a new directory, or FILE.tar[.gz])"
    return None


def _directly(data_dir: Path, target: Path) -> Manifest:
    """The snapshot of a data directory no gateway runs on (its lock held meanwhile)."""
    if not databases(data_dir):
        raise BackupError(
            f"no gateway data in {data_dir}: give --data-dir, or --url to back up through a running gateway"
        )
    try:
        with hold_host_lock(data_dir), tempfile.TemporaryDirectory(prefix="agent-coord-backup-") as tmp:
            now = iso_from_ms(int(time.time() * 1000))
            snapshot = target if not is_archive(target) else Path(tmp)
            snapshot.mkdir(parents=True, exist_ok=True)
            manifest = take_snapshot(
                data_dir, snapshot, phase=read_phase(data_dir), source="data-dir", now_iso=now
            )
            if is_archive(target):
                write_archive(snapshot, manifest, target)
    except HostRunningError as e:
        raise BackupError(f"{e}: it started meanwhile; run the backup again") from e
    return _verify_output(target)


def _through_gateway(args: argparse.Namespace, settings: Settings, target: Path) -> Manifest:
    token = cli_token(args.token, settings.migration.admin_token, settings.storage.data_dir)
    if not token:
        token_file = Path(settings.storage.data_dir) / TOKEN_FILE
        raise _Unreachable(
            f"no admin token: pass --token, set migration.admin_token, or run beside {token_file}"
        )
    url = (args.url or f"http://{settings.server.host}:{settings.server.port}").rstrip("/")
    req = urllib.request.Request(  # noqa: S310 - the operator's own gateway
        url + "/admin/backup", data=b"", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with tempfile.TemporaryDirectory(prefix="agent-coord-backup-") as tmp:
        archive = Path(tmp) / "backup.tar"
        try:
            with urllib.request.urlopen(req, timeout=args.timeout) as resp, archive.open("wb") as f:  # noqa: S310
                shutil.copyfileobj(resp, f, 1 << 20)
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            if e.code == 401:  # noqa: PLR2004
                raise _Unreachable(f"the gateway at {url} refused the admin token") from e
            raise BackupError(f"the gateway at {url} answered {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise _Unreachable(f"cannot reach the gateway at {url}: {e}") from e
        if is_archive(target):
            _copy_archive(archive, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            extract_archive(archive, target)
    return _verify_output(target)


def _copy_archive(archive: Path, target: Path) -> None:
    """The gateway's tar as `target` (gzip-compressed for `.tar.gz`/`.tgz`)."""
    opener: Any = open if target.name.endswith(".tar") else gzip.open
    with archive.open("rb") as src, opener(target, "wb") as dst:
        out: IO[bytes] = dst
        shutil.copyfileobj(src, out, 1 << 20)


def _verify_output(target: Path) -> Manifest:
    """The manifest of what was written, checked file by file."""
    if not is_archive(target):
        return verify(target)
    with tempfile.TemporaryDirectory(prefix="agent-coord-verify-") as tmp:
        extract_archive(target, Path(tmp))
        return verify(Path(tmp))


def run_restore(
    args: argparse.Namespace, settings: Settings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Carry out `agent-coord restore`; returns the exit status."""
    data_dir = Path(settings.storage.data_dir)
    try:
        manifest = restore(args.source, data_dir, force=args.force)
    except BackupError as e:
        err.write(f"agent-coord restore: refused: {e}\n")
        return EXIT_REFUSED
    out.write(
        f"restored {len(manifest.files)} files (backup of {manifest.created_at}, "
        f"phase {manifest.phase or '-'}, gateway {manifest.version}) into {data_dir}\n"
    )
    if not settings.auth.credentials_key and not (data_dir / KEY_FILE).exists():
        err.write(
            "note: stored agent credentials need their key: set auth.credentials_key, or put the "
            f"credentials.key kept apart into {data_dir}, before starting the gateway\n"
        )
    return EXIT_OK
