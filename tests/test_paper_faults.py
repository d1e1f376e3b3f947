"""Faults in paper trading: network errors, timeouts, 429 and 5xx on candles and orders,
answers lost after the order was placed, exchange rejections, late and missing candles,
and the kill switch. Each is survived with nothing doubled or lost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from binance_stub import KLINES_PATH
from engine.core.errors import OperationalError, UserInputError
from engine.paper.runner import JOURNAL_FILE, PaperRunner, resumed_config
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from test_paper_helpers import HOUR_MS, START_MS, STRATEGY, ManualClock, ManualTicks, paper_config, run_paper, stub_fixture

KEY, SECRET = "k3y-Fault-Test-0123456789abcdef", "s3cret-Fault-Test-fedcba9876543210"


stub = stub_fixture(KEY, SECRET)


run = run_paper


@pytest.mark.slow
def test_testnet_orders_survive_network_faults_and_rejections(stub, tmp_path, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    stub.fault_paths = {"POST /api/v3/order"}
    # order 1: placed, answer lost; order 2: 500 then 429 then ok; order 3: a timeout whose request
    # still lands later, after its receive window (the exchange refuses it as too old); orders 4, 5: refused
    stub.fail_next("drop_after")
    stub.fail_next(500)
    stub.fail_next(429)
    stub.fail_next("delay:0.8")

    def on_tick(n):
        if n == 30:  # well after the delayed duplicate of order 3 has landed
            stub.reject_next_orders.extend([(-2010, "Account has insufficient balance for requested action."),
                                            (-1013, "Filter failure: NOTIONAL")])
        if n == 40:  # candles: 429 twice, a 500, a dropped connection and a timeout, all within one bar
            stub.fault_paths = {KLINES_PATH}
            for answer in (429, 429, 500, "drop", "delay:0.8"):
                stub.fail_next(answer)

    outcome, journal = run(stub, tmp_path, 120, mode="testnet", on_tick=on_tick, request_timeout_s=0.5,
                           recv_window_s=0.3)
    orders = journal.orders()
    assert outcome.bars == 120, "no bar lost to the faults"
    assert journal.events("skipped") == []
    on_exchange = [o["clientOrderId"] for o in stub.orders]
    assert len(on_exchange) == len(set(on_exchange)), "an order was placed twice"
    filled = orders[orders["status"] == "filled"]
    rejected = orders[orders["status"] == "rejected"]
    assert set(filled["client_id"]) == set(on_exchange), "journal and exchange disagree"
    assert len(rejected) == 2 and len(filled) >= 8
    assert rejected["reason"].str.contains("InsufficientFunds").sum() == 1
    assert rejected["reason"].str.contains("NOTIONAL").sum() == 1
    assert set(orders["status"]) <= {"filled", "rejected"}
    by_id = {o["clientOrderId"]: o for o in stub.orders}
    for row in filled.itertuples():
        assert row.exchange_id == str(by_id[row.client_id]["orderId"])
        assert row.price == pytest.approx(float(by_id[row.client_id]["fills"][0]["price"]))
    # the strategy booked each exchange fill once, at the exchange's price
    fills = journal.fills()
    assert fills["client_id"].is_unique and set(fills["client_id"]) <= set(filled["client_id"])
    prices = dict(zip(filled["client_id"], filled["price"]))
    np.testing.assert_allclose(fills["price"], [prices[c] for c in fills["client_id"]], rtol=1e-9)
    answers = [r.answered for r in stub.requests_to("/api/v3/order") if r.method == "POST"]
    # the timed-out request landed 0.8 s after signing, past its 0.3 s receive window, and was refused
    # as too old (the desk waited the window out before its lookup and resend): placed orders are the
    # lost answer's one plus every "ok" but the two rejections
    assert answers[:4] == ["drop_after", "500", "429", "delay:0.8"]
    assert len(stub.late_refused) == 1 and stub.late_refused[0] in on_exchange
    assert len(stub.orders) == 1 + answers.count("ok") - 2
    assert [r.answered for r in stub.requests_to(KLINES_PATH)].count("drop") == 1
    text = (outcome.run_dir / "paper.log").read_text() + (outcome.run_dir / JOURNAL_FILE).read_bytes().decode("latin-1")
    assert KEY not in text and SECRET not in text
    journal.close()


@pytest.mark.slow
def test_a_delayed_order_is_waited_out_not_doubled(stub, tmp_path, monkeypatch):
    """The hard case on real Binance: a timed-out order request that still lands, within its
    receive window, after the client gave up. Binance would not refuse a resend with the
    same client id (the first is already filled), so only waiting the window out before the
    lookup prevents a second order."""
    import engine.paper.execution as execution

    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    stub.duplicates_only_while_open = True
    stub.balances["USDT"] = 1e9  # so that a doubled order would be affordable, not refused for funds
    stub.fault_paths = {"POST /api/v3/order"}
    stub.fail_next("delay:0.8")  # lands 0.8 s after signing: inside a 1 s window, after the 0.5 s timeout
    outcome, journal = run(stub, tmp_path / "wait", 30, mode="testnet", request_timeout_s=0.5, recv_window_s=1.0)
    time.sleep(1.0)  # nothing may land late
    ids = [o["clientOrderId"] for o in stub.orders]
    assert ids and len(ids) == len(set(ids)), "an order was placed twice"
    assert stub.late_refused == []  # the delayed original itself was placed, and found by the lookup
    first = journal.orders().iloc[0]
    assert first.status == "filled" and first.exchange_id == str(stub.orders[0]["orderId"])
    journal.close()

    # The same scenario without waiting the window out doubles the order (the test above is not
    # vacuous), and the balance check after the next fill stops the run, naming both positions.
    stub.orders.clear()
    monkeypatch.setattr(execution, "RECV_WINDOW_MARGIN", 0.0)
    stub.fail_next("delay:0.8")
    with pytest.raises(OperationalError, match=r"position mismatch after order .*-\d+: the account holds"):
        run(stub, tmp_path / "nowait", 30, mode="testnet", request_timeout_s=0.5, recv_window_s=1.0)
    time.sleep(1.0)  # let the delayed original land (the run itself can finish sooner)
    ids = [o["clientOrderId"] for o in stub.orders]
    assert len(ids) == len(set(ids)) + 1


def test_late_candle_is_retried_and_missing_one_is_skipped(stub, tmp_path):
    late, missing = START_MS + 5 * HOUR_MS, START_MS + 20 * HOUR_MS
    serve = stub.routes[KLINES_PATH]

    def klines(params):
        status, rows = serve(params)
        now = stub.clock_ms()
        hidden = {late: late + HOUR_MS + 5 * 60_000, missing: missing + HOUR_MS + 30 * 60_000}
        return status, [r for r in rows if not (r[0] in hidden and now < hidden[r[0]])]

    stub.routes[KLINES_PATH] = klines
    outcome, journal = run(stub, tmp_path, 40)
    candles = journal.candles()
    traded = candles[candles["traded"] == 1].index.as_unit("ms").asi8
    assert late in traded, "a candle 5 minutes late is still traded within its bar"
    assert missing not in traded and len(traded) == 39
    assert len(journal.events("skipped")) == 1
    # it arrived 20 minutes after the wait ended: kept as model context only, never traded
    assert missing in candles.index.as_unit("ms").asi8 and len(journal.events("stale")) == 1
    journal.close()


def test_kill_switch_max_orders_per_day(stub, tmp_path):
    outcome, journal = run(stub, tmp_path, 100, max_orders_per_day=2)
    assert outcome.stopped_by.startswith("kill switch: max_orders_per_day = 2")
    orders = journal.orders()
    assert (orders["reason"].fillna("").str.startswith("kill switch")).sum() == 1
    assert len(journal.events("kill_switch")) == 1
    journal.close()
    with pytest.raises(UserInputError, match="stopped by its kill switch"):
        cfg = resumed_config(outcome.run_dir, paper_config(tmp_path / "runs", stub.url))
        PaperRunner(cfg, STRATEGY, resume_dir=outcome.run_dir, clock=ManualClock(stub, stub.now_ms),
                    ticks=ManualTicks(ManualClock(stub, stub.now_ms), 1), install_signals=False).run()


def test_kill_switch_max_drawdown(stub, tmp_path):
    outcome, journal = run(stub, tmp_path, 300, max_drawdown=0.03)
    assert outcome.stopped_by.startswith("kill switch: drawdown")
    equity = journal.equity()["value"]
    assert 1 - equity.iloc[-1] / equity.cummax().iloc[-1] >= 0.03 and len(equity) < 300
    journal.close()


def test_testnet_needs_keys_and_a_sandbox(stub, tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    monkeypatch.delenv(API_SECRET_ENV, raising=False)
    with pytest.raises(UserInputError, match=f"{API_KEY_ENV} and {API_SECRET_ENV} are not set"):
        run(stub, tmp_path, 1, mode="testnet")
    from engine.paper.execution import sandbox_exchange
    from engine.paper.secrets import Credentials
    from feeds.errors import ExchangeRequestError

    with pytest.raises(ExchangeRequestError, match="'kraken' has no sandbox.*--mode sim"):  # fix the input: exit 2
        sandbox_exchange("kraken", Credentials("k", "s"), "", 5.0)
