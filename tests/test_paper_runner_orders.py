"""An order interrupted mid-retry is never sent late after a resume (issue 9, item 5): one
older than `paper.max_order_age` is looked up by client id and, not being on the exchange,
canceled and recorded."""

from __future__ import annotations

import pytest

from binance_stub import ORDER_PATH
from engine.core.config import ConfigError, load_config, parse_order_age
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE, PaperRunner, resumed_config
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from test_paper_helpers import DELAY_MS, HOUR_MS, START_MS, STRATEGY, ManualClock, ManualTicks, paper_config, stub_fixture

KEY, SECRET = "k3y-Orders-Test-0123456789abcdef", "s3cret-Orders-Test-fedcba987654321"


stub = stub_fixture(KEY, SECRET)


@pytest.mark.parametrize("bars_later", [2, 5])
def test_an_order_interrupted_mid_retry_is_canceled_not_sent_late(stub, tmp_path, monkeypatch, bars_later):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    cfg = paper_config(tmp_path / "runs", stub.url, mode="testnet", recv_window_s=0.05)
    assert cfg.paper.max_order_age == "1bar"  # the default
    clock = ManualClock(stub, START_MS + DELAY_MS)
    runner = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 200), install_signals=False)
    # every order request fails with a 500; the stop (a SIGTERM) comes during the first retry's lookup
    stub.fault_paths = {f"POST {ORDER_PATH}"}
    stub.fail_next(500, times=100)
    lookup = stub.method_routes[("GET", ORDER_PATH)]

    def lookup_then_stop(params):
        runner.stop.set()
        return lookup(params)

    stub.method_routes[("GET", ORDER_PATH)] = lookup_then_stop
    outcome = runner.run()
    assert outcome.stopped_by == "signal"
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    (row,) = journal.orders().itertuples()
    journal.close()
    # never reached the exchange; journaled unanswered (or canceled, by a desk that settles
    # unanswered orders at shutdown)
    assert row.status in ("sending", "unknown", "canceled") and stub.orders == []

    # resumed `bars_later` bars after the decision, with the exchange healthy again
    stub.fault_paths = set()
    stub.method_routes[("GET", ORDER_PATH)] = lookup
    resumed = resumed_config(outcome.run_dir, paper_config(tmp_path / "runs", stub.url, recv_window_s=0.05))
    clock = ManualClock(stub, row.bar_time + bars_later * HOUR_MS + DELAY_MS)
    PaperRunner(resumed, STRATEGY, resume_dir=outcome.run_dir, clock=clock, ticks=ManualTicks(clock, 1),
                install_signals=False).run()
    assert stub.orders_with_client_id(row.client_id) == [], "the interrupted order was sent late"
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    first = journal.orders().iloc[0]
    # (the reason names paper.max_order_age, or, where the desk settles unanswered orders at
    # start-up, the restart: either way it is canceled and recorded, not sent)
    assert first.status == "canceled" and first.reason
    journal.close()
    # it was looked up by client id before being given up
    looked = [r for r in stub.requests_to(ORDER_PATH) if r.method == "GET"]
    assert looked[-1].params.get("origClientOrderId") == row.client_id


def test_an_order_older_than_max_order_age_when_made_is_never_sent(stub, tmp_path, monkeypatch):
    """With a limit shorter than the time from a bar's close to its decision (the 1 s poll
    delay), every order is too old to send: each is looked up, canceled and recorded."""
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    cfg = paper_config(tmp_path / "runs", stub.url, mode="testnet", max_order_age="0.5s")
    clock = ManualClock(stub, START_MS + DELAY_MS)
    outcome = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 40), install_signals=False).run()
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    orders = journal.orders()
    assert len(orders) >= 2 and stub.orders == [] and journal.fills().empty
    assert set(orders["status"]) == {"canceled"}
    assert orders["reason"].str.contains("older than paper.max_order_age = '0.5s'").all()
    assert len(journal.events("order_too_old")) == len(orders)
    journal.close()
    posted = [r for r in stub.requests_to(ORDER_PATH) if r.method == "POST"]
    assert posted == []


@pytest.mark.parametrize(("text", "tf_ms", "ms"), [("1bar", HOUR_MS, HOUR_MS), ("3 bars", 60_000, 180_000),
                                                   ("90s", HOUR_MS, 90_000), ("1.5h", 60_000, 5_400_000)])
def test_max_order_age_in_bars_or_as_a_duration(text, tf_ms, ms):
    assert parse_order_age(text, tf_ms) == ms
    assert load_config(None, {"paper.max_order_age": text}).paper.max_order_age_ms(tf_ms) == ms


@pytest.mark.parametrize("bad", ["0bars", "-2m", "2 days", "soon", ""])
def test_a_bad_max_order_age_names_the_key_and_the_fix(bad):
    with pytest.raises(ConfigError, match=r"paper.max_order_age = .* e\.g\. \"1bar\""):
        load_config(None, {"paper.max_order_age": bad})
