"""Stage 2 end to end: `compare` with the three trained models beside naive, momentum and chronos.

Tiny sizes on real ETH/USDT 1h candles (two weeks traded, folds every 7 days, a month of history
before them): every trained model trains its folds inside the compare run, passes the lookahead
check (fold discipline, a re-fit of one fold in a fresh process, per-fold recomputation), writes a
run folder with its forecast page and fold plan, and stands on the leaderboard with its validation
pinball loss; the untrained predictors keep their usual output. (Tear-sheets are off here: quantstats
costs ~3 s per run and draws equity whatever the predictor; walk-forward backtests write theirs in
tests/test_walkforward.py and tests/test_predictors_lora.py.)
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiny_models
from engine.runs.compare import run_compare
from engine.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("patchtst", "lightgbm", "neural")
UNTRAINED = ("naive", "momentum", "chronos")


@pytest.mark.slow  # ~25 s on one core: three trained models x two folds, three fresh-process re-fits, six judged runs
@pytest.mark.skipif(find_spec("lightgbm") is None or find_spec("neuralforecast") is None,
                    reason="needs the stage2 extra (lightgbm, neuralforecast)")
def test_compare_puts_the_trained_models_beside_the_baselines(shared_data, tmp_path, two_torch_threads):
    bolt = tiny_models.build_chronos_bolt(tmp_path / "bolt")
    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1h",
        "data.timerange": "20240301-20240315", "data.cache_dir": str(tmp_path / "cache"),
        "predictor.context_length": 32, "predictor.horizon": 4, "predictor.batch_size": 256,
        "predictor.params.patchtst": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "patch_len": 8,
                                      "stride": 4},
        "predictor.params.lightgbm": {"n_estimators": 20, "num_threads": 1, "scale_window": 16},
        "predictor.params.neural": {"model": "PatchTST", "model_kwargs": '{"hidden_size": 16, "n_heads": 2, '
                                    '"encoder_layers": 1, "linear_hidden_size": 32, "patch_len": 8, "stride": 4}',
                                    "steps_per_epoch": 5},
        "predictor.params.chronos": {"model": str(bolt), "device": "cpu"},
        "training.retrain_every": "7d", "training.history_start": "20240201", "training.epochs": 2,
        "training.max_steps": 10, "training.batch_size": 64,
        "evaluation.bootstrap_samples": 200, "output.dir": str(tmp_path / "runs"), "output.progress": False,
        "output.tearsheet": False,
    })
    comparison = run_compare(cfg, ROOT / "strategies/llm_signal.py", [*TRAINED, *UNTRAINED], ["ETH/USDT"], jobs=1)

    board = pd.read_csv(comparison.out_dir / "leaderboard.csv")
    assert sorted(board["predictor"]) == sorted([*TRAINED, *UNTRAINED])
    assert (comparison.out_dir / "leaderboard.html").is_file()
    by_name = board.set_index("predictor")
    for name in TRAINED:
        result = comparison.results[("ETH/USDT", name)]
        run_dir = comparison.run_dirs[("ETH/USDT", name)]
        assert result.invalid is None, f"{name}: {result.invalid}"
        wf = result.walk_forward
        assert len(wf.models) == 2 and wf.trained_now == 2  # trained by the compare run itself
        assert result.lookahead.ok
        q = result.forecast.values
        assert q.shape == (len(result.bars), 3, 4) and np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [f["fold"] for f in metrics["fold_plan"]["folds"]] == [0, 1]
        assert all(r["valid_pinball"] > 0 for r in metrics["training"])
        assert by_name.loc[name, "valid_pinball"] == pytest.approx(
            np.mean([r["valid_pinball"] for r in metrics["training"]]))
        assert (run_dir / "forecast.html").is_file() and (run_dir / "equity.csv").is_file()
        assert "Walk-forward folds" in (run_dir / "forecast.html").read_text(encoding="utf-8")
    for name in UNTRAINED:
        assert np.isnan(by_name.loc[name, "valid_pinball"])
        assert comparison.results[("ETH/USDT", name)].walk_forward is None
