"""A universe's coins forecast in --jobs local processes or as Ray tasks (engine/runs/compare.py's ``_execute``):
the same forecasts, cache files and results as one process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine import cli
from engine.core.config import ConfigError, load_config
from engine.runs.pipeline import build_predictor
from engine.runs.universe import coin_groups, universe_forecasts
from feeds.universe import load_universe
from tests.conftest import ROOT, SHARED_DATA

COINS = ["ADA/USDT", "DOGE/USDT", "IMX/USDT", "TRX/USDT", "XLM/USDT", "ETC/USDT"]


def _cfg(tmp, **over):
    return load_config(None, {"data.data_dir": str(SHARED_DATA / "universe"), "data.timeframe": "1d",
                              "data.timerange": "20211201-20220601", "data.cache_dir": str(tmp / "cache"),
                              "predictor.name": "momentum", "predictor.context_length": 30, "predictor.horizon": 5,
                              "predictor.batch_size": 64, "output.progress": False, **over})


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("universe-parallel")
    return load_universe("six", COINS, "1d", _cfg(tmp).data.range, data_dirs=(SHARED_DATA / "universe",),
                         cache_dir=tmp, exchange_id="binance", warmup_bars=29, progress=False)


def test_coin_groups_are_contiguous_and_balanced():
    assert coin_groups([10, 10, 10, 10], 2) == [[0, 1], [2, 3]]
    assert coin_groups([30, 5, 5, 5, 5], 2) == [[0], [1, 2, 3, 4]]
    assert coin_groups([1, 1], 5) == [[0], [1]] and coin_groups([3], 1) == [[0]]
    groups = coin_groups([7, 3, 9, 1, 4, 4], 3)
    assert [i for g in groups for i in g] == list(range(6)) and len(groups) == 3


def test_jobs_2_gives_the_sequential_forecasts_and_cache_files(universe, tmp_path):
    seq = universe_forecasts(_cfg(tmp_path / "a"), universe, build_predictor(_cfg(tmp_path / "a")))
    cfg = _cfg(tmp_path / "b")
    par = universe_forecasts(cfg, universe, build_predictor(cfg), jobs=2)
    assert not any(par.cache_hits.values()) and list(par.forecasts) == list(seq.forecasts)
    for symbol, f in seq.forecasts.items():
        np.testing.assert_array_equal(par.forecasts[symbol].values, f.values)
        assert par.forecasts[symbol].index.equals(f.index)
    names = lambda t: sorted(p.name for p in (t / "cache" / "forecasts").iterdir())  # noqa: E731
    assert names(tmp_path / "a") == names(tmp_path / "b")  # the same keys, stored by the parent
    again = universe_forecasts(cfg, universe, build_predictor(cfg))  # one process finds what the workers made
    assert all(again.cache_hits.values())
    with pytest.raises(ConfigError, match="--jobs 0"):
        universe_forecasts(cfg, universe, build_predictor(cfg), jobs=0)


def test_jobs_without_a_universe_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = cli.main(["backtest", "strategies/llm_signal.py", "--data-dir", str(SHARED_DATA), "--jobs", "2",
                     "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--jobs and --ray spread a universe's coins" in err and "Traceback" not in err


@pytest.mark.slow  # four universe runs, two of them in worker processes
def test_compare_on_a_universe_with_jobs_2_is_the_sequential_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    boards = {}
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        code = cli.main(["compare", "strategies/rank_long_short.py", "--universe", ",".join(COINS[:4]),
                         "--predictors", "momentum,reversal", "--data-dir", str(SHARED_DATA / "universe"),
                         "--timeframe", "1d", "--timerange", "20220101-20220601", "--jobs", jobs, "--out", str(out),
                         "--set", f'data.cache_dir="{out / "cache"}"', "--set", "predictor.context_length=30",
                         "--set", "predictor.horizon=3", "--set", "strategy.rank_long_short.k=1",
                         "--set", "evaluation.bootstrap_samples=200"])
        assert code == 0, capsys.readouterr()
        (folder,) = [p for p in out.iterdir() if "compare" in p.name]
        board = pd.read_csv(folder / "leaderboard.csv")
        boards[jobs] = (board.drop(columns=["run_dir"]),
                        [json.loads((folder / r / "metrics.json").read_text()) for r in board["run_dir"]])
    pd.testing.assert_frame_equal(boards["1"][0], boards["2"][0], check_exact=True)
    for a, b in zip(boards["1"][1], boards["2"][1]):
        assert a["cross_section"] == b["cross_section"] and a["performance"] == b["performance"]
        assert a["significance"] == b["significance"]


@pytest.mark.slow
@pytest.mark.soak  # starts a local Ray cluster (~15 s), as tests/test_compare.py's Ray test
def test_ray_tasks_give_the_sequential_forecasts(universe, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # see tests/test_compare.py: no token written to ~/.ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        cfg = _cfg(tmp_path / "r")
        via_ray = universe_forecasts(cfg, universe, build_predictor(cfg), ray_address="auto")
    finally:
        ray.shutdown()
    seq = universe_forecasts(_cfg(tmp_path / "s"), universe, build_predictor(_cfg(tmp_path / "s")))
    for symbol, f in seq.forecasts.items():
        np.testing.assert_array_equal(via_ray.forecasts[symbol].values, f.values)
