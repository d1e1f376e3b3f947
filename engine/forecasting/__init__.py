"""Walk-forward forecasts: past-only context windows, batched inference through a predictor, the
disk cache of forecasts keyed by everything that determines them.
"""
