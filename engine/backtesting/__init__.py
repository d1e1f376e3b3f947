"""The backtest loop and its broker arithmetic: backtrader's event loop (the record), the
vectorized fast path (an accelerator reconciled against it), the data feed, the recorder and
strategy loading.

Strategy authors import the few helpers they need from here::

    from engine.backtesting import Costs, FastMarket, FastTargets, costs_of
    from engine.backtesting import PortfolioMarket, PortfolioTargets  # portfolio strategies on N feeds
"""

from engine.backtesting.broker import costs_of
from engine.backtesting.fast_path import FastMarket, FastTargets
from engine.backtesting.portfolio import PortfolioMarket, PortfolioTargets
from engine.core.costs import Costs

__all__ = ["Costs", "FastMarket", "FastTargets", "PortfolioMarket", "PortfolioTargets", "costs_of"]
