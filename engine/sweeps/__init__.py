"""Parameter sweeps (``python -m engine sweep``): the search space, one variant's evaluation on
candles and forecasts loaded once, and the Optuna search judged on held-out data.
"""
