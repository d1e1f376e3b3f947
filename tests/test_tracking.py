"""``--mlflow``: every trial-ledger row mirrored as one MLflow run (engine/judging/tracking.py), read back through
MLflow's own client from a local SQLite store in a temp folder.

Real runs on real candles: a BTC/USDT 1d backtest with its tear-sheet (mirrored as it ends) and an
ETH/USDT 1d compare of a walk-forward trained predictor (its tracking server is down: a warning, then a
back-fill into a file store with ``python -m engine ledger --mlflow``). Importing MLflow costs ~1.5 s and
a new SQLite store's tables ~2.5 s, so those two tests are marked slow; the input errors (bad URI, MLflow
not installed) answer before any run and are fast.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import socket
from pathlib import Path

import pytest

from engine import cli
from engine.runs.backtest import run_backtest
from engine.core.config import load_config
from engine.judging.ledger import TrialLedger
from engine.judging.tracking import MLFLOW_INSTALL, experiment_name, mirror_rows, row_hash

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies" / "llm_signal.py"
LINEAR_AR = "tests.trainable_plugins:LinearAR"


def _settings(shared_data: Path, tmp: Path) -> dict:
    return {
        "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20230101-20230501",
        "data.cache_dir": str(tmp / "cache"), "predictor.context_length": 32, "predictor.horizon": 3,
        "evaluation.naive_baseline": False, "evaluation.bootstrap_samples": 200, "evaluation.lookahead_samples": 0,
        "evaluation.random_sign_draws": 0, "output.dir": str(tmp / "runs"), "output.progress": False,
    }


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(uri: str):
    pytest.importorskip("mlflow", reason=f"MLflow is not installed ({MLFLOW_INSTALL}; CI installs it with .[test])")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_a_backtest_is_mirrored_once_with_its_params_metrics_verdict_and_files(shared_data, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # what --mlflow's default ("local") is, in the working folder
    client = _client(uri)
    cfg = load_config(None, {**_settings(shared_data, tmp_path), "predictor.name": "momentum", "output.mlflow": uri,
                             "strategy.llm_signal.stake": 0.5})
    backtest = run_backtest(cfg, STRATEGY)  # with its tear-sheet and forecast page; mirrored as it ends
    ledger = tmp_path / "runs" / "ledger.sqlite"
    (row,) = TrialLedger(ledger).rows()
    (run,) = _runs(client, "llm_signal on binance BTC/USDT 1d")
    assert run.info.run_name == row.run_id == backtest.run_dir.name and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the database, not in the cwd
    metrics = json.loads((backtest.run_dir / "metrics.json").read_text())
    params, values, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["strategy"] == "llm_signal" and params["strategy.hash"] == row.strategy_hash
    assert params["predictor"] == "momentum" and params["predictor.hash"] == row.predictor_hash
    assert params["config.data.symbol"] == "BTC/USDT" and params["config.data.timerange"] == "20230101-20230501"
    assert params["config.broker.fee"] == str(cfg.broker.fee) and params["strategy.stake"] == "0.5"
    assert params["trial_hash"] == row.trial_hash and params["config_hash"] == row.config_hash
    assert "config.paper.mode" not in params and "config.training.epochs" not in params  # change nothing here
    sig = metrics["significance"]
    assert values["total_return"] == pytest.approx(row.total_return) and values["sharpe"] == pytest.approx(row.sharpe)
    assert values["significance.dsr"] == pytest.approx(sig["dsr"])
    assert values["significance.chance_p_value"] == pytest.approx(sig["chance_p_value"])
    assert values["significance.sharpe_ci.lower"] == pytest.approx(sig["sharpe_ci"]["lower"])
    assert values["significance.n_trials"] == sig["n_trials"] == 1
    skill = metrics["forecast_skill"]["last_horizon"]
    assert values["skill.last_horizon.mase"] == pytest.approx(skill["mase"])
    assert values["skill.last_horizon.directional.pt_p_value"] == pytest.approx(skill["directional"]["pt_p_value"])
    assert values["buy_and_hold.total_return"] == pytest.approx(metrics["buy_and_hold"]["total_return"])
    assert tags["llm4mp.verdict"] == sig["verdict"] and tags["llm4mp.kind"] == "backtest"
    assert tags["llm4mp.run_dir"] == str(backtest.run_dir) and tags["llm4mp.row_hash"] == row_hash(row)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "tearsheet.html", "forecast.html", "metrics.json", "config.toml"}
    local = Path(client.download_artifacts(run.info.run_id, "tearsheet.html", str(tmp_path)))
    assert local.read_bytes() == (backtest.run_dir / "tearsheet.html").read_bytes() and local.parent == tmp_path

    # the same row again, in this process and by the back-fill command: no second run
    again = mirror_rows([row], uri, ledger)
    assert (again.created, again.existing, again.replaced) == (0, 1, 0)
    assert cli.main(["ledger", "--out", str(ledger.parent), "--mlflow", uri]) == 0
    assert "0 ledger rows mirrored (1 already there)" in capsys.readouterr().out
    assert len(_runs(client, experiment_name(row))) == 1

    # a mirror that stopped half-way (another row's run, left RUNNING) is made again, not doubled
    other = dataclasses.replace(row, run_id=row.run_id + "-half")
    half = client.create_run(run.info.experiment_id, tags={"llm4mp.row_hash": row_hash(other)})
    report = mirror_rows([row, other], uri, ledger)
    assert (report.created, report.existing, report.replaced) == (0, 1, 1)
    runs = _runs(client, experiment_name(row))
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert half.info.run_id not in {r.info.run_id for r in runs}


@pytest.mark.slow
def test_a_tracking_server_that_is_down_warns_and_the_compare_keeps_its_runs(shared_data, tmp_path, capsys,
                                                                            monkeypatch):
    store = tmp_path / "mlruns"  # a file store, the back-fill's target below (MLflow 3 asks for the opt-in)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = _client(store.as_uri())
    down = f"http://127.0.0.1:{_closed_port()}"
    out = tmp_path / "runs"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in _settings(shared_data, tmp_path).items()
            if k not in ("data.data_dir", "data.timeframe", "data.timerange", "output.dir", "predictor.context_length")]
    code = cli.main(["compare", str(STRATEGY), "--data-dir", str(shared_data), "--timeframe", "1d",
                     "--timerange", "20230101-20230501", "--symbols", "ETH/USDT", "--predictors", LINEAR_AR,
                     "--jobs", "1", "--out", str(out), "--no-tearsheet", "--set", "training.retrain_every=\"30d\"",
                     "--set", "training.history_start=\"20220101\"", "--set", "predictor.context_length=16", *sets,
                     "--mlflow", down])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"mlflow: mirror to {down} failed: cannot reach the MLflow tracking server" in captured.err
    assert f"python -m engine ledger --out {out} --mlflow {down}" in captured.err
    (row,) = TrialLedger(out / "ledger.sqlite").rows()
    assert row.kind == "compare" and (Path(row.run_dir) / "metrics.json").is_file()
    assert cli.main(["ledger", "--out", str(out), "--mlflow", down]) == 1  # the back-fill's one job: an error
    assert f"error: cannot reach the MLflow tracking server at {down}" in capsys.readouterr().err

    # the back-fill once a store answers: the compare's row, with the trained predictor's fold plan
    assert cli.main(["ledger", "--out", str(out), "--mlflow", str(store)]) == 0
    assert "1 ledger row mirrored (0 already there)" in capsys.readouterr().out
    (run,) = _runs(client, "llm_signal on binance ETH/USDT 1d")
    plan = json.loads((Path(row.run_dir) / "metrics.json").read_text())["fold_plan"]
    assert run.data.tags["llm4mp.kind"] == "compare" and run.info.run_name == row.run_id
    assert run.data.params["fold_plan.n_folds"] == str(len(plan["folds"])) and len(plan["folds"]) >= 3
    assert run.data.params["fold_plan.cutoffs"].split(",")[0] == plan["folds"][0]["cutoff"][:19]
    assert run.data.params["fold_plan.retrain_every"] == "30d" and run.data.params["config.training.epochs"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"forecast.html", "metrics.json", "config.toml"}


@pytest.mark.parametrize("uri, words", [
    ("ftp://host/store", "unsupported scheme 'ftp'"),
    ("http://", "names no host"),
    ("sqlite://", "names no database file"),
])
def test_a_bad_mlflow_uri_is_an_input_error_before_the_run(uri, words, shared_data, tmp_path, capsys):
    code = cli.main(["backtest", str(STRATEGY), "--data-dir", str(shared_data), "--out", str(tmp_path / "runs"),
                     "--mlflow", uri])
    err = capsys.readouterr().err
    assert code == 2 and f"output.mlflow (--mlflow) = {uri!r}" in err and words in err and "sqlite:///" in err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_without_mlflow_the_flag_names_the_extra_before_the_run(shared_data, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "runs"
    code = cli.main(["backtest", str(STRATEGY), "--data-dir", str(shared_data), "--timeframe", "1d",
                     "--out", str(out), "--mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and "needs MLflow, which is not installed" in err and 'pip install -e ".[mlflow]"' in err
    assert not (out / "ledger.sqlite").exists() and not [p for p in out.glob("*") if p.is_dir()]
    assert TrialLedger.for_output_dir(out).rows() == []  # an empty ledger to back-fill: the back-fill says the same
    assert cli.main(["ledger", "--out", str(out), "--mlflow"]) == 2
    assert 'pip install -e ".[mlflow]"' in capsys.readouterr().err
