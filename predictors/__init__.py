"""Forecasting plugins (stage 0 baselines to fine-tuned LLMs) behind one small base class."""

from predictors.base import DEFAULT_QUANTILES, Forecast, ModelInfo, Predictor, PredictorError
from predictors.registry import available, make_predictor, predictor_class, register, register_builtin

__all__ = [
    "DEFAULT_QUANTILES",
    "Forecast",
    "ModelInfo",
    "Predictor",
    "PredictorError",
    "available",
    "make_predictor",
    "predictor_class",
    "register",
    "register_builtin",
]
