"""How often the live skill monitor (engine/paper/monitor.py) calls honest forecasts decayed, and how soon
it catches decayed ones, on real candles.

For BTC/USDT and ETH/USDT, 1h and 4h, at four start points spread over each file (15 %, 30 %, 45 %,
60 % of its candles, plus 2400 bars of history before each), and three stage-0 baselines (``drift``
L=64 H=4, ``naive`` L=96 H=8, ``momentum`` L=64 H=2), the band is made from the 2400 history bars
(:func:`reference_from_history`, 4 chunks) and 800 live bars are fed bar by bar to a
:class:`SkillMonitor` (window 100, min_resolved 30) with

- ``honest``: the baseline's own forecasts (what its band was made from, on later bars);
- ``narrow``: the same, spread around the median halved (intervals too narrow);
- ``biased``: the median shifted up by half the 80 % interval's half-width.

It prints, per case, the share of live bars the monitor read decayed and the first decayed bar, and a
summary: honest cases with any decayed bar and the mean share; decayed cases caught and the median
delay. These start points are not the ones the rule was written on (the last ~3000-7000 bars of each
file), except that the 4h files' 60 % point falls inside that stretch.
Usage: ``python benchmarks/monitor_rule.py`` (about 3 minutes on one core).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_result  # noqa: E402
from engine.paper.monitor import SkillMonitor, reference_from_history  # noqa: E402
from engine.forecasting.signals import context_windows  # noqa: E402
from predictors.registry import make_predictor  # noqa: E402

DATA = Path(os.environ.get("LLM4MP_SHARED_DATA", ROOT.parent / "shared" / "data"))
LEVELS = (0.1, 0.5, 0.9)
MARKETS = (("BTC_USDT-1h.csv", 3_600_000), ("ETH_USDT-1h.csv", 3_600_000),
           ("BTC_USDT-4h.csv", 14_400_000), ("ETH_USDT-4h.csv", 14_400_000))
MODELS = (("drift", 64, 4), ("naive", 96, 8), ("momentum", 64, 2))
HISTORY, LIVE = 2400, 800


def read(name: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / name)
    frame.index = pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True)
    return frame.astype("float64")


def variant(fc: np.ndarray, kind: str) -> np.ndarray:
    median = fc[:, 1:2, :]
    if kind == "narrow":
        return median + (fc - median) * 0.5
    if kind == "biased":
        return fc + 0.25 * (fc[:, 2:3, :] - fc[:, 0:1, :])
    return fc


def run(candles: pd.DataFrame, fc: np.ndarray, band, H: int, L: int, tf_ms: int) -> tuple[float, int | None]:
    closes, times = candles["close"].to_numpy(), candles.index.as_unit("ms").asi8
    windows = context_windows(closes, L)
    mon = SkillMonitor(LEVELS, H, tf_ms, window=100, band=band, min_resolved=30)
    decayed = []
    for i in range(len(windows)):
        pos = i + L - 1
        mon.add_close(int(times[pos]), float(closes[pos]))
        mon.add_decision(int(times[pos]), windows[i], fc[i], 1000.0)
        decayed.append(mon.decayed)
    first = next((i for i, d in enumerate(decayed) if d), None)
    return float(np.mean(decayed)), first


def main() -> None:
    rows = []
    for name, tf_ms in MARKETS:
        candles = read(name)
        for frac in (0.15, 0.30, 0.45, 0.60):
            pos = int(len(candles) * frac) + HISTORY
            for model, L, H in MODELS:
                predictor = make_predictor(model, {}, quantile_levels=LEVELS)
                band = reference_from_history(candles.iloc[pos - HISTORY: pos], predictor, L, H, bars=HISTORY)
                live = candles.iloc[pos - L + 1: pos + LIVE]
                fc = predictor.predict(np.array(context_windows(live["close"].to_numpy(), L)), H)
                for kind in ("honest", "narrow", "biased"):
                    share, first = run(live, variant(fc, kind), band, H, L, tf_ms)
                    rows.append((name[:-4], f"{candles.index[pos]:%Y-%m-%d}", model, kind, share, first))
                    print(f"{name[:-4]:13s} {candles.index[pos]:%Y-%m-%d} {model:9s} {kind:7s} decayed {share:6.1%}"
                          f" first at decision {first}", flush=True)
    table = pd.DataFrame(rows, columns=["market", "start", "model", "kind", "decayed_share", "first"])
    summary = {}
    print()
    for kind, part in table.groupby("kind", sort=False):
        caught = part["first"].notna()
        summary[kind] = {"cases": int(len(part)), "ever_decayed": int(caught.sum()),
                         "mean_decayed_share": float(part["decayed_share"].mean()),
                         "median_first_decayed": float(part.loc[caught, "first"].median()) if caught.any() else None}
        print(f"{kind:7s}: {caught.sum()}/{len(part)} cases ever decayed, mean share of bars decayed "
              f"{part['decayed_share'].mean():.1%}, median first decayed decision "
              f"{part.loc[caught, 'first'].median() if caught.any() else float('nan'):.0f}")
    write_result("monitor_rule", {
        "markets": [m for m, _ in MARKETS], "start_fractions": [0.15, 0.30, 0.45, 0.60],
        "models": [{"name": m, "context_length": L, "horizon": H} for m, L, H in MODELS], "history_bars": HISTORY,
        "live_bars": LIVE, "window": 100, "min_resolved": 30, "levels": list(LEVELS), "chunks": 4,
        "narrow": "spread around the median x 0.5", "biased": "median + 0.25 x (q0.9 - q0.1)",
    }, {"summary": summary, "rows": table.astype({"first": "float64"}).to_dict(orient="records")})

if __name__ == "__main__":
    main()
