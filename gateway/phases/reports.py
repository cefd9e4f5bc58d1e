"""Where consistency reports are kept, and what the phase guard reads of the newest one.

`agent-coord check` writes each report as `<data_dir>/consistency/report-<UTC stamp>.json`
(docs/consistency.md documents the document field by field); the stamp is fixed width, so the
newest report is the last name. The gateway reads only the few fields the guard needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import structlog

from gateway.domain.jscompat import parse_js_date
from gateway.phases.guards import ConsistencyReportInfo

REPORTS_DIR: Final = "consistency"
REPORT_PREFIX: Final = "report-"

log = structlog.get_logger(__name__)


def reports_dir(data_dir: Path) -> Path:
    return Path(data_dir) / REPORTS_DIR


def report_paths(data_dir: Path) -> list[Path]:
    """Every finished report of the data directory, oldest first."""
    folder = reports_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{REPORT_PREFIX}*.json"))


def read_report_info(path: Path) -> ConsistencyReportInfo:
    """What the guard needs of one report; a file it cannot read counts as an unclean report."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        finished = parse_js_date(doc["finishedAt"])
        if finished is None:
            raise ValueError("finishedAt is not a date")  # noqa: TRY301 - one handler for every defect
        totals = doc.get("totals") or {}
        return ConsistencyReportInfo(
            finished_ms=finished,
            clean=doc["clean"] is True,
            path=str(path),
            complete=doc.get("complete") is True,
            full=(doc.get("scope") or {}).get("full") is True,
            compared=int(totals.get("compared", 0)),
            differences=int(totals.get("differences", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("consistency.report_unreadable", path=str(path), error=str(e))
        return ConsistencyReportInfo(0, False, str(path), complete=False, full=False)


def newest_report(data_dir: Path) -> ConsistencyReportInfo | None:
    """The newest report of the data directory, or None when there is none."""
    paths = report_paths(data_dir)
    return read_report_info(paths[-1]) if paths else None
