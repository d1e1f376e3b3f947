"""Runs: one run's pipeline (candles -> forecasts -> simulation -> judging), and the commands built
on it — ``backtest``, ``compare`` (every predictor x symbol), ``train`` (every fold a backtest would
use) — and the run folder each writes.
"""
