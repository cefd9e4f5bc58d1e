"""A backup as one file: a tar archive (`.tar`, or gzip-compressed `.tar.gz`/`.tgz`) of the
snapshot directory, `manifest.json` first. Reading one never writes outside its destination:
only regular files with relative paths are taken, links and devices are refused."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Final

from gateway.backup.snapshot import MANIFEST, BackupError, Manifest

SUFFIXES: Final = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    """Is `path` named as an archive (else it is a backup directory)?"""
    return path.name.endswith(SUFFIXES)


def write_archive(snapshot_dir: Path, manifest: Manifest, path: Path) -> None:
    """Write the snapshot in `snapshot_dir` as the archive `path` (compressed for `.gz`/`.tgz`)."""
    mode = "w" if path.name.endswith(".tar") else "w:gz"
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        tar.add(snapshot_dir / MANIFEST, arcname=MANIFEST)
        for entry in manifest.files:
            tar.add(snapshot_dir / entry.path, arcname=entry.path)


def extract_archive(path: Path, dest: Path) -> None:
    """Unpack the archive `path` into the empty directory `dest`; `BackupError` when it is not a
    readable archive or holds anything but regular files under relative paths."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise BackupError(f"{path}: refusing the archive member {member.name!r}")
                target = dest.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise BackupError(f"{path}: cannot read the archive member {member.name!r}")
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BackupError(f"{path} is not a readable backup archive: {e}") from e
