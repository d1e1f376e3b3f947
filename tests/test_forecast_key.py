"""The forecast cache key: the predictor's code and every parameter that changes forecasts,
nothing that does not. Plugins are written to a temp folder and imported as "module:Class",
as a user's plugin would be; forecasts run on real BTC/USDT daily closes."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.forecasting.signals import ForecastCache, cached_forecasts, data_fingerprint, forecast_key
from predictors import make_predictor
from predictors.fingerprint import code_fingerprint, source_modules

CONTEXT, HORIZON = 32, 3

PLUGIN = '''
import numpy as np
from predictors.base import Predictor

class Tilted(Predictor):
    """Median = a fixed tilt per bar of horizon; a spread of one-bar volatility."""
    name = "tilted"

    def predict_quantiles(self, contexts, horizon):
        r = np.diff(np.log(contexts), axis=1)
        sd = r.std(axis=1)[:, None, None]
        steps = np.arange(1, horizon + 1)[None, None, :]
        z = np.array([-1.28, 0.0, 1.28])[None, :, None]
        return {tilt} * steps + z * sd * np.sqrt(steps)
'''


@pytest.fixture
def candles(btc_1d: pd.DataFrame) -> pd.DataFrame:
    return btc_1d.loc["2023-01-01":"2023-06-30"]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("i8plug")]:
        del sys.modules[name]


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    importlib.invalidate_caches()


def _decisions(candles: pd.DataFrame) -> pd.DatetimeIndex:
    return candles.index[CONTEXT - 1 :]


def _run(candles: pd.DataFrame, predictor, cache: ForecastCache, batch_size: int = 1024):
    return cached_forecasts(candles, predictor, CONTEXT, HORIZON, _decisions(candles), cache,
                            batch_size=batch_size, progress=False)


def test_edited_plugin_source_is_a_cache_miss_with_new_forecasts(candles, plugin_dir, tmp_path):
    """Same module, same class, same parameters, other code: the old forecasts must not come back."""
    cache = ForecastCache(tmp_path / "cache")
    _write(plugin_dir / "i8plug_tilt.py", PLUGIN.format(tilt="0.001"))
    first, hit = _run(candles, make_predictor("i8plug_tilt:Tilted"), cache)
    assert not hit
    again, hit = _run(candles, make_predictor("i8plug_tilt:Tilted"), cache)
    assert hit and np.array_equal(again.values, first.values)  # the cache does work for unchanged code

    _write(plugin_dir / "i8plug_tilt.py", PLUGIN.format(tilt="-0.002"))
    importlib.reload(sys.modules["i8plug_tilt"])
    edited, hit = _run(candles, make_predictor("i8plug_tilt:Tilted"), cache)
    assert not hit
    median = edited.median
    np.testing.assert_allclose(median[:, 0], -0.002)  # the new code's forecasts, not the cached ones
    assert not np.allclose(median, first.median)
    assert len(list((tmp_path / "cache").glob("*.parquet"))) == 2


def test_editing_the_base_class_module_changes_the_fingerprint(plugin_dir):
    """A plugin inheriting from another plugin module: the parent's source is part of the child's code."""
    _write(plugin_dir / "i8plug_base.py", PLUGIN.format(tilt="0.001"))
    _write(plugin_dir / "i8plug_child.py", """
        from i8plug_base import Tilted

        class Child(Tilted):
            name = "child"
    """)
    child = importlib.import_module("i8plug_child").Child
    before = code_fingerprint(child)
    assert {"i8plug_base", "i8plug_child", "predictors.base"} <= set(source_modules(child))

    _write(plugin_dir / "i8plug_base.py", PLUGIN.format(tilt="0.003"))
    importlib.reload(sys.modules["i8plug_base"])
    reloaded = importlib.reload(sys.modules["i8plug_child"]).Child
    assert code_fingerprint(reloaded) != before


def test_builtin_fingerprint_covers_base_and_helper_modules() -> None:
    """Built-ins hash their module, what they inherit from in predictors/, and the helpers they use."""
    from predictors.registry import predictor_class

    assert {"predictors.baselines", "predictors.base"} <= set(source_modules(predictor_class("momentum")))
    chronos = set(source_modules(predictor_class("chronos")))
    assert {"predictors.chronos", "predictors.base", "predictors._torch", "predictors.hub"} <= chronos
    assert "predictors.llmtime" not in chronos
    assert code_fingerprint(predictor_class("momentum")) != code_fingerprint(predictor_class("naive"))


def test_batch_size_of_a_batch_invariant_predictor_is_a_cache_hit(candles, tmp_path):
    cache = ForecastCache(tmp_path / "cache")
    momentum = make_predictor("momentum", {"lookback": 5})
    big, hit = _run(candles, momentum, cache, batch_size=1024)
    assert not hit
    small, hit = _run(candles, make_predictor("momentum", {"lookback": 5}), cache, batch_size=7)
    assert hit and np.array_equal(small.values, big.values)
    other, hit = _run(candles, make_predictor("momentum", {"lookback": 6}), cache, batch_size=7)
    assert not hit and not np.allclose(other.values, big.values)  # a parameter that does change forecasts


def test_llmtime_batch_size_is_part_of_the_key_only_off_the_cpu(tmp_path) -> None:
    """llmtime's forecasts do not depend on how windows are batched on the CPU (its docstring; tested in
    test_predictors_llmtime), so neither its batch_size nor the engine's keys the cache there; on an
    accelerator batch_size > 1 is not batch invariant, and both do."""
    import dataclasses

    pytest.importorskip("torch")
    model = tmp_path / "model"
    model.mkdir()  # a local folder: the constructor only resolves the path, it loads nothing
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")

    def key(inner: int, outer: int, device: str = "cpu") -> str:
        predictor = make_predictor("llmtime", {"model": str(model), "device": "cpu", "batch_size": inner})
        predictor.config = dataclasses.replace(predictor.config, device=device)  # as resolved on that machine
        return forecast_key(predictor, "data", CONTEXT, HORIZON, idx, batch_size=outer)

    assert len({key(1, 1024), key(1, 7), key(4, 1024), key(8, 7)}) == 1
    assert key(1, 1024, "cuda") == key(1, 7, "cuda") == key(1, 7)
    assert len({key(1, 1024, "cuda"), key(4, 1024, "cuda"), key(8, 1024, "cuda"), key(4, 7, "cuda")}) == 4


def test_chronos_batch_size_is_a_memory_knob_not_a_key(tmp_path) -> None:
    pytest.importorskip("torch")
    model = tmp_path / "model"
    model.mkdir()
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    keys = {
        forecast_key(make_predictor("chronos", {"model": str(model), "device": "cpu", "batch_size": b}),
                     "data", CONTEXT, HORIZON, idx, batch_size=outer)
        for b, outer in ((8, 1024), (64, 1024), (64, 5))
    }
    assert len(keys) == 1
    other_samples = make_predictor("chronos", {"model": str(model), "device": "cpu", "num_samples": 7})
    assert forecast_key(other_samples, "data", CONTEXT, HORIZON, idx) not in keys


def test_key_depends_on_the_data(candles) -> None:
    momentum = make_predictor("momentum")
    shifted = candles.assign(close=candles["close"] * 1.0001)
    keys = {forecast_key(momentum, data_fingerprint(c), CONTEXT, HORIZON, _decisions(c)) for c in (candles, shifted)}
    assert len(keys) == 2
