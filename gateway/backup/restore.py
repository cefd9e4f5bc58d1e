"""Restoring a backup into a data directory, after verifying it.

Refused when a running gateway owns the directory (always: stop it first), and when the
directory holds anything without `force`. With `force` the host's files, the gateway's own
databases and the consistency reports there are replaced; what a backup never holds
(`admin-token`, `credentials.key`) is left as it is. The host's lock is held while the files
are put in place, so no gateway starts on a half-restored directory.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from gateway.actors.layout import HostRunningError, hold_host_lock, host_files, host_running
from gateway.backup.archive import extract_archive, is_archive
from gateway.backup.snapshot import GATEWAY_DATABASES, REPORTS_DIR, BackupError, Manifest, verify
from gateway.phases.repair import INTENTS_FILE

_SIDECARS = ("-wal", "-shm", "-journal")


def restore(source: Path, data_dir: Path, *, force: bool) -> Manifest:
    """Verify the backup `source` (a directory or an archive) and restore it into `data_dir`."""
    if host_running(data_dir):
        raise BackupError(f"a running gateway owns {data_dir}: stop it before restoring into it")
    if not source.exists():
        raise BackupError(f"no backup at {source}")
    if data_dir.exists() and any(data_dir.iterdir()) and not force:
        raise BackupError(
            f"{data_dir} is not empty: restore into an empty directory, or use --force to replace"
        )
    with tempfile.TemporaryDirectory(prefix="agent-coord-restore-") as tmp:
        root = source
        if is_archive(source) or source.is_file():
            root = Path(tmp)
            extract_archive(source, root)
        manifest = verify(root)
        try:
            with hold_host_lock(data_dir):
                _clear(data_dir)
                _put_in_place(root, manifest, data_dir)
        except HostRunningError as e:
            raise BackupError(f"{e}: stop it before restoring into it") from e
    return manifest


def _clear(data_dir: Path) -> None:
    """Remove what a restore replaces (the lock file itself stays: it is held)."""
    for f in host_files(data_dir, sidecars=True):
        if f.role != "lock":
            f.path.unlink(missing_ok=True)
    for name in GATEWAY_DATABASES:
        for suffix in ("", *_SIDECARS):
            (data_dir / (name + suffix)).unlink(missing_ok=True)
    (data_dir / INTENTS_FILE).unlink(missing_ok=True)
    shutil.rmtree(data_dir / REPORTS_DIR, ignore_errors=True)


def _put_in_place(root: Path, manifest: Manifest, data_dir: Path) -> None:
    for entry in manifest.files:
        target = data_dir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".restoring")
        shutil.copyfile(root / entry.path, partial)
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        partial.replace(target)
        if target.suffix == ".sqlite":
            _check_database(target)


def _check_database(path: Path) -> None:
    db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    try:
        (result,) = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{path} is not a readable SQLite database after the restore: {e}") from e
    finally:
        db.close()
    if result != "ok":
        raise BackupError(f"{path} failed SQLite's quick_check after the restore: {result}")
