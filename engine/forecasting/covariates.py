"""Other markets' covariates, joined to the target's candles by timestamp (``[predictor] covariates``).

A covariate ``"BTC/USDT:close"`` of an ETH run becomes a column of that name in ETH's candle frame,
so the engine cuts its windows exactly as it cuts the target's (:mod:`engine.forecasting.signals`:
rows ``t-L+1 .. t`` of :func:`predictors.training.channel_array`, ending at the decision bar); the
predictor never sees the frame. The target's own columns (``volume``, ...) and the calendar need no join.

Alignment: the covariate market's candle of the same open time. A target bar with no such candle
(the covariate market missed a bar, or lists it late) is filled **explicitly** with what was known
at that bar: the covariate's last earlier candle for ``open high low close`` (its close, the last
price seen), ``0`` for ``volume`` (no trades seen); the count is logged and returned. A target bar
before the covariate market's first candle has nothing known to fill it with: an error naming the
first time the covariate has, and the fix (start the range later). Covariate candles at times the
target has none are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pandas as pd
from loguru import logger

from engine.core.errors import UserInputError
from predictors.base import market_covariate


@dataclass(frozen=True)
class CovariateJoin:
    """What joining one covariate did: ``filled`` target bars had no candle of its market at their open time."""

    name: str
    filled: int
    bars: int


def market_symbols(covariates: tuple[str, ...]) -> list[str]:
    """The other markets named by ``covariates`` (``"BTC/USDT:close"`` -> ``"BTC/USDT"``), each once, in order."""
    out: list[str] = []
    for name in covariates:
        market = market_covariate(name)
        if market is not None and market[0] not in out:
            out.append(market[0])
    return out


def join_covariates(
    candles: pd.DataFrame, covariates: tuple[str, ...], markets: Mapping[str, pd.DataFrame],
) -> tuple[pd.DataFrame, list[CovariateJoin]]:
    """``candles`` plus one column per other-market covariate (named as in ``covariates``), aligned by timestamp.

    Args:
        candles: the target's candles (UTC index of bar open times).
        covariates: the ``[predictor] covariates``; names without ``":"`` are ignored here.
        markets: each other market's candles (``open high low close volume``, UTC index), by symbol.

    Returns:
        ``(frame, joins)``: a new frame (``candles`` is not changed) and one :class:`CovariateJoin` per column.

    Raises:
        UserInputError: a target bar before the covariate market's first candle (names both times and the fix).
    """
    out = candles.copy()
    joins = []
    for name in covariates:
        market = market_covariate(name)
        if market is None:
            continue
        symbol, column = market
        source = markets[symbol][column].astype("float64")
        aligned = source.reindex(candles.index)
        missing = aligned.isna()
        if missing.any():
            first_known = source.index[0] if len(source) else None
            if first_known is None or candles.index[0] < first_known:
                raise UserInputError(
                    f"covariate {name!r}: {symbol} has no candle at or before {candles.index[0]:%Y-%m-%d %H:%M} UTC "
                    f"(the target's first bar, warm-up included); its first candle is "
                    f"{'none' if first_known is None else f'{first_known:%Y-%m-%d %H:%M} UTC'}: start the time range "
                    "later, or drop the covariate"
                )
            if column == "volume":
                aligned = aligned.fillna(0.0)
            else:  # the last value known at that bar: the covariate's latest earlier candle
                combined = source.reindex(source.index.union(candles.index)).ffill()
                aligned = combined.reindex(candles.index)
        filled = int(missing.sum())
        if filled:
            logger.warning(
                "covariate {}: {} of {} bars have no {} candle at their open time; filled with {}",
                name, filled, len(candles), symbol, "0 (no trades seen)" if column == "volume" else "its last earlier value",
            )
        out[name] = aligned.to_numpy(dtype="float64")
        joins.append(CovariateJoin(name=name, filled=filled, bars=len(candles)))
    return out, joins
