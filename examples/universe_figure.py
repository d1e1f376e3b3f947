"""Draw a universe run's decile chart and equity curves as one PNG for the docs, from its run folder.

Usage: ``python examples/universe_figure.py RUN_DIR [--out docs/img/universe_backtest.png]``

Reads only what the run wrote (``metrics.json``'s ``cross_section.deciles`` and ``equity.csv``), so
the figure shows exactly the numbers the run printed. The docs' figure was made from the run whose
stdout is ``examples/universe_backtest.log`` (its first line is the command).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def draw(run_dir: Path, out: Path) -> Path:
    """Write the SVG (deciles left, equity right) and return its path."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    cs = metrics["cross_section"]
    deciles = cs["deciles"]
    equity = pd.read_csv(run_dir / "equity.csv", index_col=0, parse_dates=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    means = [100 * v for v in deciles["bucket_mean"]]
    left.bar(range(1, len(means) + 1), means, color=["#b03a2e" if v < 0 else "#1e8449" for v in means])
    left.axhline(0, color="black", linewidth=0.6)
    left.set_xticks(range(1, len(means) + 1))
    left.set_xlabel("forecast bucket (1 = lowest forecasts)")
    left.set_ylabel(f"mean log return per {cs['horizon']} bars, %")
    left.set_title(f"deciles: top - bottom {100 * deciles['spread_mean']:+.3f} %, t = {deciles['spread_t']:.2f}",
                   fontsize=10)
    names = {"equity": "strategy", "equal_weight_universe": "equal-weight universe", "buy_and_hold_btc": "buy & hold BTC"}
    for column, label in names.items():
        if column in equity:
            right.plot(equity.index, equity[column], label=label, linewidth=1)
    right.set_yscale("log")
    right.set_ylabel("equity (log scale)")
    right.legend(fontsize=8, frameon=False)
    right.set_title(f"Rank IC {cs['rank_ic']['mean']:+.4f} (t = {cs['rank_ic']['t_stat']:.2f}) at h = {cs['horizon']}",
                    fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "universe_backtest.png")
    args = ap.parse_args()
    print(f"written {draw(args.run_dir, args.out)}")


if __name__ == "__main__":
    main()
