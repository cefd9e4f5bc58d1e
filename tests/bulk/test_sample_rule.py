"""Sampling rule 3: every place a store chooses a sample chooses the same keys, and like a
random sample (about the rate, keys not chosen together more than by chance)."""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Callable

import pytest

from gateway.bulk.items import (
    SAMPLE_RULE,
    Selection,
    cursor_of,
    in_sample,
    parse_cursor,
    register_sample_fn,
    sample_text,
    sql_sample_condition,
)
from gateway.domain.entities import EntityKey

IDS = [f"t-{i}" for i in range(3000)] + [f"mem-{i:x}-é{i % 7}" for i in range(500)] + ["", "a:b:c"]


def test_the_rule_is_pinned() -> None:
    """Which keys a seed chooses is part of the rule: a change of the hash or of the sample texts
    must come with a new SAMPLE_RULE (saved sampled checks of another rule are not resumed)."""
    assert SAMPLE_RULE == 3
    chosen = [i for i in range(100) if in_sample(EntityKey("task", "", f"t-{i}"), 0.1, 1)]
    assert chosen == [23, 56, 57, 92, 93]
    assert in_sample(EntityKey("checkpoint", "agent-7", ""), 0.5, 4) == Selection(
        sample=0.5, seed=4
    ).text_in_sample("checkpoint:agent-7:")


@pytest.mark.parametrize(("rate", "seed"), [(0.1, 1), (0.1, 2), (0.5, 9), (0.01, 3)])
def test_every_way_of_choosing_agrees_with_in_sample(rate: float, seed: int) -> None:
    sel = Selection(sample=rate, seed=seed)
    want = [i for i in IDS if in_sample(EntityKey("task", "", i), rate, seed)]
    assert sel.sampled_ids("task", "", IDS) == want
    assert [i for i in IDS if sel.id_sampler("task", "")(i)] == want
    assert sel.sampled_texts("task:", IDS) == want
    assert sel.sampled_texts("task:", [i.encode() for i in IDS]) == [
        i.encode() for i in want
    ]  # as Redis sends
    # the values listed beside the names (an HSCAN page) kept at the kept names' places
    values = [f"value of {i}" for i in IDS]
    assert sel.sampled_with("task:", [i.encode() for i in IDS], values) == (
        [i.encode() for i in want],
        [f"value of {i}" for i in want],
    )
    owners = [a for a in IDS if a]
    assert (
        sel.sampled_with("checkpoint:", owners, owners, ":")
        == (sel.sampled_owners("checkpoint", owners),) * 2
    )
    assert sel.sampled_texts("checkpoint:", [a.encode() for a in owners], ":") == [
        a.encode() for a in sel.sampled_owners("checkpoint", owners)
    ]
    # memories by id alone, whatever their owner
    assert sel.sampled_ids("memory", "bob", IDS) == [
        i for i in IDS if in_sample(EntityKey("memory", "x", i), rate, seed)
    ]
    # owners: a checkpoint by its agent, a DM by its inbox, a lock by its name
    keys: dict[str, Callable[[str], EntityKey]] = {
        "checkpoint": lambda a: EntityKey("checkpoint", a, ""),
        "dm": lambda a: EntityKey("dm", a, "x"),
        "lock": lambda a: EntityKey("lock", "", a),
    }
    for domain, key in keys.items():
        assert sel.sampled_owners(domain, owners) == [a for a in owners if in_sample(key(a), rate, seed)]
    # a claim field `{by}:{what}` is kept when its `what` (the text after a colon) is in the sample
    fields = [f"agent-{n}:{w}" for n, w in enumerate(IDS[:400])]
    kept = [f for f in fields if sel.text_or_suffix_in_sample("claim:", f)]
    assert all(
        f in kept
        for f, w in zip(fields, IDS[:400], strict=True)
        if in_sample(EntityKey("claim", "", w), rate, seed)
    )
    # inside SQLite, by the registered C function
    db = sqlite3.connect(":memory:")
    register_sample_fn(db)
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in IDS])
    start, limit = sel.sql_sample("task", "")
    query = f"SELECT id FROM t WHERE {sql_sample_condition('id')}"  # noqa: S608 - our own condition
    rows = db.execute(query, (start, limit)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(want)
    everything = db.execute(query, Selection().sql_sample("task", "")).fetchall()
    assert len(everything) == len(IDS)  # no sample: every id


def test_a_sample_is_about_the_rate_and_keys_are_not_chosen_together() -> None:
    """Over seeds, a block of consecutive ids is sampled with a random sample's spread, and two
    ids are in a sample together about rate**2 of the time (CRC-32 alone, being linear, chose
    some pairs together ten times as often)."""
    keys = [EntityKey("task", "", f"t-{i}") for i in range(1000)]
    counts = [sum(in_sample(k, 0.1, seed) for k in keys) for seed in range(120)]
    assert 95 <= statistics.mean(counts) <= 105
    assert statistics.pstdev(counts) < 9.5 * 1.4  # a binomial's is 9.5
    together = sum(
        in_sample(EntityKey("task", "", "t-21"), 0.1, s) and in_sample(EntityKey("task", "", "t-25"), 0.1, s)
        for s in range(3000)
    )
    assert together < 60  # about 30 by chance; 300 with CRC-32 alone


def test_sample_texts_are_those_of_rule_2() -> None:
    assert sample_text("dm", "bob", "m1") == "dm:bob"
    assert sample_text("memory", "bob", "m1") == "memory:m1"
    assert sample_text("checkpoint", "bob", "") == "checkpoint:bob:"


def test_a_name_that_is_not_utf8_is_chosen_by_its_bytes_everywhere() -> None:
    """A legacy field name that is not UTF-8 arrives decoded with surrogateescape where it is
    decoded, and as the bytes Redis holds where it is listed undecoded: every way of asking
    chooses it alike (they raised UnicodeEncodeError and stopped the check)."""
    raw = [b"bad\xff-%d:w\xc3%d" % (i, i) for i in range(400)]
    texts = [r.decode("utf-8", "surrogateescape") for r in raw]
    sel = Selection(sample=0.3, seed=5)
    by_bytes = sel.sampled_texts("task:", raw)
    assert 60 <= len(by_bytes) <= 180
    assert [t.encode("utf-8", "surrogateescape") for t in sel.sampled_texts("task:", texts)] == by_bytes
    assert [t.encode("utf-8", "surrogateescape") for t in sel.sampled_ids("task", "", texts)] == by_bytes
    assert [
        t.encode("utf-8", "surrogateescape") for t in texts if sel.in_sample(EntityKey("task", "", t))
    ] == by_bytes
    # a claim field `{by}:{what}`: the suffix after a colon, as bytes or decoded
    whats = [t for t in texts if sel.text_or_suffix_in_sample("claim:", t)]
    assert {t.encode("utf-8", "surrogateescape") for t in whats} >= set(sel.sampled_texts("claim:", raw))
    suffixes = [r.split(b":", 1)[1] for r in raw]
    chosen_by_suffix = set(sel.sampled_texts("claim:", suffixes))
    assert all(
        (r in set(sel.sampled_texts("claim:", raw)) or s in chosen_by_suffix) == (t in whats)
        for r, s, t in zip(raw, suffixes, texts, strict=True)
    )


def test_a_cursor_after_a_name_that_is_not_utf8_reads_back() -> None:
    key = EntityKey("task", "", b"bad\xff\xfe".decode("utf-8", "surrogateescape"))
    text = cursor_of(key)
    assert text.isascii()
    assert parse_cursor(text) == key
    plain = EntityKey("task", "", "t-é")
    assert cursor_of(plain) == '["task","","t-é"]'  # unchanged for every other name
    assert parse_cursor(cursor_of(plain)) == plain


def test_claim_fields_are_chosen_on_their_bytes_as_by_their_text() -> None:
    """The claims' listing tests each field name as Redis sent it (`suffixes_kept`, no decoding):
    the same choice as `text_or_suffix_in_sample` of the decoded name, for names with no colon,
    several colons, or bytes that are not UTF-8; every name without a sample."""
    raw = [b"agent-%d:w-%d" % (i, i) for i in range(300)]
    raw += [b"a:b:w-%d" % i for i in range(300)] + [b"w-%d" % i for i in range(300)]
    raw += [b"bad\xff-%d:w\xc3%d" % (i, i) for i in range(300)] + [b"", b":", b"x::"]
    for seed in (1, 7):
        sel = Selection(sample=0.1, seed=seed)
        want = [sel.text_or_suffix_in_sample("claim:", r.decode("utf-8", "surrogateescape")) for r in raw]
        assert sel.suffixes_kept("claim:", raw) == want
        assert 150 <= sum(want) <= 450  # the sample, not everything or nothing
    assert Selection().suffixes_kept("claim:", raw) == [True] * len(raw)
