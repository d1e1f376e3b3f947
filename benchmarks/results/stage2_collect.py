"""Collect a stage-2 comparison into ``benchmarks/results/stage2.json`` (the stage-2 tables of docs/results.md).

``bash benchmarks/results/stage2.sh`` runs the comparison, then this script. It reads the newest compare
folder under the config's ``[output] dir`` (or ``--compare-dir``): ``leaderboard.csv`` for every number of
the results table (per market x predictor: return, buy-and-hold, random sign, Sharpe and its 95 % CI,
trades, fees, MASE, validation pinball, directional accuracy and its p-value, Diebold-Mariano statistic
and p-value, DSR) and each run folder's ``metrics.json`` for the verdicts' p-values (chance, versus
buy-and-hold, DSR and its trial count), the lookahead check, the plausibility flags, the fold plan and
the training seconds. It writes them with the command, git commit, machine and date
(``benchmarks/results_io.write_result``), then prints the block rendered from the JSON
(``python benchmarks/readme_results.py --write`` puts it into docs/results.md).

Usage: ``python benchmarks/results/stage2_collect.py [--compare-dir DIR] [--wall-s SECONDS] [--command CMD]``.
Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_result  # noqa: E402

CONFIG = ROOT / "benchmarks" / "results" / "stage2.toml"
DEFAULT_COMMAND = "bash benchmarks/results/stage2.sh"

#: leaderboard.csv columns kept per row (numbers; empty cells are NaN -> null).
NUMERIC = ("total_return", "bh_total_return", "random_sign_total_return", "sharpe", "sharpe_ci_low", "sharpe_ci_high",
           "n_trades", "fees_paid", "mase", "valid_pinball", "dir_accuracy", "dir_p_value", "dm_stat", "dm_p_value",
           "psr", "dsr", "sortino", "max_drawdown", "mae", "crps")


def _float(text: str) -> float | None:
    if text is None or text.strip() == "" or text.strip().lower() == "nan":
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def newest_compare(out_dir: Path) -> Path:
    """The newest ``*-compare-*`` folder with a ``leaderboard.csv`` under ``out_dir``."""
    found = sorted(p for p in out_dir.glob("*-compare-*") if (p / "leaderboard.csv").is_file())
    if not found:
        raise SystemExit(f"no finished comparison (a *-compare-* folder with leaderboard.csv) under {out_dir}; "
                         f"run: {DEFAULT_COMMAND}")
    return found[-1]


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def run_facts(metrics: dict[str, Any]) -> dict[str, Any]:
    """What docs/results.md says about one run beside the leaderboard numbers, from its metrics.json."""
    sig = metrics.get("significance") or {}
    look = metrics.get("lookahead") or {}
    walk = _get(look, "stats", "walk_forward") or {}
    training = metrics.get("training") or []
    folds = _get(metrics, "fold_plan", "folds") or []
    return {
        "n_bars": _get(metrics, "market", "n_bars"),
        "first_bar": _get(metrics, "market", "first_bar"),
        "last_bar": _get(metrics, "market", "last_bar"),
        "n_returns": sig.get("n"),
        "chance_p_value": sig.get("chance_p_value"),
        "bh_p_value": _get(sig, "versus_buy_and_hold", "ir_p_value"),
        "bh_verdict": _get(sig, "versus_buy_and_hold", "verdict"),
        "dsr_p_value": sig.get("dsr_p_value"),
        "n_trials": sig.get("n_trials"),
        "verdict": sig.get("verdict"),
        "lookahead_ok": look.get("ok"),
        "refit_fold": walk.get("refit_fold"),
        "refit_fresh_process": walk.get("refit_fresh_process"),
        "refit_digest_matches": (walk["refit_digest"] == walk["served_digest"]) if walk.get("refit_digest") else None,
        "folds": len(folds) or None,
        "embargo_bars": _get(metrics, "fold_plan", "embargo_bars"),
        "folds_trained_now": sum(1 for m in training if m.get("trained_now")) if training else None,
        "train_seconds": sum(m.get("train_seconds") or 0.0 for m in training) if training else None,
        "suspicious": metrics.get("suspicious") or [],
        "invalid": metrics.get("invalid"),
    }


def collect(compare_dir: Path) -> list[dict[str, Any]]:
    """One dict per leaderboard row, in the leaderboard's order (symbol, then Sharpe)."""
    rows = []
    with (compare_dir / "leaderboard.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [key for key in ("symbol", "predictor", "run_dir", *NUMERIC) if key not in (reader.fieldnames or ())]
        if absent:  # a renamed column would otherwise read as n/a in docs/results.md
            raise SystemExit(f"{compare_dir / 'leaderboard.csv'} has no column(s) {', '.join(absent)}: the leaderboard "
                             f"changed; update NUMERIC in benchmarks/results/stage2_collect.py and render_stage2 in "
                             f"benchmarks/readme_results.py")
        for line in reader:
            row: dict[str, Any] = {"symbol": line["symbol"], "predictor": line["predictor"]}
            row.update({key: _float(line.get(key, "")) for key in NUMERIC})
            row["n_trades"] = None if row["n_trades"] is None else int(row["n_trades"])
            row["leaderboard_verdict"] = line.get("verdict")
            run_dir = compare_dir / line["run_dir"]
            row["run_dir"] = str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir)
            metrics_path = run_dir / "metrics.json"
            if not metrics_path.is_file():
                raise SystemExit(f"{metrics_path} is missing: the comparison did not finish; re-run {DEFAULT_COMMAND}")
            row.update(run_facts(json.loads(metrics_path.read_text())))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-dir", type=Path, help="a compare folder (default: the newest under [output] dir)")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--wall-s", type=float, help="seconds the comparison took (stage2.sh measures it)")
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="the command that ran the comparison")
    parser.add_argument("--results-dir", type=Path, help="where stage2.json goes (default benchmarks/results)")
    args = parser.parse_args(argv)
    config = tomllib.loads(args.config.read_text())
    out_dir = ROOT / config["output"]["dir"]
    compare_dir = args.compare_dir or newest_compare(out_dir)
    rows = collect(compare_dir)
    wall_s, wall_source = args.wall_s, "measured by stage2.sh"
    if wall_s is None:  # from the folder's name stamp (its creation, UTC) to the leaderboard's last write
        from datetime import datetime, timezone

        stamp = datetime.strptime(compare_dir.name[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
        wall_s = (compare_dir / "leaderboard.csv").stat().st_mtime - stamp.timestamp()
        wall_source = "compare folder's name stamp to leaderboard.csv's modification time"
    config_rel = str(args.config.resolve().relative_to(ROOT)) if args.config.resolve().is_relative_to(ROOT) else str(args.config)
    path = write_result("stage2", {"config_file": config_rel, "config": config,
                                   "compare_dir": str(compare_dir.relative_to(ROOT)) if compare_dir.is_relative_to(ROOT)
                                   else str(compare_dir)},
                        {"wall_s": wall_s, "wall_source": wall_source, "rows": rows}, command=args.command, results_dir=args.results_dir)
    from benchmarks.readme_results import render_block

    print(render_block("stage2", json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
