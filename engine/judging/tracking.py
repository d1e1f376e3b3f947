"""Experiment tracking: every trial-ledger row mirrored as one MLflow run (optional extra ``.[mlflow]``).

The ledger (``<output.dir>/ledger.sqlite``) stays the record: a row is written first, the run folder
next, and only then is the row mirrored, by :func:`mirror_after_run` at the end of a backtest, a
compare or a sweep when ``output.mlflow`` (``--mlflow [URI]``) is set, or afterwards for any ledger
by ``python -m engine ledger --mlflow [URI]`` (:func:`mirror_rows`). A mirror that fails (server
down, store refused) never loses a run: one warning names the URI, the cause and the back-fill
command, and the command exits as it would have. A URI of the wrong form, a local store that does
not open and MLflow not being installed are input errors raised before the run (:func:`check_tracking`).

One MLflow run per ledger row:

- experiment: ``"<strategy> on <exchange> <symbol> <timeframe>"`` (:func:`experiment_name`), created on
  first use; run name: the row's ``run_id`` (a run folder's name; ``<sweep folder>#<trial>`` for a
  sweep trial); start time: the row's ``created_at``.
- params: the row (strategy, its file hash and parameters as ``strategy.<key>``, predictor, its code
  hash and parameters as ``predictor.<key>``, model, market, period, config and trial hashes, study),
  the run folder's resolved ``config.toml`` flattened as ``config.<section>.<key>`` (less ``paper``, and
  ``training`` for a predictor not trained walk-forward: they change nothing in a backtest), and a trained
  predictor's fold plan (``fold_plan.n_folds``, ``.cutoffs``, ``.retrain_every``, ...). Values longer
  than :data:`MAX_PARAM_CHARS` are cut (metrics.json holds them whole).
- metrics (finite numbers only): the row's return, Sharpe, Sortino, drawdown, trades and bars, and from
  the run folder's metrics.json every number of ``performance``, ``buy_and_hold``, ``significance``
  (Sharpe CI, PSR, DSR, p-values, trial count), the forecast skill at the last horizon and averaged over
  horizons (``skill.*``: MAE, MASE, CRPS, direction, Diebold-Mariano and Pesaran-Timmermann p-values),
  ``versus_naive`` and ``random_sign``.
- tags: ``llm4mp.verdict`` (metrics.json's significance verdict; "not judged" otherwise), ``.kind``,
  ``.flag`` (INVALID / UNCHECKED / suspicious), ``.run_dir``, ``.ledger``, ``.run_id`` and
  ``.row_hash`` (:func:`row_hash`, what makes mirroring idempotent: a row already mirrored in its
  experiment is skipped; a half-mirrored one, not FINISHED, is replaced).
- artifacts: ``tearsheet.html``, ``forecast.html``, ``metrics.json`` and ``config.toml`` of the run
  folder, where present. Sweep trials have no folder of their own (``run_dir`` is the sweep folder,
  tagged): params, metrics and tags only.

Local stores: ``"local"`` is ``sqlite:///mlflow.db`` in the working folder, MLflow's own default, so a
plain ``mlflow ui`` started there shows the runs; the artifacts of a local SQLite store go beside the
database, in ``mlruns/<experiment>/``. A folder path is an MLflow file store, which MLflow 3 refuses
unless ``MLFLOW_ALLOW_FILE_STORE=true`` (:func:`check_tracking` says so before the run).

Not covered: MLflow is written to, never read back into the ledger; runs deleted in MLflow are created
again by the next mirror of their row; two processes mirroring the same row at the same instant can
both create it (a back-fill racing a live run).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import socket
import tomllib
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from loguru import logger

from engine.core.config import MLFLOW_LOCAL, Config
from engine.core.errors import OperationalError, UserInputError
from engine.judging.ledger import LEDGER_FILENAME, TrialLedger, TrialRow

__all__ = [
    "MLFLOW_INSTALL",
    "MirrorReport",
    "TrackingError",
    "check_tracking",
    "experiment_name",
    "mirror_after_run",
    "mirror_rows",
    "resolve_uri",
    "row_hash",
    "row_metrics",
    "row_params",
    "row_tags",
]

#: How to install what ``--mlflow`` needs (the tracking client, ``mlflow-skinny``; ``pip install mlflow`` adds the UI).
MLFLOW_INSTALL = 'pip install -e ".[mlflow]"'
TAG = "llm4mp."
#: MLflow's smallest limits over the versions the extra allows: param values, tag values, entries per log_batch call.
MAX_PARAM_CHARS = 500
MAX_TAG_CHARS = 5000
BATCH = 100
#: Run-folder files logged as artifacts, where present.
ARTIFACTS = ("tearsheet.html", "forecast.html", "metrics.json", "config.toml")
#: metrics.json sub-trees whose numbers are logged as metrics, and their metric-name prefixes.
METRIC_TREES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("performance",), ""),
    (("buy_and_hold",), "buy_and_hold."),
    (("significance",), "significance."),
    (("forecast_skill", "last_horizon"), "skill.last_horizon."),
    (("forecast_skill", "mean_over_horizons"), "skill.mean_over_horizons."),
    (("versus_naive",), "versus_naive."),
    (("random_sign",), "random_sign."),
)
_PROBE_TIMEOUT_S = 5.0
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


class TrackingError(OperationalError):
    """Mirroring ledger rows into MLflow failed (server down, store refused the write); the ledger and the
    run folders are untouched; mirror again later (exit code 1)."""


@dataclass(frozen=True)
class MirrorReport:
    """What one mirror did: ``created`` new MLflow runs, ``existing`` rows already mirrored (skipped),
    ``replaced`` half-mirrored runs deleted and made again; ``experiments`` their names, in first-use order."""

    uri: str
    created: int
    existing: int
    replaced: int
    experiments: tuple[str, ...]

    def text(self) -> str:
        """One line, e.g. ``mlflow: 1 ledger row mirrored (0 already there) to sqlite:///... (experiment ...)``."""
        n = self.created + self.replaced
        names = ", ".join(repr(e) for e in self.experiments) or "none"
        return (f"mlflow: {n} ledger row{'s' if n != 1 else ''} mirrored ({self.existing} already there) to "
                f"{self.uri} (experiment{'s' if len(self.experiments) != 1 else ''} {names})")


# -- the URI ---------------------------------------------------------------------------------------
def resolve_uri(value: str, cwd: Path | None = None) -> str:
    """The tracking URI of ``output.mlflow``: :data:`~engine.core.config.MLFLOW_LOCAL` -> ``sqlite:///<cwd>/mlflow.db``
    (absolute); a plain folder path -> its absolute ``file://`` URI (an MLflow file store); a URI as it is.
    ``value`` passed ``engine.core.config`` validation (its form)."""
    base = Path.cwd() if cwd is None else cwd
    if value == MLFLOW_LOCAL:
        return f"sqlite:///{(base / 'mlflow.db').resolve().as_posix()}"
    scheme = urlsplit(value).scheme
    if value != "databricks" and (not scheme or len(scheme) == 1):
        return (base / value).resolve().as_uri()
    return value


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (SQLAlchemy: three slashes then the path), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///"):]).split("?")[0])


def _is_remote(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def check_tracking(cfg: Config) -> str | None:
    """Before a run: the resolved tracking URI of ``output.mlflow`` (None when off).

    Raises :class:`UserInputError` naming the value and the fix when MLflow is not installed
    (:data:`MLFLOW_INSTALL`) or a local store does not open (MLflow 3 refuses a file store unless
    ``MLFLOW_ALLOW_FILE_STORE=true``; a database path in a missing folder). A tracking server is not
    contacted here: one that is down when the run ends gets a warning then (:func:`mirror_after_run`).
    """
    value = cfg.output.mlflow
    if not value:
        return None
    if importlib.util.find_spec("mlflow") is None:
        raise UserInputError(f"output.mlflow (--mlflow) = {value!r} needs MLflow, which is not installed: "
                             f"{MLFLOW_INSTALL} (the tracking client, mlflow-skinny), or run without --mlflow")
    uri = resolve_uri(value)
    if not _is_remote(uri):
        try:
            _client(uri).search_experiments(max_results=1)  # opens (and on first use creates) the store
        except Exception as exc:  # noqa: BLE001 - MLflow's and SQLAlchemy's errors, said in one line
            raise UserInputError(f"output.mlflow (--mlflow) = {value!r}: the MLflow store {uri} does not open "
                                 f"({_first_line(exc)}); nothing was run: give a writable sqlite:///PATH/mlflow.db "
                                 f'or "{MLFLOW_LOCAL}"') from None
    return uri


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _client(uri: str) -> Any:
    """An ``mlflow.tracking.MlflowClient`` for ``uri`` (imports MLflow: ~1.5 s the first time)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _probe(uri: str) -> None:
    """A TCP connection to an http(s) tracking server, so a server that is down fails in seconds, not after
    MLflow's own retries (minutes)."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise TrackingError(f"cannot reach the MLflow tracking server at {uri} ({exc.strerror or exc})") from None


# -- what one row becomes ---------------------------------------------------------------------------
def row_hash(row: TrialRow) -> str:
    """16 hex digits of the whole row (every column, run id and time included): the same row, mirrored
    again from any copy of the ledger, has the same hash; the tag ``llm4mp.row_hash`` holds it."""
    blob = json.dumps(asdict(row), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def experiment_name(row: TrialRow) -> str:
    """``"llm_signal on binance BTC/USDT 1h"``: one experiment per strategy and market."""
    return f"{row.strategy} on {row.exchange or 'unknown-exchange'} {row.symbol} {row.timeframe}"


def _key(text: str) -> str:
    """An MLflow param/metric key: letters, digits, ``_ - . /`` and spaces; anything else becomes ``_``."""
    return _UNSAFE_KEY.sub("_", text)


def _flat(tree: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json's ``fold_plan`` as params: the rules, the fold count and every fold's cut-off."""
    folds = plan.get("folds") or []
    out = {f"fold_plan.{k}": v for k, v in plan.items() if k != "folds"}
    out["fold_plan.n_folds"] = len(folds)
    out["fold_plan.cutoffs"] = ",".join(str(f.get("cutoff", ""))[:19] for f in folds)
    return out


def row_params(row: TrialRow, config: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The MLflow params of ``row``: its identity and market, plus the run folder's resolved ``config``
    (``config.toml`` as a dict) and ``metrics`` (metrics.json, for the fold plan) when given. Values are
    strings of at most :data:`MAX_PARAM_CHARS` characters; None values are left out."""
    out: dict[str, Any] = {
        "strategy": row.strategy, "strategy.hash": row.strategy_hash, "predictor": row.predictor,
        "predictor.hash": row.predictor_hash, "model": row.model, "exchange": row.exchange, "symbol": row.symbol,
        "timeframe": row.timeframe, "timerange": row.timerange, "period_start": row.period_start,
        "period_end": row.period_end, "n_bars": row.n_bars, "config_hash": row.config_hash,
        "trial_hash": row.trial_hash, "study": row.study,
    }
    out.update({f"strategy.{k}": v for k, v in _flat(json.loads(row.strategy_params), "")})
    out.update({f"predictor.{k}": v for k, v in _flat(json.loads(row.predictor_params), "")})
    if config:  # less what changes nothing in a backtest: paper settings; training of a predictor not trained
        trained = bool(metrics and metrics.get("fold_plan"))
        out.update(_flat({k: v for k, v in config.items() if k != "paper" and (trained or k != "training")}, "config."))
    if metrics and isinstance(metrics.get("fold_plan"), Mapping):
        out.update(_fold_plan(metrics["fold_plan"]))
    return {_key(k): _text(v, MAX_PARAM_CHARS) for k, v in out.items() if v is not None and k}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_metrics(row: TrialRow, metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The MLflow metrics of ``row``: its headline numbers, and every finite number of the
    :data:`METRIC_TREES` of its run folder's ``metrics`` (metrics.json) when given. NaN, None and
    booleans are left out (a verdict is a tag)."""
    out: dict[str, float | None] = {
        "total_return": _number(row.total_return), "sharpe": _number(row.sharpe), "sortino": _number(row.sortino),
        "max_drawdown": _number(row.max_drawdown), "n_trades": float(row.n_trades), "n_bars": float(row.n_bars),
    }
    for path, prefix in METRIC_TREES if metrics else ():
        tree: Any = metrics
        for part in path:
            tree = tree.get(part) if isinstance(tree, Mapping) else None
        if isinstance(tree, Mapping):
            out.update({_key(prefix + k): _number(v) for k, v in _flat(tree, "")})
    return {k: v for k, v in out.items() if v is not None}


def _flag(row: TrialRow) -> str:
    """As the ledger table's flag column: INVALID, else UNCHECKED; suspicious beside either."""
    marks = ["INVALID"] * bool(row.invalid) + ["UNCHECKED"] * bool(row.unchecked and not row.invalid)
    return ",".join(marks + ["suspicious"] * bool(row.suspicious))


def row_tags(row: TrialRow, metrics: Mapping[str, Any] | None, ledger_path: Path) -> dict[str, str]:
    """The MLflow tags of ``row``: verdict, kind, flag (and the marks' texts), run folder, ledger, run id and
    :func:`row_hash`; values cut to :data:`MAX_TAG_CHARS`."""
    significance = (metrics or {}).get("significance")
    if isinstance(significance, Mapping) and significance.get("verdict"):
        verdict = str(significance["verdict"])
    elif row.kind == "sweep":
        verdict = "not judged alone: a sweep trial (the sweep judges its best trial over all its trials)"
    elif metrics is None:
        verdict = f"unknown: no metrics.json in the run folder {row.run_dir or '(none recorded)'}"
    else:
        verdict = "not judged (no significance in the run folder's metrics.json)"
    tags = {
        "verdict": verdict, "kind": row.kind, "flag": _flag(row) or "none", "run_dir": row.run_dir,
        "ledger": str(ledger_path), "run_id": row.run_id, "row_hash": row_hash(row), "created_at": row.created_at,
        "invalid": row.invalid, "unchecked": row.unchecked, "suspicious": row.suspicious,
    }
    return {TAG + k: _text(v, MAX_TAG_CHARS) for k, v in tags.items() if v}


def _run_folder(row: TrialRow) -> tuple[Path | None, dict[str, Any] | None, dict[str, Any] | None]:
    """``(folder, config, metrics)`` of a row whose ``run_dir`` holds a run folder (metrics.json); a sweep
    trial's ``run_dir`` is the shared sweep folder: ``(None, None, None)``."""
    folder = Path(row.run_dir) if row.run_dir and row.kind != "sweep" else None
    if folder is None or not (folder / "metrics.json").is_file():
        return None, None, None
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    config_file = folder / "config.toml"
    config = tomllib.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    return folder, config, metrics


# -- writing to MLflow ------------------------------------------------------------------------------
def _experiment_id(client: Any, name: str, uri: str, cache: dict[str, str]) -> str:
    if name in cache:
        return cache[name]
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    if found is None:
        db = _sqlite_file(uri)  # a local database keeps its artifacts beside it, not in the working folder
        where = (db.parent / "mlruns" / re.sub(r"[^A-Za-z0-9_.]+", "_", name)).resolve().as_uri() if db else None
        cache[name] = client.create_experiment(name, artifact_location=where, tags={TAG + "source": "trial ledger"})
    else:
        cache[name] = found.experiment_id
    return cache[name]


def _find(client: Any, experiment_id: str, digest: str) -> tuple[bool, bool]:
    """``(mirrored, replaced)``: whether a FINISHED run of the row hash ``digest`` is in the experiment, and
    whether unfinished ones (a mirror that stopped half-way) were deleted, to be made again."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG}row_hash` = '{digest}'", max_results=5)
    if any(r.info.status == "FINISHED" for r in runs):
        return True, False
    for r in runs:
        client.delete_run(r.info.run_id)
    return False, bool(runs)


def _millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _mirror_one(client: Any, row: TrialRow, experiment_id: str, ledger_path: Path) -> str:
    """Create the MLflow run of ``row``: ``"created"``, ``"replaced"`` or ``"existing"`` (left as it was)."""
    from mlflow.entities import Metric, Param, RunTag

    mirrored, replaced = _find(client, experiment_id, row_hash(row))
    if mirrored:
        return "existing"
    folder, config, metrics = _run_folder(row)
    start = _millis(row.created_at)
    run = client.create_run(experiment_id, start_time=start, tags={"mlflow.runName": row.run_id}, run_name=row.run_id)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in row_params(row, config, metrics).items()]
    values = [Metric(k, v, start, 0) for k, v in row_metrics(row, metrics).items()]
    tags = [RunTag(k, v) for k, v in row_tags(row, metrics, ledger_path).items()]
    for kind, entries in (("params", params), ("metrics", values), ("tags", tags)):
        for i in range(0, len(entries), BATCH):
            client.log_batch(run_id, **{kind: entries[i:i + BATCH]})
    for name in ARTIFACTS if folder is not None else ():
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))
    client.set_terminated(run_id, "FINISHED")
    return "replaced" if replaced else "created"


def mirror_rows(rows: Sequence[TrialRow], uri: str, ledger_path: Path) -> MirrorReport:
    """Mirror ``rows`` (of the ledger at ``ledger_path``) into the MLflow store at ``uri`` (resolved:
    :func:`resolve_uri`), one run each, in order; rows already there are skipped.

    Raises :class:`TrackingError` (the cause, and how many rows were mirrored before it) on any failure:
    MLflow not installed, a server that does not answer (probed first, :data:`_PROBE_TIMEOUT_S` s), a
    store that refuses the write.
    """
    counts = {"created": 0, "existing": 0, "replaced": 0}
    experiments: dict[str, str] = {}
    try:
        if _is_remote(uri):
            _probe(uri)
        client = _client(uri)
        for row in rows:
            experiment_id = _experiment_id(client, experiment_name(row), uri, experiments)
            counts[_mirror_one(client, row, experiment_id, ledger_path)] += 1
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's, SQLAlchemy's, requests' errors, in one line
        done = counts["created"] + counts["replaced"]
        raise TrackingError(f"MLflow store {uri} failed after {done} of {len(rows)} ledger row(s) "
                            f"({type(exc).__name__}: {_first_line(exc)})") from exc
    return MirrorReport(uri=uri, experiments=tuple(experiments), **counts)


def mirror_after_run(cfg: Config, select: Callable[[TrialRow], bool], ledger_dir: str | Path | None = None,
                     ) -> MirrorReport | None:
    """At the end of a run: mirror the rows of ``<ledger_dir or output.dir>/ledger.sqlite`` that ``select``
    picks (those the run wrote) when ``output.mlflow`` is set.

    Never raises for MLflow: a failure is one warning naming the URI, the cause and the back-fill
    command (``python -m engine ledger --out DIR --mlflow URI``); the run folders and ledger rows are
    kept either way. Returns the report, or None (off, or failed).
    """
    if not cfg.output.mlflow:
        return None
    uri = resolve_uri(cfg.output.mlflow)
    out_dir = Path(ledger_dir or cfg.output.dir)
    ledger_path = out_dir / LEDGER_FILENAME
    try:
        rows = [r for r in TrialLedger(ledger_path).rows() if select(r)]
        report = mirror_rows(rows, uri, ledger_path.resolve())
    except Exception as exc:  # noqa: BLE001 - the run is done and recorded: a mirror never fails it
        logger.warning(
            "mlflow: mirror to {} failed: {}. The run folder and its ledger row are kept (the ledger is the record); "
            "start the tracking server or fix --mlflow, then mirror the ledger with: python -m engine ledger --out {} "
            "--mlflow {}", uri, _first_line(exc), out_dir, uri)
        return None
    logger.info(report.text())
    return report
