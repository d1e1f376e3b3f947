"""Command line: ``python -m engine {backtest,compare,sweep,lookahead,train,download,predictors,ledger,paper} ...``.

Every error of the project's family (:mod:`engine.core.errors`) prints one ``error:`` line and
exits with :func:`engine.core.errors.exit_code`: 2 when the user must fix the input (config,
data, strategy, predictor, model id, exchange or symbol name), 1 when retrying later may
work (network, exchange, model-hub outage, trial ledger, disk), an error raised by the
exchange client (any ``ccxt`` error) included. No tracebacks for either (``--debug`` shows them). Everything
the process prints, tracebacks included, passes :func:`engine.paper.secrets.redact`,
which hides the API key and secret (see that module).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from engine.core.config import FLAG_KEYS, MLFLOW_LOCAL, Config, ConfigError, flag_overrides, resolve_config
from engine.core.errors import EXIT_FIX_INPUT, EXIT_RETRY_LATER, error_line, exit_code
from engine.core.logs import setup_logging
from engine.paper.cli import add_paper_parser
from engine.paper.secrets import redact_output
from feeds.errors import ExchangeRequestError, ExchangeUnavailable
from predictors.registry import available, make_config, predictor_class
from reports.render.format import format_number
from reports.render.summary import summary_table
from reports.render.timings import timings_table
from reports.significance_types import Significance

if TYPE_CHECKING:
    from engine.judging.verdict import Verdict
    from engine.runs.pipeline import RunResult

EXIT_USER = EXIT_FIX_INPUT
EXIT_OPERATIONAL = EXIT_RETRY_LATER
#: Exchange errors of a command that can read candles from files: the offline route is printed under them.
FEED_EXCHANGE_ERRORS = (ExchangeRequestError, ExchangeUnavailable)
CANDLE_FILE_COMMANDS = ("backtest", "lookahead", "compare", "train", "sweep")
#: Printed under an exchange error of a command that needs candles: the offline route.
OFFLINE_HINT = (
    "offline: read candles from files instead with --data-dir FOLDER, e.g. --data-dir ../shared/data; the folder "
    "holds SYMBOL-TF.csv (or .parquet) per market, e.g. BTC_USDT-1h.csv ('/' written '_'), with the header "
    "timestamp,open,high,low,close,volume and timestamp = candle open time in epoch milliseconds UTC"
)


PROFILE_HELP = ("training size of trainable predictors for the keys you leave unset: cpu (minutes on a CPU), paper (the "
                "papers' sizes) or auto (paper with a CUDA device, else cpu; the default); training.profile")


def _add_market_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    p.add_argument("--exchange", help="ccxt exchange id, e.g. binance")
    p.add_argument("--symbol", help="market, e.g. BTC/USDT")
    p.add_argument("--timeframe", help="bar size, e.g. 1h")
    p.add_argument("--timerange", help="START-END as YYYYMMDD-YYYYMMDD; either side may be empty")
    p.add_argument("--data-dir", help="read candles from this folder of CSV/parquet files (offline)")
    p.add_argument("--cache-dir", help="ccxt download cache folder")
    p.add_argument("--exchange-url", help="base URL replacing the exchange's API host (a proxy or local stub)")


def _add_run_flags(p: argparse.ArgumentParser, *, predictor: bool = True) -> None:
    """Flags shared by the commands that run a strategy (backtest, lookahead, compare, paper)."""
    if predictor:
        p.add_argument("--predictor", help="predictor name (see `python -m engine predictors`) or module:Class")
    p.add_argument("--model", help="model hub id or local path for model predictors")
    p.add_argument("--out", help="output folder for run folders and the ledger")
    p.add_argument("--study", help="the study the run's trial counts in (evaluation.study; default \"default\")")
    p.add_argument("--profile", help=PROFILE_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set broker.fee=0.0005 --set strategy.llm_signal.stake=0.5")
    p.add_argument("--no-tearsheet", action="store_true", help="skip the quantstats HTML tear-sheet")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_mlflow_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--mlflow [URI]`` (output.mlflow) of the commands that write trial-ledger rows, and of ``ledger``."""
    p.add_argument("--mlflow", nargs="?", const=MLFLOW_LOCAL, metavar="URI",
                   help=f"mirror {what} into MLflow (install: pip install -e \".[mlflow]\"); URI: \"local\" "
                        "(the default: sqlite:///mlflow.db and ./mlruns in the working folder), a folder, "
                        "sqlite:///PATH.db or http://HOST:PORT of a tracking server")


def _add_check_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that run the lookahead check (backtest, compare, lookahead)."""
    p.add_argument("--thorough", action="store_true",
                   help="lookahead check: recheck every window in shuffled batches whatever the budget "
                        "(evaluation.lookahead_thorough), for a run meant to be trusted")


def _add_reconcile_flag(p: argparse.ArgumentParser) -> None:
    """``--reconcile SPAN|full`` (evaluation.universe_reconcile) of the commands that run a universe."""
    p.add_argument("--reconcile", metavar="SPAN|full",
                   help="universe runs: the stretch from the start also run on backtrader's event loop and reconciled "
                        "fill for fill with the fast path (the record), e.g. 2000bars or 90d; full = the whole run "
                        "(evaluation.universe_reconcile, default 1000bars)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Backtest and judge forecast-driven crypto strategies, after costs and beyond chance.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("backtest", help="backtest a strategy file with the configured predictor")
    bt.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    _add_market_flags(bt)
    _add_run_flags(bt)
    _add_check_flags(bt)
    _add_mlflow_flag(bt, "the run's ledger row (after it is written)")
    bt.add_argument("--universe", help="trade a portfolio strategy over a universe of coins: a name from config.toml's "
                    "[universes], a file of symbols, or \"ADA/USDT,DOGE/USDT,...\"")
    bt.add_argument("--timings", action="store_true", help="print the seconds of each step (metrics.json's timings)")
    bt.add_argument("--jobs", type=int, default=1, help="with --universe: forecast (train) the coins in this many local "
                    "processes (default 1)")
    bt.add_argument("--ray", metavar="ADDRESS", help="with --universe: forecast (train) the coins as Ray tasks on this "
                    "cluster, e.g. auto")
    _add_reconcile_flag(bt)

    dl = sub.add_parser("download", help="download candles into the local cache (incremental)")
    _add_market_flags(dl)

    sub.add_parser("predictors", help="list the available predictors")

    cp = sub.add_parser("compare", help="run several predictors x symbols on the same bars and costs; leaderboard")
    cp.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    _add_market_flags(cp)
    _add_run_flags(cp, predictor=False)
    _add_check_flags(cp)
    _add_mlflow_flag(cp, "every run's ledger row (after they are written)")
    cp.add_argument("--predictors", required=True, help='comma-separated predictor names or variants, e.g. naive,momentum,chronos,chronos[finetune="lora"] '
                    '(a variant\'s key=value pairs are TOML literals merged over [predictor.params.NAME])')
    cp.add_argument("--symbols", help="comma-separated markets, e.g. BTC/USDT,ETH/USDT (default: the config's symbol)")
    cp.add_argument("--universe", help="compare predictors on a portfolio strategy over a universe of coins: a name "
                    "from config.toml's [universes], a file of symbols, or \"ADA/USDT,DOGE/USDT,...\"")
    cp.add_argument("--jobs", type=int, default=2, help="local worker processes (default 2)")
    cp.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster instead, e.g. auto or ray://host:10001")
    cp.add_argument("--timings", action="store_true", help="print the seconds of each step of every run")
    _add_reconcile_flag(cp)

    sw = sub.add_parser("sweep", help="search strategy/predictor parameters with Optuna; deflated, checked on a holdout")
    sw.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    _add_market_flags(sw)
    _add_run_flags(sw)
    _add_mlflow_flag(sw, "every trial's and the holdout run's ledger row (after they are written)")
    sw.add_argument("--space", required=True,
                    help='parameters to search: "threshold=0.0:0.01, stake=0.3:1.0, predictor.lookback=6:96:int"; '
                         "RANGE is lo:hi, lo:hi:int, lo:hi:log, lo:hi:STEP or a|b|c")
    sw.add_argument("--trials", type=int, default=100, help="finished trials wanted in total (a rerun resumes; default 100)")
    sw.add_argument("--objective", default="sharpe", help="sharpe | sortino | total_return | calmar | excess (default sharpe)")
    sw.add_argument("--holdout", required=True,
                    help="START-END cut from --timerange and never searched; the best parameters run on it once")
    sw.add_argument("--sampler", default="tpe", help="tpe | grid | random (default tpe)")
    sw.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    sw.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    sw.add_argument("--ray", metavar="ADDRESS", help="evaluate trials as Ray tasks on this cluster, e.g. auto")
    sw.add_argument("--batch", type=int, default=8,
                    help="trials asked from Optuna at a time (default 8; results depend on it, not on --jobs)")
    sw.add_argument("--universe", help="sweep a portfolio strategy over a universe of coins: a name from config.toml's "
                    "[universes], a file of symbols, or \"ADA/USDT,DOGE/USDT,...\"")
    _add_reconcile_flag(sw)

    lg = sub.add_parser("ledger", help="list every trial recorded in the output folder's ledger")
    lg.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    lg.add_argument("--out", help="output folder holding ledger.sqlite")
    lg.add_argument("--symbol", help="only trials on this market")
    lg.add_argument("--timeframe", help="only trials on this timeframe")
    _add_mlflow_flag(lg, "the listed ledger rows (a back-fill; rows already mirrored are skipped)")

    la = sub.add_parser("lookahead", help="recompute forecasts and orders on truncated data; fail on any difference")
    la.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    _add_market_flags(la)
    _add_run_flags(la)
    _add_check_flags(la)
    la.add_argument("--samples", type=int, default=20,
                    help="at least this many decision times get their forecast recomputed (default 20)")
    la.add_argument("--budget", type=float, default=1.0,
                    help="keep sampling while the check has spent under this share of the run's time (default 1.0)")

    tr = sub.add_parser("train", help="train a trainable predictor's walk-forward folds (cached; resumes after Ctrl-C)")
    tr.add_argument("strategy", help="the strategy file the backtest will run (its folds are the backtest's)")
    _add_market_flags(tr)
    tr.add_argument("--predictor", help="a trainable predictor's name or module:Class")
    tr.add_argument("--model", help="model hub id or local path, for predictors that take one")
    tr.add_argument("--profile", help=PROFILE_HELP)
    tr.add_argument("--out", help="write the training report (train.json, summary.md, config.toml) to a new folder here")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key, e.g. --set training.epochs=5 --set training.retrain_every=30d")
    tr.add_argument("--jobs", type=int, default=1, help="train independent folds in this many local processes (default 1)")
    tr.add_argument("--ray", metavar="ADDRESS", help="train folds as Ray tasks on this cluster, e.g. auto")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")

    add_paper_parser(sub, _add_market_flags, _add_run_flags)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = flag_overrides({name: getattr(args, name, None) for name in FLAG_KEYS}, getattr(args, "set", []))
    if getattr(args, "no_tearsheet", False):
        out["output.tearsheet"] = False
    if getattr(args, "no_progress", False):
        out["output.progress"] = False
    if getattr(args, "thorough", False):
        out["evaluation.lookahead_thorough"] = True
    return out


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """``--config`` (default ./config.toml if present) + the flags + ``extra`` overrides
    (:func:`engine.core.config.resolve_config`, the Python API's rule too)."""
    return resolve_config(args.config, {**_overrides(args), **(extra or {})})


def _unchecked_words(result: "RunResult") -> str:
    """The verdict's lead on an unchecked run (the lookahead check did not run in full), else ""."""
    if not result.unchecked:
        return ""
    return ("UNCHECKED for lookahead (the check " + ("did not run" if not result.lookahead.ran else "did not run in full")
            + "; see the lookahead line) — ")
def dsr_words(sig: Significance) -> str:
    """``"DSR 0.412 over 7 trial(s)"``, or ``"DSR 0.204, not deflated: 1 comparable trial (...)"``."""
    if sig.deflated:
        return f"DSR {format_number(sig.dsr, '.3f')} over {sig.n_trials} trial(s)"
    return f"DSR {format_number(sig.dsr, '.3f')}, {sig.deflation}"


def print_judgement(result: "RunResult", verdict: "Verdict") -> None:
    """Forecast skill, significance and lookahead lines under the summary table."""
    last = result.skill.last_horizon
    h = last.h
    direction = last.directional
    print(
        f"forecast skill at h={h}: MAE {format_number(last.mae, '.5f')}, MASE {format_number(last.mase, '.3f')}, "
        f"CRPS {format_number(last.crps, '.5f')}, direction right {format_number(direction.accuracy, '.1%')}"
    )
    print(
        f"direction at h={h} on {direction.n_independent} non-overlapping outcomes: "
        f"{direction.direction}; Pesaran-Timmermann p = {format_number(direction.pt_p_value, '.3g')}"
    )
    if result.versus_naive:
        print(f"forecast error versus naive (Diebold-Mariano): {result.versus_naive.verdict}")
    sig = verdict.significance
    if isinstance(sig, Significance):
        ci = sig.sharpe_ci
        print(
            f"Sharpe {format_number(sig.sharpe, '.2f')}, {1 - result.config.evaluation.alpha:.0%} CI "
            f"[{format_number(ci.lower, '.2f')}, {format_number(ci.upper, '.2f')}], PSR {format_number(sig.psr, '.3f')}, "
            f"{dsr_words(sig)}"
        )
        if sig.trials:
            print(f"  {'deflated by' if sig.deflated else 'counted'} {sig.trials.how}")
        if result.random_sign is not None:
            print(result.random_sign.summary())
        print(f"verdict: {_unchecked_words(result)}{sig.verdict}")
    else:
        print(f"significance: {sig.verdict if sig else None}")  # not testable, or {} when not judged
    look = result.lookahead
    print(look.summary())
    if look.stats.walk_forward is not None:
        print("  " + look.stats.walk_forward.describe().replace("\n", "\n  "))
    for note in look.notes:
        print(f"  note: {note}")


def print_timings(columns: dict[str, dict[str, float]], order: Sequence[str]) -> None:
    """The ``--timings`` table: metrics.json's ``timings`` of each run, steps in ``order``."""
    print("timings (seconds per step, as metrics.json records them; imports and start-up not counted):")
    print(timings_table(columns, order))


# Each command loads the modules it runs when it runs (`LAZY_COMMAND_IMPORTS`): `--help`, `predictors`,
# `ledger` and a config error answer in ~0.6 s instead of the ~2 s the backtest path (scipy, ccxt,
# backtrader) costs to import. tests/test_architecture.py still counts these imports in its cycle check.
def cmd_backtest(args: argparse.Namespace) -> int:
    cfg = _config(args)  # first: a config error answers before the backtest path is imported
    from engine.runs.backtest import run_backtest
    from engine.runs.run_folder import TIMING_STEPS

    if cfg.data.universe:
        return _backtest_universe(cfg, args)
    if args.jobs != 1 or args.ray:
        raise ConfigError("--jobs and --ray spread a universe's coins (backtest --universe); a single-market backtest "
                          "runs in one process: drop them, or use compare/train for parallel runs")
    backtest = run_backtest(cfg, args.strategy)
    result = backtest.result
    d = cfg.data
    _print_run_status(result.invalid, result.unchecked, result.lookahead.ran)
    print(
        f"{result.strategy_name} | predictor {cfg.predictor.name} | {d.symbol} {d.timeframe} | "
        f"{result.bars.index[0]:%Y-%m-%d %H:%M} -> {result.bars.index[-1]:%Y-%m-%d %H:%M} UTC | "
        f"{len(result.bars)} bars | fee {cfg.broker.fee:.4%}, slippage {cfg.broker.slippage:.4%} per fill"
    )
    columns = {"strategy": result.metrics, **result.baselines}
    if "naive" in columns:
        columns["same strategy on naive"] = columns.pop("naive")
    print(summary_table(columns))
    for finding in result.suspicious:
        print(finding.replace("suspicious", "SUSPICIOUS", 1))
    print_judgement(result, backtest.verdict)
    if result.forecast_cache_hit:
        print("forecasts: cache hit, no inference ran")
    if result.fallback is not None:
        print(f"forecast fallback: {result.fallback.text}")
    if result.walk_forward is not None:
        wf = result.walk_forward
        print(f"walk-forward: {len(wf.models)} folds every {wf.plan.retrain_every}, {wf.trained_now} trained by this run, "
              f"{len(wf.models) - wf.trained_now} from stored checkpoints (fold plan in metrics.json)")
    for warning in result.warnings:
        print(f"warning: {warning}")
    if args.timings:
        print_timings({"seconds": backtest.timings}, TIMING_STEPS)
    return _finish_run(backtest.run_dir, result.invalid, result.invalid and (result.lookahead.describe() or result.invalid))


def _print_run_status(invalid: str | None, unchecked: bool, lookahead_ran: bool) -> None:
    """A backtest's first line when its numbers are not a result: INVALID (a check failed) or UNCHECKED (the
    lookahead check did not run in full); nothing otherwise."""
    if invalid:
        print(f"INVALID: {invalid.split(':')[0]} — the numbers below are kept for inspection, not as a result")
    elif unchecked:
        print(f"UNCHECKED: lookahead check {'NOT RUN' if not lookahead_ran else 'not run in full'} — the numbers "
              "below were not checked for lookahead (why: the lookahead line)")


def _finish_run(run_dir: Path, invalid: str | None, detail: str | None) -> int:
    """A backtest's last lines: its run folder; for an INVALID run the reason on stderr and exit code EXIT_USER."""
    print(f"run folder: {run_dir}")
    if invalid:
        print(f"error: {detail}", file=sys.stderr)
        print(f"error: run kept in {run_dir}, marked INVALID: {invalid.split(':')[0]}", file=sys.stderr)
        return EXIT_USER
    return 0


def _print_cross_section(cs: Any) -> None:
    """A universe run's cross-sectional lines: IC and Rank IC with their t, Rank IC by horizon step, each forecast
    bucket's mean return and the top-minus-bottom spread (its t NOT RUN where fewer than 2 times have both outer
    buckets filled); only the NOT RUN line when the cross-section could not be measured."""
    if cs.not_run is not None:
        print(cs.not_run)
        return
    for s in (cs.ic, cs.rank_ic):
        print(f"{s.kind} at h={s.horizon}: mean {s.mean:.4f}, ICIR {s.icir:.3f}, positive {s.positive_share:.1%}, "
              f"t = {s.t_stat:.2f} (Newey-West, {s.lags} lags), p = {format_number(s.p_value, 'pvalue')} over "
              f"{s.periods} decision times")
    print("Rank IC by horizon step 1.." + f"{cs.horizon}: " + " ".join(f"{s.mean:+.3f}" for s in cs.rank_ic_decay))
    d = cs.deciles
    print(f"mean log return per {cs.horizon} bars by forecast bucket, lowest forecasts first ({d.periods} decision "
          "times): " + " ".join(f"{v:+.3%}" for v in d.bucket_mean))
    if math.isfinite(d.spread_t):
        print(f"top minus bottom of {d.buckets} forecast buckets: {d.spread_mean:+.4%} per {cs.horizon} bars, "
              f"t = {d.spread_t:.2f}, p = {format_number(d.spread_p, 'pvalue')}")
    else:
        filled = sum(math.isfinite(x) for x in d.spread)  # periods with both outer buckets filled (tied forecasts share one)
        print(f"top minus bottom of {d.buckets} forecast buckets: {d.spread_mean:+.4%} per {cs.horizon} bars over "
              f"{filled} decision time(s) with both buckets filled; t: NOT RUN (it needs 2 or more such times with "
              "some variation; tied forecasts share a bucket and leave the outer ones empty)")


def _backtest_universe(cfg: Config, args: argparse.Namespace) -> int:
    """``backtest STRATEGY --universe ...``: a portfolio strategy over a universe of coins."""
    from engine.runs.universe import portfolio_columns, run_universe_backtest

    run = run_universe_backtest(cfg, args.strategy, jobs=args.jobs, ray_address=args.ray)
    sim = run.simulation
    checks = run.checks
    _print_run_status(run.invalid, checks is not None and checks.unchecked, checks is not None and checks.lookahead.ran)
    print(f"{run.strategy_name} | predictor {cfg.predictor.name} | universe {run.name}: {len(run.symbols)} coins "
          f"{cfg.data.timeframe} | {sim.equity.index[0]:%Y-%m-%d %H:%M} -> {sim.equity.index[-1]:%Y-%m-%d %H:%M} UTC | "
          f"{len(sim.equity)} bars | fee {cfg.broker.fee:.4%}, slippage {cfg.broker.slippage:.4%} per fill, shorts pay "
          f"{cfg.broker.short_rate:.1%} a year")
    columns = {"strategy": run.metrics, "equal-weight universe": run.reference_metrics}
    if run.btc_metrics is not None:
        columns["buy & hold BTC"] = run.btc_metrics
    print(summary_table({name: portfolio_columns(p) for name, p in columns.items()}))
    drag = sim.cost_drag()
    print(f"turnover {sim.turnover.sum():.1f} x equity; {len(sim.fills)} fills; costs paid: fees {drag['fees']:,.2f}, "
          f"slippage {drag['slippage']:,.2f}, borrow {drag['borrow']:,.2f} ({drag['total_fraction_of_cash']:.1%} of "
          "the starting cash)")
    _print_cross_section(run.cross_section)
    print(f"fast path: {run.fast_path}")
    training = json.loads((run.run_dir / "metrics.json").read_text(encoding="utf-8"))["universe"].get("training")
    if training:
        how = ("one model per fold on every coin (pooled)" if training["mode"] == "pooled"
               else "one model per coin per fold (per_coin: each coin's single-market walk-forward)")
        folds = f"{training['folds']} fold{'s' if training['folds'] != 1 else ''}"
        print(f"walk-forward: {how}; {folds}, {training['fold_models']} fold models, "
              f"{training['trained_now']} trained by this run, {training['fold_models'] - training['trained_now']} "
              "from stored checkpoints")
    unchecked = ("UNCHECKED for lookahead (the check " + ("did not run" if not checks.lookahead.ran else "did not run in "
                 "full") + "; see the lookahead line) — ") if checks is not None and checks.unchecked else ""
    print(f"verdict: {unchecked}{run.verdict}")
    for line in (checks.lines() if checks is not None else []) + [x for x in run.not_run if x != run.cross_section.not_run]:
        print(line)
    if getattr(args, "timings", False):
        print_timings({"seconds": dict(run.timings)}, list(run.timings))
    return _finish_run(run.run_dir, run.invalid, run.invalid)


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from engine.runs.compare import run_compare, split_predictors
    from engine.runs.run_folder import TIMING_STEPS

    if cfg.data.universe:
        if args.symbols:
            raise ConfigError("--symbols and --universe are two ways to say which markets; give one")
        from engine.runs.universe import run_universe_compare

        board = run_universe_compare(cfg, args.strategy, split_predictors(args.predictors), jobs=args.jobs,
                                     ray_address=args.ray)
        print(board.text)
        for label, run in board.runs.items():
            print(f"{label}: {run.verdict}")
        print(f"leaderboard: {board.html}")
        print(f"compare folder: {board.out_dir}")
        return 0

    split = lambda text: [x.strip() for x in (text or "").split(",") if x.strip()]  # noqa: E731
    comparison = run_compare(
        cfg, args.strategy, split_predictors(args.predictors), split(args.symbols) or [cfg.data.symbol],
        jobs=args.jobs, ray_address=args.ray,
    )
    print(comparison.text)
    print(f"leaderboard: {comparison.html}")
    print(f"compare folder: {comparison.out_dir} ({comparison.wall_s:.1f} s)")
    if args.timings:
        print_timings({f"{symbol} {predictor}": json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["timings"]
                       for (symbol, predictor), run_dir in comparison.run_dirs.items()}, TIMING_STEPS)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from engine.sweeps.search import run_sweep

    try:
        sweep = run_sweep(cfg, args.strategy, args.space, trials=args.trials, objective=args.objective,
                          holdout=args.holdout, sampler=args.sampler, jobs=args.jobs, ray_address=args.ray,
                          seed=args.seed, batch=args.batch)
    except KeyboardInterrupt:
        print("interrupted: the finished trials are in the study and the ledger; run the same command again to "
              "resume up to --trials", file=sys.stderr)
        return 130
    from engine.sweeps.search import holdout_view

    for line in sweep.lines:
        print(line)
    hold = holdout_view(sweep.holdout)
    best = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sweep.best_params.items())
    print(f"{len(sweep.trials)} trials; best: {best}")
    columns = {"in-sample": sweep.best_metrics, "holdout": hold.metrics}
    from engine.runs.universe import UniverseBacktest, portfolio_columns

    if isinstance(sweep.holdout, UniverseBacktest):  # a portfolio's record has fills, not round trips
        columns = {name: portfolio_columns(p) for name, p in columns.items()}
    print(summary_table(columns))
    sig = sweep.best_significance
    if isinstance(sig, Significance):
        print(f"in-sample: Sharpe {format_number(sig.sharpe, '.2f')}, PSR {format_number(sig.psr, '.3f')}, "
              f"{dsr_words(sig)}")
        print(f"  {'deflated by' if sig.deflated else 'counted'} {sweep.trial_count.how}")
        print(f"  {sig.verdict}")
    print(f"verdict: {sweep.verdict}")
    print(f"holdout run: {hold.lookahead_summary}")
    for finding in hold.suspicious:
        print(f"holdout run: {finding.replace('suspicious', 'SUSPICIOUS', 1)}")
    if not hold.suspicious:
        print(f"holdout run: plausibility guard {hold.plausibility}")
    print(f"trials: {sweep.trials_csv}")
    print(f"report: {sweep.html}")
    print(f"holdout run folder: {hold.run_dir}")
    print(f"sweep folder: {sweep.out_dir} ({sweep.wall_s:.1f} s)")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from engine.judging.ledger import TrialLedger, format_table
    from engine.judging.tracking import check_tracking, mirror_rows

    cfg = _config(args)
    path = Path(cfg.output.dir) / "ledger.sqlite"
    if not path.exists():
        print(f"no trials yet: {path} does not exist (every backtest appends one row)")
        return 0
    uri = check_tracking(cfg) if args.mlflow is not None else None  # MLflow missing or a bad store: before listing
    rows = TrialLedger(path).rows(symbol=args.symbol, timeframe=args.timeframe)
    print(format_table(rows))
    print(f"{len(rows)} trial(s) in {path}")
    if uri is not None:  # the back-fill: here the mirror is the command's job, so a failure is an error (exit 1)
        print(mirror_rows(rows, uri, path.resolve()).text())
    return 0


def cmd_lookahead(args: argparse.Namespace) -> int:
    from engine.judging.lookahead import LookaheadError
    from engine.runs.pipeline import run_pipeline

    cfg = _config(args, {
        "evaluation.lookahead_samples": args.samples, "evaluation.lookahead_budget": args.budget,
        "evaluation.naive_baseline": False, "evaluation.random_sign_draws": 0, "output.tearsheet": False,
    })
    if args.samples < 1 and not args.thorough:
        raise ConfigError(f"--samples {args.samples} would check nothing; give at least 1 (default 20) or --thorough")
    result = run_pipeline(cfg, args.strategy)
    if result.invalid:
        raise LookaheadError(result.lookahead.describe())  # one error block, exit 2
    times = sorted(str(t) for t in result.lookahead.times)
    print(f"{result.lookahead.summary()}: {', '.join(times[:5])}{' ...' if len(times) > 5 else ''}")
    if result.lookahead.stats.walk_forward is not None:
        print(result.lookahead.stats.walk_forward.describe())
    if result.unchecked:  # the command's one job is the check: an unchecked answer is not a pass
        print(f"error: not every lookahead check ran, so the run is not passed: {result.unchecked}", file=sys.stderr)
        return EXIT_USER
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from engine.runs.train import StopOnCtrlC, print_report, run_train, write_train_folder
    from engine.training.fold_models import TrainingInterrupted

    try:
        with StopOnCtrlC() as stop:
            report = run_train(cfg, args.strategy, jobs=args.jobs, ray_address=args.ray, stop=stop, out_dir=args.out)
    except TrainingInterrupted as exc:
        print(f"interrupted: {len(exc.done)} of {exc.total} folds stored; run the same command again to resume the "
              "interrupted fold(s) at their last finished epoch", file=sys.stderr)
        return 130
    print_report(cfg, report)
    if args.out is not None:
        print(f"training report: {write_train_folder(cfg, report, args.strategy, args.out)}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from feeds.download import download_candles
    from feeds.exchange import make_exchange

    cfg = _config(args)
    d = cfg.data
    exchange = make_exchange(d.exchange, api_overrides=d.exchange_url or None)
    frame = download_candles(exchange, d.symbol, d.timeframe, Path(d.cache_dir), d.range, progress=cfg.output.progress)
    if len(frame):
        print(f"{d.symbol} {d.timeframe} on {d.exchange}: {len(frame)} candles, "
              f"{frame.index[0]:%Y-%m-%d %H:%M} -> {frame.index[-1]:%Y-%m-%d %H:%M} UTC, cache {d.cache_dir}")
    else:
        print(f"{d.symbol} {d.timeframe} on {d.exchange}: no candles in {d.range}")
    return 0


def _summary(cls: type) -> str:
    """The first sentence of a predictor class's docstring, without reStructuredText markup."""
    first = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    first = re.sub(r"\s*\((see )?(the )?module docstring\)", "", first)
    first = re.sub(r"\s*\(extra `[^`]+`[^)]*\)", "", first)  # the listing's extra column says it
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", first).replace("``", "")
    return re.split(r"[.;]\s", first + " ", maxsplit=1)[0].strip().rstrip(".;")


def _extra_cell(cls: type) -> str:
    """``.[EXTRA]`` for a predictor needing an optional extra, marked ``(missing)`` where a module it installs is absent."""
    if not cls.extra:
        return "-"
    missing = [m for m in cls.extra_modules if importlib.util.find_spec(m) is None]
    return f".[{cls.extra}]" + (" (missing)" if missing else "")


def _covariates_cell(cls: type) -> str:
    """The covariate kinds a predictor reads (``past``, ``future``), '-' for none."""
    return "+".join(k for k in ("past", "future") if k in cls.covariate_kinds) or "-"


def cmd_predictors(args: argparse.Namespace) -> int:
    """One line per registered predictor: name, whether the engine trains it walk-forward, the optional extra it
    needs (and whether it is installed), the covariates it can read, what it is."""
    rows = []
    for name in available():
        cls = predictor_class(name)
        trains = cls.trainable and cls.trains_with(make_config(name, {}))
        rows.append((name, "walk-forward" if trains else "with params" if cls.trainable else "-", _extra_cell(cls),
                     _covariates_cell(cls), _summary(cls)))
    widths = [max(len(r[i]) for r in rows + [("name", "trained", "extra", "covariates")]) for i in range(4)]
    for row in [("name", "trained", "extra", "covariates", "what it is"), *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[4])
    print("trained: walk-forward = one model per fold (`train`, or any backtest trains missing folds); with params = "
          "trained only when its parameters ask for it (e.g. chronos finetune); '-' = runs as it is")
    print("extra: pip install -e '.[EXTRA]' (install torch first; docs/stage1.md for the extras installed --no-deps); "
          "(missing) = not installed here. covariates: [predictor] covariates it can read, past-only and/or "
          "known-future (docs/stage1.md#covariates)")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from engine.paper.cli import run_paper

    return run_paper(args, _config(args))


COMMANDS = {
    "backtest": cmd_backtest, "download": cmd_download, "predictors": cmd_predictors, "paper": cmd_paper,
    "ledger": cmd_ledger, "lookahead": cmd_lookahead, "compare": cmd_compare, "train": cmd_train, "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    redact_output()  # first: every sink added below writes through the redacting streams
    args = _build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = exit_code(exc)
        if args.debug or code is None:
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        if isinstance(exc, FEED_EXCHANGE_ERRORS) and args.command in CANDLE_FILE_COMMANDS:
            print(OFFLINE_HINT, file=sys.stderr)
        return code
