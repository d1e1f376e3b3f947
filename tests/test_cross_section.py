"""Cross-sectional IC and quantile portfolios (reports/cross_section.py) on the real universe of
Binance spot coins (../shared/data/universe, 1d), checked against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.cross_section import (
    cross_sectional_ic, ic_decay, ic_summary, mean_test, newey_west_lags, quantile_portfolios,
)
from tests.conftest import SHARED_DATA

#: Coins listed before the test range and IMX (listed 2022-01) and XMR (delisted 2024-02): coins
#: enter and leave the universe inside the range.
COINS = ["ADA", "ATOM", "BCH", "DOGE", "DOT", "ETC", "FIL", "IMX", "NEAR", "TRX", "UNI", "XLM", "XMR", "XTZ",
         "ALGO", "EOS", "GRT", "HBAR", "MKR", "THETA"]


@pytest.fixture(scope="module")
def closes() -> pd.DataFrame:
    """Daily closes, one column per coin, NaN outside each coin's own candles (no fill)."""
    cols = {}
    for coin in COINS:
        frame = pd.read_parquet(SHARED_DATA / "universe" / f"{coin}_USDT-1d.parquet", columns=["timestamp", "close"])
        cols[coin] = frame.set_index(pd.to_datetime(frame["timestamp"], unit="ms", utc=True))["close"]
    return pd.DataFrame(cols).loc["2021-09-01":"2024-06-30"]


def momentum_and_outcome(closes: pd.DataFrame, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Past ``lookback``-day log return (the forecast) and the next ``horizon`` days' (the outcome)."""
    logc = np.log(closes)
    return (logc - logc.shift(lookback)).to_numpy(), (logc.shift(-horizon) - logc).to_numpy()


def test_ic_and_rank_ic_equal_scipy_per_period(closes):
    f, r = momentum_and_outcome(closes, 20, 5)
    ic = cross_sectional_ic(f, r, "pearson")
    ric = cross_sectional_ic(f, r, "spearman")
    checked = 0
    for t in range(0, len(f), 37):
        ok = np.isfinite(f[t]) & np.isfinite(r[t])
        if ok.sum() < 5:
            assert np.isnan(ic[t]) and np.isnan(ric[t])
            continue
        assert ic[t] == pytest.approx(stats.pearsonr(f[t, ok], r[t, ok])[0], abs=1e-12)
        assert ric[t] == pytest.approx(stats.spearmanr(f[t, ok], r[t, ok])[0], abs=1e-12)
        checked += 1
    assert checked > 20
    # coins entering (IMX) and leaving (XMR) change the cross-section's size inside the range
    sizes = (np.isfinite(f) & np.isfinite(r)).sum(axis=1)
    assert sizes.min() < sizes.max()


@pytest.mark.parametrize("horizon", [1, 5, 20])
def test_newey_west_t_stat_equals_statsmodels_hac(closes, horizon):
    sm = pytest.importorskip("statsmodels.api")
    f, r = momentum_and_outcome(closes, 10, horizon)
    for method in ("pearson", "spearman"):
        ic = cross_sectional_ic(f, r, method)
        s = ic_summary(ic, horizon)
        x = ic[np.isfinite(ic)]
        assert s.lags == max(horizon - 1, int(4 * (x.size / 100) ** (2 / 9)))
        fit = sm.OLS(x, np.ones(x.size)).fit(cov_type="HAC", cov_kwds={"maxlags": s.lags, "use_correction": False})
        assert s.mean == pytest.approx(fit.params[0], abs=1e-12)
        assert s.t_stat == pytest.approx(fit.tvalues[0], rel=1e-9)
        assert s.p_value == pytest.approx(fit.pvalues[0], rel=1e-9, abs=1e-300)
        assert s.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
        assert s.icir == pytest.approx(x.mean() / np.std(x, ddof=1), rel=1e-12)
        assert s.positive_share == pytest.approx((x > 0).mean())


def test_quantile_buckets_are_the_sorted_thirds_of_the_cross_section(closes):
    """With n a multiple of q and no ties, bucket b is the b-th slice of the coins sorted by forecast."""
    full = closes.dropna(axis=0, how="any")
    f, r = momentum_and_outcome(full, 20, 5)
    q = 5
    n = (full.shape[1] // q) * q
    f, r = f[:, :n], r[:, :n]
    got = quantile_portfolios(f, r, horizon=5, buckets=q)
    sums, counts, spread = np.zeros(q), np.zeros(q), []
    for t in range(len(f)):
        if not (np.isfinite(f[t]).all() and np.isfinite(r[t]).all()):
            continue
        order = np.argsort(f[t], kind="stable")
        means = [r[t, order[b * n // q:(b + 1) * n // q]].mean() for b in range(q)]
        sums += means
        counts += 1
        spread.append(means[-1] - means[0])
    assert got.periods == int(counts[0])
    np.testing.assert_allclose(got.bucket_mean, sums / counts, rtol=1e-12)
    np.testing.assert_allclose(got.spread[np.isfinite(got.spread)], spread, rtol=1e-12, atol=1e-15)
    assert got.spread_mean == pytest.approx(np.mean(spread), rel=1e-12)


def test_a_constant_forecast_ranks_nothing(closes):
    _, r = momentum_and_outcome(closes, 20, 5)
    flat = np.where(np.isfinite(r), 0.0, np.nan)
    assert np.isnan(cross_sectional_ic(flat, r)).all()
    assert np.isnan(cross_sectional_ic(flat, r, "spearman")).all()
    q = quantile_portfolios(flat, r, horizon=5, buckets=10)
    assert np.isnan(q.spread).all() and np.isnan(q.spread_t)
    assert ic_summary(cross_sectional_ic(flat, r), 5).periods == 0


def test_a_forecast_that_knows_the_outcome_is_found_and_noise_is_not(closes):
    """The test has power (the outcome plus noise: IC about 0.16) and size (a seeded random ranking)."""
    _, r = momentum_and_outcome(closes, 20, 5)
    informed = r + np.random.default_rng(7).normal(scale=3 * np.nanstd(r), size=r.shape)
    found = ic_summary(cross_sectional_ic(informed, r, "spearman"), 5)
    assert 0.1 < found.mean < 0.3 and found.p_value < 1e-10
    rejections = 0
    for seed in range(20):
        noise = np.where(np.isfinite(r), np.random.default_rng(seed).normal(size=r.shape), np.nan)
        rejections += ic_summary(cross_sectional_ic(noise, r, "spearman"), 5).p_value < 0.05
    assert rejections <= 4  # 5 % size: 1 expected of 20; 4 or more has probability 1.6 %


def test_ic_decay_has_one_summary_per_step(closes):
    logc = np.log(closes).to_numpy()
    H = 3
    past = logc - np.roll(logc, 20, axis=0)
    past[:20] = np.nan
    f = np.repeat(past[:, :, None], H, axis=2)
    r = np.stack([np.vstack([logc[k + 1:] - logc[:-(k + 1)], np.full((k + 1, logc.shape[1]), np.nan)])
                  for k in range(H)], axis=2)
    decay = ic_decay(f, r)
    assert [d.horizon for d in decay] == [1, 2, 3] and all(d.kind == "Rank IC" for d in decay)
    assert decay[1].mean == pytest.approx(ic_summary(cross_sectional_ic(f[:, :, 1], r[:, :, 1], "spearman"), 2).mean)


def test_lag_rule_and_bad_shapes():
    assert newey_west_lags(100, 1) == 4 and newey_west_lags(100, 24) == 23 and newey_west_lags(0, 5) == 0
    assert np.isnan(mean_test([np.nan, 1.0], 1)[1])
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        cross_sectional_ic(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="method"):
        cross_sectional_ic(np.zeros((2, 5)), np.zeros((2, 5)), "kendall")
