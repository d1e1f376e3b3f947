"""reports.metrics against quantstats and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.metrics import (
    SUMMARY_KEYS,
    annualised_volatility,
    cagr,
    calmar_ratio,
    exposure,
    fees_paid,
    max_drawdown,
    max_drawdown_duration,
    performance_summary,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    total_return,
    trade_stats,
)

DAILY = 365.0

# Real candles come from the shared fixtures in conftest.py (btc_1d: BTC/USDT 1d).


@pytest.fixture(scope="module")
def btc_equity(btc_1d: pd.DataFrame) -> pd.Series:
    """A real, fully invested equity curve: 10,000 quote units of BTC held at each close."""
    return 10_000.0 * btc_1d["close"] / btc_1d["close"].iloc[0]


def _series(values, freq: str = "1D") -> pd.Series:
    idx = pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC")
    return pd.Series(np.asarray(values, dtype=float), index=idx)


qs = pytest.importorskip("quantstats")


# ------------------------------------------------------------------ simple returns


def test_simple_returns_drops_first_bar_and_matches_hand_values() -> None:
    eq = _series([100.0, 110.0, 99.0])
    r = simple_returns(eq)
    assert list(r.index) == list(eq.index[1:])
    np.testing.assert_allclose(r.to_numpy(), [0.10, -0.10])
    assert (1 + r).prod() - 1 == pytest.approx(total_return(eq))


def test_simple_returns_of_a_single_bar_is_empty() -> None:
    assert simple_returns(_series([100.0])).empty


def test_simple_returns_undefined_after_ruin_is_nan() -> None:
    r = simple_returns(_series([100.0, 0.0, 0.0]))
    assert r.iloc[0] == -1.0 and math.isnan(r.iloc[1])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([100.0, float("nan"), 101.0], "NaN"),
        ([], "empty"),
        (np.array([1.0, 2.0]), "pandas Series"),
    ],
)
def test_malformed_equity_raises_value_error_naming_it(bad, match) -> None:
    equity = bad if isinstance(bad, np.ndarray) else _series(bad)
    with pytest.raises(ValueError, match=match):
        simple_returns(equity)


# ------------------------------------------------------ against quantstats (real BTC)


def test_sharpe_matches_quantstats_on_btc(btc_equity: pd.Series) -> None:
    r = simple_returns(btc_equity)
    assert sharpe_ratio(r, DAILY) == pytest.approx(qs.stats.sharpe(r, periods=365), rel=1e-12)
    assert sharpe_ratio(r, DAILY, risk_free=0.04) == pytest.approx(
        qs.stats.sharpe(r, rf=0.04, periods=365), rel=1e-12
    )


def test_sortino_matches_quantstats_on_btc(btc_equity: pd.Series) -> None:
    r = simple_returns(btc_equity)
    assert sortino_ratio(r, DAILY) == pytest.approx(qs.stats.sortino(r, periods=365), rel=1e-12)
    assert sortino_ratio(r, DAILY, risk_free=0.04) == pytest.approx(
        qs.stats.sortino(r, rf=0.04, periods=365), rel=1e-12
    )


def test_volatility_cagr_drawdown_calmar_match_quantstats_on_btc(btc_equity: pd.Series) -> None:
    r = simple_returns(btc_equity)
    assert annualised_volatility(r, DAILY) == pytest.approx(
        qs.stats.volatility(r, periods=365), rel=1e-12
    )
    # quantstats 0.0.86: years = count(returns) / periods -- bars, as here.
    assert cagr(btc_equity, DAILY) == pytest.approx(qs.stats.cagr(r, periods=365), rel=1e-10)
    assert max_drawdown(btc_equity) == pytest.approx(qs.stats.max_drawdown(r), rel=1e-12)
    assert max_drawdown(btc_equity) == pytest.approx(qs.stats.max_drawdown(btc_equity), rel=1e-12)
    assert calmar_ratio(btc_equity, DAILY) == pytest.approx(
        qs.stats.calmar(r, periods=365), rel=1e-10
    )


def test_cagr_over_a_gap_free_series_equals_the_calendar_span(btc_equity: pd.Series) -> None:
    """Bars, not calendar days, but for gap-free 1d crypto bars they agree."""
    years = (btc_equity.index[-1] - btc_equity.index[0]) / pd.Timedelta(days=365)
    by_calendar = (btc_equity.iloc[-1] / btc_equity.iloc[0]) ** (1 / years) - 1
    assert cagr(btc_equity, DAILY) == pytest.approx(by_calendar, rel=1e-12)


# -------------------------------------------------------------- hand computations


def test_hand_computed_ratios() -> None:
    r = _series([0.01, -0.02, 0.03, -0.01])
    mean = 0.0025
    std = math.sqrt(((0.0075**2) + (0.0225**2) + (0.0275**2) + (0.0125**2)) / 3)
    assert sharpe_ratio(r, 4) == pytest.approx(mean / std * 2)
    downside = math.sqrt((0.02**2 + 0.01**2) / 4)  # over all bars, not only losers
    assert sortino_ratio(r, 4) == pytest.approx(mean / downside * 2)
    assert annualised_volatility(r, 4) == pytest.approx(std * 2)


def test_risk_free_is_deannualised_geometrically() -> None:
    r = _series([0.01, 0.03, -0.01])
    rf_bar = 1.21 ** (1 / 2) - 1  # 21 % a year over 2 bars a year = 10 % a bar
    x = r.to_numpy() - rf_bar
    assert rf_bar == pytest.approx(0.10)
    assert sharpe_ratio(r, 2, risk_free=0.21) == pytest.approx(
        x.mean() / x.std(ddof=1) * math.sqrt(2)
    )


def test_hand_computed_equity_metrics() -> None:
    eq = _series([100.0, 120.0, 90.0, 130.0, 121.0])
    assert total_return(eq) == pytest.approx(0.21)
    assert cagr(eq, 2) == pytest.approx(0.10)  # 4 bars = 2 years at 2 bars a year
    assert max_drawdown(eq) == pytest.approx(-0.25)  # 120 -> 90
    assert calmar_ratio(eq, 2) == pytest.approx(0.10 / 0.25)


@pytest.mark.parametrize(
    ("values", "bars"),
    [
        ([100, 90, 95, 100, 80], 3),  # peak 0, recovered at 3; then an open 1-bar drawdown
        ([100, 90, 95, 99, 98], 4),  # never recovered: counted to the last bar
        ([100, 101, 102], 0),
        ([100], 0),
        ([100, 100, 99, 100, 101, 90, 91, 92, 93, 94, 101], 6),
    ],
)
def test_max_drawdown_duration_in_bars(values, bars) -> None:
    assert max_drawdown_duration(_series(values)) == bars


def test_max_drawdown_duration_matches_a_loop_on_btc(btc_equity: pd.Series) -> None:
    eq = btc_equity.to_numpy()
    longest, peak_i, peak = 0, 0, eq[0]
    for i, v in enumerate(eq):
        if v >= peak:
            longest, peak_i, peak = max(longest, i - peak_i), i, v
    longest = max(longest, len(eq) - 1 - peak_i) if eq[-1] < peak else longest
    assert max_drawdown_duration(btc_equity) == longest
    assert longest > 100  # the 2021-2024 bear market


# --------------------------------------------------------------- degenerate inputs


def test_constant_equity_gives_nan_ratios_not_a_crash() -> None:
    eq = _series([1000.0] * 5)
    r = simple_returns(eq)
    assert total_return(eq) == 0.0 and cagr(eq, DAILY) == 0.0
    assert annualised_volatility(r, DAILY) == 0.0
    assert math.isnan(sharpe_ratio(r, DAILY)) and math.isnan(sortino_ratio(r, DAILY))
    assert max_drawdown(eq) == 0.0 and math.isnan(calmar_ratio(eq, DAILY))


def test_constant_nonzero_returns_have_nan_sharpe_not_a_huge_number() -> None:
    eq = _series(1000.0 * 1.001 ** np.arange(50))
    assert math.isnan(sharpe_ratio(pd.Series(np.full(49, 0.001)), DAILY))
    assert math.isnan(sortino_ratio(simple_returns(eq), DAILY))  # no downside


def test_single_bar_summary_is_all_defined_or_nan() -> None:
    eq = _series([1000.0])
    s = performance_summary(eq, eq * 0, pd.DataFrame(), pd.DataFrame(), DAILY)
    assert s.total_return == 0.0 and s.final_equity == 1000.0
    assert s.max_drawdown == 0.0 and s.exposure == 0.0 and s.fees_paid == 0.0
    for key in ("cagr", "sharpe", "sortino", "volatility", "calmar", "win_rate"):
        assert math.isnan(getattr(s, key)), key


def test_cagr_after_total_loss() -> None:
    assert cagr(_series([100.0, 50.0, 0.0]), 1) == -1.0
    assert math.isnan(cagr(_series([100.0, -10.0]), 1))


@pytest.mark.parametrize("ppy", [0, -1, float("nan")])
def test_bad_periods_per_year_raise(ppy) -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        cagr(_series([1.0, 2.0]), ppy)


# ------------------------------------------------------ trades, fills and exposure


def _trades() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "side": ["long", "short", "long", "long"],
            "pnl_net": [30.0, -10.0, 0.0, -5.0],
            "return_pct": [0.03, -0.01, 0.0, -0.005],
            "bars_held": [4, 2, 1, 5],
        }
    )


def test_trade_stats_by_hand() -> None:
    s = trade_stats(_trades())
    assert s.n_trades == 4
    assert s.win_rate == 0.25  # break-even is not a win
    assert s.profit_factor == pytest.approx(30 / 15)
    assert s.avg_trade_return == pytest.approx(0.00375)
    assert s.avg_bars_held == 3.0
    assert s.best_trade == 0.03 and s.worst_trade == -0.01


def test_trade_stats_edge_cases() -> None:
    empty = trade_stats(pd.DataFrame())
    assert empty.n_trades == 0
    assert all(math.isnan(getattr(empty, k)) for k in empty.to_json() if k != "n_trades")
    winners = _trades().iloc[[0]]
    assert trade_stats(winners).profit_factor == math.inf
    assert math.isnan(trade_stats(_trades().iloc[[2]]).profit_factor)
    with pytest.raises(ValueError, match="return_pct"):
        trade_stats(_trades().drop(columns="return_pct"))


def test_exposure_and_fees() -> None:
    assert exposure(_series([0.0, 0.5, -0.2, 0.0])) == 0.5
    assert math.isnan(exposure(pd.Series([], dtype=float)))
    fills = pd.DataFrame({"side": ["buy", "sell"], "commission": [1.25, 1.5]})
    assert fees_paid(fills) == pytest.approx(2.75)
    assert fees_paid(pd.DataFrame()) == 0.0
    with pytest.raises(ValueError, match="commission"):
        fees_paid(pd.DataFrame({"fee": [1.0]}))


# ---------------------------------------------------------------------- summary


def test_performance_summary_keys_and_values(
    btc_1d: pd.DataFrame, btc_equity: pd.Series
) -> None:
    position = pd.Series(1.0, index=btc_equity.index)
    position.iloc[:10] = 0.0
    fills = pd.DataFrame({"commission": [3.0, 4.0]})
    s = performance_summary(btc_equity, position, _trades(), fills, DAILY)
    assert tuple(s.to_json()) == SUMMARY_KEYS  # metrics.json order
    r = simple_returns(btc_equity)
    assert s.sharpe == pytest.approx(qs.stats.sharpe(r, periods=365))
    closes = btc_1d["close"]
    assert s.total_return == pytest.approx(closes.iloc[-1] / closes.iloc[0] - 1)
    assert s.exposure == pytest.approx(1 - 10 / len(btc_equity))
    assert s.n_trades == 4 and s.fees_paid == 7.0
    assert s.final_equity == pytest.approx(btc_equity.iloc[-1])
    assert all(isinstance(getattr(s, k), (int, float)) for k in SUMMARY_KEYS)


def test_performance_summary_rejects_misaligned_position(btc_equity: pd.Series) -> None:
    with pytest.raises(ValueError, match="same index"):
        performance_summary(btc_equity, btc_equity.iloc[1:] * 0, _trades(), pd.DataFrame(), DAILY)
