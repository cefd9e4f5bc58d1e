"""The garbage collector's setting for a bulk run (a migration, a check, their second processes)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fewer_collections", "no_collections"]


@contextmanager
def no_collections() -> Iterator[None]:
    """No cyclic collection at all meanwhile: for a command's imports, whose objects (modules,
    classes, the code dataclasses generate) all live on, so each collection the growing heap sets
    off only walks them again (about 8 % of a check's start-up, counted by callgrind)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """A bulk run allocates millions of short-lived objects that form no cycles: meanwhile the
    cyclic garbage collector runs every 50,000 allocations instead of 700, and leaves what was
    loaded before (modules, settings) out of its full passes. It runs meanwhile even if it was
    off (a process that imported under `no_collections` or started with it off: the second
    process of a check)."""
    before = gc.get_threshold()
    was = gc.isenabled()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()
        gc.set_threshold(*before)
        gc.unfreeze()
