"""Repairing what a check found: each difference copied from one store to the other.

The source is the phase's authoritative store (Redis before `read-switch`, the actors from it)
or the one `--from` names. Each difference's key is read again from the source at repair time
(never the value the check saw), and written to the target through the bulk layer's sink, which
leaves alone an entity the target holds in a newer version than the copy (a live write after the
read: `gateway.bulk.versions`), and reports it as skipped. A value the source cannot read is not
repaired (it is listed). `dry_run` writes nothing and lists each change the repair would make.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from consistency.compare import Finding, Kind, Value
from gateway.bulk.items import EntitySink, EntitySource
from gateway.domain.entities import Entity, EntityKey, Unreadable

log = structlog.get_logger(__name__)

MAX_LISTED: Final = 1000
"""Changes kept in the report (all of them are printed by a dry run)."""


def authoritative(phase: str) -> str:
    """The store a phase reads from and writes first: the one a repair copies from."""
    return "actors" if phase in ("read-switch", "cutover") else "legacy"


@dataclass(slots=True)
class Change:
    """One change of a repair: what happens to `key` in the target store."""

    key: EntityKey
    action: str  # create | update | delete
    fields: tuple[str, ...] = ()

    def line(self, target: str, source: str) -> str:
        what = f" ({', '.join(self.fields)})" if self.fields else ""
        verb = {"create": "create in", "update": "update in", "delete": "delete from"}[self.action]
        return f"{verb} {target}: {self.key}{what}  [from {source}]"


@dataclass(slots=True)
class RepairResult:
    source: str
    target: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    planned: int = 0
    written: int = 0
    unchanged: int = 0
    skipped: list[EntityKey] = field(
        default_factory=list
    )  # newer in the target (a live write), or not writable
    unrepairable: list[tuple[EntityKey, str]] = field(default_factory=list)  # unreadable in the source

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "dryRun": self.dry_run,
            "planned": self.planned,
            "written": self.written,
            "unchanged": self.unchanged,
            "skipped": [str(k) for k in self.skipped[:MAX_LISTED]],
            "unrepairable": [{"key": str(k), "reason": r} for k, r in self.unrepairable[:MAX_LISTED]],
            "changes": [
                {"key": str(c.key), "action": c.action, "fields": list(c.fields)}
                for c in self.changes[:MAX_LISTED]
            ],
        }


def _change(f: Finding, source: str, value: Value | None) -> Change:
    if value is None:
        return Change(f.key, "delete")
    target_missing = (f.kind is Kind.MISSING_IN_ACTORS and source == "legacy") or (
        f.kind is Kind.MISSING_IN_LEGACY and source == "actors"
    )
    return Change(f.key, "create" if target_missing else "update", f.fields)


async def repair(
    findings: Sequence[Finding],
    source: EntitySource,
    target: EntitySink,
    *,
    dry_run: bool,
    batch: int = 500,
) -> RepairResult:
    """Copy each difference of `findings` from `source` to `target` (see the module doc)."""
    result = RepairResult(source.name, target.name, dry_run)
    todo = [f for f in findings if f.is_difference]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        current = await source.read_many([f.key for f in chunk])
        items: list[tuple[EntityKey, Entity | None]] = []
        for f in chunk:
            value = current.get(f.key)
            if isinstance(value, Unreadable):
                result.unrepairable.append((f.key, value.reason))
                continue
            items.append((f.key, value))
            result.changes.append(_change(f, source.name, value))
        result.planned += len(items)
        if not items:
            continue
        items.sort(key=lambda kv: kv[1] is not None)  # deletions first: a chat list ends full
        outcome = await target.write_batch(items, dry_run=dry_run)
        result.written += sum(outcome.written.values())
        result.unchanged += sum(outcome.unchanged.values())
        result.skipped.extend(outcome.skipped_keys)
    log.info(
        "consistency.repaired",
        source=source.name,
        target=target.name,
        dry_run=dry_run,
        planned=result.planned,
        written=result.written,
        skipped=len(result.skipped),
        unrepairable=len(result.unrepairable),
    )
    return result
