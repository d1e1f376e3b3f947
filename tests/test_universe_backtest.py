"""`python -m engine backtest strategies/rank_long_short.py --universe ...` end to end on real daily
candles of six coins (BTC from the other folder), and the refusals of a strategy/universe mismatch."""

from __future__ import annotations

import contextlib
import io
import json

import pandas as pd
import pytest

from engine import cli
from engine.judging.ledger import TrialLedger
from tests.conftest import ROOT, SHARED_DATA

COINS = "BTC/USDT,ADA/USDT,DOGE/USDT,IMX/USDT,TRX/USDT,XLM/USDT"
ARGS = ["--data-dir", str(SHARED_DATA / "universe"), "--set", f'data.universe_dirs=["{SHARED_DATA}"]',
        "--timeframe", "1d", "--timerange", "20211201-20230601", "--predictor", "momentum",
        "--set", "predictor.context_length=30", "--set", "predictor.horizon=5",
        "--set", "strategy.rank_long_short.rebalance=5", "--set", "strategy.rank_long_short.k=2",
        "--set", "evaluation.bootstrap_samples=200", "--set", "evaluation.random_sign_draws=10"]
STRATEGY = str(ROOT / "strategies" / "rank_long_short.py")
PRINTED: dict[str, str] = {}  # stdout of the module's shared run


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("universe-run")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(out),
                         "--set", f"data.cache_dir={out / 'cache'}", *ARGS])
    PRINTED["first_run"] = printed.getvalue()
    (run_dir,) = [p for p in out.iterdir() if p.name != "cache" and p.is_dir()]
    return code, out, run_dir


@pytest.mark.slow  # ~4-7 s: a 6-coin, 18-month daily run with its page
def test_a_universe_backtest_writes_its_folder_and_judges_against_the_equal_weight_universe(first_run, capsys):
    code, _, run_dir = first_run
    assert code == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["kind"] == "universe" and m["universe"]["coins"] == 6
    assert "reconciled fill for fill" in m["fast_path"] and m["fills"] > 0
    assert m["reconciled"]["record"] == "fast path" and m["reconciled"]["bars"] == m["market"]["n_bars"] == 547
    assert m["buy_and_hold_btc"]["final_equity"] > 0  # BTC found in the second folder
    assert "buy-and-hold" not in m["verdict"] and "equal-weight universe" in m["verdict"]
    cs = m["cross_section"]
    assert cs["rank_ic"]["periods"] > 300 and 0 <= cs["rank_ic"]["p_value"] <= 1 and len(cs["rank_ic_decay"]) == 5
    assert m["lookahead"]["status"] == "passed" and m["lookahead"]["pairs"] >= 3 * 5 and m["invalid"] is None
    assert not any("lookahead" in line for line in m["not_run"]) and m["suspicious"] == []
    assert m["random_ranking"]["draws"] == 10 and 0 <= m["random_ranking"]["sharpe"]["percentile"] <= 100
    # the whole run was reconciled (547 bars < the default 1000): the checks on the fast path say so
    whole = "fast path, reconciled fill for fill with the run's event loop on the whole run (547 bars)"
    assert m["random_ranking"]["engine"] == whole and f"at each time, {whole}): Sharpe " in PRINTED["first_run"]
    assert m["lookahead"]["summary"].endswith(f"on bars cut there ({whole}))")
    assert m["cross_section_baselines"]["momentum"]["is_run"] and not m["cross_section_baselines"]["reversal"]["is_run"]
    assert m["cross_section_baselines"]["reversal"]["rank_ic"] == pytest.approx(-cs["rank_ic"]["mean"], abs=1e-12)
    assert m["significance"]["trials"]["n"] == 1  # its own row, kind "universe", in the output folder's ledger
    eq = pd.read_csv(run_dir / "equity.csv", index_col=0)
    assert eq["equity"].iloc[-1] == pytest.approx(m["performance"]["final_equity"])
    assert list(eq.columns) == ["equity", "equal_weight_universe", "buy_and_hold_btc"]
    positions = pd.read_csv(run_dir / "positions.csv", index_col=0)
    assert (positions.loc[:"2022-01-09", "IMX/USDT"] == 0).all()  # IMX listed 2022-01-10: never held before
    page = (run_dir / "cross_section.html").read_text()
    assert page.count('class="plotly-chart"') == 4 and "<script src=" not in page
    printed = PRINTED["first_run"]  # what the user reads is what metrics.json holds
    assert ("Rank IC by horizon step 1..5: " + " ".join(f"{s['mean']:+.3f}" for s in cs["rank_ic_decay"])) in printed
    assert (" ".join(f"{v:+.3%}" for v in cs["deciles"]["bucket_mean"])) in printed
    assert len(cs["deciles"]["bucket_mean"]) == cs["deciles"]["buckets"] == 6


@pytest.mark.slow
def test_a_second_universe_run_reads_every_forecast_from_the_cache(first_run):
    _, out, _ = first_run
    second = out / "second"
    assert cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(second),
                     "--set", f"data.cache_dir={out / 'cache'}", *ARGS]) == 0
    (run_dir,) = [p for p in second.iterdir() if p.is_dir()]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["universe"]["forecast_cache_hits"] == 6
    # another universe (one coin fewer) in the same study and output folder is another trial; a re-run is not
    fewer = COINS.rsplit(",", 1)[0]
    for universe in (COINS, fewer):
        assert cli.main(["backtest", STRATEGY, "--universe", universe, "--out", str(second),
                         "--set", f"data.cache_dir={out / 'cache'}", *ARGS]) == 0
    newest = max((p for p in second.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    m = json.loads((newest / "metrics.json").read_text())
    assert m["universe"]["coins"] == 5 and m["significance"]["trials"]["n"] == 2
    rows = TrialLedger.for_output_dir(second).rows(kinds=["universe"])
    assert len(rows) == 3 and len({r.symbol for r in rows}) == 2 and rows[0].symbol.startswith("universe custom (6 coins")


def test_the_checks_on_the_fast_path_name_the_bars_the_event_loop_reconciled():
    """The random-ranking and order-check lines' engine words (the full runs above print them): a partial
    reconcile names its bars and setting, never "reconciled with the run's event loop" alone."""
    from engine.backtesting.portfolio import PortfolioRecord
    from engine.runs.universe import reconcile_window, reconciled_scope

    clock = pd.date_range("2023-01-01", periods=8759, freq="h", tz="UTC")  # the stored example's hourly year
    words = {}
    for spec in ("1000bars", "90d", "full", "9000bars"):
        record = PortfolioRecord(None, "fast path", reconcile_window(spec, clock), None, 0.0, 0.0)
        words[spec] = reconciled_scope(record, clock, spec)
    lead = "fast path, reconciled fill for fill with the run's event loop on "
    assert words["1000bars"] == lead + "bars 1-1000 of 8759 only, the first evaluation.universe_reconcile = '1000bars'"
    assert words["90d"] == lead + "bars 1-2160 of 8759 only, the first evaluation.universe_reconcile = '90d'"
    assert words["full"] == words["9000bars"] == lead + "the whole run (8759 bars)"  # a window past the end is full
    refused = PortfolioRecord(None, "event loop", 0, "fill 1 differs", 0.0, 0.0)
    assert "NOT reconciled" in reconciled_scope(refused, clock, "1000bars")


def test_a_portfolio_strategy_needs_a_universe_and_a_universe_needs_one(tmp_path, capsys):
    assert cli.main(["backtest", STRATEGY, "--out", str(tmp_path), *ARGS]) == 2
    assert "is a portfolio strategy" in capsys.readouterr().err
    assert cli.main(["backtest", str(ROOT / "strategies" / "llm_signal.py"), "--universe", COINS,
                     "--out", str(tmp_path), *ARGS]) == 2
    assert "not a portfolio strategy" in capsys.readouterr().err
    assert cli.main(["backtest", STRATEGY, "--universe", "nosuch", "--out", str(tmp_path), *ARGS]) == 2
    assert "universe 'nosuch' is neither a configured name (alts14, alts28)" in capsys.readouterr().err


@pytest.mark.slow  # three 6-coin daily runs
def test_compare_on_a_universe_ranks_predictors_by_rank_ic_and_counts_them_as_trials(first_run, tmp_path, capsys):
    _, out, _ = first_run
    args = ["compare", STRATEGY, "--universe", COINS, "--predictors", "momentum,reversal,naive", "--out", str(tmp_path),
            "--set", f"data.cache_dir={out / 'cache'}", *[a for a in ARGS if a not in ("--predictor", "momentum")]]
    assert cli.main(args) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("2") and "compare" in p.name]
    board = pd.read_csv(folder / "leaderboard.csv")
    assert list(board["predictor"])[-1] == "naive"  # a constant forecast ranks nothing: no IC, last
    by = board.set_index("predictor")
    assert by.loc["reversal", "rank_ic"] == pytest.approx(-by.loc["momentum", "rank_ic"], abs=1e-12)
    for run_dir in board["run_dir"]:
        m = json.loads((folder / run_dir / "metrics.json").read_text())
        assert m["significance"]["trials"]["n"] == 3  # every row appended before any was judged
    assert (folder / "leaderboard.html").is_file() and "rank_ic_t" in capsys.readouterr().out
    page = (folder / "leaderboard.html").read_text()  # the table, then Rank IC t, total return and equity charts
    assert page.count('class="plotly-chart"') == 3 and "<script src=" not in page
    assert "Rank IC t-statistic" in page and "equal-weight universe" in page and page.count("<table") == 1
    assert cli.main([*args[:2], "--symbols", "BTC/USDT", *args[2:]]) == 2
    assert "--symbols and --universe" in capsys.readouterr().err


@pytest.mark.slow  # one more 6-coin daily run (forecasts from the cache)
def test_reconcile_sets_the_bars_checked_on_the_event_loop_and_the_record_is_the_same(first_run, tmp_path, capsys):
    """``--reconcile 120d``: the event loop runs the first 120 days only; the record (the fast path) is the
    one the fully reconciled run of the fixture wrote, equity at every bar and every fill."""
    _, out, full_dir = first_run
    assert cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(tmp_path), "--reconcile", "120d",
                     "--set", f"data.cache_dir={out / 'cache'}", *ARGS]) == 0
    printed = capsys.readouterr().out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    m = json.loads((run_dir / "metrics.json").read_text())
    r = m["reconciled"]
    assert r["record"] == "fast path" and r["bars"] == 120 and r["of_bars"] == 547 and r["difference"] is None
    assert r["first_bar"].startswith("2021-12-01") and r["last_bar"].startswith("2022-03-30")
    assert "on bars 1-120 of 547 (2021-12-01 00:00 .. 2022-03-30 00:00 UTC" in printed
    # the checks on the fast path say it was reconciled on those bars only, never on "the run"
    part = ("fast path, reconciled fill for fill with the run's event loop on bars 1-120 of 547 only, "
            "the first evaluation.universe_reconcile = '120d'")
    assert m["random_ranking"]["engine"] == part and f"at each time, {part}): Sharpe " in printed
    assert f"on bars cut there ({part}))" in m["lookahead"]["summary"] and "whole run" not in m["lookahead"]["summary"]
    for name in ("equity.csv", "fills.csv", "positions.csv"):
        assert (run_dir / name).read_text() == (full_dir / name).read_text(), name
    assert cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(tmp_path), "--reconcile", "half",
                     "--set", f"data.cache_dir={out / 'cache'}", *ARGS]) == 2
    assert "evaluation.universe_reconcile = 'half'" in capsys.readouterr().err


@pytest.mark.slow  # one more 6-coin daily run (forecasts from the cache)
def test_a_fast_path_that_disagrees_makes_the_event_loop_the_record_and_says_so(first_run, tmp_path, monkeypatch,
                                                                              capsys):
    """A fast path one unit off on its first fill: the run says NOT reconciled with the difference, the event loop
    over every bar is the record (the fixture's record, equity and fills), and the reference is simulated on it."""
    from engine.backtesting import portfolio

    real = portfolio.fast_simulate_portfolio

    def off(bars, forecasts, levels, setup):
        sim = real(bars, forecasts, levels, setup)
        fills = sim.fills.copy()
        fills.loc[0, "size"] += 1.0
        return type(sim)(**{**sim.__dict__, "fills": fills})

    monkeypatch.setattr(portfolio, "fast_simulate_portfolio", off)
    _, out, full_dir = first_run
    assert cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(tmp_path), "--reconcile", "60d",
                     "--set", f"data.cache_dir={out / 'cache'}", *ARGS]) == 0
    assert "fast path: NOT reconciled: fill 1 at" in capsys.readouterr().out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["reconciled"]["record"] == "event loop" and m["reconciled"]["bars"] == 0
    assert "size differs" in m["reconciled"]["difference"] and m["reference_simulated"] == "event loop"
    for name in ("equity.csv", "fills.csv", "positions.csv"):
        assert (run_dir / name).read_text() == (full_dir / name).read_text(), name
