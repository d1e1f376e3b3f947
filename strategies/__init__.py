"""User-facing backtrader strategies, loaded by path (`python -m engine backtest strategies/X.py`)."""
