"""Reports kept in the data directory, read by the read-switch guard and `phase show`."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import pytest

from consistency.check import Checker, CheckOptions
from consistency.render import html_page, markdown, terminal_table
from consistency.report import Report, prune, save
from consistency.rules import RULES, Expectations
from consistency.run import finish
from gateway.clock import FakeClock
from gateway.domain.entities import EntityKey
from gateway.phases.guards import PhaseChangeRefusedError
from gateway.phases.reports import newest_report, report_paths, reports_dir
from gateway.phases.runtime import MigrationRuntime
from gateway.settings import MigrationSettings, Settings, StorageSettings

from .memory import MemorySource
from .test_engine import NOW, dataset, task

DOCS = Path(__file__).resolve().parents[2] / "docs"


def read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


async def check(data_dir: Path, clock: FakeClock, *, differ: bool = False, sample: float = 1.0) -> Report:
    legacy, actors = MemorySource("legacy", dataset()), MemorySource("actors", dataset())
    if differ:
        actors.values[EntityKey("task", "", "t1")] = task("t1", status="done")

    async def probe(now_ms: int) -> Expectations:
        return Expectations(now_ms)

    report = await Checker(legacy, actors, clock, probe, data_dir=data_dir).run(
        CheckOptions(rounds=0, sample=sample)
    )
    save(report, data_dir, markdown(report), html_page(report))
    return report


async def test_read_switch_is_refused_without_a_clean_recent_full_report_and_accepted_after_one(
    tmp_path: Path,
) -> None:
    """No report, an unclean one, a partial one and a stale one are each refused with their
    reason; a clean full recent one lets read-switch through without --force."""
    clock = FakeClock(NOW)
    runtime = MigrationRuntime(
        tmp_path,
        clock,
        MigrationSettings(phase="write-through", consistency_max_age_s=3600),
        legacy_configured=True,
    )
    try:

        async def refused(match: str) -> None:
            with pytest.raises(PhaseChangeRefusedError, match=match):
                await runtime.change_phase("read-switch", actor="ops", reason="r", force=False)

        assert runtime.status()["consistency"]["lastReport"] is None
        await refused("run `agent-coord check` first")
        await clock.advance(1000)
        await check(tmp_path, clock, differ=True)
        await refused("not clean")
        await clock.advance(1000)
        await check(tmp_path, clock, sample=0.5)
        await refused("only part of the stores")
        await clock.advance(1000)
        clean = await check(tmp_path, clock)
        status = runtime.status()["consistency"]
        assert status["lastReport"]["clean"] is True
        assert status["lastReport"]["path"] == clean.files["json"]
        assert status["summary"].startswith("clean, finished ")
        await clock.advance(3_601_000)
        await refused("3601 s old")
        await check(tmp_path, clock)
        change = await runtime.change_phase("read-switch", actor="ops", reason="checked", force=False)
        assert (change.to_phase, change.forced) == ("read-switch", False)
    finally:
        await runtime.close()


async def test_the_report_files_hold_counts_and_samples_side_by_side(tmp_path: Path) -> None:
    report = await check(tmp_path, FakeClock(NOW), differ=True)
    doc = json.loads(read(report.files["json"]))
    assert (doc["format"], doc["version"], doc["clean"], doc["complete"]) == (
        "agent-coord-consistency-report",
        1,
        False,
        True,
    )
    assert doc["domains"]["task"]["differs"] == 1
    md = read(report.files["markdown"])
    assert "NOT CLEAN: 1 differences" in md
    assert "### `task:t1`: differs (status)" in md
    assert '"status": "todo"' in md
    assert '"status": "done"' in md
    table = terminal_table(report)
    assert re.search(r"^task\s+3\s+2\s+0\s+0\s+1\s+0\s+0\s+0$", table, re.M), table
    assert "<td><pre>" in read(report.files["html"])


def test_every_rule_is_a_heading_of_the_mapping_document() -> None:
    """Each expected difference names a rule of docs/mapping.md; the anchors exist."""
    headings = set(re.findall(r"^### (\S+)$", (DOCS / "mapping.md").read_text(encoding="utf-8"), re.M))
    assert set(RULES) <= headings


def test_the_report_document_is_documented_field_by_field(tmp_path: Path) -> None:
    """Every top-level field of the JSON document appears in docs/consistency.md."""
    doc = Report("r", NOW, CheckOptions().document(), finished_ms=NOW, complete=True).to_json()
    text = (DOCS / "consistency.md").read_text(encoding="utf-8")
    missing = [k for k in doc if f"`{k}" not in text]
    assert missing == []


def test_the_progress_bar_shows_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    """tqdm on stderr: keys walked of the estimate, the rate and the time left."""
    from consistency.cli import progress_bar  # noqa: PLC0415
    from consistency.run import _updater  # noqa: PLC0415

    with progress_bar(True, 1000) as bar:
        update = _updater(bar)
        update(500)
        update(1000)
    err = capsys.readouterr().err
    assert "checking" in err
    assert "1.00k/1.00k" in err
    assert "keys/s" in err
    with progress_bar(False, 1000) as none:
        assert none is None


async def test_only_the_newest_reports_are_kept(tmp_path: Path) -> None:
    """Pruning to N keeps the N newest reports with their Markdown and HTML files and deletes the
    older ones whole; the guard still reads the newest; 0 keeps every report."""
    clock = FakeClock(NOW)
    reports = []
    for _ in range(5):
        await clock.advance(1000)
        reports.append(await check(tmp_path, clock))
    assert prune(tmp_path, 0) == []
    assert len(report_paths(tmp_path)) == 5
    assert prune(tmp_path, 2) == [Path(r.files["json"]) for r in reports[:3]]
    left = sorted(p.name for p in reports_dir(tmp_path).iterdir())
    assert left == sorted(Path(f).name for r in reports[3:] for f in r.files.values())
    newest = newest_report(tmp_path)
    assert newest is not None
    assert newest.path == reports[-1].files["json"]


async def test_each_check_prunes_to_the_configured_number(tmp_path: Path) -> None:
    """`agent-coord check` saves its report, then deletes all but the
    `migration.consistency_keep_reports` newest."""
    clock = FakeClock(NOW)
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path),
        migration=MigrationSettings(consistency_keep_reports=2),
    )
    args = argparse.Namespace(format="md", json=False)
    for _ in range(4):
        await clock.advance(1000)
        legacy, actors = MemorySource("legacy", dataset()), MemorySource("actors", dataset())

        async def probe(now_ms: int) -> Expectations:
            return Expectations(now_ms)

        report = await Checker(legacy, actors, clock, probe, data_dir=tmp_path).run(CheckOptions(rounds=0))
        finish(report, args, settings, io.StringIO())
    assert len(report_paths(tmp_path)) == 2
    assert len(list(reports_dir(tmp_path).glob("*.md"))) == 2
    newest = newest_report(tmp_path)
    assert newest is not None
    assert newest.path == report.files["json"]
