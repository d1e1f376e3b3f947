"""Parity, once by hand: a sim paper run of a trained ``patchtst`` against the backtest of the same stretch.

``tests/test_paper_trained.py`` checks this parity on every test run with the numpy ``LinearAR``
plugin; this script checks it with a real torch model (a tiny ``patchtst``, CPU), too slow for the
suite. A sim paper run on the loopback Binance stub, driven bar by bar by a manual clock, trades
``strategies/llm_signal.py`` over ``--bars`` real BTC/USDT 1h candles from 2024-01-10 with a fold every
``--retrain-every`` (at least two fold switches; each later fold retrained in the engine's background
process, the decision at its switch point waiting for it). Then the backtest of the same stretch
runs offline from the shared CSVs with the same config; it finds the paper run's checkpoints (same
keys) and trains nothing.

What it records (and prints), without hiding a difference:

- the same decisions, and the same fold and checkpoint serving each (count of decisions that differ);
- forecasts: the paper run forecasts one window at a time (batch of 1), the backtest in batches;
  the max |difference| over every decision, quantile and horizon step, in log-return units, and
  how many decisions differ at all (torch's batched and batch-of-1 kernels may differ in the last bits);
- fills: time, side, size, price, commission identical or not (max |difference| of each number);
- equity: max relative difference of the broker value.

Usage: ``python benchmarks/paper_parity_patchtst.py [--bars 120] [--epochs 5]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from binance_stub import DATA_DIR, BinanceStub  # noqa: E402
from engine.runs.backtest import run_backtest  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.paper.journal import Journal  # noqa: E402
from engine.paper.runner import JOURNAL_FILE, PaperRunner  # noqa: E402
from test_paper_helpers import (  # noqa: E402
    DELAY_MS, HOUR_MS, START, START_MS, STRATEGY, ManualClock, ManualTicks,
)

TINY_PATCHTST = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "patch_len": 8, "stride": 4, "device": "cpu"}


def overrides(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    """The config both runs share (the paper run's paper.* keys aside)."""
    return {
        "predictor.name": "patchtst", "predictor.context_length": 32, "predictor.horizon": 4,
        "predictor.params": {"patchtst": TINY_PATCHTST}, "predictor.cache": False,
        "data.cache_dir": str(tmp / "cache"), "training.retrain_every": args.retrain_every,
        "training.history_start": args.history_start, "training.epochs": args.epochs, "training.device": "cpu",
        "training.profile": "paper",  # the sizes its README figures were measured with (no step cap, expanding)
        "strategy.llm_signal.threshold": args.threshold, "output.tearsheet": False, "output.progress": False,
        "evaluation.lookahead_samples": 0, "evaluation.random_sign_draws": 0,
    }


def paper_run(stub: BinanceStub, tmp: Path, args: argparse.Namespace) -> tuple[Path, int]:
    cfg = load_config(ROOT / "config.toml", {
        **overrides(tmp, args), "data.timerange": f"{START:%Y%m%d}-", "output.dir": str(tmp / "runs"),
        "paper.mode": "sim", "paper.api_url": stub.url, "paper.poll_delay_s": 1.0,
        "paper.late_candle_wait_s": 1800.0,  # the switch-point decision waits for its retrain (wall s, manual clock)
        "paper.late_candle_retry_s": 60.0, "paper.backoff_base_s": 0.01, "paper.request_timeout_s": 10.0,
    })
    clock = ManualClock(stub, START_MS + DELAY_MS)
    runner = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, args.bars), install_signals=False)
    outcome = runner.run()
    return outcome.run_dir, runner.models.retrains_started


def backtest(tmp: Path, args: argparse.Namespace):
    cfg = load_config(ROOT / "config.toml", {
        **overrides(tmp, args), "data.data_dir": str(DATA_DIR), "output.dir": str(tmp / "bt"),
        "data.timerange": f"{START_MS // 1000}-{(START_MS + args.bars * HOUR_MS) // 1000}",
    })
    return run_backtest(cfg, STRATEGY)


def compare(journal: Journal, bt, retrains: int) -> dict[str, object]:
    """Every comparison's number (see the module docstring)."""
    result = bt.result
    wf = result.walk_forward
    traded = journal.candles().query("traded == 1")
    same_decisions = bool(traded.index.equals(wf.decisions))
    out: dict[str, object] = {"decisions_paper": len(traded), "decisions_backtest": len(wf.decisions),
                              "same_decisions": same_decisions, "retrains_started": retrains,
                              "backtest_trained_now": int(wf.trained_now)}
    served = traded["fold"].to_numpy()
    folds = sorted(set(int(k) for k in served))
    out["folds_served"] = folds
    out["fold_switches"] = int((np.diff(served) != 0).sum())
    if not same_decisions:
        return out
    ckpts = {m.fold.k: m.directory.name for m in wf.models}
    out["decisions_other_fold"] = int((served != np.asarray(wf.served_by)).sum())
    out["decisions_other_checkpoint"] = int(sum(a != ckpts[k] for a, k in zip(traded["checkpoint"], wf.served_by)))
    paper_fc = np.array([json.loads(t) for t in traded["forecast"]], dtype=np.float64)  # (n, Q, H)
    bt_fc = result.forecast.values
    diff = np.abs(paper_fc - bt_fc)
    out["forecast_shape"] = list(paper_fc.shape)
    out["forecast_max_abs_diff"] = float(diff.max())
    out["forecast_decisions_differing"] = int((diff.reshape(len(diff), -1).max(axis=1) > 0).sum())
    out["forecast_median_abs_scale"] = float(np.median(np.abs(bt_fc)))
    fills = journal.fills()
    expected = result.fills.reset_index(drop=True)
    out["fills_paper"], out["fills_backtest"] = len(fills), len(expected)
    if len(fills) == len(expected):
        got = fills[expected.columns].reset_index(drop=True)
        out["fills_same_times"] = bool(got["time"].equals(expected["time"]))
        out["fills_same_sides"] = bool((got["side"] == expected["side"]).all())
        for col in ("size", "price", "commission"):
            out[f"fills_max_abs_diff_{col}"] = float(np.abs(got[col].to_numpy() - expected[col].to_numpy()).max()) \
                if len(got) else 0.0
        out["fills_identical"] = bool(out["fills_same_times"] and out["fills_same_sides"] and all(
            out[f"fills_max_abs_diff_{c}"] == 0.0 for c in ("size", "price", "commission")))
    else:
        out["fills_identical"] = False
    eq = journal.equity()["value"].to_numpy()
    out["equity_max_rel_diff"] = float(np.max(np.abs(eq / result.equity.to_numpy() - 1.0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=120, help="paper bars (1h) from 2024-01-10")
    parser.add_argument("--retrain-every", default="2d")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--history-start", default="20231201")
    parser.add_argument("--threshold", type=float, default=0.0, help="strategy.llm_signal.threshold")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from benchmarks.results_io import write_result

    with tempfile.TemporaryDirectory() as tmp, BinanceStub() as stub:
        tmp = Path(tmp)
        run_dir, retrains = paper_run(stub, tmp, args)
        bt = backtest(tmp, args)  # after the paper run: it finds the paper run's checkpoints
        journal = Journal(run_dir / JOURNAL_FILE)
        try:
            numbers = compare(journal, bt, retrains)
        finally:
            journal.close()
    for key, value in numbers.items():
        print(f"{key:>32}: {value}")
    write_result("paper_parity_patchtst", {
        "bars": args.bars, "symbol": "BTC/USDT", "timeframe": "1h", "start": f"{START:%Y-%m-%d}", "mode": "sim stub",
        "predictor": "patchtst", "params": TINY_PATCHTST, "context_length": 32, "horizon": 4,
        "retrain_every": args.retrain_every, "epochs": args.epochs, "history_start": args.history_start,
        "strategy": "llm_signal", "threshold": args.threshold,
    }, numbers)


if __name__ == "__main__":
    main()
