"""Orders: the exchange clients, idempotent order placement, and the strategy's broker.

Two modes, one broker (:class:`PaperBroker`, a subclass of backtrader's ``BackBroker``
configured exactly like a backtest's by :func:`engine.broker.configure_broker`):

- ``sim``: no exchange orders. The broker fills a market order made at bar ``t``'s close
  at bar ``t+1``'s open with the configured fee and slippage, the backtest's own code.
- ``testnet``: each order is written to the journal with a client order id, **then** sent
  as a market order to the exchange sandbox (ccxt sandbox mode). A network error, timeout,
  429 or 5xx is retried with backoff and jitter, and before every resend the order is looked
  up by its client order id, so a request that reached the exchange but whose answer was
  lost is never sent twice. Exchange refusals (insufficient funds, minimum notional,
  precision) are journaled as rejected orders and reach the strategy as ``Rejected``. The
  exchange's fill (average price, amount) is booked at the next bar, as in a backtest.

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

from engine.errors import OperationalError, UserInputError
from engine.paper.journal import FINAL_STATUSES, Journal
from engine.paper.retry import ExchangeUnavailable, RetryPolicy, call_with_retries
from engine.paper.secrets import Credentials
from feeds.download import make_exchange, override_api_urls

#: Test hook: ``"after_send:<seq>"`` SIGKILLs the process right after the exchange accepted
#: order ``seq`` and before its answer is journaled.
CRASH_ENV = "LLM4MP_PAPER_CRASH"
#: After a timed-out order, wait this multiple of the exchange's receive window before
#: looking it up and resending (margin for clock skew between us and the exchange).
RECV_WINDOW_MARGIN = 1.2
#: ccxt errors that mean "the exchange refused this order" (trading goes on).
REJECTIONS = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.BadSymbol)
#: ccxt errors that no retry fixes and that stop the run.
FATAL = (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended)


def public_exchange(exchange_id: str, api_url: str, timeout_s: float) -> ccxt.Exchange:
    """A key-less ccxt client for candles (the exchange's real public API, or a loopback stub)."""
    exchange = make_exchange(exchange_id, api_overrides=api_url or None)
    exchange.timeout = int(timeout_s * 1000)
    return exchange


def sandbox_exchange(
    exchange_id: str, credentials: Credentials, api_url: str, timeout_s: float, recv_window_s: float = 5.0,
) -> ccxt.Exchange:
    """A ccxt client in sandbox mode with the given credentials; refuses anything else.

    Raises:
        UserInputError: the exchange has no sandbox in ccxt (``urls['test']``).
        OperationalError: after sandbox mode an API URL is not a sandbox URL (never trade real money).
    """
    exchange = make_exchange(exchange_id)
    test_urls = exchange.urls.get("test")
    if not test_urls:
        raise UserInputError(
            f"exchange {exchange_id!r} has no sandbox (testnet) in ccxt (no urls['test']), so --mode testnet cannot "
            "trade it without real money; use --mode sim, or an exchange with a sandbox such as 'binance'"
        )
    exchange.set_sandbox_mode(True)
    allowed = set(_strings(test_urls))
    real = [url for url in _strings(exchange.urls["api"]) if url not in allowed]
    if real:
        raise OperationalError(
            f"{exchange_id}: refusing to trade, sandbox mode left real-money endpoints in place ({real[0]}); "
            "use --mode sim"
        )
    if api_url:
        override_api_urls(exchange, api_url)
    exchange.apiKey, exchange.secret = credentials.api_key, credentials.secret
    exchange.timeout = int(timeout_s * 1000)
    if "recvWindow" in exchange.options:  # Binance family: signed requests expire after the window
        exchange.options["recvWindow"] = int(recv_window_s * 1000)
    return exchange


def receive_window_s(exchange: ccxt.Exchange | None) -> float | None:
    """Seconds after signing during which the exchange still accepts a request, if it enforces one."""
    window = (exchange.options or {}).get("recvWindow") if exchange is not None else None
    return None if window is None else float(window) / 1000.0


def _strings(tree: object) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    return []


@dataclass(frozen=True)
class ExchangeResult:
    """What the exchange did with one order."""

    status: str  # filled | rejected | canceled | unknown
    price: float | None = None
    filled: float | None = None
    fee: float | None = None
    exchange_id: str | None = None
    reason: str | None = None


def _result_from_ccxt(order: dict) -> ExchangeResult:
    filled = float(order.get("filled") or 0.0)
    price = order.get("average") or (float(order["cost"]) / filled if filled and order.get("cost") else None)
    fee = sum(float(f.get("cost") or 0.0) for f in (order.get("fees") or []))
    status = "filled" if filled > 0 else ("canceled" if order.get("status") in ("canceled", "expired") else "unknown")
    return ExchangeResult(status, float(price) if price else None, filled, fee, str(order.get("id")))


class OrderDesk:
    """Numbers, journals and (testnet) sends the strategy's orders; the kill switch lives here."""

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
        self.results: dict[str, ExchangeResult] = {}
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_after_send = int(crash.split(":", 1)[1]) if crash.startswith("after_send:") else None

    def client_id(self, seq: int) -> str:
        return f"{self.prefix}-{seq}"

    def kill(self, reason: str) -> None:
        if self.killed is None:
            self.killed = reason
            logger.error("KILL SWITCH: {}; trading stopped", reason)
            self.journal.event("kill_switch", reason)

    # -- order lifecycle -----------------------------------------------------------------
    def admit(self, order: bt.Order) -> str | None:
        """Number and journal a new order; returns a refusal reason (kill switch) or None."""
        self.seq += 1
        seq, cid = self.seq, self.client_id(self.seq)
        order.addinfo(seq=seq, client_id=cid)
        side = "buy" if order.isbuy() else "sell"
        size = abs(float(order.created.size))
        bar = self.current_bar_ms()
        row = self.journal.order(seq)
        if row is not None:  # replay of a journaled order
            if row.client_id != cid or row.side != side or abs(row.size - size) > 1e-9 * max(1.0, size):
                msg = (f"replay diverged at order {seq}: journal has {row.side} {row.size} ({row.client_id}), "
                       f"the strategy now makes {side} {size}")
                logger.warning(msg)
                self.journal.event("replay_diverged", msg)
            if row.status == "rejected" and (row.reason or "").startswith("kill switch"):
                return row.reason
            return None
        if self.killed is None and self.max_orders_per_day:
            day = bar // 86_400_000 * 86_400_000
            if self.journal.orders_on_day(day) >= self.max_orders_per_day:
                self.kill(f"max_orders_per_day = {self.max_orders_per_day} reached on "
                          f"{bt.num2date(order.created.dt):%Y-%m-%d} UTC")
        status = "sending" if self.exchange_fills else "submitted"
        self.journal.order_intent(seq, cid, bar, side, size, status)
        if self.killed is not None:
            reason = f"kill switch: {self.killed}"
            self.journal.order_answer(cid, "rejected", reason=reason)
            return reason
        return None

    def send(self, order: bt.Order) -> None:
        """Testnet: send a journaled order, or on replay take its journaled or reconciled outcome."""
        cid, seq = order.info["client_id"], order.info["seq"]
        row = self.journal.order(seq)
        if row is not None and row.status in FINAL_STATUSES:
            self.results[cid] = ExchangeResult(row.status, row.price, row.filled, row.fee, row.exchange_id, row.reason)
            return
        if row is not None and row.status in ("sending", "unknown") and self.replaying:
            result = self.reconcile(cid)
            if result.status == "unknown":  # never reached the exchange; its bar is past
                result = ExchangeResult("canceled", reason="not on the exchange after a restart; its bar is past")
                logger.warning("order {} ({}) was not on the exchange after the restart: canceled", seq, cid)
            self._record(cid, result)
            return
        self._record(cid, self.place(order, cid))

    def _record(self, cid: str, result: ExchangeResult) -> None:
        self.results[cid] = result
        self.journal.order_answer(cid, result.status, exchange_id=result.exchange_id, price=result.price,
                                  filled=result.filled, fee=result.fee, reason=result.reason)
        if result.status == "rejected":
            logger.warning("order {} rejected by the exchange: {}", cid, result.reason)

    def place(self, order: bt.Order, cid: str) -> ExchangeResult:
        """Send a market order; never twice: every resend is preceded by a lookup by client id."""
        ex = self.exchange
        side = "buy" if order.isbuy() else "sell"
        try:
            amount = float(ex.amount_to_precision(self.symbol, abs(float(order.created.size))))
        except (ccxt.InvalidOrder, ccxt.ArgumentsRequired) as exc:
            return ExchangeResult("rejected", reason=f"precision: {self.redact(str(exc))[:200]}")
        if amount <= 0:
            return ExchangeResult("rejected", reason=f"precision: size {abs(order.created.size)} rounds to 0")
        window = receive_window_s(ex)
        for attempt in range(self.policy.max_retries + 1):
            sent_at = time.monotonic()
            try:
                answer = ex.create_order(self.symbol, "market", side, amount, params={"newClientOrderId": cid})
            except FATAL as exc:
                raise OperationalError(f"{ex.id} refused the API credentials: {self.redact(str(exc))[:200]}") from exc
            except REJECTIONS as exc:
                if "duplicate" in str(exc).lower():  # it is there already: take its state
                    found = self.reconcile(cid)
                    if found.status != "unknown":
                        return found
                return ExchangeResult("rejected", reason=f"{type(exc).__name__}: {self.redact(str(exc))[:200]}")
            except ccxt.NetworkError as exc:
                delay = self.policy.delay_s(attempt)
                if window is not None:
                    # Wait out the receive window: a copy of this request still in flight is then
                    # refused by the exchange, so the lookup below is final and a resend is safe.
                    delay = max(delay, sent_at + RECV_WINDOW_MARGIN * window - time.monotonic())
                logger.warning("order {}: {} ({}), checking by client id, retry {}/{} in {:.2f} s", cid,
                               type(exc).__name__, self.redact(str(exc))[:120], attempt + 1, self.policy.max_retries, delay)
                if self.stop.wait(delay):
                    break
                found = self.reconcile(cid)
                if found.status != "unknown":
                    return found
                continue
            if self._crash_after_send == order.info["seq"]:  # test hook: die before journaling the answer
                os.kill(os.getpid(), signal.SIGKILL)
            return _result_from_ccxt(answer)
        return self.reconcile(cid)

    def reconcile(self, cid: str) -> ExchangeResult:
        """The exchange's state of the order with client id ``cid``; ``unknown`` if absent or unreachable."""
        try:
            found = call_with_retries(
                lambda: self.exchange.fetch_order(None, self.symbol, params={"origClientOrderId": cid}),
                f"fetch_order {cid}", self.policy, self.stop,
            )
        except ccxt.OrderNotFound:
            return ExchangeResult("unknown")
        except ExchangeUnavailable as exc:
            logger.warning("order {}: state unknown ({})", cid, self.redact(str(exc))[:200])
            return ExchangeResult("unknown")
        return _result_from_ccxt(found)

    def result_for(self, order: bt.Order) -> ExchangeResult:
        cid = order.info["client_id"]
        result = self.results.get(cid)
        if result is None or result.status == "unknown":
            result = self.reconcile(cid)
            if result.status != "unknown":
                self._record(cid, result)
        return result


class PaperBroker(bt.brokers.BackBroker):
    """backtrader's BackBroker plus the desk: orders are journaled (and in testnet mode sent)
    when the strategy makes them; in testnet mode the exchange's fills are booked."""

    params = (("desk", None),)

    @classmethod
    def like(cls, configured: bt.brokers.BackBroker, desk: OrderDesk) -> "PaperBroker":
        """A PaperBroker with the cash, slippage and commission of ``configured`` (what
        :func:`engine.broker.configure_broker` set up for the backtest)."""
        params = {key: getattr(configured.p, key) for key in configured.params._getkeys()}
        broker = cls(desk=desk, **params)
        broker.comminfo = dict(configured.comminfo)
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
        refusal = desk.admit(order)
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
            sign = 1.0 if order.isbuy() else -1.0
            order.executed.remsize = sign * float(result.filled)
            self._execute(order, ago=0, price=float(result.price))
        elif result.status in ("rejected", "canceled"):
            order.addinfo(reason=result.reason)
            (order.reject if result.status == "rejected" else order.cancel)()
            self.notify(order)
        # unknown: stays pending and is looked up again next bar
