"""The consistency report: counts per domain, bounded samples, and the stable JSON document.

docs/consistency.md documents the document field by field; `FORMAT` and `VERSION` name it, and
a field is only ever added. Reports are kept in `<data_dir>/consistency/` (gateway/phases/
reports.py: the guard of `read-switch` reads the newest).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from consistency.compare import DIFFERENCES, Finding, Kind
from consistency.rules import RULES, rule_ref
from gateway.domain.jscompat import iso_from_ms
from gateway.phases.reports import REPORT_PREFIX, report_paths, reports_dir

FORMAT: Final = "agent-coord-consistency-report"
VERSION: Final = 1


@dataclass(slots=True)
class DomainCounts:
    """What one domain's comparison found."""

    compared: int = 0
    same: int = 0
    missing_in_actors: int = 0
    missing_in_legacy: int = 0
    differs: int = 0
    unreadable: int = 0
    settled: int = 0  # differences the re-check rounds saw go away (writes in flight)
    expected: dict[str, int] = field(default_factory=dict)

    @property
    def differences(self) -> int:
        return self.missing_in_actors + self.missing_in_legacy + self.differs + self.unreadable

    def add(self, kind: Kind, rule: str | None = None) -> None:
        if kind is Kind.SAME:
            self.same += 1
        elif kind is Kind.EXPECTED:
            rule = rule or "unnamed"
            self.expected[rule] = self.expected.get(rule, 0) + 1
        elif kind is Kind.MISSING_IN_ACTORS:
            self.missing_in_actors += 1
        elif kind is Kind.MISSING_IN_LEGACY:
            self.missing_in_legacy += 1
        elif kind is Kind.DIFFERS:
            self.differs += 1
        else:
            self.unreadable += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "same": self.same,
            "missingInActors": self.missing_in_actors,
            "missingInLegacy": self.missing_in_legacy,
            "differs": self.differs,
            "unreadable": self.unreadable,
            "differences": self.differences,
            "expected": dict(sorted(self.expected.items())),
            "settled": self.settled,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DomainCounts:
        return cls(
            compared=doc["compared"],
            same=doc["same"],
            missing_in_actors=doc["missingInActors"],
            missing_in_legacy=doc["missingInLegacy"],
            differs=doc["differs"],
            unreadable=doc["unreadable"],
            settled=doc.get("settled", 0),
            expected=dict(doc.get("expected", {})),
        )


def printable(value: Any) -> Any:
    """`value` with every text that holds a lone surrogate spelled out: a legacy field name or
    value that is not UTF-8 arrives as the client decodes it (surrogateescape: byte 0xff is
    U+DCFF), which no UTF-8 file or terminal can hold. Such a byte reads `\\xff`, any other lone
    surrogate `\\udXXX`; every other text is returned as it is (the same object)."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return "".join(_spelled(c) for c in value)
        return value
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def _spelled(c: str) -> str:
    if "\udc80" <= c <= "\udcff":
        return f"\\x{ord(c) - 0xDC00:02x}"
    if "\ud800" <= c <= "\udfff":
        return f"\\u{ord(c):04x}"
    return c


def finding_json(f: Finding) -> dict[str, Any]:
    """One sample of the report: the key, what was found and both values side by side (texts
    that are not UTF-8 spelled out: `printable`)."""
    return {
        "domain": f.key.domain,
        "scope": printable(f.key.scope),
        "id": printable(f.key.id),
        "key": printable(str(f.key)),
        "kind": str(f.kind),
        "fields": list(f.fields),
        "rule": None if f.rule is None else rule_ref(f.rule),
        "legacy": printable(f.legacy),
        "actors": printable(f.actors),
    }


@dataclass(slots=True)
class Report:
    """A check's result; `to_json` is the stable document."""

    run_id: str
    started_ms: int
    options: dict[str, Any]  # scope, recheck, stores: as given
    domains: dict[str, DomainCounts] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    expected_samples: list[dict[str, Any]] = field(default_factory=list)
    samples_left_out: int = 0
    finished_ms: int | None = None
    complete: bool = False
    incomplete_reason: str | None = None
    repair: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    _full: set[tuple[bool, str]] = field(default_factory=set, repr=False, compare=False)
    """(difference?, domain) whose samples are all kept: no count of the pool needed."""

    @staticmethod
    def new_run_id() -> str:
        return secrets.token_hex(6)

    def counts(self, domain: str) -> DomainCounts:
        found = self.domains.get(domain)
        if found is None:
            found = self.domains[domain] = DomainCounts()
        return found

    def totals(self) -> DomainCounts:
        out = DomainCounts()
        for c in self.domains.values():
            out.compared += c.compared
            out.same += c.same
            out.missing_in_actors += c.missing_in_actors
            out.missing_in_legacy += c.missing_in_legacy
            out.differs += c.differs
            out.unreadable += c.unreadable
            out.settled += c.settled
            for rule, n in c.expected.items():
                out.expected[rule] = out.expected.get(rule, 0) + n
        return out

    @property
    def clean(self) -> bool:
        return self.complete and self.totals().differences == 0

    def keeps_expected(self, domain: str, max_samples: int) -> bool:
        """Whether `record` would keep an expected finding of `domain` as a sample."""
        if (False, domain) in self._full:
            return False
        return sum(1 for s in self.expected_samples if s["domain"] == domain) < max_samples

    def record(self, f: Finding, max_samples: int) -> None:
        """Count a final finding and keep it as a sample while the domain has room."""
        self.counts(f.key.domain).add(f.kind, f.rule)
        if f.kind is Kind.SAME:
            return
        difference = f.kind in DIFFERENCES
        full = (difference, f.key.domain)
        if full not in self._full:
            pool = self.samples if difference else self.expected_samples
            if sum(1 for s in pool if s["domain"] == f.key.domain) < max_samples:
                pool.append(finding_json(f))
                return
            self._full.add(full)
        if difference:
            self.samples_left_out += 1

    def to_json(self) -> dict[str, Any]:
        totals = self.totals()
        used = {r for c in self.domains.values() for r in c.expected}
        return {
            "format": FORMAT,
            "version": VERSION,
            "runId": self.run_id,
            "startedAt": iso_from_ms(self.started_ms),
            "finishedAt": None if self.finished_ms is None else iso_from_ms(self.finished_ms),
            "durationS": None if self.finished_ms is None else (self.finished_ms - self.started_ms) / 1000,
            "complete": self.complete,
            "incompleteReason": self.incomplete_reason,
            "clean": self.clean,
            **self.options,
            "totals": totals.to_json(),
            "domains": {d: c.to_json() for d, c in self.domains.items()},
            "expectedRules": {
                r: {"rule": rule_ref(r), "description": RULES[r], "count": totals.expected.get(r, 0)}
                for r in sorted(used)
            },
            "samples": self.samples,
            "samplesLeftOut": self.samples_left_out,
            "expectedSamples": self.expected_samples,
            "repair": self.repair,
            "files": self.files,
        }


def stamp(ms: int) -> str:
    """A fixed-width UTC stamp for file names: `20261204T204512345Z`."""
    iso = iso_from_ms(ms)  # 2026-12-04T20:45:12.345Z
    return iso.replace("-", "").replace(":", "").replace(".", "")


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def prune(data_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest reports of the data directory (each with its readable
    file); `keep` 0 deletes nothing. Returns the JSON files deleted, oldest first."""
    paths = report_paths(data_dir)
    if keep <= 0 or len(paths) <= keep:
        return []
    gone = paths[:-keep]
    for path in gone:
        for suffix in (".md", ".html", ".json"):  # the JSON last: it is what marks a report
            path.with_suffix(suffix).unlink(missing_ok=True)
    return gone


def save(report: Report, data_dir: Path, markdown: str | None = None, html: str | None = None) -> Path:
    """Keep the report (JSON, and the readable file) in the data directory; returns the JSON path."""
    if report.finished_ms is None:
        raise ValueError("a report is saved once the check has ended")
    folder = reports_dir(data_dir)
    base = f"{REPORT_PREFIX}{stamp(report.finished_ms)}-{report.run_id}"
    path = folder / f"{base}.json"
    if markdown is not None:
        report.files["markdown"] = str(folder / f"{base}.md")
        write_atomic(folder / f"{base}.md", markdown)
    if html is not None:
        report.files["html"] = str(folder / f"{base}.html")
        write_atomic(folder / f"{base}.html", html)
    report.files["json"] = str(path)
    write_atomic(path, json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path
