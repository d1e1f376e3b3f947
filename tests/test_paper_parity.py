"""Paper trading in sim mode on historical candles replayed by the Binance stub gives the
backtest's orders, fills and equity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from binance_stub import BinanceStub
from engine.runs.pipeline import run_pipeline
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE, PaperRunner
from test_paper_helpers import DELAY_MS, START_MS, STRATEGY, ManualClock, ManualTicks, backtest_config, paper_config

N_BARS = 300


@pytest.fixture
def stub():
    server = BinanceStub().start()
    try:
        yield server
    finally:
        server.stop()


def run_paper_sim(stub, tmp_path, n_bars):
    cfg = paper_config(tmp_path / "runs", stub.url)
    clock = ManualClock(stub, START_MS + DELAY_MS)
    outcome = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, n_bars), install_signals=False).run()
    return cfg, outcome


@pytest.mark.slow
def test_sim_mode_equals_the_backtest(stub, tmp_path):
    cfg, outcome = run_paper_sim(stub, tmp_path, N_BARS)
    assert outcome.bars == N_BARS and outcome.replayed == 0
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    paper_fills, equity, orders = journal.fills(), journal.equity(), journal.orders()
    journal.close()

    bt_result = run_pipeline(backtest_config(cfg, N_BARS), STRATEGY)
    assert len(bt_result.bars) == N_BARS
    assert equity.index.equals(bt_result.bars.index)
    assert len(bt_result.fills) >= 10, "the stretch should trade"
    expected = bt_result.fills.reset_index(drop=True)
    got = paper_fills[expected.columns].reset_index(drop=True)
    pd.testing.assert_series_equal(got["time"], expected["time"])
    assert (got["side"] == expected["side"]).all()
    np.testing.assert_allclose(got[["size", "price", "commission", "value"]].to_numpy(),
                               expected[["size", "price", "commission", "value"]].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(equity["value"].to_numpy(), bt_result.equity.to_numpy(), rtol=1e-10)
    # every order the strategy made is journaled once, filled, and its fill is the backtest's
    assert list(orders["status"]) == ["filled"] * len(expected)
    assert orders["client_id"].is_unique
    # the forecasts the strategy saw are the backtest's
    np.testing.assert_allclose(equity["forecast"].to_numpy(), bt_result.forecast.median[:, -1], rtol=1e-12)
