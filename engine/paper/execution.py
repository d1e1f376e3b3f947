"""Orders: idempotent order placement and the strategy's broker (the exchange clients
themselves are built by :func:`feeds.exchange.make_exchange`).

Two modes, one broker (:class:`PaperBroker`, a subclass of backtrader's ``BackBroker``
configured exactly like a backtest's by :func:`engine.backtesting.broker.configure_broker`):

- ``sim``: no exchange orders. The broker fills a market order made at bar ``t``'s close
  at bar ``t+1``'s open with the configured fee and slippage, the backtest's own code.
- ``testnet``: each order is written to the journal with a client order id, **then** sent
  as a market order to the exchange sandbox (ccxt sandbox mode). After any answer that is
  neither a fill nor a refusal (network error, timeout, 429, 5xx, Binance -1001/-1006/-1007,
  ccxt's ``OperationFailed`` family, a 200 whose body is not the order, an order still
  ``NEW``) the exchange's receive window is waited out and the order looked up by client id:
  found -> its state; not found -> sent again; could not check -> looked up again (never
  taken for "not found"). A late copy of a request is thus refused by the exchange before
  any resend, so an order is never on the exchange twice, even on Binance, which refuses a
  repeated client id only while the first order is open. Exchange refusals (insufficient
  funds, minimum notional, precision) are journaled as rejected orders and reach the
  strategy as ``Rejected``. The exchange's fill (average price, amount, fee and its asset)
  is booked at the next bar, as in a backtest, net of a fee taken in the base asset.
  At start-up (and on resume) orders without a final state are resolved the same way, and
  the account's base-asset balance is checked against the journal, then again after every
  fill.

:class:`OrderDesk` also holds the kill switch (maximum orders per UTC day; the drawdown
limit is checked by the runner each bar): once tripped, every new order is refused and
the run stops.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import backtrader as bt
import ccxt
from loguru import logger

from engine.core.errors import OperationalError
from engine.paper.journal import FINAL_STATUSES, Journal
from engine.paper.secrets import Credentials
from feeds.errors import ExchangeUnavailable
from feeds.exchange import RetryPolicy, call_with_retries, make_exchange

#: Test hook: ``"after_send:<seq>"`` SIGKILLs the process right after the exchange accepted
#: order ``seq`` and before its answer is journaled.
CRASH_ENV = "LLM4MP_PAPER_CRASH"
#: After a timed-out order, wait this multiple of the exchange's receive window before
#: looking it up and resending (margin for clock skew between us and the exchange).
RECV_WINDOW_MARGIN = 1.2
#: the start of the reason of an order refused because no position may open (model age, decayed skill)
NO_NEW_POSITIONS = "no new positions"

#: ccxt errors that mean "the exchange refused this order" (trading goes on).
REJECTIONS = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.BadSymbol)
#: ccxt errors that no retry fixes and that stop the run.
FATAL = (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended)
#: Answers that leave an order's fate unknown (any other exchange error, a body that is not the order):
#: the order is then looked up by client id.
UNCERTAIN = (ccxt.BaseError, ValueError, TypeError, KeyError)


def public_exchange(exchange_id: str, api_url: str, timeout_s: float) -> ccxt.Exchange:
    """A key-less ccxt client for candles (the exchange's real public API, or a loopback stub)."""
    return make_exchange(exchange_id, api_overrides=api_url or None, timeout_s=timeout_s)


def sandbox_exchange(
    exchange_id: str, credentials: Credentials, api_url: str, timeout_s: float, recv_window_s: float = 5.0,
) -> ccxt.Exchange:
    """A ccxt client in sandbox mode (:func:`feeds.exchange.make_exchange`) with the given
    credentials and receive window (seconds, Binance family).

    Raises:
        ExchangeRequestError: the exchange has no sandbox in ccxt (``urls['test']``), or after
            sandbox mode an API URL is not a sandbox URL (never trade real money).
    """
    exchange = make_exchange(exchange_id, api_overrides=api_url or None, sandbox=True, timeout_s=timeout_s)
    exchange.apiKey, exchange.secret = credentials.api_key, credentials.secret
    if "recvWindow" in exchange.options:  # Binance family: signed requests expire after the window
        exchange.options["recvWindow"] = int(recv_window_s * 1000)
    return exchange


def receive_window_s(exchange: ccxt.Exchange | None) -> float | None:
    """Seconds after signing during which the exchange still accepts a request, if it enforces one."""
    window = (exchange.options or {}).get("recvWindow") if exchange is not None else None
    return None if window is None else float(window) / 1000.0


@dataclass(frozen=True)
class ExchangeResult:
    """What the exchange did with one order.

    ``status``: final ``filled`` | ``rejected`` | ``canceled``, or, while not final, ``open``
    (on the exchange, not filled yet), ``missing`` (the exchange does not know the client id)
    or ``unknown`` (could not check). ``filled`` is the executed amount (base asset),
    ``base_delta`` the signed change of the account's base-asset balance it caused (the fee
    taken off when the exchange charged it in the base asset), ``fee`` in ``fee_asset``.
    """

    status: str
    price: float | None = None
    filled: float | None = None
    fee: float | None = None
    exchange_id: str | None = None
    reason: str | None = None
    fee_asset: str | None = None
    base_delta: float | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class NotAnOrder(ccxt.BadResponse):
    """An exchange answer that is not the order asked for (e.g. a 200 whose body is not JSON)."""


def _checked(answer: object, cid: str) -> dict:
    """``answer`` if it is a parsed order with an id and client id ``cid``; else :class:`NotAnOrder`."""
    if not isinstance(answer, dict) or not answer.get("id") or answer.get("clientOrderId") != cid:
        info = answer.get("info") if isinstance(answer, dict) else answer
        raise NotAnOrder(f"the answer is not order {cid}: {str(info)[:120]!r}")
    return answer


def _result_from_ccxt(order: dict, base: str) -> ExchangeResult:
    """Read a ccxt order: average price, executed amount and fees; the base-asset change nets
    out a fee charged in ``base`` (Binance's commission on a buy without BNB)."""
    filled = float(order.get("filled") or 0.0)
    price = order.get("average") or (float(order["cost"]) / filled if filled and order.get("cost") else None)
    fees = [f for f in (order.get("fees") or ([order["fee"]] if order.get("fee") else [])) if f]
    fee = sum(float(f.get("cost") or 0.0) for f in fees)
    fee_assets = sorted({f.get("currency") for f in fees if f.get("currency")})
    base_fee = sum(float(f.get("cost") or 0.0) for f in fees if f.get("currency") == base)
    sign = 1.0 if order.get("side") == "buy" else -1.0
    delta = sign * filled - base_fee if filled else 0.0
    state = order.get("status")
    if state == "open" or (state is None and not filled):
        status = "open"
    elif filled > 0:
        status = "filled"  # closed, or canceled/expired after a partial fill: book what executed
    else:
        status = "canceled" if state in ("canceled", "expired") else "rejected"
    return ExchangeResult(status, float(price) if price else None, filled, fee, str(order.get("id")),
                          None if status in ("filled", "open") else f"exchange status {state}",
                          ",".join(fee_assets) or None, delta)


def _of(symbol: str | None) -> str:
    """`` of ADA/USDT`` for an order of a universe's coin, "" for the run's one market."""
    return f" of {symbol}" if symbol else ""


class OrderDesk:
    """Numbers, journals and (testnet) sends the strategy's orders; the kill switch lives here.

    In testnet mode the desk first resolves every journaled order that has no final state
    (by client id, after its receive window) and checks the journal's position against the
    account's base-asset balance; it checks that balance again after every fill.
    """

    def __init__(
        self, journal: Journal, mode: str, client_prefix: str, symbol: str, policy: RetryPolicy,
        stop: threading.Event, current_bar_ms: Callable[[], int], exchange: ccxt.Exchange | None = None,
        max_orders_per_day: int = 0, redact: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.journal, self.mode, self.prefix, self.symbol = journal, mode, client_prefix, symbol
        self.policy, self.stop, self.current_bar_ms, self.exchange = policy, stop, current_bar_ms, exchange
        self.max_orders_per_day = max_orders_per_day
        self.redact = redact
        self.exchange_fills = mode == "testnet"
        self.seq = 0
        self.replaying = False
        self.killed: str | None = None
        #: why no position may open now (the serving model is too old, or its skill decayed), else None
        self.no_new_positions: Callable[[], str | None] = lambda: None
        self.results: dict[str, ExchangeResult] = {}
        self.sent_wall: dict[str, float] = {}  # client id -> wall time (s) of its last request
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_after_send = int(crash.split(":", 1)[1]) if crash.startswith("after_send:") else None
        self.base = symbol.split("/")[0]
        self._starting = False
        if self.exchange_fills and exchange is not None:
            self._starting = True  # no balance check per order while several may be unresolved
            self.resolve_journal()
            self._starting = False
            self.check_position("at start")

    def client_id(self, seq: int) -> str:
        return f"{self.prefix}-{seq}"

    def kill(self, reason: str) -> None:
        if self.killed is None:
            self.killed = reason
            logger.error("KILL SWITCH: {}; trading stopped", reason)
            self.journal.event("kill_switch", reason)

    # -- start-up: unresolved orders and the account -------------------------------------
    def resolve_journal(self) -> None:
        """Give every journaled order without a final state one, from the exchange (by client id).

        Raises:
            OperationalError: an order's state cannot be established (the exchange is unreachable
                or keeps the order open); resuming later is safe.
        """
        for row in self.journal.unresolved_orders():
            logger.info("order {} ({}) was {} when the run stopped: looking it up by client id",
                        row.seq, row.client_id, row.status)
            self.sent_wall[row.client_id] = row.updated_ms / 1000.0
            result = self.resolve(row.client_id, missing_means="not on the exchange after a restart; its bar is past")
            if not result.final:
                raise OperationalError(
                    f"order {row.seq} ({row.client_id}) is still {result.status} on {self.exchange.id} "
                    f"({result.reason or 'no final state'}); nothing was sent. Resume again once the exchange answers"
                )
            self._record(row.client_id, result)

    def account_base(self) -> float:
        """The account's total balance of the base asset (free + locked)."""
        balance = call_with_retries(self.exchange.fetch_balance, f"{self.exchange.id} fetch_balance", self.policy,
                                    self.stop)
        return float((balance.get(self.base) or {}).get("total") or 0.0)

    def check_position(self, when: str) -> None:
        """Compare the account's base balance with its balance at the run's start plus the
        journal's fills (base-asset changes, fees included).

        Tolerance: ``1e-8`` (Binance balances have 8 decimals) + ``1e-9`` x the balance.

        Raises:
            OperationalError: they differ (the message gives both numbers); the run stops.
        """
        actual = self.account_base()
        meta = self.journal.meta()
        if "base_at_start" not in meta:
            self.journal.set_meta(base_at_start=repr(actual))
            logger.info("account: {:.8f} {} at the start of the run", actual, self.base)
            return
        expected = float(meta["base_at_start"]) + self.journal.net_position()
        if abs(actual - expected) > 1e-8 + 1e-9 * abs(actual):
            msg = (f"position mismatch {when}: the account holds {actual:.8f} {self.base}, the journal says "
                   f"{expected:.8f} ({meta['base_at_start']} at the start of the run + fills); trading stopped. "
                   "Check the account's trades on the exchange before starting a new run")
            self.journal.event("position_mismatch", msg)
            raise OperationalError(msg)
        logger.info("account: {:.8f} {} {}, as journaled", actual, self.base, when)

    # -- order lifecycle -----------------------------------------------------------------
    def admit(self, order: bt.Order, opening: bool = False) -> str | None:
        """Number and journal a new order; returns a refusal reason (kill switch; or, for an ``opening`` order
        (one that grows the absolute position), :attr:`no_new_positions`) or None."""
        self.seq += 1
        seq, cid = self.seq, self.client_id(self.seq)
        order.addinfo(seq=seq, client_id=cid)
        side = "buy" if order.isbuy() else "sell"
        size = abs(float(order.created.size))
        symbol = order.data._name or None  # a universe's feeds are named by their coin; one market's is not
        bar = self.current_bar_ms()
        row = self.journal.order(seq)
        if row is not None:  # replay of a journaled order
            if row.client_id != cid or row.side != side or abs(row.size - size) > 1e-9 * max(1.0, size) \
                    or row.symbol != symbol:
                msg = (f"replay diverged at order {seq}: journal has {row.side} {row.size}{_of(row.symbol)} "
                       f"({row.client_id}), the strategy now makes {side} {size}{_of(symbol)}")
                logger.warning(msg)
                self.journal.event("replay_diverged", msg)
            if row.status == "rejected" and (row.reason or "").startswith(("kill switch", NO_NEW_POSITIONS)):
                return row.reason
            return None
        if self.killed is None and self.max_orders_per_day:
            day = bar // 86_400_000 * 86_400_000
            if self.journal.orders_on_day(day) >= self.max_orders_per_day:
                self.kill(f"max_orders_per_day = {self.max_orders_per_day} reached on "
                          f"{bt.num2date(order.created.dt):%Y-%m-%d} UTC")
        status = "sending" if self.exchange_fills else "submitted"
        self.journal.order_intent(seq, cid, bar, side, size, status, symbol=symbol)
        if self.killed is not None:
            reason = f"kill switch: {self.killed}"
            self.journal.order_answer(cid, "rejected", reason=reason)
            return reason
        blocked = self.no_new_positions() if opening else None
        if blocked is not None:
            reason = f"{NO_NEW_POSITIONS}: {blocked}"
            self.journal.order_answer(cid, "rejected", reason=reason)  # the runner logs the rejection
            return reason
        return None

    def send(self, order: bt.Order) -> None:
        """Testnet: send a journaled order, or on replay take its journaled or reconciled outcome."""
        cid, seq = order.info["client_id"], order.info["seq"]
        row = self.journal.order(seq)
        if row is not None and row.status in FINAL_STATUSES:
            self.results[cid] = ExchangeResult(row.status, row.price, row.filled, row.fee, row.exchange_id, row.reason,
                                               row.fee_asset, row.base_delta)
            return
        if row is not None and row.status not in ("sending", "submitted") or self.replaying:
            # resolve_journal() settled it at start-up unless it could not; never send it again
            self.sent_wall.setdefault(cid, (row.updated_ms if row else 0) / 1000.0)
            logger.info("order {} ({}) is {} in the journal: looking it up, not sending it again", seq, cid,
                        row.status if row else "absent")
            self._record(cid, self.resolve(cid, missing_means="not on the exchange after a restart; its bar is past"))
            return
        self._record(cid, self.place(order, cid))

    def _record(self, cid: str, result: ExchangeResult) -> None:
        self.results[cid] = result
        status = result.status if result.final else "unknown"
        self.journal.order_answer(cid, status, exchange_id=result.exchange_id, price=result.price,
                                  filled=result.filled, fee=result.fee, reason=result.reason,
                                  fee_asset=result.fee_asset, base_delta=result.base_delta)
        if result.status == "rejected":
            logger.warning("order {} rejected: {}", cid, result.reason)
        elif result.status == "canceled":
            logger.warning("order {} canceled: {}", cid, result.reason)
        elif result.status == "filled":
            logger.info("order {} filled: {} {} at {} (fee {} {})", cid, result.filled, self.base, result.price,
                        result.fee, result.fee_asset)
            if self.exchange is not None and not self.replaying and not self._starting:
                self.check_position(f"after order {cid}")
        else:
            logger.warning("order {}: state {} ({}); looked up again at the next bar", cid, result.status,
                           result.reason or "no answer yet")

    def _window_left_s(self, cid: str) -> float:
        """Seconds until a request for ``cid`` signed at its last send is surely refused if it lands."""
        window = receive_window_s(self.exchange)
        sent = self.sent_wall.get(cid)
        if window is None or sent is None:
            return 0.0
        return sent + RECV_WINDOW_MARGIN * window - time.time()

    def place(self, order: bt.Order, cid: str) -> ExchangeResult:
        """Send a market order; never twice: after any answer but a clear one (a fill or a
        refusal) the receive window is waited out and the order looked up by client id; only
        an order the exchange does not know is sent again."""
        ex = self.exchange
        side = "buy" if order.isbuy() else "sell"
        try:
            amount = float(ex.amount_to_precision(self.symbol, abs(float(order.created.size))))
        except (ccxt.InvalidOrder, ccxt.ArgumentsRequired) as exc:
            return ExchangeResult("rejected", reason=f"precision: {self.redact(str(exc))[:200]}")
        if amount <= 0:
            return ExchangeResult("rejected", reason=f"precision: size {abs(order.created.size)} rounds to 0")
        attempts = self.policy.max_retries + 1
        for attempt in range(attempts):
            self.journal.order_answer(cid, "sending")  # its updated_ms dates this attempt for a resume's wait
            self.sent_wall[cid] = time.time()
            logger.info("order {}: sending {} {} {} (attempt {}/{})", cid, side, amount, self.symbol, attempt + 1, attempts)
            try:
                answer = _checked(ex.create_order(self.symbol, "market", side, amount,
                                                  params={"newClientOrderId": cid}), cid)
            except FATAL as exc:
                raise OperationalError(f"{ex.id} refused the API credentials: {self.redact(str(exc))[:200]}") from exc
            except REJECTIONS as exc:
                if "duplicate" not in str(exc).lower():
                    return ExchangeResult("rejected", reason=f"{type(exc).__name__}: {self.redact(str(exc))[:200]}")
                logger.warning("order {}: the exchange has it open already (duplicate client id): looking it up", cid)
                result = self.resolve(cid, missing_means=None)
            except UNCERTAIN as exc:
                # OperationFailed (-1001, -1006, 5xx), network errors, timeouts, answers that are
                # not JSON: the order may or may not be on the exchange
                logger.warning("order {}: {} ({}): state unknown, looking it up by client id", cid,
                               type(exc).__name__, self.redact(str(exc))[:160])
                result = self.resolve(cid, missing_means=None)
            else:
                if self._crash_after_send == order.info["seq"]:  # test hook: die before journaling the answer
                    os.kill(os.getpid(), signal.SIGKILL)
                result = _result_from_ccxt(answer, self.base)
                if result.status == "open":  # accepted, not filled yet: no copy can land, no window to wait
                    logger.info("order {}: accepted, not filled yet; looking again", cid)
                    result = self.resolve(cid, missing_means=None, wait_window=False)
            if result.status != "missing":
                return result
            if self.stop.is_set():
                return ExchangeResult("canceled", reason="not on the exchange, and the run is shutting down")
            delay = self.policy.delay_s(attempt)
            logger.warning("order {}: not on the exchange after its receive window; sending it again in {:.2f} s",
                           cid, delay)
            if self.stop.wait(delay):
                return ExchangeResult("canceled", reason="not on the exchange, and the run is shutting down")
        return ExchangeResult("canceled", reason=f"never reached the exchange in {attempts} attempts")

    def resolve(self, cid: str, missing_means: str | None, wait_window: bool = True) -> ExchangeResult:
        """The order's state after its receive window: wait the window out, then look it up
        (again, with backoff, while it is open or the lookup fails). ``missing`` is returned
        as such when ``missing_means`` is None, else as ``canceled`` with that reason."""
        wait = self._window_left_s(cid) if wait_window else 0.0
        if wait > 0:
            logger.info("order {}: waiting {:.2f} s for its receive window to pass before the lookup", cid, wait)
            if self.stop.wait(wait):
                return ExchangeResult("unknown", reason="shutting down before the lookup")
        result = ExchangeResult("unknown")
        for attempt in range(self.policy.max_retries + 1):
            result = self.reconcile(cid)
            if result.status not in ("open", "unknown"):
                break
            delay = self.policy.delay_s(attempt)
            logger.info("order {}: {} on lookup {}/{}, looking again in {:.2f} s", cid, result.status, attempt + 1,
                        self.policy.max_retries + 1, delay)
            if self.stop.wait(delay):
                break
        if result.status == "missing" and missing_means is not None:
            return ExchangeResult("canceled", reason=missing_means)
        return result

    def reconcile(self, cid: str) -> ExchangeResult:
        """One lookup of client id ``cid`` (with the network retries of :func:`call_with_retries`):
        its state, ``missing`` if the exchange does not know it, ``unknown`` if it could not be checked."""
        try:
            found = call_with_retries(
                lambda: _checked(self.exchange.fetch_order(None, self.symbol, params={"origClientOrderId": cid}), cid),
                f"fetch_order {cid}", self.policy, self.stop,
            )
        except ccxt.OrderNotFound:
            logger.info("order {}: the exchange does not know it", cid)
            return ExchangeResult("missing", reason="the exchange does not know this client id")
        except (ExchangeUnavailable, *UNCERTAIN) as exc:
            logger.warning("order {}: could not check its state ({}: {})", cid, type(exc).__name__,
                           self.redact(str(exc))[:200])
            return ExchangeResult("unknown", reason=f"could not check: {type(exc).__name__}")
        if float(found.get("filled") or 0.0) > 0 and not found.get("fees") and not found.get("fee"):
            found = self._with_fees(found, cid)  # an order lookup does not tell the commission
            if found is None:
                return ExchangeResult("unknown", reason="could not fetch the order's trades (fees)")
        result = _result_from_ccxt(found, self.base)
        logger.info("order {}: the exchange has it {}", cid, result.status)
        return result

    def _with_fees(self, found: dict, cid: str) -> dict | None:
        """``found`` with the fees of its trades (the order's commission and its asset), or None."""
        try:
            trades = call_with_retries(
                lambda: self.exchange.fetch_order_trades(found["id"], self.symbol),
                f"fetch_order_trades {cid}", self.policy, self.stop,
            )
        except (ExchangeUnavailable, *UNCERTAIN) as exc:
            logger.warning("order {}: could not fetch its trades ({}: {})", cid, type(exc).__name__,
                           self.redact(str(exc))[:200])
            return None
        if abs(sum(float(t.get("amount") or 0.0) for t in trades) - float(found["filled"])) > 1e-12 * max(1.0, float(found["filled"])):
            logger.warning("order {}: its trades do not add up to its filled amount yet; looking again", cid)
            return None
        return {**found, "fees": [t["fee"] for t in trades if t.get("fee")]}

    def booked_size(self, order: bt.Order, result: ExchangeResult) -> float:
        """Signed size the strategy's broker books for a fill: the base asset the account
        gained or gave (fee in the base asset netted out), rounded down to the exchange's
        amount step so that the position can be sold in full; the remainder (dust below one
        step) stays in the account and in the journal's ``base_delta``."""
        sign = 1.0 if order.isbuy() else -1.0
        delta = round(abs(float(result.base_delta if result.base_delta is not None else result.filled)), 12)
        if self.exchange is not None and order.isbuy():
            delta = float(self.exchange.amount_to_precision(self.symbol, delta))
        return sign * delta

    def result_for(self, order: bt.Order) -> ExchangeResult:
        """The order's final result, or a non-final one (looked up again, by client id, at each bar)."""
        cid = order.info["client_id"]
        result = self.results.get(cid)
        if result is None or not result.final:
            result = self.resolve(cid, missing_means="never reached the exchange (looked up after its receive window)")
            self._record(cid, result)
        return result


class PaperBroker(bt.brokers.BackBroker):
    """backtrader's BackBroker plus the desk: orders are journaled (and in testnet mode sent)
    when the strategy makes them; in testnet mode the exchange's fills are booked."""

    params = (("desk", None),)

    @classmethod
    def like(cls, configured: bt.brokers.BackBroker, desk: OrderDesk) -> "PaperBroker":
        """A PaperBroker with the cash, slippage and commission of ``configured`` (what
        :func:`engine.backtesting.broker.configure_broker` set up for the backtest)."""
        params = {key: getattr(configured.p, key) for key in configured.params._getkeys()}
        broker = cls(desk=desk, **params)
        broker.comminfo = dict(configured.comminfo)
        broker.costs = configured.costs
        return broker

    def transmit(self, order: bt.Order, check: bool = True) -> bt.Order:
        desk: OrderDesk = self.p.desk
        if desk.exchange_fills and order.exectype != bt.Order.Market:
            order.submit()
            order.reject()
            order.addinfo(reason="testnet mode sends market orders only; use market orders or --mode sim")
            logger.warning("order refused: {}", order.info["reason"])
            self.notify(order)
            return order
        refusal = desk.admit(order, opening=self._opens(order))
        if refusal is not None:
            order.submit()
            order.reject()
            order.addinfo(reason=refusal)
            self.notify(order)
            return order
        order = super().transmit(order, check)
        if desk.exchange_fills:
            desk.send(order)
        return order

    def _opens(self, order: bt.Order) -> bool:
        """Whether ``order`` would grow the absolute position (opening or adding; not reducing or closing)."""
        held = float(self.getposition(order.data).size)
        size = abs(float(order.created.size))
        after = held + (size if order.isbuy() else -size)
        return abs(after) > abs(held) + 1e-12

    def check_submitted(self) -> None:
        if not self.p.desk.exchange_fills:
            return super().check_submitted()
        while self.submitted:  # testnet: the exchange, not a cash estimate, accepts or refuses
            order = self.submitted.popleft()
            if self._take_children(order) is not None:
                self.submit_accept(order)

    def _try_exec(self, order: bt.Order) -> None:
        desk: OrderDesk = self.p.desk
        if not desk.exchange_fills or order.exectype != bt.Order.Market:
            return super()._try_exec(order)
        result = desk.result_for(order)
        if result.status == "filled":
            order.executed.remsize = desk.booked_size(order, result)
            self._execute(order, ago=0, price=float(result.price))
        elif result.status in ("rejected", "canceled"):
            order.addinfo(reason=result.reason)
            (order.reject if result.status == "rejected" else order.cancel)()
            self.notify(order)
        # unknown: stays pending and is looked up again next bar
