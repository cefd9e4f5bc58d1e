"""SQL functions the host's connections carry, for bulk reads that choose rows inside SQLite.

A seeded sample (`gateway.bulk.items.Selection`, sampling rule 3) keeps a key when the CRC-32 of
its text, continued from a start the seed and the text's fixed head give, times `SAMPLE_MIX`
modulo `2**SAMPLE_BITS`, is below a limit. `zlib.crc32` is registered as `SAMPLE_SQL_FN` on a
connection (`register_sample_fn`), so SQLite itself calls it per row (a C call, no Python frame)
and `sql_sample_condition` is the whole test in SQL.
"""

from __future__ import annotations

import sqlite3
import zlib
from typing import Final

__all__ = ["SAMPLE_BITS", "SAMPLE_MIX", "SAMPLE_SQL_FN", "register_sample_fn", "sql_sample_condition"]

SAMPLE_SQL_FN: Final = "_agent_coord_crc32"
"""The name `zlib.crc32` is registered under (`register_sample_fn`)."""

SAMPLE_BITS: Final = 32
"""A key is in the sample when its 32-bit hash falls below `rate * 2**32`."""

SAMPLE_MIX: Final = 0x61C88647
"""The hash is the CRC-32 times this odd constant, modulo 2**32 (Fibonacci hashing). CRC-32 alone
is linear: keys that differ in the same bits would be in a sample together, or never, whatever
the seed (ids `t-21` and `t-25` were chosen together ten times as often as by chance, and the
planted differences of a block of 1,000 consecutive ids were found with twice a random sample's
spread over seeds); the product's high bits depend on all of the CRC's. Under 2**31, so the
product stays an exact 64-bit integer in SQLite."""


def register_sample_fn(conn: sqlite3.Connection) -> None:
    """Register `zlib.crc32` as `SAMPLE_SQL_FN` on `conn`."""
    conn.create_function(SAMPLE_SQL_FN, 2, zlib.crc32, deterministic=True)


def sql_sample_condition(column: str) -> str:
    """The SQL condition that the sample keeps the row whose id is `column`, with two bound
    values: the start and the limit (`gateway.bulk.items.Selection.sql_sample`); the connection
    needs `register_sample_fn`."""
    return f"({SAMPLE_SQL_FN}(CAST({column} AS BLOB), ?) * {SAMPLE_MIX}) % {2**SAMPLE_BITS} < ?"
