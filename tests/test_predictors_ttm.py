"""The `ttm` predictor (IBM Granite Tiny Time Mixers through granite-tsfm) on tiny random-weight TTMs built from
a config in a temp dir and loaded with ``from_pretrained(path)`` as the hub branches are: forecasts, point vs
quantile-head checkpoints, batch invariance, past-only windows, the install hint, offline behaviour, and a CLI
backtest with the lookahead check. Importing granite-tsfm alone takes seconds (it imports datasets and
scikit-learn), so the tests that load a model are marked slow. Weights are random: nothing here is about accuracy."""

from __future__ import annotations

import json
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import predictors.ttm as ttm
from engine.cli import main as cli_main
from predictors import make_predictor
from predictors.base import PredictorError
from predictors.contamination import training_cutoff
from predictors.registry import available
from predictors.training import channel_array
import tiny_models
from conftest import read_shared_csv

ROOT = Path(__file__).resolve().parents[1]
needs_tsfm = pytest.mark.skipif(find_spec("tsfm_public") is None, reason="needs granite-tsfm (extra .[ttm])")
LEVELS = (0.1, 0.5, 0.9)


# -- cheap: no granite-tsfm import ---------------------------------------------------------------------
def test_ttm_is_listed_with_its_extra(capsys):
    assert "ttm" in available()
    assert cli_main(["predictors"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("ttm "))
    assert line.split()[2] == ".[ttm]"  # the extra column (installed here: CI installs granite-tsfm)


def test_a_missing_granite_tsfm_is_one_line_naming_the_extra_and_the_conflict(monkeypatch):
    # `import tsfm_public...` now fails as if not installed: the package and every submodule an earlier test on this
    # worker imported (a cached `tsfm_public.models.tinytimemixer` would import fine whatever its parent says)
    for name in ["tsfm_public", *[m for m in sys.modules if m.startswith("tsfm_public.")]]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(PredictorError) as err:
        make_predictor("ttm", {"model": str(ROOT), "device": "cpu"})
    msg = str(err.value)
    assert "\n" not in msg and "granite-tsfm" in msg and ".[ttm]" in msg
    assert "--no-deps granite-tsfm==0.3.11" in msg and "torch<2.12" in msg


def test_uncached_hub_model_offline_fails_fast_with_the_pinned_fetch_command(monkeypatch, empty_hf_cache):
    monkeypatch.setattr(ttm, "import_ttm", lambda: None)  # the package check is the test above; this one is the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")  # imported before the clock starts: the device pick needs it, the hub probe is timed
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        make_predictor("ttm", {"device": "cpu"})
    assert time.monotonic() - start < 3.0
    msg = str(err.value)
    pin = ttm.PINNED[ttm.DEFAULT_MODEL]
    assert "HF_HUB_OFFLINE" in msg and f"hf download {ttm.DEFAULT_MODEL} --revision {pin}" in msg


def test_pins_and_contamination(monkeypatch, tmp_path):
    assert len(ttm.PINNED[ttm.DEFAULT_MODEL]) == 40
    assert training_cutoff(ttm.DEFAULT_MODEL).strftime("%Y-%m") == "2024-10"
    monkeypatch.setattr(ttm, "import_ttm", lambda: None)
    pred = make_predictor("ttm", {"model": str(tmp_path), "device": "cpu", "revision": "90-30-ft-r2.1"})
    assert pred.model_info().training_cutoff is None  # an r2.1 branch: its date is not recorded, so not claimed
    # the model code is granite-tsfm's, outside the code fingerprint: its version is in the forecast cache key
    assert pred.cache_params()["granite_tsfm"] == ttm.tsfm_version()
    monkeypatch.setattr(ttm, "tsfm_version", lambda: "9.9.9")
    assert pred.cache_params()["granite_tsfm"] == "9.9.9"


def test_interpolation_between_the_heads_levels_and_the_point_warning():
    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    values = np.arange(9.0)[None, :] * np.array([[1.0], [2.0]])  # (2, 9)
    out = ttm.interpolate_levels(values, grid, (0.05, 0.25, 0.5, 0.95))
    np.testing.assert_allclose(out, [[0.0, 1.5, 4.0, 8.0], [0.0, 3.0, 8.0, 16.0]])
    assert ttm.TTMStats().warnings() == []
    assert "zero width" in ttm.TTMStats(point_windows=3).warnings()[0]


def test_the_frequency_token_is_the_windows_own_bar_spacing(btc_1h):
    spacing = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400, "1w": 604800}
    times = np.stack([np.arange(10) * s + 1_700_000_000 for s in spacing.values()]).astype(np.float64)
    assert ttm.freq_token(times).tolist() == [1, 3, 5, 7, 0, 8, 9]  # 4h: granite-tsfm's out-of-vocabulary 0
    gap = channel_array(btc_1h.iloc[:50], ttm.CHANNELS)[None, :, 1].copy()
    gap[0, 10:] += 7 * 3600  # one missing stretch: the median spacing is still one hour
    assert ttm.freq_token(gap).tolist() == [7]


# -- tiny random-weight TTMs (slow: the granite-tsfm import) -------------------------------------------
@pytest.fixture(scope="module")
def ttm_dirs(tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("tsfm_public")
    root = tmp_path_factory.mktemp("ttm")
    return {"point": str(tiny_models.build_ttm(root / "point")),
            "head": str(tiny_models.build_ttm(root / "head", quantile_head=True, seed=1)),
            "freq": str(tiny_models.build_ttm(root / "freq", freq_prefix=True, seed=2))}


@pytest.fixture(scope="module")
def windows(btc_1h) -> np.ndarray:
    table = channel_array(btc_1h.iloc[30000:30400], ttm.CHANNELS)
    return np.stack([table[e - 40:e] for e in (60, 130, 222, 300, 399)])  # (5, 40, 2) past-only windows


@pytest.fixture(scope="module")
def eth_windows() -> np.ndarray:
    table = channel_array(read_shared_csv("ETH_USDT-4h.csv").iloc[5000:5600], ttm.CHANNELS)
    return np.stack([table[e - 48:e] for e in (100, 250, 420, 599)])  # (4, 48, 2): another market and timeframe


def _relative(windows: np.ndarray, need: int = 32):
    """What the model gets: the last ``need`` closes over the last close, ``float32 (n, need, 1)``."""
    import torch

    close = windows[:, -need:, 0]
    return torch.from_numpy((close / close[:, -1:])[:, :, None].astype(np.float32))


def _make(path: str, **params):
    return make_predictor("ttm", {"model": path, "device": "cpu", **params}, quantile_levels=LEVELS)


@pytest.mark.slow
@needs_tsfm
def test_point_checkpoint_forecasts_every_level_as_the_point_and_says_so(ttm_dirs, windows):
    pred = _make(ttm_dirs["point"])
    out = pred.predict(windows, 6)
    assert out.shape == (5, 3, 6) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], out[:, 2])  # no spread invented: every level is the point forecast
    assert pred.stats().point_windows == 5 and pred.stats().warnings()
    # the model's own output, relative to the last close, is what comes out
    import torch

    with torch.inference_mode():
        raw = pred.model(past_values=_relative(windows), return_loss=False, return_dict=True)
    np.testing.assert_allclose(out[:, 1], np.log(raw.prediction_outputs[:, :6, 0].numpy()), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@needs_tsfm
def test_quantile_head_checkpoint_gives_its_own_ordered_quantiles(ttm_dirs, windows):
    pred = _make(ttm_dirs["head"])
    out = pred.predict(windows, 8)
    assert (np.diff(out, axis=1) >= 0).all() and (out[:, 2] - out[:, 0] > 0).any()
    assert pred.stats().point_windows == 0
    import torch

    with torch.inference_mode():
        raw = pred.model(past_values=_relative(windows), return_loss=False, return_dict=True)
    head = np.sort(np.log(raw.quantile_outputs[:, [0, 4, 8], :, 0].numpy()), axis=1)  # levels 0.1, 0.5, 0.9
    np.testing.assert_allclose(out, head, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@needs_tsfm
@pytest.mark.parametrize("market", ["btc_1h", "eth_4h"])
def test_batches_prices_scale_and_older_bars_do_not_change_a_window(ttm_dirs, windows, eth_windows, market):
    windows = windows if market == "btc_1h" else eth_windows
    for kind in ("point", "head", "freq"):
        whole = _make(ttm_dirs[kind], batch_size=64).predict(windows, 4)
        one_by_one = _make(ttm_dirs[kind], batch_size=1).predict(windows, 4)
        np.testing.assert_allclose(whole, one_by_one, rtol=1e-5, atol=1e-6)
        scaled = _make(ttm_dirs[kind]).predict(windows * np.array([7.0, 1.0]), 4)  # prices x 7, times kept
        np.testing.assert_allclose(whole, scaled, rtol=1e-4, atol=1e-5)
        older = windows.copy()
        older[:, :-32, 0] *= 1.5  # closes before the checkpoint's 32-bar context
        np.testing.assert_array_equal(_make(ttm_dirs[kind]).predict(older, 4), whole)


@pytest.mark.slow
@needs_tsfm
def test_an_r21_style_checkpoint_reads_the_frequency_token_of_the_windows_spacing(ttm_dirs, windows):
    pred = _make(ttm_dirs["freq"])
    out = pred.predict(windows, 4)
    import torch

    with torch.inference_mode():
        raw = pred.model(past_values=_relative(windows), return_loss=False, return_dict=True,
                         freq_token=torch.full((len(windows),), 7))  # 1h bars: token 7
    np.testing.assert_allclose(out[:, 1], np.log(raw.prediction_outputs[:, :4, 0].numpy()), rtol=1e-5, atol=1e-6)
    daily = windows.copy()
    daily[:, :, 1] = daily[:, -1:, 1] + (np.arange(daily.shape[1]) - daily.shape[1] + 1) * 86400.0
    assert not np.allclose(pred.predict(daily, 4), out)  # same closes, daily bars: another token, another forecast


@pytest.mark.slow
@needs_tsfm
def test_short_windows_and_long_horizons_are_refused_with_the_numbers(ttm_dirs, windows):
    pred = _make(ttm_dirs["point"])
    with pytest.raises(PredictorError, match="reads 32 bars but the windows hold 20"):
        pred.predict(windows[:, -20:], 4)
    with pytest.raises(PredictorError, match="forecasts 8 bars, predictor.horizon = 9"):
        pred.predict(windows, 9)


@pytest.mark.slow
@needs_tsfm
def test_cli_backtest_btc_1d_with_the_frequency_token_passes_the_lookahead_check(shared_data, ttm_dirs, tmp_path,
                                                                                  capfd, monkeypatch):
    """In process (granite-tsfm is imported already: a subprocess would import it again, ~6 s)."""
    monkeypatch.chdir(tmp_path)
    args = ["backtest", str(ROOT / "strategies/llm_signal.py"),
            "--config", str(ROOT / "config.toml"), "--data-dir", str(shared_data), "--symbol", "BTC/USDT",
            "--timeframe", "1d", "--timerange", "20240101-20240201", "--predictor", "ttm", "--model", ttm_dirs["freq"],
            "--set", "predictor.params.ttm.device=cpu", "--set", "predictor.context_length=32",
            "--set", "predictor.horizon=2", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--no-tearsheet"]
    assert cli_main(args) == 0
    out, err = capfd.readouterr()
    assert "lookahead check: passed" in out
    run_dir = Path(out.split("run folder: ")[-1].strip())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["lookahead"]["ok"] and metrics["model"]["name"] == ttm_dirs["freq"]
    assert metrics["market"]["first_bar"].startswith("2024-01-01")
    # an r2.1-style point checkpoint on daily bars: every window forecast is a point, and the run says so
    assert metrics["predictor_stats"]["point_windows"] >= 31 and "point-only TTM checkpoint" in out + err
