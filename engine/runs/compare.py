"""``python -m engine compare``: every predictor x symbol on the same bars, costs and decision times.

Each (symbol, predictor) pair is an independent :func:`engine.runs.pipeline.run_pipeline`. They
run in local worker processes (``jobs``) or as Ray tasks (``ray_address``), sharing the
forecast cache, and their frozen results come back to the parent. The judging that
depends on all of them — ledger rows, trial counts and the deflated Sharpe ratio —
happens there, in a fixed order (:func:`engine.judging.verdict.judge`), so results and ledger rows
are the same whichever way the runs were executed; then each run folder is written once
(again on the workers) and the leaderboard beside them.
"""

from __future__ import annotations

import dataclasses
from html import escape
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from loguru import logger

from engine.core.config import Config, ConfigError, FrozenMapping, parse_literal, with_profile
from engine.core.errors import OperationalError, UserInputError, exit_code
from engine.judging.verdict import Verdict, judge
from engine.core.logs import setup_logging
from engine.runs.pipeline import RunResult, run_pipeline
from engine.runs.run_folder import check_writable, new_run_dir, write_run_folder
from engine.training.fold_models import cap_threads, settings_words
from engine.judging.tracking import check_tracking, mirror_after_run
from predictors.base import PredictorError
from predictors.registry import config_class, make_config, predictor_class, table_name
from reports.leaderboard import LeaderboardRow, leaderboard_frame
from reports.render.leaderboard import leaderboard_text, write_leaderboard_html


@dataclass(frozen=True)
class Comparison:
    """What a comparison produced: one result, verdict and run folder per (symbol, predictor), and the leaderboard."""

    out_dir: Path
    results: dict[tuple[str, str], RunResult]
    verdicts: dict[tuple[str, str], Verdict]
    run_dirs: dict[tuple[str, str], Path]
    leaderboard: pd.DataFrame
    text: str
    html: Path
    wall_s: float

    def __repr__(self) -> str:
        return f"Comparison({len(self.results)} runs in {self.out_dir}, {self.wall_s:.1f} s)\n{self.text}"

    def _repr_html_(self) -> str:
        """The leaderboard's headline columns in a notebook (the full frame is ``leaderboard``)."""
        cols = [c for c in ("symbol", "predictor", "total_return", "bh_total_return", "sharpe", "max_drawdown",
                            "n_trades", "dsr", "verdict") if c in self.leaderboard.columns]
        return (f"<p>Comparison: {len(self.results)} runs in <code>{escape(str(self.out_dir))}</code> "
                f"({self.wall_s:.1f} s)</p>" + self.leaderboard[cols].to_html(index=False, float_format="{:.4g}".format))


# -- predictor variants: "chronos,chronos[finetune=\"lora\"]" ------------------------------------------
_VARIANT = re.compile(r"^\s*([^\[\]=,\s]+)\s*(?:\[(.*)\])?\s*$", re.S)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes (so a variant's own commas stay in it).

    Raises:
        ConfigError: an unbalanced bracket or quote.
    """
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--predictors {text!r}: a ']' without its '['")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ConfigError(f"--predictors {text!r}: an unclosed {'quote' if quote else '['}")
    parts.append(text[start:])
    return parts


def split_predictors(text: str) -> list[str]:
    """The ``--predictors`` list: comma-separated names or variants, commas inside ``[...]`` kept."""
    return [x.strip() for x in _split_top(text or "") if x.strip()]


def parse_variant(label: str) -> tuple[str, dict[str, Any]]:
    """``"chronos[finetune=\"lora\", finetune_lr=1e-5]"`` -> ``("chronos", {"finetune": "lora", ...})``.

    A predictor name (or ``module:Class``) optionally followed by ``[key=value, ...]``; values are TOML
    literals as with ``--set`` (numbers, booleans, quoted strings), a bare word is a string.

    Raises:
        ConfigError: the syntax is broken (the message shows the form).
    """
    form = 'use NAME or NAME[key=value, ...], e.g. chronos[finetune="lora"]'
    match = _VARIANT.match(label)
    if match is None:
        raise ConfigError(f"--predictors entry {label!r} is not a predictor variant; {form}")
    name, body = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if body is None:
        return name, params
    items = [x for x in _split_top(body) if x.strip()]
    if not items:
        raise ConfigError(f"--predictors entry {label!r} has empty brackets; {form}")
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not text.strip():
            raise ConfigError(f"--predictors entry {label!r}: {item.strip()!r} is not key=value; {form}")
        if key in params:
            raise ConfigError(f"--predictors entry {label!r} sets {key} twice")
        params[key] = parse_literal(text.strip())
    return name, params


def variant(cfg: Config, symbol: str, predictor: str, out_dir: Path) -> Config:
    """``cfg`` for one pair; ``predictor`` is a name or a variant ``name[key=value, ...]`` whose parameters are
    merged over ``[predictor.params.<name>]`` (a variant's ``model``/``revision`` replace ``predictor.model``/
    ``revision``); ``model``/``revision`` only reach predictors whose config takes them.

    Raises:
        UserInputError: a broken variant, an unknown predictor, or parameters its config class refuses.
    """
    p = cfg.predictor
    name, overrides = parse_variant(predictor)
    try:
        takes = config_class(name)
        model, revision = overrides.pop("model", p.model), overrides.pop("revision", p.revision)
        params = dict(p.params)
        if overrides:
            tables = [t for t in dict.fromkeys([table_name(name), name]) if t in params] or [table_name(name)]
            params[tables[0]] = {**params.get(tables[0], {}), **overrides}
        out = dataclasses.replace(
            cfg,
            data=dataclasses.replace(cfg.data, symbol=symbol),
            predictor=dataclasses.replace(
                p, name=name, model=str(model) if takes.takes("model") else "",
                revision=str(revision) if takes.takes("revision") else "", params=FrozenMapping(params),
            ),
            output=dataclasses.replace(cfg.output, dir=str(out_dir), progress=False),
        )
        make_config(name, out.predictor.predictor_params())
    except PredictorError as exc:  # unknown name, bad module path, a parameter the config refuses
        raise UserInputError(f"--predictors {predictor}: {exc}") from exc
    # this predictor's training sizes for the keys nobody set (training.profile), not the base predictor's
    explicit = cfg.origin.explicit | {f"predictor.params.{table_name(name)}.{key}" for key in overrides}
    return with_profile(out, explicit)


def resolve_paths(cfg: Config, base: Path | None = None) -> Config:
    """``cfg`` with every local path made absolute against ``base`` (default: this process's cwd).

    Runs execute in other processes, and on a Ray cluster in the working directory of each
    node's raylet, where a relative ``data_dir``, ``cache_dir`` or ``output.dir`` names some
    other folder; so paths are fixed on the driver before configs are shipped. ``predictor.model``
    is resolved only when it names an existing local file or folder (otherwise it is a hub id).
    Workers must see the same absolute paths (a shared filesystem, or the same layout on every node).
    """
    base = (base or Path.cwd()).resolve()
    absolute = lambda text: str((base / Path(text).expanduser()).resolve()) if text else text  # noqa: E731
    d, p = cfg.data, cfg.predictor
    model = absolute(p.model) if p.model and (base / Path(p.model).expanduser()).exists() else p.model
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(d, data_dir=absolute(d.data_dir), cache_dir=absolute(d.cache_dir)),
        predictor=dataclasses.replace(p, model=model),
        output=dataclasses.replace(cfg.output, dir=absolute(cfg.output.dir)),
    )


def _quiet_worker() -> None:
    """In a worker process logging is set to warnings only, so that several runs do not
    interleave their info lines; the parent's logging is never touched."""
    setup_logging(verbose=False, quiet=True)


def _compute(cfg: Config, strategy_path: str, worker: bool = True) -> RunResult:
    """One pair's :func:`engine.runs.pipeline.run_pipeline` (in a worker: quietly)."""
    if worker:
        _quiet_worker()
    return run_pipeline(cfg, strategy_path)


def _write(result: RunResult, verdict: Verdict, run_dir: Path, strategy_path: str, worker: bool = True) -> Path:
    """One pair's run folder (in a worker: quietly)."""
    if worker:
        _quiet_worker()
    return write_run_folder(result, verdict, run_dir, strategy_path)


RAY_AUTH_HINT = (
    "the cluster uses token authentication (Ray 2.5x+ `ray start` does once a token exists): set "
    "RAY_AUTH_MODE=token for this command, with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
)


def _connect_ray(ray: Any, address: str) -> None:
    """``ray.init`` to an existing cluster; a refused or failed connection is one OperationalError line.

    Workers get this project's root on ``PYTHONPATH`` (the same path must exist on every node),
    so they run the driver's code.
    """
    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH", "")) if x)
    try:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    except Exception as exc:  # ConnectionError caused by ray.exceptions.AuthenticationError, RuntimeError ...
        raise OperationalError(_ray_connect_message(address, exc, os.environ.get("RAY_AUTH_MODE", ""))) from exc


def _ray_connect_message(address: str, exc: BaseException, auth_mode: str) -> str:
    """One line for a failed ``ray.init(address=...)``: what failed and what to set or check."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    first = " ".join(str(exc).split())[:200] or type(exc).__name__
    auth = any(type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e) for e in chain)
    if auth and auth_mode.lower() != "token":
        hint = RAY_AUTH_HINT
    elif auth:
        hint = ("RAY_AUTH_MODE=token is set but the token was refused: use the head node's token "
                "(its ~/.ray/auth_token) in ~/.ray/auth_token or RAY_AUTH_TOKEN")
    else:
        hint = "check the address (`ray status` on the head node) and that the cluster is running"
    return f"cannot connect to the Ray cluster at --ray {address} ({first}); {hint}"


def _ray(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (once per process)."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise UserInputError('--ray needs Ray: pip install -e ".[ray]"') from exc
    if not ray.is_initialized():
        _connect_ray(ray, address)
    return ray


def _execute(fn: Callable[..., Any], calls: list[tuple], jobs: int, ray_address: str | None, what: str,
             progress: bool = True) -> list[Any]:
    """``[fn(*args) for args in calls]`` in local workers (``jobs``), as Ray tasks (``ray_address``)
    or, with ``jobs = 1``, in this process (``fn`` then gets ``worker=False``); results in call order.
    ``progress``: a runs bar on stderr (``output.progress``)."""
    from tqdm.auto import tqdm

    if ray_address:
        ray = _ray(ray_address)
        task = ray.remote(fn)
        refs = [task.remote(*args) for args in calls]
        try:
            with tqdm(refs, desc=f"{what} (ray)", unit="run", disable=not progress) as bar:  # closed (a newline) before any error line
                return [ray.get(r) for r in bar]
        except ray.exceptions.RayTaskError as exc:  # a run's own error, not a chain of remote tracebacks
            if exit_code(exc.cause) is not None:  # a member of the error family: its one line, its exit code
                raise exc.cause from None
            raise
    if jobs <= 1:
        return [fn(*args, worker=False) for args in tqdm(calls, desc=what, unit="run", disable=not progress)]
    threads = max(1, (os.cpu_count() or 1) // jobs)  # trained or model predictors: no oversubscribed cores
    with ProcessPoolExecutor(max_workers=jobs, initializer=cap_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in tqdm(futures, desc=f"{what} ({jobs} workers)", unit="run", disable=not progress)]


def _mean_valid_pinball(result: RunResult) -> float | None:
    """A trained model's validation pinball loss, averaged over its folds (None for other predictors)."""
    scores = [m.valid_pinball for m in result.walk_forward.models if m.valid_pinball is not None] \
        if result.walk_forward is not None else []
    return sum(scores) / len(scores) if scores else None


def check_predictors(predictors: Sequence[str]) -> None:
    """A compare's ``--predictors``: not empty, each name or variant once (ConfigError naming the fix)."""
    if not predictors:
        raise ConfigError("--predictors is empty; give a comma-separated list, e.g. naive,drift,momentum")
    twice = sorted({p for p in predictors if list(predictors).count(p) > 1})
    if twice:
        raise ConfigError(f"--predictors lists {', '.join(twice)} more than once; give each predictor or variant once")


def run_compare(
    cfg: Config,
    strategy_path: str | Path,
    predictors: Sequence[str],
    symbols: Sequence[str],
    *,
    jobs: int = 2,
    ray_address: str | None = None,
) -> Comparison:
    """Run and judge every (symbol, predictor) pair; write the leaderboard.

    Writes ``<output.dir>/compare-<stamp>-<strategy>/`` with one run folder per pair,
    ``leaderboard.html`` and ``leaderboard.csv``, and appends one ``compare`` row per pair
    to the output folder's trial ledger (mirrored into MLflow at the end when ``output.mlflow`` is set).
    """
    check_predictors(predictors)
    if not symbols:
        raise ConfigError("--symbols is empty; give a comma-separated list, e.g. BTC/USDT,ETH/USDT")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be >= 1")
    cfg = resolve_paths(cfg)
    check_writable(cfg.output.dir)
    check_tracking(cfg)
    if ray_address:  # connect before any folder is made: a refused connection leaves nothing behind
        _ray(ray_address)
    strategy_path = str(Path(strategy_path).resolve())
    pairs = [(s, p) for s in symbols for p in predictors]
    for s, p in pairs:  # every variant checked before the compare folder is made: bad input leaves nothing behind
        variant(cfg, s, p, Path(cfg.output.dir))
    out_dir = new_run_dir(Path(cfg.output.dir), "compare", Path(strategy_path).stem, cfg.data.timeframe)
    configs = [variant(cfg, s, p, out_dir) for s, p in pairs]
    for (symbol, label), c in zip(pairs, configs):  # the workers log quietly: the sizes each trained variant uses
        cls = predictor_class(c.predictor.name)
        if cls.trainable and cls.trains_with(make_config(c.predictor.name, c.predictor.predictor_params())):
            o = c.origin
            logger.info("compare: {} {} trains walk-forward (folds not stored yet train in its worker): {}; {}", symbol,
                        label, f"profile {o.profile} ({o.why})" if o.profile else "no training profile", settings_words(c))

    t0 = time.perf_counter()
    results = dict(zip(pairs, _execute(_compute, [(c, strategy_path) for c in configs], jobs, ray_address, "compare",
                                         cfg.output.progress)))
    run_dirs = {
        (s, p): new_run_dir(out_dir, Path(strategy_path).stem, p, s, cfg.data.timeframe) for s, p in pairs
    }

    # Judge in a fixed order, so the ledger and every number are independent of scheduling;
    # the rows go into the main output folder's ledger.
    judgement = judge([results[pair] for pair in pairs], strategy_path, ledger_dir=cfg.output.dir,
                      run_dirs=[run_dirs[pair] for pair in pairs], kind="compare")
    verdicts = dict(zip(pairs, judgement.verdicts))
    _execute(_write, [(results[pair], verdicts[pair], run_dirs[pair], strategy_path) for pair in pairs],
             jobs, ray_address, "write", cfg.output.progress)

    rows, equity, benchmark, links = [], {}, {}, {}
    for (symbol, predictor), result in results.items():
        run_dir = run_dirs[(symbol, predictor)]
        rows.append(LeaderboardRow(
            predictor=predictor, symbol=symbol, run_dir=str(run_dir.relative_to(out_dir)),
            metrics=result.metrics, buy_and_hold=result.benchmark_metrics, skill=result.skill,
            significance=verdicts[(symbol, predictor)].significance, naive_comparison=result.versus_naive,
            random_sign=result.baselines.get("random sign"), suspicious=tuple(result.suspicious),
            invalid=result.invalid, valid_pinball=_mean_valid_pinball(result), unchecked=result.unchecked,
            unchecked_quality=result.fallback.reason if result.fallback and result.fallback.unchecked_quality else None,
        ))
        equity[(symbol, predictor)] = result.equity
        benchmark[symbol] = result.benchmark_equity
        rel = run_dir.relative_to(out_dir)
        links[(symbol, predictor)] = [
            f"{rel}/{name}" for name in ("tearsheet.html", "forecast.html") if (run_dir / name).is_file()
        ]
    frame = leaderboard_frame(rows)
    frame.to_csv(out_dir / "leaderboard.csv", index=False)
    notes = sorted({w for r in results.values() for w in r.warnings})
    title = (f"{Path(strategy_path).stem}: {', '.join(predictors)} on {', '.join(symbols)} "
             f"{cfg.data.timeframe} {cfg.data.timerange or 'all data'}")
    html = write_leaderboard_html(out_dir / "leaderboard.html", frame, equity, benchmark, links, title=title, notes=notes)
    wall = time.perf_counter() - t0
    error = judgement.unrecorded(out_dir, "compare folder")
    if error is not None:
        raise error from judgement.ledger_failure
    mirrored = {str(run_dir) for run_dir in run_dirs.values()}
    mirror_after_run(cfg, lambda row: row.run_dir in mirrored)
    logger.info("compare finished in {:.1f} s: {}", wall, out_dir)
    return Comparison(out_dir=out_dir, results=results, verdicts=verdicts, run_dirs=run_dirs, leaderboard=frame,
                      text=leaderboard_text(frame), html=html, wall_s=wall)
