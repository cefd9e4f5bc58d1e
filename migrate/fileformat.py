"""The export file: NDJSON, gzip-compressed when its name ends in `.gz` (docs/migrate.md).

    {"format": "agent-coord-entities", "version": 1, "source": "legacy", "createdAt": "...",
     "selection": {...}, "counts": {...estimates...}}                 the header line
    {"key": ["task", "", "task-1"], "value": {...}, "extra": {...}}   one line per entity
    ...
    {"end": true, "entities": 1234, "counts": {"task": 1000, ...}}     the trailer line

A file without its trailer was cut short (a crash, a full disk, a partial copy) and is refused,
as is a line that is not an entity, or a newer format version. `check_file` reads the whole file
before an import writes anything, so a bad file changes nothing.

Writing happens in gzip members (one per batch), so an interrupted export is continued by
truncating the partial file to the end of its last complete batch (`ExportWriter.resume_at`).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from gateway.bulk.items import Item, Selection
from gateway.bulk.wire import BadLine, dumps_line, item_from_json, item_to_json
from gateway.domain.entities import Entity, EntityKey, Unreadable

__all__ = [
    "FORMAT",
    "VERSION",
    "BadFile",
    "ExportWriter",
    "FileSummary",
    "check_file",
    "read_items",
]

FORMAT: Final = "agent-coord-entities"
VERSION: Final = 1


class BadFile(Exception):
    """An export file that cannot be imported; the message says where and why."""


def _gz(path: Path) -> bool:
    return path.name.endswith(".gz")


@dataclass(slots=True)
class FileSummary:
    """What `check_file` found: the header, and the entities per domain."""

    header: dict[str, Any]
    entities: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _open_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        raw: IO[bytes] = gzip.open(path, "rb") if _gz(path) else path.open("rb")  # type: ignore[assignment] # noqa: SIM115
    except OSError as e:
        raise BadFile(f"{path}: cannot open: {e.strerror or e}") from e
    with raw:
        n = 0
        try:
            for line in raw:
                n += 1
                yield n, line
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
            raise BadFile(f"{path}: the compressed data is cut short or damaged after line {n}: {e}") from e


def _header(path: Path, line: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise BadFile(f"{path}: line 1 is not a header: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BadFile(f"{path}: not an agent-coord export file (line 1 has no format {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise BadFile(
            f"{path}: format version {version!r} is newer than this tool reads ({VERSION}); "
            "use the agent-coord that wrote it"
        )
    return header


def _entity_lines(path: Path) -> Iterator[tuple[int, bytes | None, dict[str, Any] | None]]:
    """(line number, entity line, None) ... then (n, None, trailer); BadFile on the way."""
    lines = _open_lines(path)
    first = next(lines, None)
    if first is None:
        raise BadFile(f"{path}: the file is empty")
    yield 1, None, _header(path, first[1])
    for n, line in lines:
        if not line.strip():
            continue
        if line.startswith(b'{"end"'):
            trailer = orjson.loads(line)
            yield n, None, trailer
            for m, rest in lines:
                if rest.strip():
                    raise BadFile(f"{path}: line {m}: data after the end line")
            return
        if not line.endswith(b"\n"):
            raise BadFile(f"{path}: line {n} is cut short (the file ends in the middle of it)")
        yield n, line, None
    raise BadFile(f"{path}: the file is cut short: its end line is missing")


def check_file(path: Path, selection: Selection | None = None) -> FileSummary:
    """Read the whole file and check every line; BadFile at the first problem."""
    summary: FileSummary | None = None
    for n, line, meta in _entity_lines(path):
        if meta is not None:
            if summary is None:
                summary = FileSummary(meta)
                continue
            if meta.get("entities") != summary.entities:
                raise BadFile(
                    f"{path}: the end line says {meta.get('entities')} entities, the file holds "
                    f"{summary.entities}: it was altered or cut"
                )
            return summary
        if summary is None or line is None:  # pragma: no cover - the header always comes first
            raise BadFile(f"{path}: line {n}: no header before it")
        key, _value = _parse(path, n, line)
        summary.entities += 1
        if selection is None or _selected(selection, key):
            summary.counts[key.domain] = summary.counts.get(key.domain, 0) + 1
    raise BadFile(f"{path}: the file is cut short")  # pragma: no cover - _entity_lines raises


def _parse(path: Path, n: int, line: bytes) -> tuple[EntityKey, Entity]:
    try:
        key, value = item_from_json(orjson.loads(line))
    except orjson.JSONDecodeError as e:
        raise BadFile(f"{path}: line {n} is not JSON: {e}") from e
    except BadLine as e:
        raise BadFile(f"{path}: line {n}: {e}") from e
    if value is None or isinstance(value, Unreadable):
        raise BadFile(f"{path}: line {n}: an entity line needs a value")
    return key, value


def _selected(selection: Selection, key: EntityKey) -> bool:
    return key.domain in selection.domains and selection.wants_scope(key.domain, key.scope, key.id)


def read_items(
    path: Path, selection: Selection, *, skip: int = 0, batch: int = 500
) -> Iterator[tuple[list[Item], int]]:
    """The selected entities in batches, each with the number of entity lines consumed so far
    (the resume point); the first `skip` entity lines are passed over."""
    done = 0
    out: list[Item] = []
    for n, line, meta in _entity_lines(path):
        if meta is not None or line is None:
            continue
        done += 1
        if done <= skip:
            continue
        key, value = _parse(path, n, line)
        if _selected(selection, key):
            out.append((key, value))
        if len(out) >= batch:
            yield out, done
            out = []
    if out or done > skip:
        yield out, done


class ExportWriter:
    """Writes an export file: the header, entity batches (one gzip member each), the trailer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gz = _gz(path)

    def _append(self, data: bytes) -> int:
        with self.path.open("ab") as f:
            if self.gz:
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as z:
                    z.write(data)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()

    def start(self, header: dict[str, Any]) -> int:
        """A new file holding the header line; returns its size."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        return self._append(orjson.dumps({"format": FORMAT, "version": VERSION, **header}) + b"\n")

    def resume_at(self, size: int) -> None:
        """Cut the file back to `size` bytes: the end of its last complete batch."""
        with self.path.open("r+b") as f:
            f.truncate(size)

    def write(self, items: list[tuple[EntityKey, Entity]]) -> int:
        """Append one batch; returns the file's size after it (a resume point)."""
        buf = io.BytesIO()
        for key, value in items:
            buf.write(dumps_line(item_to_json(key, value)))
        return self._append(buf.getvalue())

    def finish(self, entities: int, counts: dict[str, int]) -> int:
        return self._append(dumps_line({"end": True, "entities": entities, "counts": counts}))
