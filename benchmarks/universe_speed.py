"""A universe portfolio's speed: backtrader's event loop on N feeds vs the reconciled fast path vs a bare numpy limit.

Loads 30 Binance spot USDT pairs (the 28 of ``../shared/data/universe`` plus BTC and ETH) on one 1h clock over
the two years 2022-02-01 .. 2024-02-01 (every pair trades through it: IMX lists 2022-01-10, XMR leaves
2024-02-20), computes a cheap past-only momentum forecast per coin once (log return over ``--lookback``
candles), and times in one process:

- event loop: :func:`engine.backtesting.portfolio.simulate_portfolio` (backtrader, 30 feeds) of
  ``strategies/rank_long_short.py`` over the first ``--event-days`` days (default: all of them);
- fast path: :func:`engine.backtesting.portfolio.fast_simulate_portfolio` over the same days (best of
  ``--repeat``), and over the full two years; the two paths are reconciled on the event loop's span
  (:func:`engine.backtesting.portfolio.reconcile_portfolio`: fills, orders, positions exact, equity to 1e-9);
- bare numpy limit: the same target weights held between rebalances as constant fractions of equity,
  costs on ``|weight change|`` and borrow on short weight, all vectorised (no order sizes, no cash checks:
  a lower bound on what any simulator of this portfolio costs, not a reconciled result).

Prints the ratios event loop / fast path (target >= 50x) and fast path / bare limit. Usage:
``python benchmarks/universe_speed.py [--event-days 730] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from engine.backtesting.portfolio import (  # noqa: E402
    PortfolioSetup, bars_on_clock, fast_simulate_portfolio, portfolio_market, reconcile_portfolio,
    short_rate_per_bar, simulate_portfolio,
)
from engine.core.config import load_config  # noqa: E402
from feeds.timeframes import parse_timerange  # noqa: E402
from feeds.universe import load_universe  # noqa: E402
from strategies.rank_long_short import EqualWeightUniverse, RankLongShort  # noqa: E402

UNIVERSE = ["BTC/USDT", "ETH/USDT"] + [f"{c}/USDT" for c in (
    "ADA ALGO ATOM BCH DOGE DOT EOS ETC FIL FTM GRT HBAR ICP IMX MATIC MKR NEAR NEO OM PAXG SHIB STX THETA TRX "
    "UNI XLM XMR XTZ").split()]
TIMERANGE = "20220201-20240201"


def bare_limit(market, weights: np.ndarray, fee: float, slip: float, rate: float) -> float:
    """Final equity (per unit of cash) of ``weights`` held as constant fractions between rebalances, vectorised:
    a weight set at a close earns the next bars' close-to-close returns; a weight change pays ``fee + slippage``."""
    close = market.close
    T, N = close.shape
    ret = np.zeros_like(close)
    ret[1:] = close[1:] / close[:-1] - 1.0
    idx = np.where(np.isfinite(weights), np.arange(T)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    held = np.nan_to_num(weights[idx, np.arange(N)])  # the weight in force after each close
    prev = np.vstack([np.zeros((1, N)), held[:-1]])
    traded = np.abs(held - prev).sum(axis=1)
    growth = 1.0 + (prev * ret).sum(axis=1) - traded * (fee + slip) - rate * np.maximum(-prev, 0).sum(axis=1)
    return float(np.prod(growth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--event-days", type=int, default=730, help="days of the event loop's span (from the start)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lookback", type=int, default=24)
    args = parser.parse_args()
    logger.remove()
    data = Path(args.data_dir)
    cfg = load_config(ROOT / "config.toml")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        u = load_universe("shared30", UNIVERSE, "1h", parse_timerange(TIMERANGE), data_dirs=(data, data / "universe"),
                          cache_dir=Path(cache), exchange_id="binance", download=False, progress=False,
                          warmup_bars=args.lookback)
        load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    forecasts = {s: np.log(c["close"]).diff(args.lookback).reindex(u.clock).to_numpy()[:, None, None]
                 for s, c in u.candles.items()}
    bars = bars_on_clock(u.candles, u.clock)
    prep_s = time.perf_counter() - t0
    T, N = len(u.clock), len(bars)
    params = {"k": 5, "rebalance": 24, "weighting": "equal", "max_weight": 0.25, "gross": 0.95}
    rate = short_rate_per_bar(cfg.broker.short_rate, 3600)
    setup = PortfolioSetup(RankLongShort, params, cfg.broker.cash, cfg.broker.costs, rate)
    n_event = min(T, args.event_days * 24)
    part_bars = {s: b.iloc[:n_event] for s, b in bars.items()}
    part_fc = {s: v[:n_event] for s, v in forecasts.items()}
    print(f"universe: {N} coins x {T:,} 1h bars ({u.clock[0]} .. {u.clock[-1]}); event loop on the first "
          f"{n_event:,} bars; loaded in {load_s:.1f} s, forecasts and feeds in {prep_s:.1f} s")

    t0 = time.perf_counter()
    event = simulate_portfolio(part_bars, part_fc, (0.5,), setup)
    event_s = time.perf_counter() - t0
    fast_part_s, fast_full_s = float("inf"), float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        fast_part = fast_simulate_portfolio(part_bars, part_fc, (0.5,), setup)
        fast_part_s = min(fast_part_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast = fast_simulate_portfolio(bars, forecasts, (0.5,), setup)
        fast_full_s = min(fast_full_s, time.perf_counter() - t0)
    difference = reconcile_portfolio(fast_part, event)
    market = portfolio_market(bars, forecasts, (0.5,))
    weights = RankLongShort.fast_targets(market, dict(RankLongShort.params._getitems(), **params)).weights
    bare_s = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        bare_growth = bare_limit(market, weights, setup.costs.fee, setup.costs.slippage, rate)
        bare_s = min(bare_s, time.perf_counter() - t0)
    reference = fast_simulate_portfolio(bars, None, (0.5,), PortfolioSetup(
        EqualWeightUniverse, {"rebalance": 24, "gross": 0.95}, cfg.broker.cash, cfg.broker.costs, rate))

    drag = fast.cost_drag()
    event_per_bar = event_s / n_event
    fast_per_bar = fast_part_s / n_event
    ratio = event_per_bar / fast_per_bar
    print(f"  event loop:  {event_s:8.2f} s for {n_event:,} bars ({n_event / event_s:8.0f} bars/s, "
          f"{len(event.fills):,} fills)")
    print(f"  fast path:   {fast_part_s:8.3f} s for the same bars ({n_event / fast_part_s:8.0f} bars/s); "
          f"{fast_full_s:.3f} s for all {T:,} bars ({len(fast.fills):,} fills)")
    print(f"  bare numpy:  {bare_s:8.4f} s for all {T:,} bars")
    print(f"  ratio event loop / fast path: {ratio:7.1f}x (target >= 50x)")
    print(f"  ratio fast path / bare numpy: {fast_full_s / bare_s:7.1f}x")
    verdict = "yes" if difference is None else "NO: " + difference
    print(f"  reconciled fill for fill on the event loop's span: {verdict}")
    print(f"  two years: rank long-short final equity {fast.equity.iloc[-1]:,.0f}, equal-weight universe "
          f"{reference.equity.iloc[-1]:,.0f} (of {cfg.broker.cash:,.0f}); turnover {fast.turnover.sum():.1f}; "
          f"costs {drag['fees']:,.0f} fees + {drag['slippage']:,.0f} slippage + {drag['borrow']:,.0f} borrow; "
          f"bare limit equity {bare_growth * cfg.broker.cash:,.0f}")
    write_result("universe_speed", {
        "coins": N, "timeframe": "1h", "timerange": TIMERANGE, "event_days": args.event_days, "repeat": args.repeat,
        "lookback": args.lookback, "params": params, "cash": cfg.broker.cash, "short_rate_per_bar": rate,
        "costs": setup.costs.to_json()},
        {"bars": T, "event_bars": n_event, "load_s": load_s, "prep_s": prep_s, "event_s": event_s,
         "fast_part_s": fast_part_s, "fast_full_s": fast_full_s, "bare_s": bare_s,
         "event_over_fast": ratio, "fast_over_bare": fast_full_s / bare_s,
         "event_fills": len(event.fills), "fast_part_fills": len(fast_part.fills), "fast_fills": len(fast.fills),
         "reconciled": difference is None,
         "final_equity": float(fast.equity.iloc[-1]), "reference_final_equity": float(reference.equity.iloc[-1]),
         "bare_final_equity": bare_growth * cfg.broker.cash, "turnover": float(fast.turnover.sum()),
         "fees": drag["fees"], "slippage": drag["slippage"], "borrow": drag["borrow"]})


if __name__ == "__main__":
    main()
