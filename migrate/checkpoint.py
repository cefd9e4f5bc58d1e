"""The checkpoint of a run: what it does and how far it got, so `--resume` continues it.

Saved (atomically: a temporary file renamed over the old one) after every batch the sink has
taken, with the counts so far; removed when the run completes. A run killed at any point resumes
after its last saved batch: the batch in flight is done again, and as writes are idempotent
(an entity already there is `unchanged`), the end state is that of an uninterrupted run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Checkpoint", "CheckpointMismatch"]


class CheckpointMismatch(Exception):
    """`--resume` of a run that does something else than the checkpointed one."""


@dataclass(slots=True)
class Checkpoint:
    """Where a run stands. `position` is the scan cursor (stores) or the number of entity lines
    consumed (files); `out_size` the export file's size after the last complete batch."""

    run: dict[str, Any]
    started_ms: int
    position: str | int | None = None
    out_size: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def path_in(state_dir: Path) -> Path:
        return state_dir / "checkpoint.json"

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = self.path_in(state_dir)
        tmp = path.with_suffix(".tmp")
        data = {
            "run": self.run,
            "startedMs": self.started_ms,
            "position": self.position,
            "outSize": self.out_size,
            "summary": self.summary,
        }
        with tmp.open("wb") as f:
            f.write(orjson.dumps(data))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path, run: dict[str, Any]) -> Checkpoint | None:
        """The checkpoint of the same run, None when there is none; CheckpointMismatch when the
        one there belongs to another run."""
        path = cls.path_in(state_dir)
        if not path.exists():
            return None
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise CheckpointMismatch(f"the checkpoint {path} is unreadable: {e}") from e
        if data.get("run") != run:
            raise CheckpointMismatch(
                f"the checkpoint {path} is of another run ({data.get('run')}); run without --resume "
                "to start over"
            )
        return cls(run, int(data["startedMs"]), data.get("position"), data.get("outSize"), data["summary"])

    @classmethod
    def clear(cls, state_dir: Path) -> None:
        cls.path_in(state_dir).unlink(missing_ok=True)
