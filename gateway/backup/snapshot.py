"""Taking a snapshot of a data directory, and the manifest that describes it.

What a backup holds:

* every SQLite file of the actor host (`gateway.actors.layout.host_files`: the host index and
  the actors' files), and the gateway's own SQLite files (`control.sqlite`: the phase and its
  audit log; `repair.sqlite`: the repair queue and its dead letters), each copied with
  SQLite's online backup API: a transactionally consistent copy of that file while the gateway
  keeps writing it;
* the replication intents in flight (`repair.intents`, an append-only journal), copied as it is
  (a line cut short at its end is skipped when it is read);
* the consistency reports (`consistency/*.json`), copied as they are;
* `manifest.json`: the format, the gateway version, the time, the phase, and each file with its
  size and SHA-256.

What it does not hold: `host.lock` (a lock, not data), `admin-token` and `credentials.key`
(secrets: keep them, or the settings that replace them, apart; see docs/operations.md), and
anything in Redis (the legacy store's own backups cover it).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from gateway import __version__
from gateway.actors.layout import host_files
from gateway.phases.repair import INTENTS_FILE

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
GATEWAY_DATABASES: Final = ("control.sqlite", "repair.sqlite")
REPORTS_DIR: Final = "consistency"
EXCLUDED: Final = ("host.lock", "admin-token", "credentials.key")
"""Files of a data directory a backup leaves out on purpose (docs/operations.md, "Backups")."""


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative to the data directory, with `/`
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Manifest:
    created_at: str
    phase: str | None
    source: str  # `gateway` (through the admin API) or `data-dir` (a stopped gateway's directory)
    files: list[FileEntry] = field(default_factory=list)
    version: str = __version__
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "version": self.version,
            "createdAt": self.created_at,
            "phase": self.phase,
            "source": self.source,
            "files": [f.to_json() for f in self.files],
            "excluded": list(EXCLUDED),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """A manifest read back; `BackupError` when it is not one this version understands."""
        try:
            if data["format"] != FORMAT:
                raise BackupError(
                    f"backup format {data['format']!r} is not {FORMAT}: restore it with its version"
                )
            files = [FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]]
            return cls(
                str(data["createdAt"]), data.get("phase"), str(data["source"]), files, str(data["version"])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BackupError(f"{MANIFEST} is not a backup manifest: {e!r}") from e


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def databases(data_dir: Path) -> list[Path]:
    """The SQLite files a backup copies: the host's (not its lock) and the gateway's own."""
    found = [f.path for f in host_files(data_dir) if f.path.suffix == ".sqlite"]
    return found + [data_dir / name for name in GATEWAY_DATABASES if (data_dir / name).exists()]


def copy_database(src: Path, dst: Path) -> bool:
    """Copy one SQLite file with the online backup API (one step: a consistent copy while others
    write it). False when the file went away meanwhile (an actor deleted): it is left out."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = sqlite3.connect(f"file:{src}?mode=rw", uri=True)  # never creates a missing file
    except sqlite3.OperationalError:
        return False
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return True


def take_snapshot(data_dir: Path, out_dir: Path, *, phase: str | None, source: str, now_iso: str) -> Manifest:
    """Copy what a backup holds from `data_dir` into the empty directory `out_dir`, with its
    manifest (module docstring). Runs beside a gateway that keeps serving."""
    entries: list[FileEntry] = []
    for src in databases(data_dir):
        rel = src.relative_to(data_dir)
        if copy_database(src, out_dir / rel):
            entries.append(_entry(out_dir, rel))
    intents = data_dir / INTENTS_FILE  # append-only: a copy is whole but maybe for a torn last line
    if intents.exists():
        shutil.copyfile(intents, out_dir / INTENTS_FILE)
        entries.append(_entry(out_dir, Path(INTENTS_FILE)))
    reports = data_dir / REPORTS_DIR
    if reports.is_dir():
        for src in sorted(reports.glob("*.json")):
            rel = src.relative_to(data_dir)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out_dir / rel)
            entries.append(_entry(out_dir, rel))
    manifest = Manifest(now_iso, phase, source, entries)
    (out_dir / MANIFEST).write_bytes(orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2))
    return manifest


def _entry(root: Path, rel: Path) -> FileEntry:
    path = root / rel
    return FileEntry(rel.as_posix(), path.stat().st_size, sha256_of(path))


def verify(root: Path) -> Manifest:
    """The manifest of the backup in `root`, after checking every file it lists (present, its
    size and SHA-256) and that no listed path leaves `root`; `BackupError` names each problem."""
    try:
        data = orjson.loads((root / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise BackupError(f"no readable {MANIFEST} in {root}: not a backup ({e})") from e
    manifest = Manifest.from_json(data)
    problems: list[str] = []
    base = root.resolve()
    for entry in manifest.files:
        path = (root / entry.path).resolve()
        if entry.path.startswith("/") or not path.is_relative_to(base) or entry.path == MANIFEST:
            problems.append(f"{entry.path}: a path outside the backup")
        elif not path.is_file():
            problems.append(f"{entry.path}: missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{entry.path}: {path.stat().st_size} bytes, the manifest says {entry.size}")
        elif sha256_of(path) != entry.sha256:
            problems.append(f"{entry.path}: checksum mismatch")
    if problems:
        raise BackupError("the backup does not match its manifest: " + "; ".join(problems))
    return manifest
