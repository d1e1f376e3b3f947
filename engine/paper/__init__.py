"""Paper trading: the backtested strategy and predictor, forward in time, without real money.

Modules: :mod:`~engine.paper.clock` (time, the APScheduler bar ticks), :mod:`~engine.paper.live_feed`
(closed candles through ccxt, forecasts, the backtrader feed), :mod:`~engine.paper.journal`
(the SQLite journal), :mod:`~engine.paper.execution` (exchange clients, retries, idempotent
orders, the backtrader broker), :mod:`~engine.paper.runner` (wiring, resume, kill switch)
and :mod:`~engine.paper.cli` (``python -m engine paper``).
"""
