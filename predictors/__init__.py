"""Forecasting plugins (stage 0 baselines to fine-tuned LLMs) behind one small base class.

Importing the package registers the built-in predictors (their modules import no optional
package at import time, so ``naive`` never costs a torch import).
"""

from predictors.base import (
    DEFAULT_QUANTILES,
    Forecast,
    ModelInfo,
    PluginConfig,
    Predictor,
    PredictorError,
    PredictorStats,
    param,
)
from predictors.registry import available, config_class, make_config, make_predictor, predictor_class, register
from predictors import baselines, chronos, gbm, kronos, llmtime, lora_llm, neural, patchtst, timesfm, ttm  # noqa: E402,F401 - registers the built-ins
from predictors import tirex  # noqa: E402,F401 - TiRex (extra .[tirex]); its package is imported on use only
from predictors import moirai  # noqa: E402,F401 - Moirai 2 (extra .[moirai] + uni2ts --no-deps); imported on use only
from predictors import toto  # noqa: E402,F401 - Toto (extra .[toto]); its package is imported on use only

__all__ = [
    "DEFAULT_QUANTILES",
    "Forecast",
    "ModelInfo",
    "PluginConfig",
    "Predictor",
    "PredictorError",
    "PredictorStats",
    "available",
    "config_class",
    "make_config",
    "make_predictor",
    "param",
    "predictor_class",
    "register",
]
