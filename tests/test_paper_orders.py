"""Testnet orders against the stub's Binance rules (tests/binance_stub.py): every fault of
issue 9 ends with the exchange's order log, the journal and the account in exact agreement
(0 orders lost, 0 doubled, every order final), and with a log line for each step taken."""

from __future__ import annotations

import time

import backtrader as bt
import pytest

from binance_stub import BinanceStub
from engine.core.errors import OperationalError
from engine.paper.journal import FINAL_STATUSES, Journal
from engine.paper.live_feed import LiveForecastData
from engine.paper.runner import JOURNAL_FILE, PaperRunner, resumed_config
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from test_paper_helpers import DELAY_MS, START_MS, STRATEGY, ManualClock, ManualTicks, paper_config

KEY, SECRET = "k3y-Orders-Test-0123456789abcdef", "s3cret-Orders-Test-fedcba9876543210"
#: Bars for a buy and the sell after it (the strategy's first orders on these candles come at
#: bars 10 and 11).
BARS = 14
#: Binance balances carry 8 decimals.
BALANCE_TOL = 1e-8


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    server = BinanceStub(api_key=KEY, api_secret=SECRET).start()
    try:
        yield server
    finally:
        server.stop()


def run_testnet(stub: BinanceStub, out, n_bars: int = BARS, on_tick=None, resume=None, **paper):
    """A testnet run of ``n_bars`` bars on the manual clock; returns (outcome, journal)."""
    cfg = paper_config(out / "runs", stub.url, mode="testnet", **{"request_timeout_s": 0.5, "recv_window_s": 1.0,
                                                                   **paper})
    clock = ManualClock(stub, stub.now_ms if resume else START_MS + DELAY_MS)
    if resume is not None:
        cfg = resumed_config(resume, cfg)
    runner = PaperRunner(cfg, STRATEGY, resume_dir=resume, clock=clock,
                         ticks=ManualTicks(clock, n_bars, on_tick=on_tick), install_signals=False)
    outcome = runner.run()
    return outcome, Journal(outcome.run_dir / JOURNAL_FILE)


def assert_books_agree(stub: BinanceStub, journal: Journal, at_start: dict[str, float]) -> None:
    """The end condition: exchange order log, journal and account agree exactly."""
    time.sleep(0.05)
    stub.settle()
    assert stub.pending() == 0, "a delayed request or fill is still due on the exchange"
    placed = [o for o in stub.orders if o["status"] == "FILLED"]
    ids = [o["clientOrderId"] for o in stub.orders]
    assert len(ids) == len(set(ids)), f"doubled: {sorted(i for i in ids if ids.count(i) > 1)}"
    orders = journal.orders()
    assert set(orders["status"]) <= set(FINAL_STATUSES), f"orders left without a final state: {orders['status'].tolist()}"
    filled = orders[orders["status"] == "filled"].set_index("client_id")
    assert set(filled.index) == {o["clientOrderId"] for o in placed}, "journal and exchange disagree (lost order)"
    for o in placed:
        row = filled.loc[o["clientOrderId"]]
        assert row["exchange_id"] == str(o["orderId"])
        assert row["filled"] == pytest.approx(float(o["executedQty"]), abs=1e-12)
        fee = o["fills"][0]
        assert row["fee_asset"] == fee["commissionAsset"] and row["fee"] == pytest.approx(float(fee["commission"]))
    base = stub.balances["BTC"] - at_start["BTC"]
    assert base == pytest.approx(journal.net_position(), abs=BALANCE_TOL), "account and journal positions differ"
    assert float(journal.meta()["base_at_start"]) == pytest.approx(at_start["BTC"], abs=BALANCE_TOL)


def log_of(outcome) -> str:
    return (outcome.run_dir / "paper.log").read_text()


# -- issue 9, item 1 -----------------------------------------------------------------------
def test_feed_keeps_the_on_bar_hook_set_before_start():
    """The runner sets ``on_bar`` before cerebro starts the feed; start() must not wipe it,
    or a resumed desk never knows it is replaying (and sends journaled orders again)."""
    feed = LiveForecastData(bars=None)
    seen = []
    feed.on_bar = seen.append
    cerebro = bt.Cerebro()
    cerebro.adddata(feed)
    feed.start()
    assert feed.on_bar == seen.append


# -- item 3: errors outside the handled classes ---------------------------------------------
@pytest.mark.parametrize("fault, placed_by_first_request", [
    ("err:-1001", False),        # -1001 DISCONNECTED, HTTP 503: not run
    ("err_after:-1006", True),   # -1006 UNEXPECTED_RESP: run, "Execution status unknown."
    ("nonjson", False),          # 200 with an HTML body, before the order reached the engine
    ("nonjson_after", True),     # 200 with an HTML body, the order was placed
    ("late:0.4", True),          # -1007 at once, processed 0.4 s later, inside its 1 s window
    ("late:1.6", False),         # -1007 at once, processed after its 1 s window: refused (-1021)
])
@pytest.mark.slow
def test_order_faults_end_with_exchange_journal_and_account_agreeing(stub, tmp_path, fault, placed_by_first_request):
    at_start = dict(stub.balances)
    stub.fault_paths = {"POST /api/v3/order"}
    stub.fail_next(fault)
    outcome, journal = run_testnet(stub, tmp_path)
    time.sleep(1.7)  # anything still in flight lands (or is refused) before the books are compared
    assert outcome.bars == BARS
    assert_books_agree(stub, journal, at_start)
    first = journal.orders().iloc[0]
    assert first["status"] == "filled"
    posts = [r for r in stub.requests_to("/api/v3/order") if r.method == "POST"]
    assert posts[0].answered == fault
    # placed by the faulty request, or (it never reached the engine) by exactly one resend
    assert len(posts) == (len(stub.orders) if placed_by_first_request else len(stub.orders) + 1)
    assert (stub.late_refused == [first["client_id"]]) == (fault == "late:1.6")
    log = log_of(outcome)
    assert f"order {first['client_id']}: " in log and "state unknown, looking it up by client id" in log
    found = "the exchange has it filled" if placed_by_first_request else "the exchange does not know it"
    assert f"order {first['client_id']}: {found}" in log and f"order {first['client_id']} filled: " in log
    journal.close()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_lookups_that_fail_are_retried_not_taken_for_not_found(stub, tmp_path):
    """An answer lost after the order was placed, then lookups answered -1001, -1006 and a
    non-JSON 200: "could not check" is looked at again; the order is found, never resent."""
    at_start = dict(stub.balances)
    stub.fault_paths = {"POST /api/v3/order", "GET /api/v3/order"}
    stub.fail_next("drop_after")
    for answer in ("err:-1001", "err:-1006", "nonjson"):
        stub.fail_next(answer)
    outcome, journal = run_testnet(stub, tmp_path)
    assert_books_agree(stub, journal, at_start)
    lookups = [r.answered for r in stub.requests_to("/api/v3/order") if r.method == "GET"]
    assert lookups[:4] == ["err:-1001", "err:-1006", "nonjson", "ok"]
    assert len([r for r in stub.requests_to("/api/v3/order") if r.method == "POST"]) == len(stub.orders)
    journal.close()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_orders_processed_with_a_delay_are_waited_for(stub, tmp_path):
    """Every order stays NEW (visible, unfilled) for 0.3 s: the desk looks again until it is filled."""
    at_start = dict(stub.balances)
    stub.processing_delay_s = 0.3
    outcome, journal = run_testnet(stub, tmp_path)
    assert_books_agree(stub, journal, at_start)
    assert len(stub.orders) >= 2
    assert "the exchange has it open" in log_of(outcome)
    journal.close()


# -- item 4: fees in the received asset -------------------------------------------------------
@pytest.mark.slow
def test_fees_in_the_received_asset_keep_journal_and_account_equal(stub, tmp_path):
    at_start = dict(stub.balances)
    outcome, journal = run_testnet(stub, tmp_path, 60)
    assert_books_agree(stub, journal, at_start)
    orders = journal.orders()
    filled = orders[orders["status"] == "filled"]
    assert (orders["status"] == "rejected").sum() == 0, orders["reason"].dropna().tolist()
    assert (filled["side"] == "sell").sum() >= 2
    assert set(filled.loc[filled["side"] == "buy", "fee_asset"]) == {"BTC"}
    assert set(filled.loc[filled["side"] == "sell", "fee_asset"]) == {"USDT"}
    # a buy books what arrived: the amount less the fee in BTC, down to the 1e-5 lot step (dust stays)
    buys = filled[filled["side"] == "buy"]
    assert (buys["base_delta"] < buys["filled"]).all()
    fills = journal.fills().set_index("client_id")
    booked = fills.loc[buys["client_id"], "size"].to_numpy()
    assert (booked <= buys["base_delta"].to_numpy() + 1e-12).all()
    assert (buys["base_delta"].to_numpy() - booked < 1e-5).all()
    assert "account: " in log_of(outcome) and "as journaled" in log_of(outcome)
    journal.close()


def test_a_position_mismatch_stops_the_run_with_both_numbers(stub, tmp_path):
    """Someone else trades the account: the balance check after the next fill stops the run."""

    def on_tick(n):
        if n == 5:
            stub.balances["BTC"] += 0.25

    with pytest.raises(OperationalError, match=r"position mismatch after order \S+-1: the account holds 0\.4\d+ BTC, "
                                               r"the journal says 0\.2\d+"):
        run_testnet(stub, tmp_path, on_tick=on_tick)


def test_a_position_mismatch_at_start_refuses_to_resume(stub, tmp_path):
    outcome, journal = run_testnet(stub, tmp_path)
    journal.close()
    stub.balances["BTC"] -= 0.001
    with pytest.raises(OperationalError, match="position mismatch at start: the account holds"):
        run_testnet(stub, tmp_path, n_bars=2, resume=outcome.run_dir)


# -- items 1 and 2: resume -------------------------------------------------------------------
class _Died(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, nothing catches it."""


def _die_on_timeout(monkeypatch) -> None:
    """The next create_order that gets no answer (-1007) kills the run before the desk acts on it."""
    import ccxt

    original = ccxt.binance.create_order
    armed = [True]

    def create_order(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except ccxt.RequestTimeout:
            if armed[0]:
                armed[0] = False
                raise _Died() from None
            raise

    monkeypatch.setattr(ccxt.binance, "create_order", create_order)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_resume_waits_out_the_receive_window_before_concluding(stub, tmp_path, monkeypatch):
    """The run dies while its order is delayed inside the exchange (-1007, processed 0.5 s later
    within a 1 s window). On resume the order is looked up only after the window: found filled,
    neither sent again (doubled) nor canceled (lost)."""
    at_start = dict(stub.balances)
    stub.fault_paths = {"POST /api/v3/order"}
    stub.fail_next("late:0.5")
    _die_on_timeout(monkeypatch)
    with pytest.raises(_Died):
        run_testnet(stub, tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    journal = Journal(run_dir / JOURNAL_FILE)
    assert journal.orders()["status"].tolist() == ["sending"] and stub.orders == []
    journal.close()

    outcome, journal = run_testnet(stub, tmp_path, n_bars=4, resume=run_dir)
    time.sleep(0.6)
    assert_books_agree(stub, journal, at_start)
    first = journal.orders().iloc[0]
    assert first["status"] == "filled" and len(stub.orders_with_client_id(first["client_id"])) == 1
    log = log_of(outcome)
    assert f"order 1 ({first['client_id']}) was sending when the run stopped: looking it up by client id" in log
    assert f"order {first['client_id']}: waiting" in log and "for its receive window to pass" in log
    journal.close()


@pytest.mark.slow
def test_resume_that_cannot_check_an_order_sends_nothing_and_says_so(stub, tmp_path, monkeypatch):
    """"Could not check" is not "not found": while lookups fail the resume stops (exit 1)
    without sending or canceling; once the exchange answers, a resume settles the order."""
    at_start = dict(stub.balances)
    stub.fault_paths = {"POST /api/v3/order"}
    stub.fail_next("late:0.2")
    _die_on_timeout(monkeypatch)
    with pytest.raises(_Died):
        run_testnet(stub, tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    stub.fault_paths = {"GET /api/v3/order"}
    stub.fail_next("err:-1001", times=100)
    with pytest.raises(OperationalError, match=r"order 1 \(\S+\) is still unknown on binance .*nothing was sent"):
        run_testnet(stub, tmp_path, n_bars=2, resume=run_dir)
    journal = Journal(run_dir / JOURNAL_FILE)
    assert journal.orders()["status"].tolist() == ["sending"]
    journal.close()
    stub._faults.clear()
    outcome, journal = run_testnet(stub, tmp_path, n_bars=4, resume=run_dir)
    assert_books_agree(stub, journal, at_start)
    assert journal.orders()["status"].iloc[0] == "filled" and len(stub.orders) >= 1
    journal.close()


def test_internal_errors_and_non_json_candles_are_retried_not_fatal(stub, tmp_path):
    """-1001 and -1006 (ccxt's OperationFailed, outside NetworkError) and a non-JSON 200 on
    the candle requests of one bar: retried within the bar, no bar lost, no traceback."""
    from binance_stub import KLINES_PATH

    def on_tick(n):
        if n == 6:
            stub.fault_paths = {KLINES_PATH}
            for answer in ("err:-1001", "err_after:-1006", "nonjson"):
                stub.fail_next(answer)

    outcome, journal = run_testnet(stub, tmp_path, on_tick=on_tick)
    assert outcome.bars == BARS and journal.events("skipped") == []
    answers = [r.answered for r in stub.requests_to(KLINES_PATH)]
    first = answers.index("err:-1001")
    assert answers[first:first + 4] == ["err:-1001", "err_after:-1006", "nonjson", "ok"]
    assert "fetch_ohlcv failed (OperationFailed), retry" in log_of(outcome)
    journal.close()
