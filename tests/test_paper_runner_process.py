"""`python -m engine paper` as a real process on the stub's accelerated clock (issue 9, items 5,
6 and 7): SIGINT/SIGTERM during start-up stop it cleanly and print the exact `--resume`
command, which continues the run; an exchange error body echoing the API key never shows
the key, nor a traceback; an exchange without a sandbox is refused before anything else."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from binance_stub import KLINES_PATH, ORDER_PATH, BinanceStub
from engine.paper.clock import CLOCK_ENV
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from test_paper_helpers import ROOT, START_MS, stub_fixture

KEY, SECRET = "k3y-Process-Test-A1B2C3D4E5F6G7H8", "s3cret-Process-Test-Z9Y8X7W6V5U4T3"
SPEED = 3600 / 0.3  # one 1h bar every 0.3 s
# late_candle_wait_s = 3000 s of exchange time is 0.25 s of wall time at this speed: a poll
# slowed by a busy machine still trades its bar
BOUND_S = 60  # every wait on a child process is bounded


def paper_cmd(stub: BinanceStub, out: Path, *extra: str, mode: str = "testnet") -> list[str]:
    sets = {
        "predictor.name": '"momentum"', "predictor.context_length": "48", "predictor.horizon": "4",
        "predictor.params.momentum.lookback": "12", "predictor.cache": "false",
        "strategy.llm_signal.threshold": "0.001", "data.exchange_url": f'"{stub.url}"',
        "paper.api_url": f'"{stub.url}"', "paper.poll_delay_s": "2.0", "paper.late_candle_wait_s": "3000.0",
        "paper.late_candle_retry_s": "60.0", "paper.backoff_base_s": "0.01", "paper.tearsheet_every_bars": "0",
    }
    cmd = [sys.executable, "-m", "engine", "paper", str(ROOT / "strategies" / "llm_signal.py"),
           "--config", str(ROOT / "config.toml"), "--mode", mode, "--out", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd + list(extra)


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {BOUND_S} s")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, sig: int | None = signal.SIGTERM) -> tuple[str, str]:
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no clean stop within {BOUND_S} s: {out[-2000:]} {err[-2000:]}") from None


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as in a terminal (a background job ignores it)


stub = stub_fixture(KEY, SECRET)


@pytest.fixture
def env(stub):
    return {**os.environ, API_KEY_ENV: KEY, API_SECRET_ENV: SECRET, "PYTHONPATH": str(ROOT),
            CLOCK_ENV: stub.accelerate(START_MS, SPEED)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_stops_cleanly_and_says_how_to_resume(stub, env, tmp_path, sig):
    out = tmp_path / "runs"
    stub.fault_paths = {"/api/v3/exchangeInfo"}
    stub.fail_next("delay:2")  # start-up is loading the markets when the signal comes
    proc = subprocess.Popen(paper_cmd(stub, out), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    wait_for(lambda: stub.requests_to("/api/v3/exchangeInfo"), "markets request", proc)
    stdout, stderr = finish(proc, sig)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert f"{signal.Signals(sig).name} received" in stderr
    assert stub.requests_to(KLINES_PATH) == [], "it went on trading after the signal"
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert f"run folder: {run_dir}" in stdout
    (line,) = [x for x in stdout.splitlines() if x.startswith("continue with: ")]
    command = shlex.split(line.removeprefix("continue with: "))
    assert command[:4] == ["python", "-m", "engine", "paper"] and command[command.index("--resume") + 1] == str(run_dir)

    # the printed command, run as printed, continues the run
    stub.fault_paths = set()
    resumed = subprocess.Popen([sys.executable, *command[1:]], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)

    def traded_bars() -> int:
        journal = Journal(run_dir / JOURNAL_FILE)
        try:
            return len(journal.equity())
        finally:
            journal.close()

    wait_for(lambda: traded_bars() >= 3, "3 traded bars after the resume", resumed)
    stdout, stderr = finish(resumed, sig)
    assert resumed.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert "paper run stopped (signal)" in stdout and f"run folder: {run_dir}" in stdout
    journal = Journal(run_dir / JOURNAL_FILE)
    assert [kind for kind, _ in journal.events("resume")] == ["resume"]
    journal.close()


@pytest.mark.slow
def test_an_exchange_error_echoing_the_key_never_shows_it(stub, env, tmp_path):
    """Binance -1001 (ccxt OperationFailed, outside the handled error classes) with a body
    that echoes the API key and secret, on the first order."""
    out = tmp_path / "runs"
    stub.reject_next_orders.append((-1001, f"Internal error; request with apiKey={KEY} secret={SECRET} failed"))
    proc = subprocess.Popen(paper_cmd(stub, out), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: not stub.reject_next_orders, "order request", proc)
    try:  # it stops on the error, or (if the error is handled) trades on until stopped
        proc.wait(timeout=5)  # the error comes with the order answer; 5 s leaves a busy machine time to log it
    except subprocess.TimeoutExpired:
        pass
    stdout, stderr = finish(proc)
    assert proc.returncode in (0, 1), stderr[-3000:]
    assert "Traceback" not in stderr + stdout
    texts = [stdout, stderr] + [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    for text in texts:
        assert KEY not in text and SECRET not in text
    assert "***" in stderr  # the error was shown, redacted
    assert any(r.method == "POST" for r in stub.requests_to(ORDER_PATH))


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_an_exchange_without_a_sandbox_is_refused_first(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, API_KEY_ENV: KEY, API_SECRET_ENV: SECRET, "PYTHONPATH": str(ROOT)}
    env.pop(CLOCK_ENV, None)
    cmd = [sys.executable, "-m", "engine", "paper", str(ROOT / "strategies" / "llm_signal.py"), "--config",
           str(ROOT / "config.toml"), "--mode", "testnet", "--exchange", "kraken", "--out", str(out),
           "--set", "paper.max_retries=0", "--set", "paper.request_timeout_s=2.0"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: exchange 'kraken' has no sandbox") and "--mode sim" in line
    assert not out.exists() or list(out.iterdir()) == []


def test_a_secret_split_across_writes_of_one_line_is_redacted():
    import io

    from engine.paper.secrets import RedactingStream, register_secret

    register_secret(KEY)
    buffer = io.StringIO()
    stream = RedactingStream(buffer)
    stream.write(f"error: {KEY[:9]}")
    stream.write(f"{KEY[9:]} refused\nprogress {KEY[:5]}")
    stream.write(f"{KEY[5:]}\rtail {KEY}")
    stream.flush()
    assert buffer.getvalue() == "error: *** refused\nprogress ***\rtail ***"
