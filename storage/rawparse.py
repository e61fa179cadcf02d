"""Decoders of raw text columns (Arrow string arrays, whitespace already stripped, ``""`` =
missing) into IDs, numbers, times and labels, marking every value that does not parse.

Vectorised Arrow / numpy kernels with no Python object per value, so they run on chunks of
a log of any size. Times are checked against a plausible range after the unit is settled
(`TimeDecoder`), so a value in the wrong unit is a bad row instead of a date in 5138.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "PLAUSIBLE_SECONDS",
    "TIME_BAD",
    "TIME_MISSING",
    "TIME_OK",
    "TIME_OUT_OF_RANGE",
    "TimeDecoder",
    "TimeFormat",
    "TimeUnit",
    "arrow_text",
    "float_values",
    "has_control_chars",
    "id_ints",
    "label_values",
    "present",
    "trim",
]

TimeFormat = Literal["auto", "unix", "iso"]
TimeUnit = Literal["auto", "s", "ms", "us", "ns"]
Text: TypeAlias = "pa.Array | pa.ChunkedArray"
BoolArray = npt.NDArray[np.bool_]

# Plausible event times, unix seconds UTC: [1970-01-01, 2100-01-01). Anything outside
# after unit conversion (negative times, year 5138 from milliseconds read as seconds) is a
# bad row, never a silently odd date.
PLAUSIBLE_SECONDS: Final = (0, 4_102_444_800)
_SCALE: Final = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
# Auto unit: the median magnitude of the first chunk's numbers. The plausible range in
# one unit ends (4.1e9 s, 4.1e12 ms, 4.1e15 us) below the next bound, and a wrong guess
# only happens for 1970-1973 times in the finer unit, which then fall out of range: loud.
_AUTO_BOUNDS: Final[tuple[tuple[float, TimeUnit], ...]] = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))

TIME_OK, TIME_MISSING, TIME_BAD, TIME_OUT_OF_RANGE = 0, 1, 2, 3

# C0/C1 controls (NUL included), invisible format characters (zero-width space, BOM) and
# line / paragraph separators: never part of a real ID, and invisible in every report.
_CONTROL: Final = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
_CANONICAL_INT: Final = r"^(0|[1-9][0-9]{0,18})$"
_INT64_MAX_TEXT: Final = str(np.iinfo(np.int64).max)
_NUMBER: Final = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(inf|nan)$"
_TRUE: Final = ("1", "true", "t", "yes", "y")
_FALSE: Final = ("0", "false", "f", "no", "n")


def arrow_text(values: Text | npt.NDArray[np.object_]) -> pa.Array:
    """(N,) text as one Arrow string array (object arrays and chunked arrays accepted)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values
    # From the objects themselves: numpy's fixed-width str dtype would drop NUL characters.
    return pa.array([str(v) for v in np.asarray(values, dtype=object)], pa.string())


def _mask(values: pa.Array) -> BoolArray:
    """(N,) Arrow booleans -> numpy, null -> False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def present(values: Text) -> BoolArray:
    """(N,) True where a value is non-empty (lengths: far cheaper than comparing to "")."""
    return _mask(pc.greater(pc.binary_length(arrow_text(values)), 0))


def trim(values: Text) -> pa.Array:
    """(N,) values without leading / trailing whitespace (Unicode whitespace included; the
    ASCII kernel, ten times faster, when every value is ASCII)."""
    text = arrow_text(values)
    if pc.all(pc.string_is_ascii(text)).as_py() is not False:
        return pc.ascii_trim_whitespace(text)
    return pc.utf8_trim_whitespace(text)


def _ascii_clean(text: pa.Array) -> bool:
    """Whether every byte of ``text`` is printable ASCII or space (then no value can hold
    a control character): one numpy pass over the values buffer."""
    if text.null_count or not pa.types.is_string(text.type) or len(text) == 0:
        return False
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return bool(((data >= 0x20) & (data < 0x7F)).all())


def has_control_chars(values: Text) -> BoolArray:
    """(N,) True where a value holds a control or invisible format character (NUL, tab,
    zero-width space, BOM, ...)."""
    text = arrow_text(values)
    if _ascii_clean(text):
        return np.zeros(len(text), bool)
    return _mask(pc.match_substring_regex(text, _CONTROL))


def _digits(text: pa.Array) -> BoolArray:
    """(N,) plain digit strings of at most 18 digits (exact in int64)."""
    return _mask(pc.ascii_is_decimal(text)) & _mask(pc.less_equal(pc.binary_length(text), 18))


def _numbers(text: pa.Array) -> BoolArray:
    """(N,) values that read as a number (the regex only for those that are not digits)."""
    num = _digits(text)
    rest = np.flatnonzero(~num)
    if len(rest):
        other = text.take(pa.array(rest))
        num[rest] = _mask(pc.match_substring_regex(other, _NUMBER, ignore_case=True))
    return num


def id_ints(values: Text) -> tuple[BoolArray, npt.NDArray[np.int64]]:
    """(N,) text -> ((N,) is a canonical non-negative int64 literal, (N,) its value or 0).

    Canonical: decimal digits without sign or leading zeros, so "7" and "007" never merge.
    """
    text = arrow_text(values)
    ok = pc.match_substring_regex(text, _CANONICAL_INT)
    # 19 digits may still exceed int64: same-length digit strings compare as numbers.
    long = pc.equal(pc.utf8_length(text), len(_INT64_MAX_TEXT))
    ok = pc.and_(ok, pc.or_(pc.invert(long), pc.less_equal(text, _INT64_MAX_TEXT)))
    okm = _mask(ok)
    out = np.zeros(len(text), np.int64)
    if okm.any():
        out[okm] = pc.cast(text.filter(pa.array(okm)), pa.int64()).to_numpy()
    return okm, out


def float_values(values: Text) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """(N,) text -> ((N,) float64, NaN where missing or bad; (N,) bad = present but not a
    finite number)."""
    text = arrow_text(values)
    num = _numbers(text)
    if num.all():
        out = np.asarray(pc.cast(text, pa.float64()).to_numpy(), np.float64).copy()
    else:
        out = np.full(len(text), np.nan)
        if num.any():
            out[num] = pc.cast(text.filter(pa.array(num)), pa.float64()).to_numpy()
    bad = present(text) & ~np.isfinite(out)
    out[~np.isfinite(out)] = np.nan
    return out, bad


def label_values(values: Text) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """(N,) text -> ((N,) 1 positive / 0 negative, (N,) bad = present but not a label).

    Positive: a non-zero number or true/t/yes/y; negative: 0, false/f/no/n (any case).
    """
    text = arrow_text(values)
    low = pc.utf8_lower(text)
    num, _ = float_values(text)
    is_num = np.isfinite(num)
    pos = _mask(pc.is_in(low, value_set=pa.array(_TRUE))) | (is_num & (num != 0))
    neg = _mask(pc.is_in(low, value_set=pa.array(_FALSE))) | (is_num & (num == 0))
    return pos.astype(np.int8), present(text) & ~pos & ~neg


class TimeDecoder:
    """Text times -> unix seconds (UTC), the format and unit settled once per file.

    ``fmt``: "unix" numbers (``unit`` s / ms / us / ns, decimals floored to the second),
    "iso" 8601 dates or date-times (no offset = UTC), or "auto": "unix" when most present
    values of the first chunk that has any are numbers. ``unit`` "auto": by the median
    magnitude of those numbers: below 1e11 seconds, below 1e14 milliseconds, below 1e17
    microseconds, else nanoseconds. Every value is then checked against
    `PLAUSIBLE_SECONDS` (1970-01-01 to 2100-01-01).
    """

    def __init__(self, fmt: TimeFormat = "auto", unit: TimeUnit = "auto") -> None:
        self.fmt: TimeFormat = fmt
        self.unit: TimeUnit = unit

    def decode(self, values: Text) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """(N,) text -> ((N,) seconds, 0 where not TIME_OK; (N,) TIME_* status)."""
        text = arrow_text(values)
        given = present(text)
        status = np.where(given, TIME_OK, TIME_MISSING).astype(np.uint8)
        secs = np.zeros(len(text), np.int64)
        if not given.any():
            return secs, status
        if self.fmt == "auto":
            self.fmt = "unix" if int(_numbers(text).sum()) * 2 > int(given.sum()) else "iso"
        if self.fmt == "unix":
            value, ok = self._unix(text, given)
        else:
            value, ok = _iso(text, given)
        lo, hi = PLAUSIBLE_SECONDS
        inside = ok & (value >= lo) & (value < hi)
        status[given & ~ok] = TIME_BAD
        status[ok & ~inside] = TIME_OUT_OF_RANGE
        secs[inside] = value[inside].astype(np.int64)
        return secs, status

    def _unix(self, text: pa.Array, given: BoolArray) -> tuple[npt.NDArray[np.float64], BoolArray]:
        num, bad = float_values(text)
        ok = given & ~bad
        if self.unit == "auto":
            if not ok.any():  # nothing to judge by yet: the next chunk settles the unit
                return np.zeros(len(text)), ok
            mag = float(np.median(np.abs(num[ok])))
            self.unit = next((u for bound, u in _AUTO_BOUNDS if mag < bound), "ns")
        scale = _SCALE[self.unit]
        value = np.floor(np.where(ok, num, 0.0) / scale)
        # Whole numbers exactly: float64 would round nanoseconds past 2**53.
        ints = _digits(text) & ok
        if ints.all():
            exact = pc.cast(text, pa.int64()).to_numpy()
            return np.floor_divide(exact, scale).astype(np.float64), ok
        if ints.any():
            exact = pc.cast(text.filter(pa.array(ints)), pa.int64()).to_numpy()
            value[ints] = np.floor_divide(exact, scale).astype(np.float64)
        return value, ok


def _iso(text: pa.Array, given: BoolArray) -> tuple[npt.NDArray[np.float64], BoolArray]:
    # pandas parses every ISO 8601 variant (date only, offsets, fractions) per chunk; its
    # object conversion lasts one chunk.
    parsed = pd.to_datetime(
        pd.Series(text.to_numpy(zero_copy_only=False), dtype=object).where(given, None),
        format="ISO8601",
        utc=True,
        errors="coerce",
    )
    ok = given & parsed.notna().to_numpy()
    value = np.zeros(len(text), np.float64)
    value[ok] = parsed[ok].to_numpy(dtype="datetime64[s]").astype(np.int64)
    return value, ok
