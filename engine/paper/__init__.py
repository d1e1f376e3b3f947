"""Paper trading: the backtested strategy and predictor, forward in time, without real money."""
