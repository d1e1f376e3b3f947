"""The plugin contract: typed, validated configs that are the cache key; a registry that refuses
duplicates; a stats hook; and the "Adding a predictor" example (docs/adding-a-predictor.md), run through the CLI on
real BTC/USDT daily candles."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.cli import main
from engine.runs.compare import variant
from engine.core.config import ConfigError, load_config
from engine.core.errors import UserInputError
from engine.forecasting.signals import forecast_key
from predictors import registry
from predictors.base import PluginConfig, Predictor, PredictorError, PredictorStats, median_index, param
from predictors.baselines import NaivePredictor

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = ["chronos", "drift", "kronos", "lightgbm", "llmtime", "lora_llm", "moirai", "momentum", "naive", "neural", "patchtst", "reversal", "seasonal_naive",
            "timesfm", "tirex", "toto", "ttm"]


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test are forgotten after it (the registry is process-wide)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield
    for name in [m for m in sys.modules if m == "my_tilt"]:
        del sys.modules[name]


def _readme_block(marker: str) -> str:
    """A code block of the documentation's "Adding a predictor" page (docs/adding-a-predictor.md)."""
    text = (ROOT / "docs" / "adding-a-predictor.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- plugin-example: {re.escape(marker)} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"docs/adding-a-predictor.md has no code block after <!-- plugin-example: {marker} -->"
    return match.group(1)


# -- the registry ----------------------------------------------------------------------------------
def test_builtins_are_registered_once_with_their_config_classes():
    assert registry.available() == BUILTINS
    for name in BUILTINS:
        entry = registry._REGISTRY[name]
        assert entry.predictor_class.name == name and entry.config_class is entry.predictor_class.config_class


def test_a_taken_name_is_refused_naming_both_classes(clean_registry):
    class OtherNaive(Predictor):
        name = "naive"

        def predict_quantiles(self, contexts, horizon):
            return np.zeros((len(contexts), len(self.quantile_levels), horizon))

    with pytest.raises(PredictorError) as err:
        registry.register(OtherNaive)
    assert "predictors.baselines.NaivePredictor" in str(err.value) and "OtherNaive" in str(err.value)
    assert registry.predictor_class("naive") is NaivePredictor  # the first registration stands


def _listing(capsys) -> dict[str, list[str]]:
    """``python -m engine predictors`` as {name: [trained, extra, covariates]} (columns split on 2+ spaces)."""
    assert main(["predictors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", lines[0])[:4] == ["name", "trained", "extra", "covariates"]
    return {cells[0]: cells[1:4] for cells in (re.split(r"\s{2,}", line) for line in lines[1:]) if cells[0] in
            registry.available()}


def test_the_listing_names_each_extra_whether_it_is_installed_and_the_covariates(capsys, clean_registry, monkeypatch):
    class Needy(NaivePredictor):
        """A plugin needing an extra that is not installed."""
        name = "needy"
        extra = "needy"
        extra_modules = ("a_module_nobody_installed",)

    registry.register(Needy)
    rows = _listing(capsys)
    assert rows["needy"][1] == ".[needy] (missing)" and rows["naive"][1:] == ["-", "-"]
    assert rows["kronos"][1] == ".[kronos]" and rows["tirex"][1] == ".[tirex]" and rows["neural"][1] == ".[stage2]"
    assert rows["moirai"][1] in (".[moirai]", ".[moirai] (missing)")  # installed or not, the extra is named
    assert rows["toto"][1] in (".[toto]", ".[toto] (missing)")
    assert rows["chronos"][2] == "past+future" and rows["timesfm"][2] == "-"
    monkeypatch.setitem(sys.modules, "tirex", None)  # as if tirex-ts were not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tirex" else object())
    assert _listing(capsys)["tirex"][1] == ".[tirex] (missing)"


def test_an_extra_without_its_modules_is_refused():
    with pytest.raises(PredictorError, match="extra = 'half'.*declare both"):
        class Half(NaivePredictor):
            name = "half"
            extra = "half"


def test_a_predictor_with_its_own_constructor_is_refused():
    with pytest.raises(PredictorError, match="defines __init__.*cache key"):
        class Sneaky(Predictor):  # noqa: F841 - defining it is the test
            name = "sneaky"

            def __init__(self, lookback: int = 5, **kwargs):
                super().__init__(**kwargs)
                self.lookback = lookback

            def predict_quantiles(self, contexts, horizon):
                return np.zeros((len(contexts), len(self.quantile_levels), horizon))


# -- configs: one validation style, checked when the config loads ------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"predictor.params.momentum.lookback": -3}, "predictor.params.momentum.lookback = -3 must be an integer >= 1"),
    ({"predictor.params.momentum.lokback": 3},
     "unknown key predictor.params.momentum.lokback (= 3); allowed in [predictor.params.momentum]: window, lookback. "
     "Did you mean 'lookback'?"),
    ({"predictor.params.naive.window": 1.5}, "predictor.params.naive.window = 1.5 must be an integer >= 2 or omitted"),
    ({"predictor.params.chronos.device": "tpu"},
     "predictor.params.chronos.device = 'tpu' must be one of 'auto', 'cpu', 'cuda', 'mps'"),
    ({"predictor.params.chronos.top_p": 1.5}, "predictor.params.chronos.top_p = 1.5 must be a number in (0, 1] or omitted"),
    ({"predictor.params.llmtime.value_sep": "  "}, "predictor.params.llmtime.value_sep = '  ' must be a separator"),
    ({"predictor.params.llmtime.on_failed_window": "nan"},
     "predictor.params.llmtime.on_failed_window = 'nan' must be one of 'zero', 'raise'"),
    ({"predictor.params.timesfm.normalize_inputs": 1}, "predictor.params.timesfm.normalize_inputs = 1 must be true or false"),
])
def test_parameter_tables_are_checked_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, {"predictor.name": "naive", **overrides})
    assert str(err.value).startswith(message), str(err.value)


def test_model_for_a_predictor_without_one_is_a_clear_cli_error(tmp_path, shared_data, capsys):
    code = main(["backtest", str(ROOT / "strategies/llm_signal.py"), "--predictor", "momentum", "--model", "gpt2",
                 "--data-dir", str(shared_data), "--out", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "predictor.model = 'gpt2', but predictor 'momentum' takes no model" in err
    assert "Traceback" not in err


def test_compare_gives_model_and_revision_only_to_configs_that_take_them(tmp_path, clean_registry):
    bad = load_config(None, {"predictor.params.with_model.modl": "y"})  # a table of a plugin not registered yet

    @dataclasses.dataclass(frozen=True)
    class WithModelConfig(PluginConfig):
        model: str = "default"

    @registry.register
    class WithModel(Predictor):
        name = "with_model"
        config_class = WithModelConfig

        def predict_quantiles(self, contexts, horizon):
            return np.zeros((len(contexts), len(self.quantile_levels), horizon))

    cfg = load_config(None, {"predictor.name": "chronos", "predictor.model": "m/x", "predictor.revision": "abc"})
    naive = variant(cfg, "BTC/USDT", "naive", tmp_path).predictor
    assert (naive.model, naive.revision) == ("", "")
    takes = variant(cfg, "BTC/USDT", "with_model", tmp_path).predictor
    assert (takes.model, takes.revision) == ("m/x", "")  # takes a model, no revision
    assert takes.predictor_params() == {"model": "m/x"}
    with pytest.raises(UserInputError, match=r"unknown key predictor\.params\.with_model\.modl.*Did you mean 'model'"):
        variant(bad, "BTC/USDT", "with_model", tmp_path)


def test_a_module_class_plugin_reads_the_table_of_its_name():
    name = "tests.leaky_plugins:FileLeak"  # FileLeak.name == "file_leak"
    by_name = load_config(None, {"predictor.name": name, "predictor.params.file_leak.noise": 0.1}).predictor
    assert by_name.predictor_params() == {"noise": 0.1}
    literal = load_config(None, {"predictor.name": name, "predictor.params": {name: {"noise": 0.2}}}).predictor
    assert literal.predictor_params() == {"noise": 0.2}
    both = load_config(None, {"predictor.name": name, "predictor.params": {name: {}, "file_leak": {}}}).predictor
    with pytest.raises(PredictorError, match="keep one table"):
        both.predictor_params()


# -- the config is the cache key ---------------------------------------------------------------------
def _other_value(f: dataclasses.Field, value, model_dir: Path):
    """A different valid value for field ``f`` of a built-in config."""
    special = {"model": str(model_dir), "revision": "v2", "digit_sep": "", "value_sep": " ;", "device": "auto",
               "d_model": 64, "n_heads": 8,  # patchtst: n_heads must divide d_model
               "target_modules": "q_proj,v_proj", "prompt_template": "{features}\n{history}",  # lora_llm
               "tokenizer": str(model_dir), "tokenizer_revision": "v2"}  # kronos
    if f.name in special:
        return special[f.name]
    spec = f.metadata.get("llm4mp_param")
    if spec is not None and spec.choices:
        return next(c for c in spec.choices if c not in (value, "auto", "cuda", "mps"))  # "auto" may resolve to value
    if isinstance(value, bool):
        return not value
    if value is None:
        return 0.5 if "float" in str(f.type) else 2
    if isinstance(value, int):
        return value + 1
    half = value / 2
    return half if spec is None or spec.allows(half) else value + 0.1


@pytest.mark.parametrize("name", BUILTINS)
def test_every_config_field_but_placement_knobs_is_in_the_cache_key(name, tmp_path, monkeypatch):
    if name in ("chronos", "kronos", "llmtime", "lora_llm", "timesfm", "tirex", "moirai", "toto"):
        pytest.importorskip("torch")
    if name == "timesfm":
        pytest.importorskip("timesfm")
        import predictors.timesfm

        # construction reads the checkpoint's family from its files (and refuses the other family's flags): the
        # empty folders here answer "2.5" and every flag is taken, so each field's own effect on the key shows
        monkeypatch.setattr(predictors.timesfm, "checkpoint_family", lambda path, model=None: "2.5")
        monkeypatch.setattr(predictors.timesfm, "_check_flags", lambda config, family: None)
    if name == "tirex":
        pytest.importorskip("tirex")
    if name == "moirai":  # construction checks that uni2ts imports (a ~6 s import, lightning + gluonts): a no-op instead
        import predictors.moirai

        monkeypatch.setattr(predictors.moirai, "import_moirai", lambda: None)
    if name == "toto":
        pytest.importorskip("toto.model.toto")
    if name == "ttm":  # construction checks that granite-tsfm imports (a ~6 s import): a no-op answers instead
        import predictors.ttm

        monkeypatch.setattr(predictors.ttm, "import_ttm", lambda: None)
    if name == "neural":
        # neural checks its model name and model_kwargs against the neuralforecast class (a ~6 s import):
        # a stand-in class with a hidden_size argument answers instead
        import predictors.neural

        class StandIn:
            def __init__(self, h, input_size, hidden_size=16, **kwargs):
                pass

        monkeypatch.setattr(predictors.neural, "model_class", lambda model: StandIn)
    folders = [tmp_path / "model_a", tmp_path / "model_b"]
    for folder in folders:
        folder.mkdir()  # local folders: constructing resolves the path and loads nothing
    cls = registry.predictor_class(name)
    base_params = {"model": str(folders[0]), "device": "cpu"} if cls.config_class.takes("model") else {}
    # neural's model is a neuralforecast class name, its model_kwargs a JSON object
    others = {"model": "NHITS", "model_kwargs": '{"hidden_size": 8}'} if name == "neural" else {}
    if name == "neural":
        base_params = {"model": "PatchTST", "device": "cpu"}
    if name == "kronos":  # a local model folder needs its tokenizer folder named
        base_params["tokenizer"] = str(folders[0])
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    base = registry.make_predictor(name, base_params)
    key = forecast_key(base, "data", 32, 3, idx)
    for f in dataclasses.fields(cls.config_class):
        if name == "lora_llm" and f.name == "quantize" and base.config.quantize == "none":
            continue  # without CUDA and bitsandbytes every choice resolves to "none" (and "4bit" is an error)
        other = others[f.name] if f.name in others else _other_value(f, getattr(base.config, f.name), folders[1])
        changed = registry.make_predictor(name, {**base_params, f.name: other})
        spec = f.metadata.get("llm4mp_param")
        knob = (spec is not None and not spec.key) or (
            f.name == "batch_size" and base.batch_invariant and changed.batch_invariant)
        assert (forecast_key(changed, "data", 32, 3, idx) == key) == knob, f"{name}.{f.name}"
    assert forecast_key(registry.make_predictor(name, base_params, seed=1), "data", 32, 3, idx) != key
    assert forecast_key(registry.make_predictor(name, base_params, quantile_levels=(0.2, 0.5, 0.8)),
                        "data", 32, 3, idx) != key


# -- stats hook and median helper --------------------------------------------------------------------
def test_stats_hook_default_is_empty_and_counters_are_typed():
    @dataclasses.dataclass(frozen=True)
    class SeenStats(PredictorStats):
        windows: int = 0

    class Counting(Predictor):
        name = "counting"
        stats_class = SeenStats

        def predict_quantiles(self, contexts, horizon):
            self.count("windows", len(contexts))
            return np.zeros((len(contexts), len(self.quantile_levels), horizon))

    assert registry.make_predictor("naive").stats().to_json() == {}
    pred = Counting()
    pred.predict(np.full((4, 8), 100.0), 2)
    pred.predict(np.full((3, 8), 100.0), 2)
    assert pred.stats() == SeenStats(windows=7) and pred.stats().to_json() == {"windows": 7}
    with pytest.raises(dataclasses.FrozenInstanceError):
        pred.stats().windows = 0


def test_median_index_is_the_level_nearest_one_half():
    assert median_index((0.1, 0.5, 0.9)) == 1
    assert median_index((0.2, 0.45, 0.6, 0.9)) == 1
    assert median_index((0.6, 0.7)) == 0
    assert param(3, ge=1) is not None  # param() is what configs declare fields with


# -- the documentation's plugin, through the CLI ---------------------------------------------------------------
def test_readme_plugin_example_backtests_through_the_cli(tmp_path, shared_data, monkeypatch, capsys, clean_registry):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "my_tilt.py").write_text(_readme_block("my_tilt.py"), encoding="utf-8")
    (tmp_path / "tilt.toml").write_text(_readme_block("tilt.toml"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(plugins))
    args = ["backtest", str(ROOT / "strategies/llm_signal.py"), "--predictor", "my_tilt:Tilt",
            "--config", str(tmp_path / "tilt.toml"), "--symbol", "BTC/USDT", "--timeframe", "1d",
            "--timerange", "20240101-20240701", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--no-tearsheet", "--set", "predictor.context_length=32", "--set", "predictor.horizon=3",
            "--set", "evaluation.bootstrap_samples=200"]
    assert main([*args, "--out", str(tmp_path / "runs")]) == 0
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text(encoding="utf-8"))
    assert metrics["predictor"] == {"name": "my_tilt:Tilt", "params": {"tilt": 0.001, "window": 24}}
    assert metrics["predictor_stats"]["windows"] >= 182  # every decision bar of the half year, via the hook
    assert registry.predictor_class("tilt").__module__ == "my_tilt"  # the module registered itself on import

    capsys.readouterr()
    code = main([*args, "--out", str(tmp_path / "bad"), "--set", "predictor.params.tilt.window=1"])
    err = capsys.readouterr().err.strip()
    # one line; "predictor: " comes first when the table is checked at build time (a fresh process)
    assert code == 2 and "\n" not in err and err.startswith("error: ")
    assert err.endswith("predictor.params.tilt.window = 1 must be an integer >= 2")
