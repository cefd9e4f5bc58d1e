"""JavaScript behaviours the DO API leaks onto the wire, reproduced exactly.

* `iso_from_ms`: `new Date(ms).toISOString()` (`YYYY-MM-DDTHH:MM:SS.mmmZ`; six-digit signed years
  outside 0000..9999, as JS writes them).
* `parse_js_date`: `new Date(text).getTime()` for the ISO forms V8 accepts (and the common
  `YYYY-MM-DD HH:MM[:SS[.fff]]` spelling); `None` where JS gives an Invalid Date. Date-times
  without an offset are read as UTC, which is the Workers runtime's local time zone.
* `parse_int`: `parseInt(text)` with no radix; `None` for NaN.
* `number_to_string`: `String(x)` for a JS number (`120`, `0.5`, `0.016666666666666666`, `1e+21`).
* `to_base36` / `random_base36`: `n.toString(36)` and the `Math.random().toString(36)` slices.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "MAX_DATE_MS",
    "iso_from_ms",
    "number_to_string",
    "parse_int",
    "parse_js_date",
    "random_base36",
    "to_base36",
]

MAX_DATE_MS: Final = 8_640_000_000_000_000  # the ECMAScript time value range is +-this
_DAY_MS: Final = 86_400_000
_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01 (proleptic Gregorian, any year)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9  # noqa: PLR2004 - the month shift of the algorithm
    return (y + 1 if m <= 2 else y), m, d  # noqa: PLR2004


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Inverse of `_civil_from_days`."""
    y -= m <= 2  # noqa: PLR2004
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1  # noqa: PLR2004
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _date_prefix(days: int) -> str:
    """`YYYY-MM-DDT` of a day count since 1970-01-01 (JS's six-digit signed years outside 0..9999)."""
    y, mo, d = _civil_from_days(days)
    year = f"{y:04d}" if 0 <= y <= 9999 else f"{'+' if y > 0 else '-'}{abs(y):06d}"  # noqa: PLR2004
    return f"{year}-{mo:02d}-{d:02d}T"


# the date part of the last day formatted: the gateway stamps the current day over and over
_last_day: list[tuple[int, str]] = [(0, _date_prefix(0))]


def iso_from_ms(ms: int) -> str:
    """JS `new Date(ms).toISOString()`; raises ValueError where JS throws RangeError."""
    if not -MAX_DATE_MS <= ms <= MAX_DATE_MS:
        raise ValueError(f"time value out of range: {ms}")
    days, rem = divmod(ms, _DAY_MS)
    day, prefix = _last_day[0]
    if day != days:
        prefix = _date_prefix(days)
        _last_day[0] = (days, prefix)
    secs, milli = divmod(rem, 1000)
    h, secs = divmod(secs, 3600)
    mi, s = divmod(secs, 60)
    return f"{prefix}{h:02d}:{mi:02d}:{s:02d}.{milli:03d}Z"


_ISO_DATE: Final = re.compile(
    r"(?P<y>[+-]\d{6}|\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2}))?)?"
    r"(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?"
)
_MONTH_DAYS: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_CANONICAL_LEN: Final = 24  # YYYY-MM-DDTHH:MM:SS.mmmZ, what `iso_from_ms` writes
_CANONICAL_MARKS: Final = "--T::."  # its characters 4, 7, 10, 13, 16 and 19 (`text[4:20:3]`)


def parse_js_date(text: str) -> int | None:
    """`new Date(text).getTime()` for ISO date strings; `None` for an Invalid Date.

    The form `iso_from_ms` writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`, most stored times) is read by the
    C parser of `datetime.fromisoformat` when it takes it (ASCII digits, a real date and time of
    the years 1-9999): a twentieth of the regular expression's cost. Anything else, or anything
    it refuses (the year 0000, 24:00, a leap second), goes the general way (`_parse_general`)."""
    if len(text) == _CANONICAL_LEN and text[23] == "Z" and text[4:20:3] == _CANONICAL_MARKS:
        try:
            return (datetime.fromisoformat(text) - _EPOCH) // _ONE_MS
        except ValueError:
            pass
    return _parse_general(text)


def _parse_general(text: str) -> int | None:  # noqa: PLR0911 - one exit per invalid element
    """`parse_js_date` by the regular expression: every ISO form V8 accepts."""
    m = _ISO_DATE.fullmatch(text.strip())
    if m is None:
        return None
    ys = m["y"]
    if ys == "-000000":
        return None
    y = int(ys)
    mo = int(m["mo"] or 1)
    d = int(m["d"] or 1)
    h = int(m["h"] or 0)
    mi = int(m["mi"] or 0)
    s = int(m["s"] or 0)
    frac = m["f"] or ""
    milli = int((frac + "00")[:3]) if frac else 0
    if not 1 <= mo <= 12:  # noqa: PLR2004
        return None
    dim = 29 if mo == 2 and _leap(y) else _MONTH_DAYS[mo - 1]  # noqa: PLR2004
    if not 1 <= d <= dim or mi > 59 or s > 59:  # noqa: PLR2004
        return None
    if h > 24 or (h == 24 and (mi or s or milli)):  # noqa: PLR2004 - 24:00 is midnight
        return None
    offset_min = 0
    tz = m["tz"]
    if tz and tz != "Z":
        oh, om = int(tz[1:3]), int(tz[4:6])
        if oh > 23 or om > 59:  # noqa: PLR2004
            return None
        offset_min = (oh * 60 + om) * (1 if tz[0] == "+" else -1)
    ms = _days_from_civil(y, mo, d) * _DAY_MS + ((h * 60 + mi - offset_min) * 60 + s) * 1000 + milli
    if not -MAX_DATE_MS <= ms <= MAX_DATE_MS:
        return None
    return ms


# JS StrWhiteSpaceChar: WhiteSpace and LineTerminator code points.
_JS_WS: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_INT_PREFIX: Final = re.compile(r"([+-]?)(?:(0[xX])([0-9a-fA-F]+)|([0-9]+))")


def parse_int(text: str) -> int | None:
    """JS `parseInt(text)` (no radix): leading digits after optional space and sign; None = NaN."""
    m = _INT_PREFIX.match(text.lstrip(_JS_WS))
    if m is None:
        return None
    sign = -1 if m.group(1) == "-" else 1
    if m.group(2):
        return sign * int(m.group(3), 16)
    return sign * int(m.group(4))


def number_to_string(x: float) -> str:  # noqa: PLR0911 - one exit per ECMAScript case
    """JS `Number.prototype.toString()` for a finite or special number (ECMA-262 Number::toString)."""
    if isinstance(x, int) and abs(x) < 2**53:
        return str(x)
    f = float(x)
    if f.is_integer() and abs(f) < 2**53:  # a lock's 1.0 minutes; -0.0 too (never NaN, infinity)
        return str(int(f))
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "0"
    if f < 0:
        return "-" + number_to_string(-f)
    # repr() gives the shortest round-tripping digits, the same digits JS picks.
    mantissa, _, exp = repr(f).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    lead_zeros = len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    n = len(int_part) - lead_zeros + (int(exp) if exp else 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:  # noqa: PLR2004 - the ECMAScript thresholds
        return digits + "0" * (n - k)
    if 0 < n <= 21:  # noqa: PLR2004
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:  # noqa: PLR2004
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    if k == 1:
        return f"{digits}e{sign}{abs(e)}"
    return f"{digits[0]}.{digits[1:]}e{sign}{abs(e)}"


def to_base36(n: int) -> str:
    """JS `n.toString(36)` for a non-negative integer."""
    if n < 0:
        return "-" + to_base36(-n)
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


_rng = random.Random()  # noqa: S311 - ids need uniqueness, not secrecy


def random_base36(n: int) -> str:
    """n random base-36 characters, like `Math.random().toString(36).substring(2, 2 + n)`."""
    return "".join(_rng.choices(_B36, k=n))
