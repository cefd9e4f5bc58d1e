"""JS behaviours reproduced by gateway.domain.jscompat."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.domain.jscompat import (
    MAX_DATE_MS,
    _parse_general,
    iso_from_ms,
    number_to_string,
    parse_int,
    parse_js_date,
    random_base36,
    to_base36,
)


@pytest.mark.parametrize(
    ("ms", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_795_627_727_041, "2026-11-25T17:28:47.041Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (253_402_300_800_000, "+010000-01-01T00:00:00.000Z"),
        (-62_198_755_200_000, "-000001-01-01T00:00:00.000Z"),
    ],
)
def test_iso_from_ms_matches_to_iso_string(ms: int, iso: str) -> None:
    """Epoch ms render as JS toISOString, including the six-digit year forms."""
    assert iso_from_ms(ms) == iso


def test_iso_from_ms_keeps_the_date_right_across_days_in_any_order() -> None:
    """The date part is kept for the last day formatted: times within a day, across midnight,
    back to an earlier day and alternating between days all render as datetime does."""
    midnight = 1_795_651_200_000  # 2026-11-26T00:00:00.000Z
    day = 86_400_000
    times = [midnight - 1, midnight, midnight + 1, midnight - 1, midnight + day - 1, midnight + day]
    times += [midnight + k * 7_919_311 for k in range(-30, 30)]
    times += [midnight + (k % 3) * day + k for k in range(30)] + [0, midnight, -1, midnight]
    for ms in times:
        expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert iso_from_ms(ms) == expected, ms


def test_iso_from_ms_out_of_range_raises() -> None:
    """Time values past +-8.64e15 are a RangeError in JS and a ValueError here."""
    with pytest.raises(ValueError, match="out of range"):
        iso_from_ms(8_640_000_000_000_001)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-25T17:28:47.041Z", 1_795_627_727_041),
        ("2026-11-25T17:28:47.0419Z", 1_795_627_727_041),
        ("2026-11-25T17:28:47Z", 1_795_627_727_000),
        ("2026-11-25T18:28:47.041+01:00", 1_795_627_727_041),
        ("2026-11-25", 1_795_564_800_000),
        ("2026-11", 1_793_491_200_000),
        ("2026", 1_767_225_600_000),
        ("2026-11-25 17:28:47.041", 1_795_627_727_041),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ("2026-11-25T24:00:00Z", 1_795_651_200_000),
    ],
)
def test_parse_js_date_accepts_iso_forms(text: str, ms: int) -> None:
    """ISO date strings parse to the ms JS `new Date(text)` gives (no offset means UTC)."""
    assert parse_js_date(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", "nope", "2026-13-01", "2026-02-29", "2026-11-25T25:00:00Z", "2026-11-25T24:00:01Z", "-000000"],
)
def test_parse_js_date_invalid_is_none(text: str) -> None:
    """Strings JS turns into an Invalid Date give None."""
    assert parse_js_date(text) is None


@given(st.integers(-MAX_DATE_MS, MAX_DATE_MS))
@example(0)
@example(-62_167_219_200_000)  # 0000-01-01T00:00:00.000Z: a year Python's datetime has not
@example(-1)
def test_parse_js_date_reads_back_every_time_iso_from_ms_writes(ms: int) -> None:
    """The canonical form (read by the C fast path where it can) and the six-digit years alike."""
    assert parse_js_date(iso_from_ms(ms)) == ms == _parse_general(iso_from_ms(ms))


@given(
    st.text(alphabet="0123456789", min_size=4, max_size=4),
    st.text(alphabet="0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
)
@example("2026", "02", "29", "00", "00", "00", "000")  # not a leap year
@example("2024", "02", "29", "23", "59", "59", "999")
@example("2026", "11", "25", "24", "00", "00", "000")  # 24:00, which datetime refuses and JS takes
@example("2026", "11", "25", "24", "00", "00", "001")
@example("2026", "11", "25", "23", "59", "60", "000")  # a leap second
@example("0000", "01", "01", "00", "00", "00", "000")
@example("2026", "00", "10", "00", "00", "00", "000")
def test_the_canonical_form_with_any_digits_parses_as_the_general_way(  # noqa: PLR0917
    y: str, mo: str, d: str, h: str, mi: str, s: str, ms: str
) -> None:
    """Every `YYYY-MM-DDTHH:MM:SS.mmmZ` (valid or not) gives what the regular expression gives."""
    text = f"{y}-{mo}-{d}T{h}:{mi}:{s}.{ms}Z"
    assert parse_js_date(text) == _parse_general(text)


@given(st.text(alphabet="0123456789-T:.Z W+\u0663\uff11", min_size=20, max_size=28))
@example("2026-W49-1T21:43:19.030Z")  # an ISO week date: fromisoformat takes it, JS does not
@example("2026-12-07T21:43:19.0\u0663\u0663Z")  # digits that are not ASCII
@example(" 2026-12-07T21:43:19.030Z")
def test_text_of_the_canonical_length_or_near_it_parses_as_the_general_way(text: str) -> None:
    assert parse_js_date(text) == _parse_general(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("20", 20),
        ("20abc", 20),
        ("-5", -5),
        ("  7", 7),
        ("+3", 3),
        ("0x1f", 31),
        ("x", None),
        ("", None),
        ("-", None),
    ],
)
def test_parse_int_follows_js(text: str, value: int | None) -> None:
    """parseInt semantics: leading digits, sign, hex prefix; NaN is None."""
    assert parse_int(text) == value


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (120000 / 60000, "2"),
        (7_200_000 / 60000, "120"),
        (60000 / 60000, "1"),
        (30000 / 60000, "0.5"),
        (1000 / 60000, "0.016666666666666666"),
        (-60000 / 60000, "-1"),
        (90000 / 60000, "1.5"),
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123456789012345680000.0, "123456789012345680000"),
        (1.5e-10, "1.5e-10"),
        (0.0, "0"),
        (-0.0, "0"),
        (9007199254740991.0, "9007199254740991"),
        (9007199254740992.0, "9007199254740992"),
        (1e20, "100000000000000000000"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_number_to_string_matches_js(x: float, text: str) -> None:
    """JS Number#toString, as the lock message's minutes figure shows it."""
    assert number_to_string(x) == text


def test_base36() -> None:
    """Base-36 digits as JS toString(36) and random parts of the asked length."""
    assert to_base36(0) == "0"
    assert to_base36(35) == "z"
    assert to_base36(36**4 - 1) == "zzzz"
    assert len(random_base36(6)) == 6
