"""The running gateway's side of `agent-coord backup`: `POST /admin/backup` answers a tar archive
of a snapshot taken while it keeps serving (`take_snapshot` on a worker thread, into a temporary
directory that is removed once the archive has been sent)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog

from gateway.backup.archive import write_archive
from gateway.backup.snapshot import take_snapshot
from gateway.clock import Clock
from gateway.domain.jscompat import iso_from_ms

log = structlog.get_logger(__name__)

CHUNK = 1 << 20


class BackupService:
    """Snapshots of one gateway's data directory, one at a time."""

    def __init__(self, data_dir: Path, clock: Clock, phase: Callable[[], str]) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.phase = phase
        self._one_at_a_time = asyncio.Lock()

    async def archive(self) -> AsyncIterator[bytes]:
        """The snapshot as a tar archive, in chunks (the first one once the snapshot is taken)."""
        async with self._one_at_a_time:
            tmp = Path(tempfile.mkdtemp(prefix="agent-coord-backup-"))
            try:
                path = await asyncio.to_thread(self._make, tmp)
                with path.open("rb") as f:
                    while chunk := await asyncio.to_thread(f.read, CHUNK):
                        yield chunk
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)

    def _make(self, tmp: Path) -> Path:
        started = self.clock.now_ms()
        snapshot = tmp / "snapshot"
        snapshot.mkdir()
        manifest = take_snapshot(
            self.data_dir, snapshot, phase=self.phase(), source="gateway", now_iso=iso_from_ms(started)
        )
        path = tmp / "backup.tar"
        write_archive(snapshot, manifest, path)
        log.info(
            "backup.taken",
            files=len(manifest.files),
            bytes=sum(f.size for f in manifest.files),
            ms=self.clock.now_ms() - started,
        )
        return path
