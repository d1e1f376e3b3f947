"""Paper trading's candles (issue 9, item 10): a candle received after `late_candle_wait_s`
is never traded, whatever made it late; an order whose fill bar was missed is canceled and
recorded instead of filling at a much later open with a stale size; `data.exchange_url`
says where paper candles come from, as in a backtest."""

from __future__ import annotations

import dataclasses

import pytest
from loguru import logger

from binance_stub import KLINES_PATH, ORDER_PATH, BinanceStub
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE, PaperRunner, resumed_config
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from test_paper_helpers import DELAY_MS, HOUR_MS, START_MS, STRATEGY, ManualClock, ManualTicks, paper_config, run_paper, stub_fixture

KEY, SECRET = "k3y-Candles-Test-0123456789abcd", "s3cret-Candles-Test-dcba98765432"


stub = stub_fixture(KEY, SECRET)


run = run_paper


def traded_times(journal):
    candles = journal.candles()
    return candles[candles["traded"] == 1].index.as_unit("ms").asi8.tolist()


@pytest.mark.parametrize("late_s", [0.8 * 3600, 700.0])
def test_a_candle_received_after_the_wait_is_not_traded(stub, tmp_path, late_s):
    """The candle is served on time, but this process polls late (busy, stalled): 0.8 h
    (the issue's case) and just past the 600 s limit of the test config."""
    late_tick = 12

    def on_tick(n):
        if n == late_tick:
            stub.now_ms += int(late_s * 1000)

    outcome, journal = run(stub, tmp_path, 30, on_tick=on_tick)
    late_bar = START_MS + (late_tick - 1) * HOUR_MS  # the candle that closed at the late tick's boundary
    traded = traded_times(journal)
    assert late_bar not in traded and len(traded) == 29
    assert late_bar in journal.candles().index.as_unit("ms").asi8  # kept as model context
    (event,) = journal.events("late")
    assert "late_candle_wait_s" in event[1]
    journal.close()


def test_a_candle_just_within_the_wait_is_traded(stub, tmp_path):
    def on_tick(n):
        if n == 12:
            stub.now_ms += 500_000  # 500 s + the 1 s poll delay, under the 600 s limit

    outcome, journal = run(stub, tmp_path, 30, on_tick=on_tick)
    assert len(traded_times(journal)) == 30 and journal.events("late") == []
    journal.close()


def _first_order_bar(stub, tmp_path):
    outcome, journal = run(stub, tmp_path / "probe", 30)
    orders = journal.orders()
    journal.close()
    assert len(orders) >= 1
    return int(orders["bar_time"].iloc[0])


@pytest.mark.slow
@pytest.mark.parametrize("missing", [1, 11])
def test_an_order_whose_fill_bar_was_missed_is_canceled(stub, tmp_path, missing):
    """Candles after the first order's decision bar are never served in time: the order is
    canceled, not filled at the open of the next candle that arrives with its old size."""
    decision = _first_order_bar(stub, tmp_path)
    hidden = {decision + k * HOUR_MS for k in range(1, missing + 1)}
    serve = stub.routes[KLINES_PATH]

    def klines(params):
        status, rows = serve(params)
        # served 2 h after closing: far past the 600 s wait, so those bars are skipped
        return status, [r for r in rows if not (r[0] in hidden and stub.clock_ms() < r[0] + 3 * HOUR_MS)]

    stub.routes[KLINES_PATH] = klines
    outcome, journal = run(stub, tmp_path / "gap", 40)
    orders, fills = journal.orders(), journal.fills()
    first = orders.iloc[0]
    assert int(first["bar_time"]) == decision
    assert first["status"] == "canceled" and "fill bar" in first["reason"] and "missed" in first["reason"]
    assert first["client_id"] not in set(fills["client_id"])
    assert len(journal.events("missed_fill_bar")) == 1
    assert len(journal.events("skipped")) + len(journal.events("stale")) >= 1
    assert not set(traded_times(journal)) & hidden
    # trading goes on: later orders are made on fresh data and fill at their next bar's open
    later = orders.iloc[1:]
    assert len(later) >= 1 and set(later["status"]) == {"filled"}
    first_fill = fills.iloc[0]
    assert first_fill["client_id"] == later["client_id"].iloc[0]
    assert int(first_fill["time"].value // 1_000_000) == int(later["bar_time"].iloc[0]) + HOUR_MS
    journal.close()

    # a resume replays the same gap and cancels the same order: the replay does not diverge
    resumed = resumed_config(outcome.run_dir, paper_config(tmp_path / "gap" / "runs", stub.url))
    clock = ManualClock(stub, stub.now_ms)
    PaperRunner(resumed, STRATEGY, resume_dir=outcome.run_dir, clock=clock, ticks=ManualTicks(clock, 2),
                install_signals=False).run()
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    again = journal.orders().iloc[: len(orders)]
    assert list(again["status"]) == list(orders["status"]) and journal.events("replay_diverged") == []
    assert len(journal.fills()) >= len(fills)
    journal.close()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_data_exchange_url_serves_paper_candles(tmp_path, monkeypatch):
    """Candles from `data.exchange_url` (one stub), orders to `paper.api_url` (another), and
    both hosts named in the log at start-up."""
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    with BinanceStub(api_key=KEY, api_secret=SECRET) as candles, BinanceStub(api_key=KEY, api_secret=SECRET) as orders:
        cfg = paper_config(tmp_path / "runs", orders.url, mode="testnet")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, exchange_url=candles.url))
        urls = candles.url, orders.url
        clock = ManualClock(candles, START_MS + DELAY_MS)
        orders.now_ms = candles.now_ms

        def on_tick(n):
            orders.now_ms = candles.now_ms

        try:
            PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 40, on_tick=on_tick),
                        install_signals=False).run()
        finally:
            logger.remove(sink)
        assert len(candles.requests_to(KLINES_PATH)) >= 40 and orders.requests_to(KLINES_PATH) == []
        assert orders.orders and candles.orders == [] and candles.requests_to(ORDER_PATH) == []
    text = "".join(lines)
    assert f"candles: binance public API at {urls[0]}" in text
    assert f"orders: binance sandbox at {urls[1]}" in text
