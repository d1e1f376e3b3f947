"""reports.render.downsample on real BTC and ETH hourly closes: a year of bars capped per trace,
with the first/last points, every bucket's extremes (so the year's high, low and deepest
drawdown bar stay) and NaN gaps kept, in order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import read_shared_csv
from reports.render.downsample import DEFAULT_MAX_POINTS, downsample_indices

YEAR = 8760


@pytest.fixture(scope="module", params=["BTC_USDT-1h.csv", "ETH_USDT-1h.csv"])
def year(request: pytest.FixtureRequest) -> pd.Series:
    return read_shared_csv(request.param)["close"].iloc[-YEAR:]


def _drawdown_bottom(close: np.ndarray) -> int:
    return int(np.argmin(close / np.maximum.accumulate(close)))


@pytest.mark.parametrize("cap", [DEFAULT_MAX_POINTS, 500, 37])
def test_a_year_keeps_its_extremes_in_order_under_the_cap(year: pd.Series, cap: int) -> None:
    close = year.to_numpy()
    d = downsample_indices(close, cap)
    pos = d.positions
    assert d.reduced and d.n == YEAR and len(pos) <= cap
    assert np.all(np.diff(pos) > 0) and pos[0] == 0 and pos[-1] == YEAR - 1  # order, first and last
    for must in (np.argmax(close), np.argmin(close), _drawdown_bottom(close)):
        assert must in pos
    # each bucket's high and low: the drawn curve spans exactly the range of every stretch it covers
    size = -(-YEAR // ((cap - 2) // 3))
    for start in range(0, YEAR, size):
        stretch, drawn = close[start:start + size], close[pos[(pos >= start) & (pos < start + size)]]
        assert drawn.max() == stretch.max() and drawn.min() == stretch.min()
    assert d.note == f"1 point in {round(YEAR / len(pos))} (min and max per bucket)" and d.one_in >= YEAR // cap


def test_short_series_are_untouched(year: pd.Series) -> None:
    for n in (1, 5, DEFAULT_MAX_POINTS):
        d = downsample_indices(year.to_numpy()[:n])
        assert list(d.positions) == list(range(n)) and not d.reduced and d.note == "" and d.one_in == 1


def test_columns_share_positions_and_keep_each_columns_extremes(year: pd.Series) -> None:
    close = year.to_numpy()
    r = np.diff(np.log(close), prepend=np.log(close[0]))
    cols = np.column_stack([close * np.exp(-abs(r) * 10), close, close * np.exp(abs(r) * 10)])  # a band
    pos = downsample_indices(cols, 1000).positions
    assert len(pos) <= 1000
    for j in range(3):
        assert np.argmax(cols[:, j]) in pos and np.argmin(cols[:, j]) in pos


def test_nan_is_a_gap_never_an_extreme(year: pd.Series) -> None:
    close = year.to_numpy().copy()
    close[3000:3100] = np.nan  # e.g. an exchange outage
    close[5000] = np.nan
    d = downsample_indices(close, 800)
    drawn = close[d.positions]
    assert len(d.positions) <= 800
    size = -(-YEAR // ((800 - 2) // 3))
    buckets_with_gaps = {i // size for i in np.flatnonzero(np.isnan(close))}
    assert np.isnan(drawn).sum() == len(buckets_with_gaps) == 5  # one marker per bucket with a gap
    assert 5000 in d.positions  # a lone missing bar still breaks the line
    assert np.nanargmax(close) in d.positions and np.nanargmin(close) in d.positions
    allnan = downsample_indices(np.full(YEAR, np.nan), 100).positions
    assert allnan[0] == 0 and allnan[-1] == YEAR - 1 and len(allnan) <= 100


def test_kept_positions_are_drawn_at_full_resolution(year: pd.Series) -> None:
    close = year.to_numpy()
    keep = np.zeros(YEAR, dtype=bool)
    keep[-200:] = True  # the window a page opens on
    d = downsample_indices(close, 1000, keep=keep)
    assert set(range(YEAR - 200, YEAR)) <= set(d.positions)
    assert len(d.positions) <= 1000 + 200 and np.argmax(close) in d.positions
    assert downsample_indices(close[:1100], 1000, keep=keep[:1100] | True).positions.size == 1100


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="max_points must be an integer >= 4, got 3"):
        downsample_indices(np.arange(10.0), 3)
    with pytest.raises(ValueError, match=r"values must be 1-D \(n,\) or 2-D \(n, k\), got shape \(2, 2, 2\)"):
        downsample_indices(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="keep must be a bool mask of length 10, got shape"):
        downsample_indices(np.arange(10.0), 4, keep=np.ones(9, bool))
