"""Validation rules (each with a broken file and its message) and gap policies on real data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from feeds.errors import CandleError
from feeds.files import read_candle_csv
from feeds.validate import GapReport, apply_gap_policy, find_gaps, validate_candles
from feeds_helpers import btc_1h_candles, real_lines, replace_field, utc, write_lines  # noqa: F401

# broken_file edits a list of lines where lines[0] is the header: lines[k] is data row k,
# file line k + 1, and (the first real rows being hourly from 2017-08-17 04:00 UTC) has the
# time 04:00 + (k - 1) h.


def broken_file(tmp_path, edit) -> tuple:
    lines = real_lines(12)
    edit(lines)
    return write_lines(tmp_path, lines)


def assert_message(exc: pytest.ExceptionInfo, path, *parts: str) -> None:
    message = str(exc.value)
    assert str(path) in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_real_rows_are_valid(tmp_path):
    path = write_lines(tmp_path, real_lines(12))
    frame = read_candle_csv(path, "1h")
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.index.name == "time" and str(frame.index.tz) == "UTC"
    assert frame.index[0] == utc("2017-08-17 04:00") and len(frame) == 12
    assert (frame.dtypes == "float64").all()


def test_missing_column(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(slice(None), [",".join(l.split(",")[:5]) for l in ls]))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "missing column(s) volume", "open, high, low, close, volume")


def test_index_must_be_datetime_and_utc():
    frame = pd.DataFrame({c: [1.0, 1.0] for c in ["open", "high", "low", "close", "volume"]})
    with pytest.raises(CandleError, match=r"mem: the index is RangeIndex, not a DatetimeIndex"):
        validate_candles(frame, "1h", "mem")
    frame.index = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00"])
    with pytest.raises(CandleError, match=r"mem: the time index has time zone None, not UTC.*tz_localize"):
        validate_candles(frame, "1h", "mem")
    frame.index = frame.index.tz_localize("Europe/Berlin")
    with pytest.raises(CandleError, match=r"time zone Europe/Berlin.*tz_convert\('UTC'\)"):
        validate_candles(frame, "1h", "mem")


def test_not_sorted(tmp_path):
    def swap(ls):
        ls[5], ls[6] = ls[6], ls[5]
    path = broken_file(tmp_path, swap)
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    # row 5 now holds 09:00 and row 6 holds 08:00
    assert_message(exc, path, "not sorted", "row 6 (line 7, time 2017-08-17 08:00:00+00:00)",
                   "previous row's time 2017-08-17 09:00:00+00:00", "sort_index")


def test_duplicate_timestamp(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.insert(4, ls[3]))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "duplicate timestamp", "row 4 (line 5, time 2017-08-17 06:00:00+00:00)", "duplicated")


def test_value_that_is_not_a_number(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(3, replace_field(ls[3], 4, "125x")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "column 'close'", "'125x'", "not a number", "row 3 (line 4, time 2017-08-17 06:00:00+00:00)")


def test_nan_names_column_and_row(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(8, replace_field(ls[8], 2, "")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "missing value (NaN) in column(s) high", "row 8 (line 9, time 2017-08-17 11:00:00+00:00)",
                   "dropna")


@pytest.mark.parametrize("column,name", [(1, "open"), (3, "low"), (4, "close")])
def test_prices_must_be_positive(tmp_path, column, name):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(10, replace_field(ls[10], column, "0")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, f"{name} price 0.0 is not positive", "row 10 (line 11, time 2017-08-17 13:00:00+00:00)")


def test_volume_must_not_be_negative(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(2, replace_field(ls[2], 5, "-1.5")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "volume -1.5 is negative", "row 2 (line 3, time 2017-08-17 05:00:00+00:00)")


def test_high_below_open_or_close(tmp_path):
    # line 2: open 4261.48 high 4313.62 low 4261.32 close 4308.83
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(1, replace_field(ls[1], 2, "4300")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "high 4300.0 is below max(open, close) = 4308.83", "row 1 (line 2")


def test_low_above_open_or_close(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(1, replace_field(ls[1], 3, "4270")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "low 4270.0 is above min(open, close) = 4261.48", "row 1 (line 2")


def test_timestamp_off_the_grid(tmp_path):
    def shift(ls):
        ls[12] = replace_field(ls[12], 0, str(int(ls[12].split(",")[0]) + 30 * 60 * 1000))
    path = broken_file(tmp_path, shift)
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "row 12 (line 13, time 2017-08-17 15:30:00+00:00) is not on the 1h grid",
                   "timeframe '1h' is right")


def test_wrong_timeframe_is_caught_by_the_grid(tmp_path):
    path = write_lines(tmp_path, real_lines(3))
    with pytest.raises(CandleError, match=r"not on the 1d grid"):
        read_candle_csv(path, "1d")


def test_unparseable_timestamp(tmp_path):
    path = broken_file(tmp_path, lambda ls: ls.__setitem__(4, replace_field(ls[4], 0, "yesterday")))
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "column 'timestamp' at row 4 (line 5) is 'yesterday'", "epoch-millisecond")


def test_epoch_seconds_are_refused(tmp_path):
    def seconds(ls):
        for i in range(1, len(ls)):
            ls[i] = replace_field(ls[i], 0, str(int(ls[i].split(",")[0]) // 1000))
    path = broken_file(tmp_path, seconds)
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "row 1 (line 2) is 1502942400", "before 1973", "multiply epoch seconds by 1000")


def test_iso_date_column_is_accepted(tmp_path):
    lines = real_lines(5)
    iso = ["date,open,high,low,close,volume"]
    for line in lines[1:]:
        stamp = pd.Timestamp(int(line.split(",")[0]), unit="ms", tz="UTC").isoformat()
        iso.append(replace_field(line, 0, stamp))
    frame = read_candle_csv(write_lines(tmp_path, iso), "1h")
    reference = read_candle_csv(write_lines(tmp_path, lines, "ref.csv"), "1h")
    pd.testing.assert_frame_equal(frame, reference)


def test_bad_iso_date_names_row(tmp_path):
    lines = ["date,open,high,low,close,volume", "2024-01-01T00:00:00Z,1,2,0.5,1.5,3", "2024-01-01 25:00,1,2,0.5,1.5,3"]
    path = write_lines(tmp_path, lines)
    with pytest.raises(CandleError) as exc:
        read_candle_csv(path, "1h")
    assert_message(exc, path, "column 'date' at row 2 (line 3) is '2024-01-01 25:00'", "ISO-8601")


# --- gaps ------------------------------------------------------------------------------


def test_gaps_in_real_btc_1h(btc_1h_candles):
    report = find_gaps(btc_1h_candles, "1h")
    assert report.longest == pd.Timedelta(hours=34)  # SOURCES.md: the longest is 34 h on 2018-02-08
    assert report.longest_start == utc("2018-02-08 00:00")
    assert report.count == 28 and report.missing_bars == 128
    assert len(btc_1h_candles) + report.missing_bars == (
        (btc_1h_candles.index[-1] - btc_1h_candles.index[0]) // pd.Timedelta("1h") + 1
    )
    assert re.search(r"28 gap\(s\), 128 missing bar\(s\), longest 1 days 10:00:00 after .*2018-02-08", str(report))


def test_no_gaps():
    assert str(GapReport(0, 0, pd.Timedelta(0), None)) == "no gaps"


def test_fill_policy_completes_the_grid(btc_1h_candles):
    part = btc_1h_candles.loc["2018-02-01":"2018-02-15"]
    filled, report = apply_gap_policy(part, "1h", "fill", "mem")
    assert report.count == find_gaps(part, "1h").count > 0
    assert find_gaps(filled, "1h").count == 0
    assert len(filled) == len(part) + report.missing_bars
    pd.testing.assert_frame_equal(filled.loc[part.index], part)  # real candles untouched
    inserted = filled.loc[~filled.index.isin(part.index)]
    before = filled.loc[utc("2018-02-08 00:00"), "close"]
    gap = inserted.loc["2018-02-08 01:00":"2018-02-09 09:00"]
    assert len(gap) == 33
    assert (gap[["open", "high", "low", "close"]].to_numpy() == before).all()
    assert (inserted["volume"] == 0).all()
    validate_candles(filled, "1h", "filled")  # still a valid candle frame


def test_keep_policy_returns_input(btc_1h_candles):
    kept, report = apply_gap_policy(btc_1h_candles, "1h", "keep", "mem")
    assert kept is btc_1h_candles and report.count == 28


def test_refuse_policy_raises(btc_1h_candles):
    with pytest.raises(CandleError) as exc:
        apply_gap_policy(btc_1h_candles, "1h", "refuse", "BTC_USDT-1h.csv")
    message = str(exc.value)
    for part in ("BTC_USDT-1h.csv", "28 gap(s)", "1 days 10:00:00", "2018-02-08", "gap_policy='fill'", "gap_policy='keep'"):
        assert part in message
    gapless = btc_1h_candles.loc["2024-01-01":"2024-02-01"]
    out, report = apply_gap_policy(gapless, "1h", "refuse", "mem")
    assert report.count == 0 and out is gapless


def test_unknown_policy():
    frame = pd.DataFrame({c: np.ones(1) for c in ["open", "high", "low", "close", "volume"]},
                         index=pd.DatetimeIndex([utc("2024-01-01")], name="time"))
    with pytest.raises(ValueError, match=r"unknown gap_policy 'drop'; use one of 'keep', 'fill', 'refuse'"):
        apply_gap_policy(frame, "1h", "drop", "mem")
