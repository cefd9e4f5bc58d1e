"""`agent-coord check --whole-hashes`: every legacy hash listed with one HKEYS, however large
(`legacy.hkeys_max` unbounded), with the report of a check that lists them in HSCAN steps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from consistency.cli import HKEYS_UNBOUNDED
from gateway.bulk.sides import open_legacy_side
from gateway.settings import SettingsError, load_settings
from tests.checker.test_check_stores import check, differences, plant, same_part, seed_and_import

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]


def _listings(url: str) -> dict[str, int]:
    """HKEYS and HSCAN calls Redis has served since its counters were last reset."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("hkeys", "hscan")}


def _reset_counters(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.config_resetstat()
    finally:
        client.close()


def test_whole_hashes_lists_every_hash_with_hkeys_and_reports_the_same(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `legacy.hkeys_max` 0 every hash is listed in HSCAN steps; `--whole-hashes` lists each
    with one HKEYS instead, in one process or split over two (whose second lists the DMs and
    memories: the same calls in all), and the full and the sampled reports are those of the
    stepped check, planted differences included."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    planted = asyncio.run(plant(redis_url, tmp_path))
    monkeypatch.setenv("AGENT_COORD_LEGACY_HKEYS_MAX", "0")
    for scope in (("--rounds", "0"), ("--rounds", "0", "--sample", "0.5", "--seed", "3")):
        runs: dict[tuple[str, bool], tuple[int, dict[str, Any], dict[str, int]]] = {}
        for jobs in ("1", "2"):
            for whole in (False, True):
                _reset_counters(redis_url)
                flag = ("--whole-hashes",) if whole else ()
                status, doc = check(redis_url, tmp_path, "--jobs", jobs, *flag, *scope)
                runs[jobs, whole] = (status, same_part(doc), _listings(redis_url))
        stepped, whole_one, whole_two = runs["1", False], runs["1", True], runs["2", True]
        assert stepped[2]["hkeys"] == runs["2", False][2]["hkeys"] == 0
        assert whole_one[2]["hkeys"] >= 6  # the keyed hashes of every domain
        assert whole_one[2]["hscan"] < stepped[2]["hscan"]
        assert whole_two[2] == whole_one[2]  # the second process listed its hashes whole too
        assert all(r[:2] == stepped[:2] for r in runs.values())
        assert stepped[0] == 1
    status, full = check(redis_url, tmp_path, "--rounds", "0", "--whole-hashes")
    assert status == 1
    assert differences(full) == planted


async def _limit_seen(url: str, data_dir: Path, **overrides: Any) -> int:
    settings = load_settings(
        overrides={"storage.data_dir": str(data_dir), "legacy.redis_url": url, **overrides}
    )
    async with open_legacy_side(settings, url) as legacy:
        return legacy.hkeys_max


def test_the_setting_reaches_the_legacy_side(redis_url: str, tmp_path: Path) -> None:
    """`legacy.hkeys_max` is the bulk reads' limit: 32,768 by default, what the settings say, and
    unbounded for `--whole-hashes`; a negative one is refused as a bad setting."""
    assert asyncio.run(_limit_seen(redis_url, tmp_path)) == 32_768
    assert asyncio.run(_limit_seen(redis_url, tmp_path, **{"legacy.hkeys_max": 5})) == 5
    assert asyncio.run(_limit_seen(redis_url, tmp_path, **{"legacy.hkeys_max": HKEYS_UNBOUNDED})) > 2**31
    with pytest.raises(SettingsError, match="hkeys_max"):
        load_settings(overrides={"legacy.hkeys_max": -1})


def test_whole_hashes_warns_when_the_gateway_writes_the_legacy_store(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In every phase but cutover the gateway writes the legacy Redis, which each HKEYS of
    `--whole-hashes` holds: the check says so on stderr (and still checks); in cutover it does not."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    capsys.readouterr()
    status, _ = check(redis_url, tmp_path, "--rounds", "0", "--whole-hashes")
    assert status == 0
    assert "--whole-hashes" not in capsys.readouterr().err  # cutover, the default
    monkeypatch.setenv("AGENT_COORD_MIGRATION_PHASE", "write-through")
    status, doc = check(redis_url, tmp_path, "--rounds", "0", "--whole-hashes")
    err = capsys.readouterr().err
    assert status == 0
    assert doc["clean"] is True
    assert "warning: --whole-hashes" in err
    assert "in phase write-through the gateway writes that Redis" in err
    status, _ = check(redis_url, tmp_path, "--rounds", "0")
    assert "--whole-hashes" not in capsys.readouterr().err  # no flag, no warning


def test_a_raised_hkeys_max_warns_as_the_flag_does(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`legacy.hkeys_max` raised in the settings (here the environment) holds Redis as the flag
    does for the hashes it lets through: the same warning outside cutover, naming the setting and
    its value; none at the default or below, and none in cutover."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    monkeypatch.setenv("AGENT_COORD_MIGRATION_PHASE", "write-through")
    capsys.readouterr()
    monkeypatch.setenv("AGENT_COORD_LEGACY_HKEYS_MAX", "1000000")
    status, doc = check(redis_url, tmp_path, "--rounds", "0")
    err = capsys.readouterr().err
    assert status == 0
    assert doc["clean"] is True
    assert "warning: legacy.hkeys_max is 1,000,000 (default 32,768)" in err
    assert "in phase write-through the gateway writes that Redis" in err
    monkeypatch.setenv("AGENT_COORD_LEGACY_HKEYS_MAX", "100")
    status, _ = check(redis_url, tmp_path, "--rounds", "0")
    assert status == 0
    assert "warning" not in capsys.readouterr().err  # lowered: each HKEYS holds Redis less
    monkeypatch.setenv("AGENT_COORD_LEGACY_HKEYS_MAX", "1000000")
    monkeypatch.setenv("AGENT_COORD_MIGRATION_PHASE", "cutover")
    status, _ = check(redis_url, tmp_path, "--rounds", "0")
    assert status == 0
    assert "warning" not in capsys.readouterr().err  # cutover: nothing writes that Redis
