"""The engine: CLI, config, signal cache, backtest and paper runners.

Uses ``feeds``, ``predictors`` and ``reports``; nothing imports ``engine`` except strategies,
which may use its small helpers (``engine.broker.costs_of``).
"""
