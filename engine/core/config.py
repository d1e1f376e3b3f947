"""Configuration: ``config.toml`` + command-line overrides, parsed once into frozen objects.

Every section is a frozen dataclass; :func:`load_config` reads the TOML file, applies
overrides (dotted keys such as ``"data.symbol"``), checks every key, type and value, and
raises one :class:`ConfigError` naming the key, the bad value and the fix ("did you
mean ...?"). The ``[predictor.params.<name>]`` table of every registered predictor is
checked against its config class (``predictors.registry.make_config``) here too; a
``"module:Class"`` plugin's table is checked when the plugin is built. The strategy's
table is checked by its class.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import pandas as pd

from engine.core.costs import Costs
from engine.core.errors import UserInputError
from feeds.timeframes import (
    SUPPORTED_TIMEFRAMES,
    TimeframeError,
    TimeRange,
    parse_timerange,
)
from feeds.errors import FeedsInputError
from feeds.universe import parse_universe
from feeds.validate import GAP_POLICIES
from predictors.base import TRAIN_PROFILES, PredictorError, TrainProfile, check_covariates
from predictors.registry import available, config_class, make_config, predictor_class, table_name

#: ``paper.model`` values (trained predictors).
SERVING_MODELS = ("retrain", "frozen")
PAPER_MODES = ("sim", "testnet")


class ConfigError(UserInputError):
    """A config file or command-line value is wrong; the message says which and how to fix it (exit code 2)."""


class FrozenMapping(Mapping[str, Any]):
    """A read-only, picklable mapping (``MappingProxyType`` cannot cross process boundaries)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __reduce__(self):
        return (FrozenMapping, (self._data,))


def _frozen_mapping(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return FrozenMapping({k: _frozen_mapping(v) if isinstance(v, Mapping) else v for k, v in (value or {}).items()})


@dataclass(frozen=True)
class DataConfig:
    """Which candles: market, bar size, time range and where they come from."""

    exchange: str = "binance"
    exchange_url: str = ""
    symbol: str = "BTC/USDT"
    timeframe: str = "1h"
    timerange: str = ""
    data_dir: str = ""
    cache_dir: str = "user_data/data"
    gap_policy: str = "keep"
    bars_per_year: float = 0.0  # annualisation; 0 = infer from the candles (365 x bars per day 24/7, ~252 for 1d stocks)
    universe: str = ""  # a universe of markets (a [universes] name, a file, or "A/USDT,B/USDT"); "" = symbol alone
    universe_dirs: tuple[str, ...] = ()  # more candle folders searched after data_dir for a universe's markets

    @property
    def range(self) -> TimeRange:
        return parse_timerange(self.timerange)


@dataclass(frozen=True)
class BrokerConfig:
    """Money and costs. Fractions, not percent: 0.001 is 0.1 %."""

    cash: float = 10_000.0
    fee: float = 0.001
    slippage: float = 0.0005
    #: Yearly borrow/funding rate a short pays on its notional (portfolio runs, charged per bar:
    #: :func:`engine.backtesting.portfolio.short_rate_per_bar`). An assumption, not a quote.
    short_rate: float = 0.10

    @property
    def costs(self) -> Costs:
        """Fee and slippage as the engine's one cost value (cash is not a cost)."""
        return Costs(fee=self.fee, slippage=self.slippage)


@dataclass(frozen=True)
class PredictorConfig:
    """Which forecaster and how its windows are built."""

    name: str = "naive"
    model: str = ""
    revision: str = ""
    context_length: int = 512
    horizon: int = 12
    batch_size: int = 1024
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    seed: int = 0
    cache: bool = True
    #: inputs next to the target's close: "volume", "hour", "BTC/USDT:close", ... (predictors.base.covariate_kind)
    covariates: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=_frozen_mapping)

    def predictor_params(self) -> dict[str, Any]:
        """The predictor's parameter table plus ``model``/``revision`` when set.

        The table is ``[predictor.params.<name>]``; for a ``"module:Class"`` plugin, ``<name>`` is
        the class's ``name`` (the literal ``"module:Class"`` key works too, but not both).

        Raises:
            PredictorError: an unknown predictor, a ``"module:Class"`` that cannot be imported,
                ``model``/``revision`` set for a predictor whose config takes none, or a plugin's
                parameters given in two tables.
        """
        takes = config_class(self.name)
        tables = [self.name] if ":" not in self.name else [table_name(self.name), self.name]
        found = [t for t in dict.fromkeys(tables) if t in self.params]
        if len(found) > 1:
            raise PredictorError(
                f"predictor.params.{found[0]} and predictor.params.\"{found[1]}\" both hold parameters of "
                f"{self.name}; keep one table"
            )
        out = dict(self.params[found[0]]) if found else {}
        for key, value in (("model", self.model), ("revision", self.revision)):
            if value and not takes.takes(key):
                raise PredictorError(
                    f"predictor.{key} = {value!r}, but predictor {self.name!r} takes no {key}; "
                    f"leave predictor.{key}{' (--model)' if key == 'model' else ''} empty for it"
                )
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class StrategyConfig:
    """Strategy parameters, one table per strategy file stem: ``[strategy.llm_signal]``.

    The table of the strategy being run is handed to its class (checked against its
    backtrader ``params``); tables of other strategies are ignored.
    """

    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen_mapping)

    def params_for(self, stem: str) -> dict[str, Any]:
        return dict(self.tables.get(stem, {}))


@dataclass(frozen=True)
class EvaluationConfig:
    """How results are judged: baselines, chance, and the lookahead check."""

    naive_baseline: bool = True
    alpha: float = 0.05
    bootstrap_samples: int = 2000
    lookahead_samples: int = 3
    lookahead_budget: float = 0.1
    lookahead_full_seconds: float = 15.0
    lookahead_thorough: bool = False
    seed: int = 0
    random_sign_baseline: bool = True
    random_sign_draws: int = 50
    #: universe runs: the first stretch of the run also run on backtrader's event loop and reconciled fill for
    #: fill with the fast path (the record); "full" = the whole run (:func:`engine.runs.universe.reconcile_window`)
    universe_reconcile: str = "1000bars"
    study: str = "default"
    max_plausible_sharpe: float = 3.0
    max_plausible_accuracy: float = 0.6
    min_plausible_mase: float = 0.8
    max_plausible_ic: float = 0.15
    max_plausible_rank_ic: float = 0.15
    max_fallback_share: float = 0.05


#: ``output.mlflow``'s word for MLflow's own local default: ``sqlite:///mlflow.db`` in the working folder
#: (artifacts in ``./mlruns``), where a plain ``mlflow ui`` started in the same folder finds it.
MLFLOW_LOCAL = "local"
#: URI schemes ``output.mlflow`` takes (the part before ``+``: ``postgresql+psycopg2://`` is ``postgresql``).
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go. ``mlflow``: mirror every ledger row this run writes into MLflow (``engine.judging.tracking``):
    "" off, :data:`MLFLOW_LOCAL`, a folder path (MLflow file store) or a tracking URI."""

    dir: str = "runs"
    tearsheet: bool = True
    progress: bool = True
    mlflow: str = ""


@dataclass(frozen=True)
class PaperConfig:
    """Paper trading (``python -m engine paper``). Seconds are wall-clock seconds.

    API keys are never configured here: testnet mode reads them from the environment
    variables ``LLM4MP_API_KEY`` and ``LLM4MP_API_SECRET``.

    Hosts: candles come from ``data.exchange_url`` (the one key for where candles come
    from, backtests included) or the exchange's main public API; testnet orders go to the
    exchange's sandbox, or to ``api_url``, a loopback stub for tests (which also serves
    candles while ``data.exchange_url`` is empty). ``late_candle_wait_s``: a candle
    received later than this after its close is never traded. ``max_order_age``: bars
    (``"1bar"``, ``"2bars"``) or a duration (``"90s"``, ``"15m"``, ``"1h"``); an order not
    yet answered and older than this since its decision is never sent (looked up by client
    id, else canceled and recorded).

    Live skill monitor (:mod:`engine.paper.monitor`): ``monitor_window`` resolved forecasts are
    measured (the last N), nothing is judged before ``monitor_min_resolved`` of them, and with
    ``stop_on_decay`` no new position is opened while the monitor says the model decayed.
    """

    mode: str = "sim"
    poll_delay_s: float = 3.0
    late_candle_wait_s: float = 60.0
    late_candle_retry_s: float = 5.0
    max_retries: int = 5
    backoff_base_s: float = 0.5
    request_timeout_s: float = 10.0
    max_drawdown: float = 0.0
    max_orders_per_day: int = 0
    tearsheet_every_bars: int = 24
    api_url: str = ""
    recv_window_s: float = 5.0
    max_order_age: str = "1bar"
    #: trained predictors: "retrain" (the live fold plan, retrained on schedule) or "frozen" (``checkpoint`` only)
    model: str = "retrain"
    #: a stored checkpoint folder served frozen (``--checkpoint``; ``--from-run`` resolves a backtest's last fold)
    checkpoint: str = ""
    #: a serving model older than this since its cut-off opens no position; "" = 2 x training.retrain_every
    max_model_age: str = ""
    monitor_window: int = 100
    monitor_min_resolved: int = 30
    stop_on_decay: bool = False
    #: forecasts per reference fold (or history stretch) the monitor's band is made from at start-up; 0 = no band
    monitor_reference_windows: int = 128

    def max_order_age_ms(self, timeframe_ms: int) -> int:
        """``max_order_age`` in milliseconds of exchange time (``"2bars"`` = 2 x ``timeframe_ms``)."""
        return parse_order_age(self.max_order_age, timeframe_ms)


#: ``paper.max_order_age`` units: bars of the run's timeframe, or seconds/minutes/hours.
_AGE_UNITS_MS = {"bar": 0, "bars": 0, "s": 1_000, "m": 60_000, "h": 3_600_000}


def parse_order_age(text: str, timeframe_ms: int) -> int:
    """``"1bar"``, ``"2 bars"``, ``"90s"``, ``"15m"``, ``"1.5h"`` -> milliseconds (> 0).

    Raises:
        ConfigError: not a positive number followed by one of bar(s), s, m, h.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", str(text).lower())
    unit = match.group(2) if match else ""
    if match is None or unit not in _AGE_UNITS_MS or float(match.group(1)) <= 0:
        raise ConfigError(
            f"paper.max_order_age = {text!r} must be a positive age in bars or as a duration, e.g. \"1bar\", "
            "\"2bars\", \"90s\", \"15m\" or \"1h\""
        )
    value = float(match.group(1))
    return int(value * (timeframe_ms if _AGE_UNITS_MS[unit] == 0 else _AGE_UNITS_MS[unit]))


@dataclass(frozen=True)
class TrainingConfig:
    """Walk-forward training of trainable predictors (stages 2 and 3): the fold plan and the fit settings.

    ``retrain_every``: a duration (``"90d"``, ``"12h"``, ``"2w"``) or a bar count (``"500bars"``);
    ``train_window``: ``"expanding"`` or the same kinds; ``history_start``: ``YYYYMMDD`` or empty (all
    candles there are before the traded range serve as training history); ``embargo_bars``: bars
    between a fold's cut-off and its first decision time (0 = the horizon; never below it).
    See :mod:`engine.training.folds` for the plan and :class:`predictors.training.TrainSettings` for the rest.
    """

    retrain_every: str = "90d"
    train_window: str = "expanding"
    history_start: str = ""
    embargo_bars: int = 0
    val_fraction: float = 0.1
    epochs: int = 20
    max_steps: int = 0
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    warm_start: bool = False
    #: the training size: "auto" ("paper" when a CUDA device trains, else "cpu"), "cpu" or "paper"; it sets the
    #: keys of :class:`predictors.base.TrainProfile` the user leaves unset, from the predictor's ``train_profiles``
    profile: str = "auto"

    def embargo(self, horizon: int) -> int:
        """Bars of embargo for ``horizon``: ``embargo_bars``, or the horizon when it is 0."""
        return self.embargo_bars or horizon


#: ``training.profile`` values: "auto" picks "paper" when a CUDA device trains, "cpu" otherwise.
TRAINING_PROFILES = ("auto", *TRAIN_PROFILES)
#: The keys a training profile sets (:meth:`predictors.base.TrainProfile.settings`), unless set explicitly.
PROFILE_KEYS = tuple(TrainProfile().settings())


@dataclass(frozen=True)
class SettingsOrigin:
    """Where a config's training sizes came from (not part of the config's values, hash or TOML).

    Attributes:
        explicit: dotted keys the config file or the command line set (they win over a profile).
        profile: the profile applied ("cpu", "paper"), or "" when none was (the predictor is not trained
            walk-forward, or declares no ``train_profiles``).
        why: how the profile was chosen, e.g. "auto: no CUDA device".
    """

    explicit: frozenset[str] = frozenset()
    profile: str = ""
    why: str = ""

    def source(self, key: str) -> str:
        """"set" (explicit), "profile <name>" or "default" for one of :data:`PROFILE_KEYS`."""
        if key in self.explicit:
            return "set"
        return f"profile {self.profile}" if self.profile else "default"


#: ``training.device`` values.
TRAINING_DEVICES = ("auto", "cpu", "cuda", "mps")
#: Duration units of ``training.retrain_every`` / ``train_window``.
_SPAN_UNITS = {"m": "min", "h": "h", "d": "D", "w": "W"}


@dataclass(frozen=True)
class Span:
    """A length in bars or as a duration (``training.retrain_every``, ``training.train_window``)."""

    bars: int = 0
    duration: pd.Timedelta | None = None

    def __str__(self) -> str:
        return f"{self.bars}bars" if self.duration is None else str(self.duration)


def parse_span(text: str, where: str) -> Span:
    """``"90d"``, ``"12h"``, ``"2w"``, ``"30m"`` -> a duration; ``"500bars"`` / ``"500bar"`` -> bars (> 0).

    Raises:
        ConfigError: anything else, naming ``where`` and the accepted forms.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]+)\s*", str(text).lower())
    if match and int(match.group(1)) > 0:
        n, unit = int(match.group(1)), match.group(2)
        if unit in ("bar", "bars"):
            return Span(bars=n)
        if unit in _SPAN_UNITS:
            return Span(duration=pd.Timedelta(n, unit=_SPAN_UNITS[unit]))
    raise ConfigError(
        f"{where} = {text!r} must be a positive duration such as \"90d\", \"12h\", \"2w\" or a bar count such as "
        "\"500bars\""
    )


@dataclass(frozen=True)
class UniversesConfig:
    """Named universes: ``[universes]`` with ``name = ["ADA/USDT", "DOGE/USDT", ...]``, chosen by
    ``data.universe = "name"`` (or ``--universe name``)."""

    lists: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_mapping)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    universes: UniversesConfig = field(default_factory=UniversesConfig)

    def universe_symbols(self) -> tuple[str, tuple[str, ...]] | None:
        """``(name, symbols)`` of ``data.universe`` (:func:`feeds.universe.parse_universe`), None when unset."""
        if not self.data.universe:
            return None
        try:
            return parse_universe(self.data.universe, self.universes.lists)
        except FeedsInputError as exc:
            raise ConfigError(f"data.universe: {exc}") from None
    #: which keys were set explicitly and which profile filled the others (:func:`with_profile`)
    origin: SettingsOrigin = field(default_factory=SettingsOrigin, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/TOML-serialisable dict of the resolved config (``origin`` left out: the values say it)."""

        def plain(obj: Any) -> Any:
            if isinstance(obj, StrategyConfig):  # written as [strategy.<stem>] tables
                return plain(obj.tables)
            if isinstance(obj, UniversesConfig):  # written as [universes] name = [...]
                return plain(obj.lists)
            if dataclasses.is_dataclass(obj):
                return {f.name: plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "origin"}
            if isinstance(obj, Mapping):
                return {k: plain(v) for k, v in obj.items()}
            if isinstance(obj, tuple):
                return [plain(v) for v in obj]
            return obj

        return plain(self)

    def hash(self) -> str:
        """Stable short hash of the settings that determine results (``config_hash`` in
        metrics.json and the ledger).

        Leaves out where outputs and caches go (``output``, ``data.cache_dir``), whether the
        forecast cache is used (``predictor.cache``), how results are judged (``evaluation``)
        and how paper trading runs (``paper``): none of them changes a backtest's trades.
        It is not the trial identity: it holds the parameter tables of every strategy but not
        which strategy ran, nor any code. Trials are counted by ``engine.judging.ledger.trial_hash``
        (strategy file and parameters, predictor code and forecast-changing parameters,
        costs, market).
        """
        tree = self.to_dict()
        for section in ("output", "evaluation", "paper", "universes"):
            tree.pop(section)
        universe = self.universe_symbols()
        if universe is None:  # the borrow rate is charged by portfolio (universe) runs only
            tree["broker"].pop("short_rate")
            tree["data"].pop("universe")
            tree["data"].pop("universe_dirs")
        else:  # the markets a name or file stands for, not the name
            tree["data"]["universe"] = list(universe[1])
        tree["data"].pop("cache_dir")
        tree["predictor"].pop("cache")
        tree["data"].pop("bars_per_year")  # annualisation judges results, it never changes trades
        tree["training"].pop("device")  # where a model trains, not what it learns (as predictor device knobs)
        tree["training"].pop("profile")  # the values it chose are in the tree; the name changes no result
        if not _is_trainable(self.predictor):  # training settings change no forecast of the others
            tree.pop("training")
        blob = json.dumps(tree, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "broker": BrokerConfig,
    "predictor": PredictorConfig,
    "strategy": StrategyConfig,
    "universes": UniversesConfig,
    "evaluation": EvaluationConfig,
    "output": OutputConfig,
    "paper": PaperConfig,
    "training": TrainingConfig,
}


def _validate_training(t: TrainingConfig, horizon: int) -> None:
    _check_profile(t.profile)
    parse_span(t.retrain_every, "training.retrain_every")
    if t.train_window != "expanding":
        try:
            parse_span(t.train_window, "training.train_window")
        except ConfigError:
            raise ConfigError(
                f"training.train_window = {t.train_window!r} must be \"expanding\" (every candle before the cut-off) "
                "or a length such as \"365d\" or \"5000bars\""
            ) from None
    if t.history_start:
        try:
            parse_timerange(f"{t.history_start}-")
        except TimeframeError:
            raise ConfigError(
                f"training.history_start = {t.history_start!r} must be a date YYYYMMDD (e.g. \"20200101\") or empty "
                "(all candles before the traded range)"
            ) from None
    if t.embargo_bars < 0 or (t.embargo_bars and t.embargo_bars < horizon):
        raise ConfigError(
            f"training.embargo_bars = {t.embargo_bars} must be 0 (= the horizon, {horizon}) or >= predictor.horizon = "
            f"{horizon}: a smaller gap lets training targets reach the bars just before the fold"
        )
    if not 0 <= t.val_fraction < 0.5:
        raise ConfigError(
            f"training.val_fraction = {t.val_fraction} must be in [0, 0.5): the share of each training window held "
            "out at its end for early stopping, e.g. 0.1 (0 = no validation, no early stopping)"
        )
    for key, low in (("epochs", 1), ("max_steps", 0), ("patience", 0), ("batch_size", 1)):
        if getattr(t, key) < low:
            raise ConfigError(f"training.{key} = {getattr(t, key)} must be >= {low}")
    if not 0 < t.lr < 1:
        raise ConfigError(f"training.lr = {t.lr} must be a learning rate in (0, 1), e.g. 0.001")
    if t.device not in TRAINING_DEVICES:
        raise ConfigError(
            f"training.device = {t.device!r}; use one of {', '.join(TRAINING_DEVICES)}."
            + _did_you_mean(t.device, TRAINING_DEVICES)
        )


def _did_you_mean(key: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} must be true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} must be an integer, e.g. {where.split('.')[-1]} = 512")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r} must be a number, e.g. 0.001")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r} must be a string in quotes, e.g. \"{value}\"")
    if origin is tuple and typing.get_args(annotation)[0] is str:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where} = {value!r} must be a list of strings, e.g. [\"../shared/data/universe\"]")
    if origin is tuple:
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return tuple(float(v) for v in value)
        raise ConfigError(f"{where} = {value!r} must be a list of numbers, e.g. [0.1, 0.5, 0.9]")
    if origin is collections.abc.Mapping:
        if isinstance(value, Mapping):
            return _frozen_mapping(value)
        raise ConfigError(f"{where} must be a table, e.g. [{where}]")
    raise TypeError(f"unsupported config annotation {annotation!r}")  # a bug, not user input


def _build_section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"unknown key {name}.{key} (= {value!r}); allowed in [{name}]: {', '.join(sorted(known))}."
                + _did_you_mean(key, known)
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def _build_strategy_tables(raw: Mapping[str, Any]) -> StrategyConfig:
    tables = {}
    for stem, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"strategy.{stem} = {table!r}: strategy parameters go in a table per strategy file, "
                f"e.g. [strategy.llm_signal] with stake = 0.5"
            )
        tables[stem] = _frozen_mapping(table)
    return StrategyConfig(tables=_frozen_mapping(tables))


def _build_universes(raw: Mapping[str, Any]) -> UniversesConfig:
    lists = {}
    for name, symbols in raw.items():
        if not isinstance(symbols, (list, tuple)) or not all(isinstance(s, str) for s in symbols):
            raise ConfigError(f"universes.{name} = {symbols!r} must be a list of market symbols, "
                              f"e.g. {name} = [\"ADA/USDT\", \"DOGE/USDT\"]")
        lists[name] = tuple(symbols)
    return UniversesConfig(lists=_frozen_mapping(lists))


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a table")
        node = child
    node[parts[-1]] = value


def _validate(cfg: Config) -> None:
    d, b, p = cfg.data, cfg.broker, cfg.predictor
    if d.timeframe not in SUPPORTED_TIMEFRAMES:
        raise ConfigError(
            f"data.timeframe = {d.timeframe!r} is not supported; use one of {', '.join(SUPPORTED_TIMEFRAMES)}."
            + _did_you_mean(d.timeframe, SUPPORTED_TIMEFRAMES)
        )
    try:
        parse_timerange(d.timerange)
    except TimeframeError as exc:
        raise ConfigError(f"data.timerange: {exc}") from None
    if not d.symbol.strip() or any(ch in d.symbol for ch in " \\"):
        raise ConfigError(f"data.symbol = {d.symbol!r} must look like BASE/QUOTE, e.g. \"BTC/USDT\"")
    if "/" in d.symbol or not d.data_dir:  # a bare ticker ("SPY") only names a candle file
        if d.symbol.count("/") != 1 or not all(d.symbol.split(":")[0].split("/")):
            bare = "" if "/" in d.symbol else (
                "; a ticker without a quote currency (an index or ETF such as \"SPY\") works only with data.data_dir "
                "(--data-dir) holding its candle file, e.g. SPY-1d.csv")
            raise ConfigError(f"data.symbol = {d.symbol!r} must look like BASE/QUOTE, e.g. \"BTC/USDT\"{bare}")
    if d.bars_per_year < 0 or d.bars_per_year > 366 * 24 * 60:
        raise ConfigError(
            f"data.bars_per_year = {d.bars_per_year} must be in [0, 527040]: 0 infers it from the candles, "
            "e.g. 252 for daily bars of a stock market, 8760 for 1h crypto bars"
        )
    if d.gap_policy not in GAP_POLICIES:
        raise ConfigError(
            f"data.gap_policy = {d.gap_policy!r}; use one of {', '.join(GAP_POLICIES)}."
            + _did_you_mean(d.gap_policy, GAP_POLICIES)
        )
    if d.exchange_url and not d.exchange_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"data.exchange_url = {d.exchange_url!r} must be a base URL such as \"http://127.0.0.1:8080\", or empty"
        )
    if not d.exchange:
        raise ConfigError('data.exchange is empty; set a ccxt exchange id, e.g. "binance"')
    _validate_mlflow(cfg.output.mlflow)
    if b.cash <= 0:
        raise ConfigError(f"broker.cash = {b.cash} must be > 0, e.g. 10000")
    if not 0 <= b.fee < 0.05:
        raise ConfigError(
            f"broker.fee = {b.fee} is a fraction per side and must be in [0, 0.05); 0.001 means 0.1 %"
        )
    if not 0 <= b.slippage < 0.05:
        raise ConfigError(
            f"broker.slippage = {b.slippage} is a fraction of price and must be in [0, 0.05); 0.0005 means 0.05 %"
        )
    if not 0 <= b.short_rate < 10:
        raise ConfigError(
            f"broker.short_rate = {b.short_rate} is a yearly fraction of a short's notional and must be in [0, 10); "
            "0.1 means 10 % a year"
        )
    e = cfg.evaluation
    if not 0 < e.alpha < 0.5:
        raise ConfigError(f"evaluation.alpha = {e.alpha} must be a significance level in (0, 0.5), e.g. 0.05")
    if e.bootstrap_samples < 100:
        raise ConfigError(f"evaluation.bootstrap_samples = {e.bootstrap_samples} must be >= 100 (2000 is usual)")
    if e.lookahead_samples < 0:
        raise ConfigError(f"evaluation.lookahead_samples = {e.lookahead_samples} must be >= 0 (0 turns the check off)")
    if e.universe_reconcile != "full":
        try:
            parse_span(e.universe_reconcile, "evaluation.universe_reconcile")
        except ConfigError as exc:
            raise ConfigError(f"{exc}, or \"full\" (reconcile the whole run on the event loop)") from None
    if e.random_sign_draws < 0:
        raise ConfigError(
            f"evaluation.random_sign_draws = {e.random_sign_draws} must be >= 0 (50 or more is usual; 0 turns the draws off)")
    if not e.study.strip() or e.study != e.study.strip():
        raise ConfigError(f"evaluation.study = {e.study!r} must be a name without surrounding blanks, e.g. \"default\" "
                          "or \"btc-momentum-2024\"")
    if not 0 < e.max_plausible_sharpe < 1e6:
        raise ConfigError(f"evaluation.max_plausible_sharpe = {e.max_plausible_sharpe} must be an annualised Sharpe > 0, e.g. 3")
    if not 0.5 < e.max_plausible_accuracy < 1:
        raise ConfigError(
            f"evaluation.max_plausible_accuracy = {e.max_plausible_accuracy} must be a hit rate in (0.5, 1), e.g. 0.6"
        )
    if not 0 < e.min_plausible_mase < 1:
        raise ConfigError(f"evaluation.min_plausible_mase = {e.min_plausible_mase} must be in (0, 1), e.g. 0.8")
    for key in ("max_plausible_ic", "max_plausible_rank_ic"):
        if not 0 < getattr(e, key) < 1:
            raise ConfigError(f"evaluation.{key} = {getattr(e, key)} must be a correlation in (0, 1), e.g. 0.15")
    if not 0 <= e.max_fallback_share <= 1:
        raise ConfigError(
            f"evaluation.max_fallback_share = {e.max_fallback_share} must be a share of forecast windows in [0, 1], e.g. 0.05"
        )
    if not 0 <= e.lookahead_budget <= 10:
        raise ConfigError(
            f"evaluation.lookahead_budget = {e.lookahead_budget} is a share of the run's time and must be in [0, 10], "
            "e.g. 0.1"
        )
    if not 0 <= e.lookahead_full_seconds <= 86_400:
        raise ConfigError(
            f"evaluation.lookahead_full_seconds = {e.lookahead_full_seconds} is the seconds the full recheck of every "
            "window may cost by default and must be in [0, 86400], e.g. 15 (0: only lookahead_budget decides)"
        )
    if not p.name:
        raise ConfigError('predictor.name is empty; set e.g. "naive" (see `python -m engine predictors`)')
    if p.context_length < 2:
        raise ConfigError(f"predictor.context_length = {p.context_length} must be >= 2 bars")
    if p.horizon < 1:
        raise ConfigError(f"predictor.horizon = {p.horizon} must be >= 1 bar")
    for name, table in p.params.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"predictor.params.{name} = {table!r}: predictor parameters go in a table per predictor, "
                "e.g. [predictor.params.momentum] with lookback = 24"
            )
    _validate_predictor_params(p)
    if p.covariates and ":" not in p.name:  # a "module:Class" plugin is checked when it is built
        try:
            check_covariates(predictor_class(p.name), p.covariates)
        except PredictorError as exc:
            raise ConfigError(f"predictor.covariates: {exc}") from None
    if p.batch_size < 1:
        raise ConfigError(f"predictor.batch_size = {p.batch_size} must be >= 1")
    q = list(p.quantiles)
    if not q or any(not 0 < x < 1 for x in q) or q != sorted(set(q)) or 0.5 not in q:
        raise ConfigError(
            f"predictor.quantiles = {q} must be strictly increasing levels in (0, 1) that include 0.5, "
            "e.g. [0.1, 0.5, 0.9]"
        )
    _validate_paper(cfg.paper)
    _validate_training(cfg.training, p.horizon)


def _validate_mlflow(value: str) -> None:
    """``output.mlflow`` (``--mlflow``): "", :data:`MLFLOW_LOCAL`, a folder path, or a URI of :data:`MLFLOW_SCHEMES`
    (http/https with a host). Checks the form only; whether MLflow is installed and the store opens is checked
    before a run by ``engine.judging.tracking.check_tracking``."""
    if not value or value in (MLFLOW_LOCAL, "databricks"):
        return
    parts = urlsplit(value)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (C:\... on Windows): a file store folder
        return
    fix = (f'use "{MLFLOW_LOCAL}" (sqlite:///mlflow.db in the working folder), sqlite:///PATH/mlflow.db, '
           "http://HOST:PORT of an MLflow tracking server, or another MLflow store URI "
           f"({', '.join(s + '://' for s in MLFLOW_SCHEMES)}), or \"\" for none")
    if parts.scheme.split("+")[0].lower() not in MLFLOW_SCHEMES:
        raise ConfigError(f"output.mlflow (--mlflow) = {value!r}: unsupported scheme {parts.scheme!r}; {fix}")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ConfigError(f"output.mlflow (--mlflow) = {value!r} names no host; {fix}")
    if parts.scheme == "sqlite" and not parts.path.strip("/"):
        raise ConfigError(f"output.mlflow (--mlflow) = {value!r} names no database file; {fix}")


def _is_trainable(p: PredictorConfig) -> bool:
    """Whether the configured predictor is trained walk-forward: a trainable class whose parameters ask for
    it (``Predictor.trains_with``; ``chronos`` only with ``finetune`` set). False for a name or a table
    that does not resolve."""
    try:
        cls = predictor_class(p.name)
        return bool(cls.trainable) and cls.trains_with(make_config(p.name, p.predictor_params()))
    except PredictorError:
        return False


def _validate_predictor_params(p: PredictorConfig) -> None:
    """Check ``predictor.name`` (a registered name or ``module:Class``) and the
    ``[predictor.params.<name>]`` table of every registered predictor against its config
    class (unknown key, wrong type, value out of range). ``model``/``revision`` and the tables of
    ``module:Class`` plugins are checked when the predictor is built."""
    registered = set(available())
    if ":" not in p.name and p.name not in registered:  # a typo is refused before any work
        try:
            config_class(p.name)
        except PredictorError as exc:
            raise ConfigError(f"predictor.name: {exc}") from None
    for name in [n for n in p.params if n in registered]:
        try:
            make_config(name, p.params[name])
        except PredictorError as exc:
            raise ConfigError(str(exc)) from None


def _validate_paper(c: PaperConfig) -> None:
    if c.mode not in PAPER_MODES:
        raise ConfigError(
            f"paper.mode = {c.mode!r}; use \"sim\" (simulated fills, no keys) or \"testnet\" (exchange sandbox)."
            + _did_you_mean(c.mode, PAPER_MODES)
        )
    for key in ("poll_delay_s", "late_candle_wait_s", "backoff_base_s"):
        value = getattr(c, key)
        if not 0 <= value < 3600:
            raise ConfigError(f"paper.{key} = {value} must be seconds in [0, 3600), e.g. {getattr(PaperConfig, key)}")
    if not 0 < c.late_candle_retry_s < 3600:
        raise ConfigError(f"paper.late_candle_retry_s = {c.late_candle_retry_s} must be seconds in (0, 3600), e.g. 5")
    if not 0 < c.request_timeout_s <= 300:
        raise ConfigError(f"paper.request_timeout_s = {c.request_timeout_s} must be seconds in (0, 300], e.g. 10")
    if not 0.05 <= c.recv_window_s <= 60:
        raise ConfigError(f"paper.recv_window_s = {c.recv_window_s} must be seconds in [0.05, 60], e.g. 5")
    if not 0 <= c.max_retries <= 20:
        raise ConfigError(f"paper.max_retries = {c.max_retries} must be in [0, 20], e.g. 5")
    if not 0 <= c.max_drawdown < 1:
        raise ConfigError(
            f"paper.max_drawdown = {c.max_drawdown} is a fraction in [0, 1): 0.2 stops trading at a 20 % drawdown, 0 = off"
        )
    if c.max_orders_per_day < 0:
        raise ConfigError(f"paper.max_orders_per_day = {c.max_orders_per_day} must be >= 0 (0 = no limit)")
    if c.tearsheet_every_bars < 0:
        raise ConfigError(f"paper.tearsheet_every_bars = {c.tearsheet_every_bars} must be >= 0 (0 = only at exit)")
    parse_order_age(c.max_order_age, 60_000)  # the unit and number; bars are checked against any timeframe
    if c.model not in SERVING_MODELS:
        raise ConfigError(
            f"paper.model = {c.model!r}; use \"retrain\" (the live fold plan, retrained on schedule) or \"frozen\" "
            "(one checkpoint: paper.checkpoint, --checkpoint or --from-run)" + _did_you_mean(c.model, SERVING_MODELS)
        )
    if c.model == "frozen" and not c.checkpoint:
        raise ConfigError("paper.model = \"frozen\" needs the checkpoint to serve: paper.checkpoint = \"PATH\", "
                          "--checkpoint PATH, or --from-run RUN_DIR (a backtest's run folder)")
    if c.checkpoint and c.model != "frozen":
        raise ConfigError(f"paper.checkpoint = {c.checkpoint!r} is served only with paper.model = \"frozen\"; set it, or "
                          "empty paper.checkpoint to retrain on schedule")
    if c.max_model_age.strip():
        parse_span(c.max_model_age, "paper.max_model_age")
    if not 10 <= c.monitor_window <= 100_000:
        raise ConfigError(
            f"paper.monitor_window = {c.monitor_window} must be a number of resolved forecasts in [10, 100000], e.g. 100"
        )
    if not 0 <= c.monitor_reference_windows <= 100_000:
        raise ConfigError(f"paper.monitor_reference_windows = {c.monitor_reference_windows} must be in [0, 100000], "
                          "e.g. 128 (0 = no reference band: the monitor shows its measures and judges nothing)")
    if not 10 <= c.monitor_min_resolved <= c.monitor_window:
        raise ConfigError(
            f"paper.monitor_min_resolved = {c.monitor_min_resolved} must be in [10, paper.monitor_window = "
            f"{c.monitor_window}], e.g. 30: fewer resolved forecasts judge nothing but noise"
        )
    if c.api_url:
        parts = urlsplit(c.api_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            raise ConfigError(
                f"paper.api_url = {c.api_url!r}: only a loopback exchange stub may replace the exchange's URLs, "
                "e.g. \"http://127.0.0.1:8080\"; leave it empty to use the exchange itself"
            )


def _check_profile(name: str) -> None:
    if name not in TRAINING_PROFILES:
        raise ConfigError(
            f"training.profile = {name!r} is not a training profile; use one of {', '.join(TRAINING_PROFILES)} "
            "(\"cpu\": sizes a CPU finishes in minutes, \"paper\": the papers' sizes, \"auto\": paper with a CUDA "
            "device, else cpu), e.g. --profile cpu" + _did_you_mean(name, TRAINING_PROFILES)
        )


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (imports torch: called only for a profiled predictor)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_profile(requested: str, device: str) -> tuple[str, str]:
    """``training.profile`` -> (the profile, why): "auto" is "paper" when fits run on a CUDA device, else "cpu".

    Raises:
        ConfigError: ``requested`` is not one of :data:`TRAINING_PROFILES`.
    """
    _check_profile(requested)
    if requested != "auto":
        return requested, "training.profile"
    if device in ("cpu", "mps"):
        return "cpu", f"auto: training.device = {device!r}"
    if device == "cuda" or cuda_available():
        return "paper", "auto: a CUDA device"
    return "cpu", "auto: no CUDA device"


def profiles_of(p: PredictorConfig) -> Mapping[str, TrainProfile]:
    """The configured predictor's ``train_profiles`` when it is trained walk-forward, else ``{}`` (also for a
    name or table that does not resolve: validation reports those)."""
    try:
        cls = predictor_class(p.name)
        if not (cls.trainable and cls.trains_with(make_config(p.name, p.predictor_params()))):
            return {}
        return dict(cls.train_profiles)
    except PredictorError:
        return {}


def with_profile(cfg: Config, explicit: frozenset[str] | None = None) -> Config:
    """``cfg`` with every :data:`PROFILE_KEYS` key not in ``explicit`` (default: ``cfg.origin.explicit``) set
    from the predictor's training profile (``training.profile``), or back to the engine's default when the
    predictor declares no profile or is not trained. A pure function of the config: a compare variant built
    from another predictor's config gets its own predictor's sizes.

    Raises:
        ConfigError: an unknown ``training.profile``.
    """
    explicit = cfg.origin.explicit if explicit is None else explicit
    profiles = profiles_of(cfg.predictor)
    name, why = resolve_profile(cfg.training.profile, cfg.training.device) if profiles else ("", "")
    chosen = profiles.get(name) if profiles else None
    if profiles and chosen is None:
        name, why = "", f"{cfg.predictor.name} declares no {name!r} profile (only {', '.join(profiles)})"
    values = (chosen or TrainProfile()).settings()  # TrainProfile(): the engine's defaults
    sections: dict[str, dict[str, Any]] = {"predictor": {}, "training": {}}
    for key in PROFILE_KEYS:
        if key not in explicit:
            section, attr = key.split(".")
            sections[section][attr] = values[key]
    return dataclasses.replace(
        cfg, predictor=dataclasses.replace(cfg.predictor, **sections["predictor"]),
        training=dataclasses.replace(cfg.training, **sections["training"]),
        origin=SettingsOrigin(explicit=frozenset(explicit), profile=name, why=why),
    )


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every value in a nested TOML tree."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, Mapping):
            out |= _leaf_keys(value, path + ".")
    return out


def parse_literal(text: str) -> Any:
    """A command-line value as a TOML literal (numbers, booleans, quoted strings, lists); a bare word is
    the string itself. One rule for ``--set KEY=VALUE``, ``--predictors 'name[key=value]'`` and
    ``--space`` choices."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (TOML; ``None`` = defaults only), apply dotted ``overrides``, validate.

    Raises:
        ConfigError: unreadable file, unknown section or key, wrong type, impossible value.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; pass --config PATH or create config.toml")
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    for section in tree:
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section}]; allowed: {', '.join(_SECTIONS)}." + _did_you_mean(section, _SECTIONS)
            )
        if not isinstance(tree[section], Mapping):
            raise ConfigError(f"{section} must be a table ([{section}]), got {tree[section]!r}")
    sections = {
        name: _build_section(name, cls, tree.get(name, {})) for name, cls in _SECTIONS.items()
        if name not in ("strategy", "universes")
    }
    cfg = Config(**sections, strategy=_build_strategy_tables(tree.get("strategy", {})),
                 universes=_build_universes(tree.get("universes", {})))
    _check_profile(cfg.training.profile)
    cfg = with_profile(cfg, frozenset(_leaf_keys(tree)))
    _validate(cfg)
    cfg.universe_symbols()  # a bad data.universe is named when the config loads
    return cfg


#: The settings the command line's flags (argparse ``dest``) and the Python API's keyword arguments
#: (:mod:`engine.api`, same names) set: name -> the config key it overrides.
FLAG_KEYS: dict[str, str] = {
    "exchange": "data.exchange", "symbol": "data.symbol", "timeframe": "data.timeframe",
    "timerange": "data.timerange", "data_dir": "data.data_dir", "cache_dir": "data.cache_dir",
    "exchange_url": "data.exchange_url",
    "predictor": "predictor.name", "model": "predictor.model", "out": "output.dir", "study": "evaluation.study",
    "mlflow": "output.mlflow", "universe": "data.universe", "profile": "training.profile",
    "reconcile": "evaluation.universe_reconcile",
}


def flag_overrides(flags: Mapping[str, Any], sets: typing.Iterable[str] | Mapping[str, Any] = ()) -> dict[str, Any]:
    """Dotted overrides from ``flags`` (:data:`FLAG_KEYS` names; None or absent = not given) and ``sets``:
    the command line's ``--set KEY=VALUE`` items (VALUE a TOML literal, :func:`parse_literal`) or the
    Python API's ``{"broker.fee": 0.0005}`` (values as they are). ``sets`` win over flags.

    Raises:
        ConfigError: a ``--set`` item without ``=``, or a key that is not a non-empty string.
    """
    out = {FLAG_KEYS[name]: value for name, value in flags.items() if name in FLAG_KEYS and value is not None}
    if isinstance(sets, Mapping):
        for key, value in sets.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"set={{{key!r}: ...}}: keys are dotted config keys, e.g. {{'broker.fee': 0.0005}}")
            out[key.strip()] = str(value) if isinstance(value, Path) else value
        return out
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must be KEY=VALUE, e.g. --set broker.fee=0.0005")
        out[key.strip()] = parse_literal(value.strip())
    return out


def resolve_config(config: str | Path | Config | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The run's configuration: ``config`` (a TOML file; None = ``./config.toml`` when present, else the
    defaults; or a :class:`Config`) with the dotted ``overrides`` applied and everything validated again.
    The one rule for ``--config`` and the flags (:mod:`engine.cli`) and the Python API (:mod:`engine.api`).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    if isinstance(config, Config):
        if not overrides:
            return config
        return load_config(None, {**config.to_dict(), **overrides})  # sections first, dotted keys over them
    if config is None and Path("config.toml").is_file():
        config = "config.toml"
    return load_config(config, overrides)
