"""Runs that never lose their results: damaged caches, unwritable folders, corrupt or busy
ledgers, and several backtests at once on the same folders (issue 9, item 8).

Faults that are about processes (permissions, concurrent runs, a lock held by another
program) run in real subprocesses of ``python -m engine``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from loguru import logger

from engine.core.config import load_config
from engine.judging.ledger import TrialLedger
from engine.forecasting.signals import ForecastCache, cached_forecasts
from predictors.registry import make_predictor

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies/llm_signal.py"
RUN_FILES = {"config.toml", "metrics.json", "fills.csv", "trades.csv", "equity.csv", "forecasts.parquet"}


def _backtest_cmd(shared_data: Path, out: Path, cache: Path, timerange: str = "20230101-20230701") -> list[str]:
    """A small daily backtest through the CLI (about 180 bars, momentum forecasts, no tear-sheet)."""
    return [
        sys.executable, "-m", "engine", "backtest", str(STRATEGY), "--data-dir", str(shared_data),
        "--symbol", "BTC/USDT", "--timeframe", "1d", "--timerange", timerange, "--predictor", "momentum",
        "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-tearsheet",
        "--set", "predictor.context_length=32", "--set", "evaluation.bootstrap_samples=200",
        "--set", "evaluation.lookahead_samples=2",
    ]


def _run(cmd: list[str], timeout: float = 300, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- a damaged forecast cache is a miss ----------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_forecast_cache_file_is_a_miss_warned_and_recomputed(btc_1d, tmp_path, damage):
    candles = btc_1d.loc["2022-01-01":"2022-12-31"]
    decisions = candles.index[40:]
    cache = ForecastCache(tmp_path / "forecasts")
    predictor = make_predictor("momentum", {}, quantile_levels=(0.1, 0.5, 0.9), seed=0)
    first, hit = cached_forecasts(candles, predictor, 32, 6, decisions, cache, progress=False)
    assert not hit
    (path,) = cache.root.glob("*.parquet")
    size = path.stat().st_size
    if damage == "truncate":  # a run killed mid-write by an older version, a full disk, a copy cut short
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "garbage":
        path.write_bytes(os.urandom(size))
    else:
        path.write_bytes(b"")

    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        assert cache.load(path.stem) is None
        again, hit = cached_forecasts(candles, predictor, 32, 6, decisions, cache, progress=False)
    finally:
        logger.remove(sink)
    assert not hit
    assert any("unreadable" in m and path.name in m and "recomput" in m for m in messages), messages
    assert again.index.equals(first.index) and (again.values == first.values).all()
    # the damaged file was replaced by a whole one: the next run is a hit again
    third, hit = cached_forecasts(candles, predictor, 32, 6, decisions, cache, progress=False)
    assert hit and (third.values == first.values).all()
    assert [p.name for p in cache.root.iterdir()] == [path.name]  # no temporary files left behind


def test_forecast_cache_that_cannot_be_written_costs_only_time(btc_1d, tmp_path):
    candles = btc_1d.loc["2022-01-01":"2022-06-30"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = ForecastCache(blocker / "forecasts")
    predictor = make_predictor("momentum", {}, quantile_levels=(0.1, 0.5, 0.9), seed=0)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        forecast, hit = cached_forecasts(candles, predictor, 32, 6, candles.index[40:], cache, progress=False)
    finally:
        logger.remove(sink)
    assert not hit and len(forecast.index) == len(candles) - 40
    assert any("not written" in m for m in messages), messages


# -- an output folder that cannot be written fails before any work -------------------------------
def _without_root_override() -> tuple[str, ...]:
    """Run as this user but subject to file modes: root ignores them (CAP_DAC_OVERRIDE), so drop it."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.slow
def test_read_only_output_dir_is_refused_before_any_work(shared_data, tmp_path):
    prefix = _without_root_override()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out in (locked, locked / "runs"):  # the folder itself, and one that would have to be created in it
            cache = tmp_path / f"cache-{out.name}"
            t0 = time.perf_counter()
            proc = _run(_backtest_cmd(shared_data, out, cache), prefix=prefix)
            errors = _error_lines(proc.stderr)
            assert proc.returncode == 2, proc.stderr
            assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
            assert str(out) in errors[0] and "not writable" in errors[0] and "--out" in errors[0]
            assert not cache.exists(), "candles or forecasts were computed before the output folder was checked"
            assert "computing" not in proc.stderr
            print(f"refused in {time.perf_counter() - t0:.1f} s")
        proc = _run([sys.executable, "-m", "engine", "compare", str(STRATEGY), "--data-dir", str(shared_data),
                     "--predictors", "naive,momentum", "--timeframe", "1d", "--out", str(locked / "cmp"),
                     "--cache-dir", str(tmp_path / "cache-cmp")], prefix=prefix)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(_error_lines(proc.stderr)) == 1 and "not writable" in proc.stderr
        assert not (tmp_path / "cache-cmp").exists()
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# -- a corrupt ledger keeps the run's results ----------------------------------------------------
def _corrupt_ledger(out: Path, how: str) -> bytes:
    """Write a damaged ``ledger.sqlite`` into ``out``; return its bytes."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ledger.sqlite"
    if how == "garbage":
        data = b"this is not an SQLite file" + os.urandom(5000)
    else:  # a real SQLite header, then garbage: "database disk image is malformed"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(200),) for _ in range(200)])
        data = path.read_bytes()[:100] + os.urandom(8000)
    path.write_bytes(data)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("how", ["garbage", "malformed"])
def test_corrupt_ledger_leaves_a_complete_run_folder_and_says_how_to_fix_it(shared_data, tmp_path, how):
    out = tmp_path / "out"
    before = _corrupt_ledger(out, how)
    proc = _run(_backtest_cmd(shared_data, out, tmp_path / "cache"))
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert str(run_dir) in errors[0] and "ledger.sqlite" in errors[0]
    assert "mv " in errors[0] and ".recover" in errors[0]  # how to move it aside or repair it
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    metrics = pd.read_json(run_dir / "metrics.json", typ="series")
    assert metrics["performance"]["n_trades"] > 0
    assert (out / "ledger.sqlite").read_bytes() == before  # the damaged ledger was not touched further


def test_compare_with_a_corrupt_ledger_still_writes_every_run_and_the_leaderboard(shared_data, tmp_path):
    from engine.runs.compare import run_compare
    from engine.core.errors import OperationalError  # LedgerUnusableError: the CLI's exit code 1

    out = tmp_path / "out"
    _corrupt_ledger(out, "garbage")
    cfg = load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20230101-20230701",
        "data.cache_dir": str(tmp_path / "cache"), "predictor.context_length": 32, "output.dir": str(out),
        "output.tearsheet": False, "output.progress": False, "evaluation.bootstrap_samples": 200,
        "evaluation.naive_baseline": False, "evaluation.lookahead_samples": 2,
    })
    with pytest.raises(OperationalError) as info:
        run_compare(cfg, STRATEGY, ["naive", "momentum"], ["BTC/USDT"], jobs=1)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    assert (folder / "leaderboard.html").is_file() and (folder / "leaderboard.csv").is_file()
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 2 and all(RUN_FILES <= {f.name for f in r.iterdir()} for r in runs)


# -- several runs at once on the same folders ----------------------------------------------------
def _claim_folders(out: str, start: float, n: int, queue) -> None:
    from engine.runs.run_folder import new_run_dir

    while time.time() < start:  # all processes begin in the same instant
        pass
    names, error = [], None
    try:
        for _ in range(n):
            names.append(new_run_dir(Path(out), "llm_signal", "momentum", "BTC/USDT", "1d").name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        error = f"{type(exc).__name__}: {exc}"
    queue.put((names, error))


def test_run_folders_claimed_at_once_by_many_processes_are_all_distinct(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    n_proc, per_proc = 8, 40
    start = time.time() + 1.0
    procs = [ctx.Process(target=_claim_folders, args=(str(tmp_path), start, per_proc, queue)) for _ in range(n_proc)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [e for _, e in results if e]
    names = [n for ns, _ in results for n in ns]
    assert errors == []
    assert len(names) == n_proc * per_proc == len(set(names)) == len(list(tmp_path.iterdir()))


_HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
""")


def test_ledger_append_waits_out_a_lock_held_by_another_process(tmp_path, monkeypatch):
    import engine.judging.ledger as ledger_module
    from engine.judging.ledger import TrialRow, utc_now_iso

    ledger = TrialLedger(tmp_path / "ledger.sqlite")
    ledger.schema_version  # noqa: B018 - creates the file and schema
    # SQLite's own busy timeout is 60 s in production; shorten it so the bounded retry is what waits.
    monkeypatch.setattr(ledger_module, "_TIMEOUT_S", 0.05)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(ledger.path), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        row = TrialRow(run_id="r1", created_at=utc_now_iso(), kind="backtest", config_hash="h", strategy="s",
                       strategy_params="{}", predictor="naive", predictor_params="{}", model="m", symbol="BTC/USDT",
                       timeframe="1d", timerange="20230101-20230701", n_bars=10, total_return=0.1, sharpe=1.0,
                       sortino=1.0, max_drawdown=-0.1, n_trades=2, run_dir="x")
        t0 = time.perf_counter()
        TrialLedger(ledger.path).append(row)
        waited = time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
    assert [r.run_id for r in ledger.rows()] == ["r1"]
    assert 0.5 < waited < 15, waited


@pytest.mark.slow
@pytest.mark.soak
def test_concurrent_backtests_on_the_same_folders_all_succeed_and_all_are_recorded(shared_data, tmp_path):
    """8 identical small backtests at once, sharing the output folder, the ledger and the forecast cache."""
    n = 8
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = _backtest_cmd(shared_data, out, cache, timerange="20230101-20230401")
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outputs = [p.communicate(timeout=600) for p in procs]
    print(f"{n} concurrent backtests in {time.perf_counter() - t0:.1f} s")
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    reported = sorted(Path(line.split("run folder: ", 1)[1]) for o, _ in outputs for line in o.splitlines()
                      if line.startswith("run folder: "))
    assert reported == folders and len(folders) == n
    assert all(RUN_FILES <= {f.name for f in d.iterdir()} for d in folders)
    rows = TrialLedger(out / "ledger.sqlite").rows()
    assert sorted(r.run_dir for r in rows) == [str(d) for d in folders]
    assert len({r.run_id for r in rows}) == n
    assert len({(r.total_return, r.sharpe, r.n_trades) for r in rows}) == 1  # identical runs, identical results
    cached = list((cache / "forecasts").iterdir())
    assert cached and all(p.suffix == ".parquet" for p in cached)
    assert all(ForecastCache(cache / "forecasts").load(p.stem) is not None for p in cached)


def test_a_variant_naming_long_checkpoint_paths_gets_a_short_distinct_folder(tmp_path):
    """A compare variant's label carries its parameters (checkpoint paths included): the folder name must stay under
    the file systems' 255 bytes per name (ENAMETOOLONG otherwise) and two variants differing only at the end must
    not share a folder."""
    from engine.runs.run_folder import RUN_DIR_PART_MAX, new_run_dir, run_dir_part

    deep = "/" + "/".join(["a_rather_long_folder_name_for_checkpoints"] * 6)
    a = f'kronos[model="{deep}/model", tokenizer="{deep}/tokenizer", num_samples=4]'
    b = a.replace("num_samples=4", "num_samples=8")
    folders = [new_run_dir(tmp_path, "llm_signal", v, "BTC/USDT", "1d") for v in (a, b)]
    assert all(f.is_dir() and len(f.name.encode()) < 255 for f in folders)
    assert folders[0].name != folders[1].name and run_dir_part(a) != run_dir_part(b)
    assert len(run_dir_part(a)) <= RUN_DIR_PART_MAX and run_dir_part(a).startswith("kronos_model_")
    assert run_dir_part("BTC/USDT") == "BTC_USDT" and run_dir_part("momentum[lookback=7]") == "momentum_lookback_7_"
