"""`gateway.bulk.gc_pause`: the collector's settings for a bulk run and for its imports."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.bulk.gc_pause import fewer_collections, no_collections


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    enabled, threshold = gc.isenabled(), gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_no_collections_turns_the_collector_off_and_back_as_it_was() -> None:
    gc.enable()
    with no_collections():
        assert not gc.isenabled()
        with no_collections():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one found it off: left off
    assert gc.isenabled()
    gc.disable()
    with no_collections():
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off before: still off


def test_fewer_collections_runs_the_collector_even_after_imports_without_it() -> None:
    """A check's second process starts with the collector off for its imports; its walk must
    collect (every 50,000 allocations), and whatever came before is left as it was after."""
    before = gc.get_threshold()
    gc.disable()
    with fewer_collections():
        assert gc.isenabled()
        assert gc.get_threshold()[0] == 50_000
        assert gc.get_freeze_count() > 0  # what was loaded before is out of the full passes
    assert not gc.isenabled()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    gc.enable()
    with no_collections(), fewer_collections():
        assert gc.isenabled()
    assert gc.isenabled()
