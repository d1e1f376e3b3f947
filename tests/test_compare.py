"""`compare`: every predictor x symbol on the same bars and costs; same results however it runs."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine.runs.compare import run_compare
from engine.core.config import load_config
from engine.judging.ledger import TrialLedger

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies/llm_signal.py"
IGNORED = {"run_id", "created_at", "run_dir"}


def _cfg(shared_data, out):
    return load_config(ROOT / "config.toml", {
        # two weeks of 1h bars: enough for trades and every judgement, a fraction of a month's cost
        "data.data_dir": str(shared_data), "data.timerange": "20240101-20240115", "data.cache_dir": str(out / "cache"),
        "predictor.context_length": 128, "output.dir": str(out), "output.tearsheet": False,
        "evaluation.bootstrap_samples": 200, "output.progress": False,
    })


def _ledger_rows(out):
    rows = TrialLedger(out / "ledger.sqlite").rows()
    return [{k: v for k, v in vars(r).items() if k not in IGNORED} for r in rows]


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


@pytest.mark.slow
def test_serial_and_parallel_runs_give_identical_results_and_ledger(shared_data, tmp_path):
    preds, syms = ["naive", "momentum"], ["BTC/USDT", "ETH/USDT"]  # four pairs: two per worker at jobs=2
    serial = run_compare(_cfg(shared_data, tmp_path / "a"), STRATEGY, preds, syms, jobs=1)
    parallel = run_compare(_cfg(shared_data, tmp_path / "b"), STRATEGY, preds, syms, jobs=2)

    assert set(serial.results) == {(s, p) for s in syms for p in preds}
    for key, a in serial.results.items():
        b = parallel.results[key]
        assert a.metrics.to_json() == b.metrics.to_json()  # NaN as None: equal when both are undefined
        assert serial.verdicts[key].significance.to_json() == parallel.verdicts[key].significance.to_json()
    # same bars and decision times for every predictor of a symbol
    for s in syms:
        idx = [serial.results[(s, p)].forecast.index for p in preds]
        assert all(i.equals(idx[0]) for i in idx)
    ra, rb = _ledger_rows(tmp_path / "a"), _ledger_rows(tmp_path / "b")
    assert len(ra) == 4 and all(r["kind"] == "compare" for r in ra)
    assert all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb))
    # the leaderboard has every pair, and each run folder has its forecast page
    for p in preds:
        assert p in serial.text
    html = serial.html.read_text()
    assert "ETH/USDT" in html and html.count('class="plotly-chart"') == 2  # an equity overlay per symbol
    for run_dir in serial.run_dirs.values():
        assert (run_dir / "forecast.html").is_file()
    # all four runs of one comparison are judged against the same number of trials: its two predictors
    # on both symbols, one study (the ledger was empty before)
    trials = sorted((s, v.significance.n_trials) for (s, _), v in serial.verdicts.items())
    assert trials == [("BTC/USDT", 4)] * 2 + [("ETH/USDT", 4)] * 2, trials


@pytest.mark.slow
@pytest.mark.soak  # starts a local Ray cluster (~15 s): with the other cluster tests in CI's soak step
def test_ray_gives_the_same_results(shared_data, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    # Ray 2.60's ray.init() of a new local cluster turns token auth on and writes ~/.ray/auth_token,
    # after which every `ray start` on the machine requires the token: keep this one without it.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        via_ray = run_compare(_cfg(shared_data, tmp_path / "r"), STRATEGY, ["naive", "momentum"], ["BTC/USDT"],
                              ray_address="auto")
    finally:
        ray.shutdown()
    local = run_compare(_cfg(shared_data, tmp_path / "l"), STRATEGY, ["naive", "momentum"], ["BTC/USDT"], jobs=1)
    for key, a in local.results.items():
        b = via_ray.results[key]
        assert a.metrics.to_json() == b.metrics.to_json()
        assert local.verdicts[key].significance.to_json() == via_ray.verdicts[key].significance.to_json()
    ra, rb = _ledger_rows(tmp_path / "l"), _ledger_rows(tmp_path / "r")
    assert len(ra) == 2 and all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb))


def test_compare_cli_and_errors(shared_data, tmp_path, capsys, monkeypatch):
    """In this process (a subprocess `compare` refusing its input runs in tests/test_run_faults.py)."""
    from engine import cli

    monkeypatch.chdir(ROOT)
    code = cli.main(["compare", str(STRATEGY), "--data-dir", str(shared_data), "--predictors",
                     "naive,momentum,nosuch", "--timerange", "20240101-20240110", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown predictor 'nosuch'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # checked before the compare folder is made: nothing left behind


# -- a real cluster, started with `ray start` in its own process ---------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster from ``ray start --head --block`` with token authentication.

    It runs in a working directory of its own (not the repo), as its workers do on a real
    cluster, with its own HOME and token (``RAY_AUTH_TOKEN``), so ~/.ray is never touched.
    Ray's rule (2.60): a client that passes an explicit address must set RAY_AUTH_MODE=token
    itself; only ``address="auto"`` picks a token up by default. Teardown sends SIGTERM to the
    ``--block`` process, which stops the processes it started, then kills what is left of its
    process group: `ray stop` would stop every Ray cluster on the machine, not just this one.
    Yields ``(address, env for clients with the token, env for clients without RAY_AUTH_MODE)``.
    """
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.is_file():
        pytest.skip("the `ray` command is not installed beside this Python")
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets live under it
    (base / "home").mkdir()
    (base / "cwd").mkdir()
    port = _free_port()
    env = {**os.environ, "HOME": str(base / "home"), "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    log = open(base / "ray-start.log", "w")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={base / 'ray'}"],
        cwd=base / "cwd", env={**env, "RAY_AUTH_MODE": "token"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "Ray runtime started" not in (base / "ray-start.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{(base / 'ray-start.log').read_text()[-3000:]}")
            time.sleep(1)
        yield f"127.0.0.1:{port}", {**env, "RAY_AUTH_MODE": "token"}, env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # this cluster's own process group only
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _compare_cli(args, env, timeout=420):
    return subprocess.run([sys.executable, "-m", "engine", "compare", str(STRATEGY), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.soak
def test_compare_on_a_ray_start_cluster_with_relative_paths(shared_data, tmp_path, ray_cluster):
    """The cluster's workers run in another folder: relative --data-dir/--cache-dir must be resolved
    on the driver. Results and ledger rows equal a local run's."""
    address, env, _ = ray_cluster
    rel_data = os.path.relpath(shared_data, ROOT)  # e.g. ../shared/data: valid here, not in the workers' folder
    rel_cache = os.path.relpath(tmp_path / "cache", ROOT)
    args = ["--data-dir", rel_data, "--cache-dir", rel_cache, "--timeframe", "1d", "--timerange", "20230101-20230701",
            "--predictors", "naive,momentum", "--no-tearsheet", "--no-progress",
            "--set", "predictor.context_length=32", "--set", "evaluation.bootstrap_samples=200"]
    proc = _compare_cli([*args, "--out", str(tmp_path / "r"), "--ray", address], env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    local = _compare_cli([*args, "--out", str(tmp_path / "l"), "--jobs", "1"], env)
    assert local.returncode == 0, local.stderr[-3000:]
    ra, rb = _ledger_rows(tmp_path / "l"), _ledger_rows(tmp_path / "r")
    assert len(rb) == 2 and all(r["kind"] == "compare" for r in rb)
    assert all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb))
    assert any(r["n_trades"] > 0 for r in rb)


@pytest.mark.slow
@pytest.mark.soak
def test_ray_token_refused_is_one_line_naming_what_to_set(shared_data, tmp_path, ray_cluster):
    address, _, env_without_mode = ray_cluster
    proc = _compare_cli(["--data-dir", str(shared_data), "--timeframe", "1d", "--predictors", "naive",
                         "--out", str(tmp_path / "out"), "--ray", address], env_without_mode)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    assert "RAY_AUTH_MODE=token" in errors[0] and address in errors[0]
    assert not any(p.is_dir() for p in (tmp_path / "out").glob("*"))  # nothing was started


@pytest.mark.slow
@pytest.mark.soak
def test_an_error_inside_a_ray_worker_is_one_line(shared_data, tmp_path, ray_cluster):
    address, env, _ = ray_cluster
    proc = _compare_cli(["--data-dir", str(shared_data), "--timeframe", "1d", "--timerange", "20230101-20230301",
                         "--predictors", "naive", "--symbols", "XRP/USDT", "--out", str(tmp_path / "out"),
                         "--no-tearsheet", "--no-progress", "--ray", address], env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    assert "XRP" in errors[0]
