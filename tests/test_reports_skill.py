"""reports/skill.py against independent references: hand-computed examples, closed-form
CRPS of a Gaussian, scipy's binomial and chi-square tests, statsmodels' HAC covariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from conftest import SHARED_DATA
from reports.skill import (
    crps_approx,
    diebold_mariano,
    directional_accuracy,
    forecast_skill,
    interval_coverage,
    mae,
    mase,
    newey_west_variance,
    pinball_loss,
    pinball_loss_series,
    realised_log_returns,
)

DATA = SHARED_DATA / "BTC_USDT-1d.csv"  # LLM4MP_SHARED_DATA or ../shared/data (conftest)
LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def btc_close() -> np.ndarray:
    if not DATA.exists():
        pytest.skip(f"real candles not found at {DATA}")
    return np.loadtxt(DATA, delimiter=",", skiprows=1, usecols=4)


# -- point errors -------------------------------------------------------------------------------
def test_mae_and_mase_hand_computed_with_nan_rows_dropped() -> None:
    point = np.array([[0.1, 0.0], [-0.2, 0.1], [0.0, 0.3]])
    realised = np.array([[0.2, -0.1], [0.1, np.nan], [-0.1, 0.5]])
    # h=1: |0.1|,|0.3|,|0.1| -> 0.5/3; h=2: |0.1|,|0.2| (middle row unknown) -> 0.15
    np.testing.assert_allclose(mae(point, realised), [0.5 / 3, 0.15])
    # naive point 0: MAE_naive h=1 = (0.2+0.1+0.1)/3, h=2 = (0.1+0.5)/2
    np.testing.assert_allclose(mase(point, realised), [(0.5 / 3) / (0.4 / 3), 0.15 / 0.3])
    assert mae(point[:, 0], realised[:, 0]) == pytest.approx(0.5 / 3)  # 1-D -> float
    assert mase(np.zeros(3), realised[:, 0]) == pytest.approx(1.0)  # naive vs itself
    explicit = mase(point, realised, naive_point=np.full_like(point, 0.1))
    # naive 0.1: h=1 errors .1, 0, .2 -> 0.1; h=2 errors .2, .4 -> 0.3
    np.testing.assert_allclose(explicit, [(0.5 / 3) / 0.1, 0.15 / 0.3])


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 1\)"):
        mae(np.zeros((3, 2)), np.zeros((3, 1)))


# -- pinball and CRPS -----------------------------------------------------------------------------
def test_pinball_loss_hand_computed() -> None:
    q = np.array([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])[:, :, None]  # (2, 3, 1)
    y = np.array([[0.5], [-2.0]])
    # y=0.5: tau=.1: .1*1.5=.15; tau=.5: .5*.5=.25; tau=.9: (.9-1)*(-.5)=.05
    # y=-2 : tau=.1: (.1-1)*(-1)=.9; tau=.5: .5*2=1; tau=.9: .1*3=.3
    per_level, mean = pinball_loss(q, LEVELS, y)
    np.testing.assert_allclose(per_level[:, 0], [(0.15 + 0.9) / 2, (0.25 + 1.0) / 2, (0.05 + 0.3) / 2])
    np.testing.assert_allclose(mean, [(0.45 + 2.2) / 6])
    np.testing.assert_allclose(pinball_loss_series(q, LEVELS, y)[:, 0], [0.45 / 3, 2.2 / 3])
    np.testing.assert_allclose(crps_approx(q, LEVELS, y), [2 * (0.45 + 2.2) / 6])


def test_crps_of_a_point_forecast_is_its_mae() -> None:
    rng = np.random.default_rng(0)
    point = rng.normal(size=(50, 2))
    y = rng.normal(size=(50, 2))
    q = np.repeat(point[:, None, :], 3, axis=1)  # all quantiles equal: a point forecast
    np.testing.assert_allclose(crps_approx(q, LEVELS, y), mae(point, y))


def test_crps_approx_converges_to_closed_form_gaussian_crps() -> None:
    # Gneiting & Raftery (2007), eq. for CRPS(N(mu, s^2), y) = s [z(2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)].
    k = 400
    levels = tuple((np.arange(k) + 0.5) / k)  # midpoint rule on (0, 1)
    mu, s = 0.01, 0.03
    y = np.array([-0.05, 0.0, 0.02, 0.1])
    q = np.broadcast_to((mu + s * stats.norm.ppf(levels))[None, :, None], (y.size, k, 1))
    z = (y - mu) / s
    exact = s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    approx = crps_approx(q, levels, y[:, None])
    assert approx[0] == pytest.approx(exact.mean(), rel=2e-3)


def test_bad_levels_and_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"levels must be strictly increasing.*0\.9, 0\.5"):
        pinball_loss(np.zeros((2, 2, 1)), (0.9, 0.5), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="realised must be"):
        pinball_loss(np.zeros((2, 3, 1)), LEVELS, np.zeros((3, 1)))


# -- coverage -------------------------------------------------------------------------------------
def test_interval_coverage_hand_computed_and_pairing() -> None:
    levels = (0.05, 0.1, 0.5, 0.9, 0.95)
    q = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])[None, :, None].repeat(4, axis=0)
    y = np.array([[0.5], [1.5], [-3.0], [np.nan]])
    cov = interval_coverage(q, levels, y)
    assert [(c.lower_level, c.upper_level) for c in cov] == [(0.05, 0.95), (0.1, 0.9)]
    assert cov[0].nominal == pytest.approx(0.9) and cov[1].nominal == pytest.approx(0.8)
    np.testing.assert_allclose(cov[0].empirical, [2 / 3])  # 0.5 and 1.5 inside [-2, 2]
    np.testing.assert_allclose(cov[1].empirical, [1 / 3])  # only 0.5 inside [-1, 1]
    assert cov[0].n.tolist() == [3]
    assert interval_coverage(q[:, :3], (0.05, 0.1, 0.5), y) == []  # no symmetric pair


def test_calibrated_quantiles_have_nominal_coverage() -> None:
    rng = np.random.default_rng(3)
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    sigma = np.array([0.01, 0.02])
    y = rng.normal(size=(20000, 2)) * sigma
    q = np.broadcast_to(stats.norm.ppf(levels)[None, :, None] * sigma[None, None, :], (20000, 5, 2))
    for c in interval_coverage(q, levels, y):
        np.testing.assert_allclose(c.empirical, c.nominal, atol=0.012)


# -- directional accuracy ---------------------------------------------------------------------------
def test_directional_accuracy_matches_scipy_binomtest_and_excludes_zeros() -> None:
    point = np.array([0.1, -0.2, 0.3, 0.0, 0.1, -0.1, 0.2, np.nan])
    realised = np.array([0.2, -0.1, -0.3, 0.5, 0.0, -0.4, 0.1, 0.3])
    res = directional_accuracy(point, realised)
    # kept: rows 0,1,2,5,6 (row 3 forecast 0, row 4 move 0, row 7 NaN): hits at 0,1,5,6
    assert (res.n, res.hits, res.n_excluded) == (5, 4, 2)
    assert res.accuracy == pytest.approx(0.8)
    assert res.p_value == pytest.approx(stats.binomtest(4, 5, 0.5).pvalue)
    naive = directional_accuracy(np.zeros(8), realised)
    assert naive.n == 0 and math.isnan(naive.accuracy) and math.isnan(naive.p_value)


def test_pesaran_timmermann_agrees_with_chi_square_independence_test() -> None:
    # PT (1992) is asymptotically the 2x2 chi-square test of independence of the signs.
    rng = np.random.default_rng(1)
    y = rng.normal(0.1, 1, 5000)
    p = 0.3 * y + rng.normal(0.2, 1, 5000)
    res = directional_accuracy(p, y)
    table = [[np.sum((p > 0) & (y > 0)), np.sum((p > 0) & (y < 0))], [np.sum((p < 0) & (y > 0)), np.sum((p < 0) & (y < 0))]]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert res.pt_statistic ** 2 == pytest.approx(chi2.statistic, rel=0.01)
    assert res.pt_p_value == pytest.approx(chi2.pvalue, rel=0.05)


def test_always_up_in_a_rising_market_fools_the_binomial_test_not_pt() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(0.5, 1, 400)  # ~69% up moves
    res = directional_accuracy(np.ones(400), y)
    assert res.p_value < 1e-6
    assert math.isnan(res.pt_p_value)  # no variation in the forecast: no evidence of skill


# -- Diebold-Mariano -----------------------------------------------------------------------------------
def _ma2_series(n: int, seed: int, mean: float = 0.0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=n + 2)
    return e[2:] + 0.5 * e[1:-1] + 0.3 * e[:-2] + mean


def test_newey_west_variance_matches_statsmodels_cov_hac() -> None:
    sm = pytest.importorskip("statsmodels.api")
    from statsmodels.stats.sandwich_covariance import cov_hac

    d = _ma2_series(500, seed=4, mean=0.05)
    for lags in (0, 1, 2, 5):
        fit = sm.OLS(d, np.ones(d.size)).fit()
        var_mean = cov_hac(fit, nlags=lags, use_correction=False)[0, 0]
        assert newey_west_variance(d, lags) / d.size == pytest.approx(var_mean, rel=1e-10)


def test_dm_statistic_without_hln_is_the_hac_t_statistic_of_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.api")
    h = 3
    loss_a = np.abs(_ma2_series(400, seed=5, mean=0.1))
    loss_b = np.abs(_ma2_series(400, seed=6))
    d = loss_a - loss_b
    fit = sm.OLS(d, np.ones(d.size)).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
    res = diebold_mariano(loss_a, loss_b, horizon=h, hln=False)
    assert res.statistic == pytest.approx(fit.tvalues[0], rel=1e-10)
    assert res.p_value == pytest.approx(fit.pvalues[0], rel=1e-8)  # normal reference both
    hln = diebold_mariano(loss_a, loss_b, horizon=h)
    n = 400
    factor = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)  # Harvey, Leybourne & Newbold (1997)
    assert hln.statistic == pytest.approx(res.statistic * factor)
    assert hln.p_value == pytest.approx(2 * stats.t.sf(abs(hln.statistic), n - 1))


def test_dm_sign_nan_handling_and_degenerate_cases() -> None:
    rng = np.random.default_rng(7)
    good = np.abs(rng.normal(0, 1, 300))
    bad = good + np.abs(rng.normal(0.5, 0.5, 300))
    res = diebold_mariano(good, bad)
    assert res.statistic < 0 and res.p_value < 1e-6  # A better -> negative
    with_nan = good.copy()
    with_nan[:10] = np.nan
    assert diebold_mariano(with_nan, bad).n == 290
    same = diebold_mariano(good, good)
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    assert math.isnan(diebold_mariano([1.0], [2.0]).p_value)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1, got 0"):
        diebold_mariano(good, bad, horizon=0)


def test_dm_size_under_the_null_is_near_nominal() -> None:
    rng = np.random.default_rng(8)
    d = rng.normal(size=(400, 150))
    rejections = np.mean([diebold_mariano(row, np.zeros(150)).p_value < 0.05 for row in d])
    assert 0.025 <= rejections <= 0.08


# -- realised returns and the whole report ----------------------------------------------------------
def test_realised_log_returns_hand_computed() -> None:
    close = np.array([100.0, 110.0, 99.0, 120.0])
    out = realised_log_returns(close, np.array([0, 2, 3]), horizon=2)
    expected = np.array(
        [[math.log(1.1), math.log(0.99)], [math.log(120 / 99), np.nan], [np.nan, np.nan]]
    )
    np.testing.assert_allclose(out, expected)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 3\].*max 4"):
        realised_log_returns(close, np.array([4]), 1)
    with pytest.raises(ValueError, match=r"close\[1\] = 0\.0"):
        realised_log_returns(np.array([1.0, 0.0]), np.array([0]), 1)


def _rolling_gaussian_quantiles(close: np.ndarray, positions: np.ndarray, horizon: int, centre: np.ndarray | None = None) -> np.ndarray:
    r = np.diff(np.log(close))
    sd = np.array([r[p - 30 : p].std(ddof=1) for p in positions])  # past 30 returns only
    z = stats.norm.ppf(LEVELS)
    steps = np.sqrt(np.arange(1, horizon + 1))
    q = z[None, :, None] * sd[:, None, None] * steps[None, None, :]
    return q if centre is None else q + centre[:, None, :]


def test_forecast_skill_on_real_btc_candles(btc_close: np.ndarray) -> None:
    H = 5
    positions = np.arange(40, btc_close.size)
    y = realised_log_returns(btc_close, positions, H)
    naive_q = _rolling_gaussian_quantiles(btc_close, positions, H)
    r = np.diff(np.log(btc_close))
    momentum = np.array([r[p - 10 : p].mean() for p in positions])[:, None] * np.arange(1, H + 1)
    model_q = _rolling_gaussian_quantiles(btc_close, positions, H, centre=momentum)

    report = forecast_skill(model_q, LEVELS, y, naive_q)
    json.dumps(report.to_json(), allow_nan=False)  # strict JSON
    last = report.last_horizon
    assert report.n_forecasts == positions.size and report.horizon == H
    assert last.n == positions.size - H
    assert last.mae == pytest.approx(mae(momentum[:, -1], y[:, -1]))
    assert last.mase == pytest.approx(mae(momentum[:, -1], y[:, -1]) / np.nanmean(np.abs(y[:, -1])))
    assert last.crps == pytest.approx(crps_approx(model_q, LEVELS, y)[-1])
    dm = diebold_mariano(np.abs(y[:, -1] - momentum[:, -1]), np.abs(y[:, -1]), H)
    assert last.dm_abs_error.statistic == pytest.approx(dm.statistic)
    assert 0.0 <= last.dm_pinball.p_value <= 1.0
    assert last.directional.n > 1000
    # An 80% interval from 30-day volatility covers a fair share of BTC moves.
    assert 0.6 < last.coverage[0].empirical < 0.95
    means = report.mean_over_horizons
    assert means.mae == pytest.approx(np.mean(report.by_horizon.mae))
    assert means.dm_abs_error.n == positions.size - H

    # naive against itself: no skill, no difference, JSON None where undefined.
    self_report = forecast_skill(naive_q, LEVELS, y, naive_q)
    assert self_report.last_horizon.mase == pytest.approx(1.0)
    assert self_report.last_horizon.dm_pinball.p_value == 1.0
    assert math.isnan(self_report.last_horizon.directional.accuracy)
    no_naive = forecast_skill(model_q, LEVELS, y)
    assert no_naive.last_horizon.dm_pinball is None
    assert no_naive.last_horizon.dm_abs_error == last.dm_abs_error


# -- overlapping outcomes (issue 8, item 8) ------------------------------------------------------------
@pytest.fixture(scope="module")
def btc_1h_2023(btc_1h) -> np.ndarray:
    """Hourly BTC closes of 2023, a year in which BTC rose ~150%."""
    return btc_1h["close"]["2023-01-01":"2023-12-31"].to_numpy(np.float64)


def test_always_up_at_h12_on_a_rising_market_is_not_p_1e40(btc_1h) -> None:
    """12-bar outcomes of consecutive bars overlap: counting each as independent gave p ~ 1e-31
    here (BTC 1h, Oct 2020 - Mar 2021, x5)."""
    h = 12
    close = btc_1h["close"]["2020-10-01":"2021-03-31"].to_numpy(np.float64)
    y = realised_log_returns(close, np.arange(close.size), h)[:, h - 1]
    res = directional_accuracy(np.ones_like(y), y, horizon=h)
    all_rows = stats.binomtest(res.hits, res.n, 0.5).pvalue  # what overlap-blind counting says
    assert all_rows < 1e-20
    # the test uses every 12th decision only; checked against scipy on an independent slice
    ind = y[::h]
    ind = ind[np.isfinite(ind) & (ind != 0)]
    assert res.n_independent == ind.size and res.hits_independent == int((ind > 0).sum())
    assert res.p_value == pytest.approx(stats.binomtest(int((ind > 0).sum()), ind.size, 0.5).pvalue, rel=1e-12)
    assert res.p_value > 1e-4
    assert res.hac_p_value > 1e-10  # the HAC cross-check is less conservative, but not ~1e-31 either
    assert math.isnan(res.pt_p_value)  # a forecast that never changes sign carries no information


def test_below_coin_flip_hit_rate_never_reads_as_skill(btc_1h_2023: np.ndarray) -> None:
    """Momentum at h = 12 on hourly BTC is right ~47% of the time: that is no skill, whatever
    the p-value; the words say "worse than" or "not distinguishable from" a coin flip."""
    h = 12
    pos = np.arange(h, btc_1h_2023.size)
    y = realised_log_returns(btc_1h_2023, pos, h)[:, h - 1]
    past = np.log(btc_1h_2023[pos] / btc_1h_2023[pos - h])
    res = directional_accuracy(past, y, horizon=h, alpha=0.05)
    assert res.accuracy < 0.5
    assert stats.binomtest(res.hits, res.n, 0.5).pvalue < 0.05  # overlap-blind: "significant"
    assert not res.direction.startswith("better")
    if res.p_value <= 0.05:
        assert res.direction.startswith("worse than a coin flip")
    else:
        assert res.direction.startswith("not distinguishable from a coin flip")
    flipped = directional_accuracy(-past, y, horizon=h)  # the mirror image: above 50%, same p
    assert flipped.p_value == pytest.approx(res.p_value)
    assert flipped.direction.split(" at ")[0] in ("better than a coin flip", "not distinguishable from a coin flip")


def test_hac_hit_test_matches_statsmodels(btc_1h_2023: np.ndarray) -> None:
    sm = pytest.importorskip("statsmodels.api")
    for h in (1, 4, 12):
        pos = np.arange(24, btc_1h_2023.size)
        y = realised_log_returns(btc_1h_2023, pos, h)[:, h - 1]
        point = np.log(btc_1h_2023[pos] / btc_1h_2023[pos - 24])
        res = directional_accuracy(point, y, horizon=h)
        keep = np.isfinite(y) & (point != 0) & (y != 0)
        hit = ((point[keep] > 0) == (y[keep] > 0)).astype(float)
        fit = sm.OLS(hit - 0.5, np.ones((hit.size, 1))).fit(
            cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
        assert res.hac_statistic == pytest.approx(float(fit.tvalues[0]), rel=1e-9)
        assert res.hac_p_value == pytest.approx(float(fit.pvalues[0]), rel=1e-7)


def test_non_overlapping_test_keeps_its_size_under_the_null() -> None:
    """Forecasts independent of a persistent (overlapping) outcome: the test rejects ~alpha of
    the time, where overlap-blind counting rejects far more often (seeds not used elsewhere)."""
    rng = np.random.default_rng(2024)
    h, n, reps = 8, 800, 300
    rejected = blind = 0
    for _ in range(reps):
        steps = rng.standard_normal(n + h)
        y = np.convolve(steps, np.ones(h), mode="valid")[1 : n + 1]  # h-bar sums: MA(h-1)
        point = np.repeat(rng.choice([-1.0, 1.0], size=n // h + 1), h)[:n]  # persistent calls, no information
        res = directional_accuracy(point, y, horizon=h)
        rejected += res.p_value < 0.05
        blind += stats.binomtest(res.hits, res.n, 0.5).pvalue < 0.05
    assert rejected / reps < 0.09
    assert blind / reps > 0.25
