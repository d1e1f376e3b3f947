"""One error family grouped by what the user must do (engine/core/errors.py): fix the input -> exit 2,
retry later -> exit 1; every error reaches the CLI as one ``error:`` line, never a traceback."""

from __future__ import annotations

import ast
import errno
import importlib
import sqlite3
from pathlib import Path

import ccxt
import pytest

from engine import cli
from engine.core.config import ConfigError
from engine.core.errors import (
    EXIT_FIX_INPUT,
    EXIT_RETRY_LATER,
    FIX_INPUT,
    RETRY_LATER,
    LedgerUnusableError,
    OperationalError,
    StrategyLoadError,
    UserInputError,
    exit_code,
)
from engine.judging.ledger import LedgerError
from engine.judging.lookahead import LookaheadError
from engine.paper.execution import NotAnOrder
from feeds.errors import CandleError, ExchangeRequestError, ExchangeUnavailable, TimeframeError
from predictors.errors import PredictorError, PredictorUnavailable

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "feeds", "predictors", "reports", "strategies")
UNCACHED = "amazon/chronos-bolt-small-not-cached-here"

FIX = [ConfigError, UserInputError, StrategyLoadError, LookaheadError, CandleError, TimeframeError,
       ExchangeRequestError, PredictorError]
RETRY = [OperationalError, LedgerError, LedgerUnusableError, ExchangeUnavailable, PredictorUnavailable,
         ccxt.NetworkError, NotAnOrder]


def defined_exception_classes() -> list[tuple[str, type]]:
    """Every top-level class of the project's packages (found by ast) that is an exception."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
            if not names:
                continue
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if package == "strategies":
                continue  # strategies are loaded by path and define no exceptions (checked below)
            module = importlib.import_module(module_name)
            for name in names:
                cls = getattr(module, name)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.append((f"{module_name}.{name}", cls))
    return found


def test_every_exception_class_of_the_project_joins_the_family():
    classes = defined_exception_classes()
    assert len(classes) >= 15, [name for name, _ in classes]  # the search itself works
    outside = [name for name, cls in classes
               if not issubclass(cls, FIX_INPUT + RETRY_LATER + (ccxt.BaseError,))]
    assert outside == [], f"exception classes outside engine.core.errors' family: {outside}"
    strategy_exceptions = [
        f"{path.name}:{node.name}" for path in (ROOT / "strategies").rglob("*.py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ClassDef) and any("Error" in ast.unparse(b) or "Exception" in ast.unparse(b)
                                                 for b in node.bases)
    ]
    assert strategy_exceptions == []


@pytest.mark.parametrize("cls", FIX, ids=lambda c: c.__name__)
def test_fix_the_input_classes_exit_2(cls):
    assert exit_code(cls("x")) == EXIT_FIX_INPUT


@pytest.mark.parametrize("cls", RETRY, ids=lambda c: c.__name__)
def test_retry_later_classes_exit_1(cls):
    assert exit_code(cls("x")) == EXIT_RETRY_LATER


def test_disk_errors_are_retry_later_other_os_errors_are_bugs():
    assert exit_code(OSError(errno.ENOSPC, "No space left on device")) == EXIT_RETRY_LATER
    assert exit_code(FileNotFoundError(errno.ENOENT, "missing")) is None
    assert exit_code(KeyError("a bug")) is None


@pytest.mark.parametrize("cls", FIX + RETRY + [lambda m: OSError(errno.ENOSPC, m)],
                         ids=lambda c: getattr(c, "__name__", "ENOSPC"))
def test_each_error_reaches_the_cli_as_one_line(cls, monkeypatch, capsys):
    def fail(args):
        raise cls("the bad value 'xyz' and its fix")

    monkeypatch.setitem(cli.COMMANDS, "predictors", fail)
    code = cli.main(["predictors"])
    err = capsys.readouterr().err
    expected = EXIT_FIX_INPUT if cls in FIX else EXIT_RETRY_LATER
    assert code == expected
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "xyz" in lines[0], err
    assert "Traceback" not in err


def test_an_unusable_ledger_is_one_line_exit_1(tmp_path, capsys):
    (tmp_path / "ledger.sqlite").write_bytes(b"this is not a SQLite database" * 100)
    code = cli.main(["ledger", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_RETRY_LATER, err
    assert err.startswith("error: ") and "ledger.sqlite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_locked_ledger_is_retry_later(tmp_path, monkeypatch):
    import engine.judging.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "_retry_locked", lambda fn: (_ for _ in ()).throw(
        sqlite3.OperationalError("database is locked")))
    with pytest.raises(LedgerError) as err:
        ledger_module.TrialLedger(tmp_path / "ledger.sqlite").rows()
    assert exit_code(err.value) == EXIT_RETRY_LATER


def _backtest_with_model(tmp_path, model: str) -> list[str]:
    return ["backtest", str(ROOT / "strategies/llm_signal.py"), "--config", str(ROOT / "config.toml"),
            "--data-dir", str(ROOT.parent / "shared/data"), "--predictor", "chronos", "--model", model,
            "--out", str(tmp_path / "runs"), "--no-progress", "--no-tearsheet"]


def test_a_model_hub_outage_exits_1(tmp_path, monkeypatch, capsys, empty_hf_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    code = cli.main(_backtest_with_model(tmp_path, UNCACHED))
    err = capsys.readouterr().err
    assert code == EXIT_RETRY_LATER, err
    assert "error: " in err and "cannot be reached" in err and UNCACHED in err and "Traceback" not in err


def test_a_bad_model_id_exits_2(tmp_path, monkeypatch, capsys, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = cli.main(_backtest_with_model(tmp_path, str(tmp_path / "no-such-checkpoint")))
    err = capsys.readouterr().err
    assert code == EXIT_FIX_INPUT, err
    assert "error: " in err and "not a directory" in err and "Traceback" not in err


def test_a_hub_failure_while_loading_is_an_outage_only_for_network_errors():
    from predictors.hub import load_error

    refused = ConnectionRefusedError(111, "Connection refused")
    outage = load_error("org/model", None, OSError("could not download"))
    assert isinstance(outage, PredictorError)  # an OSError alone: a bad id or checkpoint, fix the input
    wrapped = OSError("could not download")
    wrapped.__cause__ = refused
    assert isinstance(load_error("org/model", None, wrapped), PredictorUnavailable)
