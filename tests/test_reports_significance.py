"""reports/significance.py: the DSR paper's numerical example, exact expectations, bootstrap
coverage and determinism, and the summary on real BTC returns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import SHARED_DATA
import reports.significance as sig
from reports.significance import (
    bootstrap_ci,
    bootstrap_distribution,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_confidence_interval,
    sharpe_moments,
    sharpe_significance,
    stationary_bootstrap_indices,
    total_return_confidence_interval,
    verdict,
)

DATA = SHARED_DATA / "BTC_USDT-1d.csv"  # LLM4MP_SHARED_DATA or ../shared/data (conftest)


@pytest.fixture(scope="module")
def btc_returns() -> np.ndarray:
    if not DATA.exists():
        pytest.skip(f"real candles not found at {DATA}")
    close = np.loadtxt(DATA, delimiter=",", skiprows=1, usecols=4)
    return close[1:] / close[:-1] - 1.0  # buy-and-hold daily simple returns


# -- the paper's example --------------------------------------------------------------------------
def test_deflated_sharpe_ratio_matches_the_papers_numerical_example() -> None:
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5), numerical
    example: N = 100 trials, variance of the trials' annualised Sharpe ratios V = 1/2,
    T = 1250 daily observations (250 a year), skewness -3, kurtosis 10 (non-excess), selected
    annualised SR = 2.5. The paper reports SR0 ~= 0.1132 (per day) and DSR ~= 0.9004.
    (The same two numbers are asserted, independently of this code, by other open-source
    implementations' tests; recomputed here: SR0 = 0.113172 per day = 1.7894 annualised,
    DSR = 0.90040.)"""
    periods = 250
    sr0 = expected_max_sharpe(100, 0.5 / periods)  # per-period variance = annual / 250
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert sr0 * math.sqrt(periods) == pytest.approx(1.7894, abs=5e-4)
    assert expected_max_sharpe(100, 0.5) == pytest.approx(1.7894, abs=5e-4)  # same, annualised units
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(periods), 1250, -3.0, 10.0, n_trials=100, var_trial_sharpes=0.5 / periods)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_is_close_to_the_exact_expected_maximum_of_normals() -> None:
    # E[max of N iid N(0, 1)] = int x N phi(x) Phi(x)^(N-1) dx; the paper's formula is an
    # approximation of it (Bailey et al. 2014), good to a few percent for N >= 10.
    for n in (10, 100, 1000):
        exact, _ = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -10, 10)
        assert expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=0.03)
        assert expected_max_sharpe(n, 4.0) == pytest.approx(2 * expected_max_sharpe(n, 1.0))  # scales with sqrt(V)
    assert expected_max_sharpe(1, 0.3) == 0.0
    with pytest.raises(ValueError, match="n_trials must be an integer >= 1, got 0"):
        expected_max_sharpe(0, 1.0)


def test_probabilistic_sharpe_ratio_formula_and_limits() -> None:
    assert probabilistic_sharpe_ratio(0.1, 0.1, 500, -1.0, 6.0) == pytest.approx(0.5)
    # normal returns: Phi(SR sqrt(n-1) / sqrt(1 + SR^2 / 2))  (Lo 2002's i.i.d. standard error)
    sr, n = 0.08, 365
    expected = stats.norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2))
    assert probabilistic_sharpe_ratio(sr, 0.0, n) == pytest.approx(expected)
    # negative skew and fat tails widen the Sharpe's error: lower PSR for the same SR
    assert probabilistic_sharpe_ratio(sr, 0.0, n, -2.0, 12.0) < expected
    with pytest.raises(ValueError, match="non-excess.*got 0.5"):
        probabilistic_sharpe_ratio(sr, 0.0, n, 0.0, 0.5)
    assert deflated_sharpe_ratio(sr, n, 0.0, 3.0, n_trials=1, var_trial_sharpes=0.0) == pytest.approx(expected)


def test_sharpe_moments_use_non_excess_kurtosis() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 200_000)
    m = sharpe_moments(r)
    assert m.kurtosis == pytest.approx(3.0, abs=0.05) and m.skew == pytest.approx(0.0, abs=0.02)
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1))


# -- stationary bootstrap --------------------------------------------------------------------------
def test_stationary_bootstrap_indices_blocks_have_the_requested_mean_length() -> None:
    n, mean_block = 500, 8.0
    idx = stationary_bootstrap_indices(n, mean_block, 400, np.random.default_rng(1))
    assert idx.shape == (400, n) and idx.dtype.kind == "i"
    assert idx.min() >= 0 and idx.max() < n
    continues = idx[:, 1:] == (idx[:, :-1] + 1) % n
    # a new block starts with probability 1/mean_block (plus a 1/n chance of looking continuous)
    assert 1 - continues.mean() == pytest.approx(1 / mean_block, rel=0.05)
    iid = stationary_bootstrap_indices(n, 1.0, 400, np.random.default_rng(1))
    counts = np.bincount(iid.ravel(), minlength=n) / iid.size
    assert np.abs(counts - 1 / n).max() < 0.5 / n  # uniform over positions


def test_bootstrap_is_deterministic_with_a_seed_and_chunks_bound_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    r = np.random.default_rng(2).normal(0.001, 0.02, 300)
    a = sharpe_confidence_interval(r, 365, n_boot=500, seed=7)
    b = sharpe_confidence_interval(r, 365, n_boot=500, seed=7)
    c = sharpe_confidence_interval(r, 365, n_boot=500, seed=8)
    assert a == b and a != c
    assert a.lower < a.estimate < a.upper and a.mean_block == pytest.approx(300 ** (1 / 3))
    monkeypatch.setattr(sig, "_CHUNK_BYTES", 3 * 8 * 300 * 7)  # 7 resamples per chunk
    calls: list[int] = []

    def mean_rows(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x.mean(axis=1)

    dist = bootstrap_distribution(r, mean_rows, n_boot=50, seed=0)
    assert dist.shape == (50,) and calls == [7] * 7 + [1]
    with pytest.raises(ValueError, match=r"returned shape \(\)"):
        bootstrap_distribution(r, lambda x: np.float64(0.0), n_boot=5)


def test_sharpe_interval_covers_the_true_sharpe_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    true_sr, n, reps = 0.1, 250, 200
    hits = 0
    for k in range(reps):
        r = rng.normal(true_sr * 0.01, 0.01, n)
        ci = sharpe_confidence_interval(r, 1.0, n_boot=400, seed=k)  # default blocks n^(1/3)
        hits += ci.lower <= true_sr <= ci.upper
    assert 0.90 <= hits / reps <= 0.99


def test_total_return_interval_on_real_btc_returns(btc_returns: np.ndarray) -> None:
    ci = total_return_confidence_interval(btc_returns, n_boot=1000, seed=0)
    assert ci.estimate == pytest.approx(np.prod(1 + btc_returns) - 1)
    assert -1 < ci.lower < ci.estimate < ci.upper
    generic = bootstrap_ci(btc_returns, lambda x: np.expm1(np.log1p(x).sum(axis=1)), n_boot=1000, seed=0)
    assert generic == ci


def test_bad_returns_name_the_index() -> None:
    with pytest.raises(ValueError, match=r"returns\[2\] = nan"):
        sharpe_moments([0.01, 0.02, float("nan")])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\).*got 5"):
        bootstrap_ci([0.01, 0.02, 0.03], lambda x: x.mean(axis=1), alpha=5)


# -- the summary --------------------------------------------------------------------------------------
def test_sharpe_significance_on_real_btc_returns(btc_returns: np.ndarray) -> None:
    one = sharpe_significance(btc_returns, 365, n_boot=500)
    json.dumps(one.to_json(), allow_nan=False)
    mom = sharpe_moments(btc_returns)
    assert one.sharpe == pytest.approx(mom.sharpe * math.sqrt(365))
    assert one.kurtosis > 3  # crypto returns are fat-tailed
    assert one.dsr == pytest.approx(one.psr)  # one trial: DSR = PSR(0)
    assert one.sharpe_ci.lower < one.sharpe < one.sharpe_ci.upper
    many = sharpe_significance(btc_returns, 365, n_trials=50, var_trial_sharpes=0.5 / 365, n_boot=500)
    assert many.sr0_annualised == pytest.approx(expected_max_sharpe(50, 0.5))
    assert many.dsr < many.psr and many.dsr_p_value == pytest.approx(1 - many.dsr)
    assert "50 trials" in many.verdict


def test_without_a_spread_of_trial_sharpes_the_dsr_says_not_deflated(btc_returns: np.ndarray) -> None:
    """One trial, fewer than two finite trial Sharpes, or a zero variance: SR0 = 0 and DSR = PSR, and the words
    say "not deflated: N comparable trials", never "the luck of the best of N"."""
    r = 0.5 * btc_returns + 0.001  # a positive Sharpe, so the DSR words would claim "better than the luck ..."
    cases = {
        "one trial": sharpe_significance(r, 365, n_boot=300),
        "no spread": sharpe_significance(r, 365, n_trials=4, var_trial_sharpes=0.0, n_boot=300),
        "one finite": sharpe_significance(r, 365, n_trials=3, var_trial_sharpes=0.2 / 365, n_in_variance=1, n_boot=300),
    }
    for name, sig in cases.items():
        assert not sig.deflated and sig.dsr == pytest.approx(sig.psr), name
        assert sig.dsr_verdict.startswith(f"not deflated: {sig.n_trials} comparable trial"), name
        assert "luck of the best" not in sig.verdict and sig.verdict.endswith(sig.dsr_verdict), name
        assert sig.to_json()["deflated"] is False and sig.to_json()["deflation"] == sig.dsr_verdict, name
    assert "(one trial: DSR = PSR)" in cases["one trial"].dsr_verdict
    assert "do not vary" in cases["no spread"].dsr_verdict and "1 of them" in cases["one finite"].dsr_verdict
    vs = buy_and_hold_comparison(r, btc_returns, 365, n_boot=300)
    assert "trials: not deflated: 4 comparable trials" in two_question_verdict(cases["no spread"], vs)
    deflated = sharpe_significance(r, 365, n_trials=3, var_trial_sharpes=0.2 / 365, n_in_variance=3, n_boot=300)
    assert deflated.deflated and deflated.dsr < deflated.psr and "the luck of the best of 3 trials" in deflated.verdict


def test_verdict_in_words() -> None:
    assert verdict(0.34, against="naive") == "not distinguishable from naive at 5% (p = 0.34)"
    assert verdict(0.001, 0.01, against="naive") == "better than naive at 1% (p = 0.001)"
    assert verdict(0.001, against="naive", effect=-0.2) == "worse than naive at 5% (p = 0.001)"
    assert verdict(0.97, kind="probability") == "better than chance at 5% (p = 0.03)"
    assert verdict(float("nan")) == "not testable (too few observations or no variation)"
    with pytest.raises(ValueError, match="kind must be"):
        verdict(0.1, kind="dsr")  # type: ignore[arg-type]


def test_shared_resamples_give_the_same_intervals_as_separate_ones(btc_1d) -> None:
    from reports.significance import (
        sharpe_confidence_interval,
        sharpe_significance,
        total_return_confidence_interval,
    )

    r = btc_1d["close"].pct_change().dropna().to_numpy()
    together = sharpe_significance(r, 365, n_boot=500, seed=3)
    alone_sharpe = sharpe_confidence_interval(r, 365, n_boot=500, seed=3)
    alone_total = total_return_confidence_interval(r, n_boot=500, seed=3)
    assert together.sharpe_ci == alone_sharpe
    assert together.total_return_ci == alone_total


# -- two-sided, beta-aware verdicts (issue 8, item 7) ---------------------------------------------------
from reports.significance import (  # noqa: E402
    bootstrap_p_value,
    buy_and_hold_comparison,
    two_question_verdict,
)


@pytest.fixture(scope="module")
def btc_1h_2023_returns(btc_1h) -> np.ndarray:
    close = btc_1h["close"]["2023-01-01":"2023-12-31"].to_numpy(np.float64)
    return close[1:] / close[:-1] - 1.0  # buy-and-hold hourly returns of a +150% year


def test_a_sharpe_of_minus_2_5_with_its_interval_below_zero_reads_worse_than_chance(btc_1h_2023_returns) -> None:
    short = -btc_1h_2023_returns  # shorting BTC through 2023 (no costs): Sharpe about -2.4
    res = sharpe_significance(short, 8760, n_boot=1000, seed=11)
    assert res.sharpe < -2 and res.sharpe_ci.upper < 0
    assert res.chance_verdict.startswith("worse than chance at 5%")
    assert res.verdict.startswith("worse than chance")
    assert res.chance_p_value < 0.05 and res.psr_p_value_two_sided < 0.05  # bootstrap and analytic agree
    assert res.psr_p_value > 0.95  # the old one-sided reading: "not distinguishable"
    long = sharpe_significance(btc_1h_2023_returns, 8760, n_boot=1000, seed=11)
    assert long.chance_verdict.startswith("better than chance")
    assert long.chance_p_value == pytest.approx(res.chance_p_value, abs=0.01)


def test_bootstrap_p_value_is_the_dual_of_the_percentile_interval() -> None:
    rng = np.random.default_rng(99)
    for mean in (-0.002, -0.0005, 0.0, 0.0007, 0.003):  # sizes/effects not used elsewhere
        r = rng.standard_t(4, size=700) * 0.01 + mean
        ci = sharpe_confidence_interval(r, 365, n_boot=999, seed=5)
        p = sharpe_significance(r, 365, n_boot=999, seed=5).chance_p_value
        excludes = ci.upper < 0 or ci.lower > 0
        assert (p <= 0.05 + 2 / 1000) == excludes or abs(p - 0.05) < 0.01
    assert bootstrap_p_value([1.0, 2.0, 3.0]) == pytest.approx(2 * 1 / 4)
    assert bootstrap_p_value([float("nan")]) != bootstrap_p_value([float("nan")])  # NaN


def test_less_than_half_of_buy_and_hold_is_never_a_success(btc_returns: np.ndarray) -> None:
    """30% exposure to BTC's daily moves: the same Sharpe as holding, far less money."""
    bench = btc_returns
    strat = 0.3 * bench
    sig = sharpe_significance(strat, 365, n_trials=3, var_trial_sharpes=0.05 / 365, n_boot=500, seed=1)
    assert sig.dsr_verdict.startswith("better than the luck of the best of 3 trials")  # what it used to print
    vs = buy_and_hold_comparison(strat, bench, 365, n_boot=500, seed=1)
    assert vs.below_half_of_buy_and_hold and not vs.beats_buy_and_hold
    assert vs.excess_total_return == pytest.approx(np.prod(1 + strat) - np.prod(1 + bench))
    a = strat - bench
    assert vs.information_ratio == pytest.approx(a.mean() / a.std(ddof=1) * math.sqrt(365))
    words = two_question_verdict(sig, vs)
    assert "better than the luck" not in words and "not a success over 3 trials" in words
    assert "less than half of it" in words and "buy-and-hold: better" not in words


def test_beating_buy_and_hold_reads_better_and_pairs_the_resamples(btc_returns: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    bench = btc_returns
    strat = bench + 0.002 + rng.normal(0, 0.002, bench.size)  # +20 bp a day over holding, little tracking error
    vs = buy_and_hold_comparison(strat, bench, 365, n_boot=500, seed=2)
    assert vs.beats_buy_and_hold and vs.verdict.startswith("better than buy-and-hold of the same bars at 5%")
    assert vs.information_ratio_ci.lower > 0
    # paired resamples: the tracking error, not the (much larger) market volatility, sets the IR's width
    assert vs.information_ratio_ci.upper - vs.information_ratio_ci.lower < 10
    assert buy_and_hold_comparison(strat, bench, 365, n_boot=500, seed=2) == vs
    with pytest.raises(ValueError, match="same bars"):
        buy_and_hold_comparison(strat[1:], bench, 365)


def test_a_judged_run_keeps_the_metrics_json_schema_and_makes_its_words_once(btc_returns: np.ndarray) -> None:
    """judge_significance: the numbers of sharpe_significance, then versus_buy_and_hold; the
    two-question words replace the one-question ones in a new frozen object (nothing is overwritten)."""
    from dataclasses import FrozenInstanceError

    from reports.significance import SharpeSignificance, judge_significance

    strat = 0.3 * btc_returns
    sig = sharpe_significance(strat, 365, n_trials=3, var_trial_sharpes=0.05 / 365, n_boot=300, seed=1)
    vs = buy_and_hold_comparison(strat, btc_returns, 365, n_boot=300, seed=1)
    judged = judge_significance(sig, vs)
    keys = list(sig.to_json())
    assert keys[:3] == ["n", "periods_per_year", "sharpe"] and keys[-2:] == ["dsr_verdict", "verdict"]
    assert list(judged.to_json()) == [*keys, "versus_buy_and_hold"]  # "trials" only when given
    assert judged.to_json()["versus_buy_and_hold"] == vs.to_json()
    assert isinstance(judged, SharpeSignificance) and judged.sharpe == sig.sharpe
    assert judged.verdict == two_question_verdict(sig, vs) != sig.verdict
    assert judged.dsr_verdict.startswith("not a success over 3 trials")
    assert sig.dsr_verdict.startswith("better than the luck")  # the input is unchanged
    with pytest.raises(FrozenInstanceError):
        judged.verdict = "better"  # type: ignore[misc]
