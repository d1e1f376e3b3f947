"""The engine's backtest of sma_cross reproduces an independent numpy/pandas simulation.

Same rules on both sides: the signal at bar t's close fills at bar t+1's open, buys pay
open*(1+slippage), sells get open*(1-slippage), commission = fee x notional per fill,
entry size = stake x equity / close[t].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.runs.pipeline import run_pipeline
from engine.core.config import load_config

FEE, SLIP, CASH, STAKE, FAST, SLOW, CONTEXT = 0.001, 0.0005, 10_000.0, 0.95, 10, 30, 32


def reference_sma_cross(bars: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    close, open_ = bars["close"], bars["open"].to_numpy()
    diff = (close.rolling(FAST).mean() - close.rolling(SLOW).mean()).to_numpy()
    nonzero_prev = pd.Series(np.where(diff == 0, np.nan, diff)).ffill().shift(1).to_numpy()
    up = (nonzero_prev < 0) & (diff > 0)
    down = (nonzero_prev > 0) & (diff < 0)
    cash, pos, pending = CASH, 0.0, None
    fills, equity = [], np.empty(len(bars))
    closes = close.to_numpy()
    for t in range(len(bars)):
        if pending is not None:  # fill at this bar's open
            side, size = pending
            price = open_[t] * (1 + SLIP) if side == "buy" else open_[t] * (1 - SLIP)
            comm = size * price * FEE
            cash += (-size if side == "buy" else size) * price - comm
            pos += size if side == "buy" else -size
            fills.append((bars.index[t], side, size, price, comm))
            pending = None
        equity[t] = cash + pos * closes[t]
        if up[t] and pos == 0:
            pending = ("buy", STAKE * equity[t] / closes[t])
        elif down[t] and pos > 0:
            pending = ("sell", pos)
    return pd.DataFrame(fills, columns=["time", "side", "size", "price", "commission"]), equity


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT"])
def test_sma_cross_matches_independent_reference(symbol, shared_data, tmp_path):
    cfg = load_config(None, {
        "data.symbol": symbol, "data.timeframe": "1d", "data.data_dir": str(shared_data),
        "data.cache_dir": str(tmp_path / "cache"), "predictor.name": "naive",
        "predictor.context_length": CONTEXT, "broker.cash": CASH, "broker.fee": FEE,
        "broker.slippage": SLIP, "strategy.sma_cross": {"fast": FAST, "slow": SLOW, "stake": STAKE},
        "output.dir": str(tmp_path / "runs"), "output.progress": False,
    })
    result = run_pipeline(cfg, "strategies/sma_cross.py")
    ref_fills, ref_equity = reference_sma_cross(result.bars)

    assert len(ref_fills) > 20, "the reference should trade often enough to be a real check"
    fills = result.fills
    assert list(fills["side"]) == list(ref_fills["side"])
    assert list(fills["time"]) == list(ref_fills["time"])
    np.testing.assert_allclose(fills["size"], ref_fills["size"], rtol=1e-9)
    np.testing.assert_allclose(fills["price"], ref_fills["price"], rtol=1e-9)
    np.testing.assert_allclose(fills["commission"], ref_fills["commission"], atol=0.005)
    np.testing.assert_allclose(result.equity.to_numpy(), ref_equity, atol=0.01)  # to the cent, every bar
    assert result.metrics.n_trades == len(ref_fills) // 2
    assert result.metrics.fees_paid == pytest.approx(ref_fills["commission"].sum(), abs=0.01)
