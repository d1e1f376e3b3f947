"""The judge works on 1..N computed runs, and a run folder is written once, after judging.

Real pipelines on BTC/USDT daily candles; the ledger is a real SQLite file in a temp folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engine.runs.backtest import run_backtest
from engine.core.config import load_config
from engine.judging.verdict import judge
from engine.judging.ledger import TrialLedger
from engine.runs.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies" / "llm_signal.py"


def _cfg(shared_data: Path, tmp_path: Path, predictor: str):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20230101-20230401",
        "data.cache_dir": str(tmp_path / "cache"), "predictor.name": predictor, "predictor.context_length": 64,
        "predictor.horizon": 3, "evaluation.naive_baseline": False, "evaluation.bootstrap_samples": 200,
        "evaluation.lookahead_samples": 0, "output.dir": str(tmp_path / "runs"), "output.tearsheet": False,
        "output.progress": False,
    })


@pytest.fixture(scope="module")
def two_results(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judge")
    return [run_pipeline(_cfg(shared_data, tmp, name), STRATEGY) for name in ("momentum", "drift")]


def test_judge_appends_every_row_first_so_all_runs_face_the_same_trial_count(two_results, tmp_path) -> None:
    before = [(r.equity.copy(), r.metrics.to_json()) for r in two_results]
    judgement = judge(two_results, STRATEGY, ledger_dir=tmp_path, kind="compare")
    assert judgement.ledger_failure is None
    assert [v.trials.n for v in judgement.verdicts] == [2, 2]  # the first run is judged against the second too
    assert [v.significance.n_trials for v in judgement.verdicts] == [2, 2]
    assert [row.kind for row in TrialLedger(tmp_path / "ledger.sqlite").rows()] == ["compare", "compare"]
    for r, (equity, metrics) in zip(two_results, before):  # nothing was changed on the results
        assert r.equity.equals(equity) and r.metrics.to_json() == metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        two_results[0].invalid = "changed"  # type: ignore[misc]


def test_judge_without_a_ledger_counts_one_trial(two_results) -> None:
    (verdict,) = judge(two_results[:1], STRATEGY).verdicts
    assert verdict.trials is None and verdict.significance.n_trials == 1


def test_judge_on_an_unusable_ledger_raises_nothing_and_names_the_complete_folder(two_results, tmp_path) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"this is not an SQLite file" + bytes(5000))
    judgement = judge(two_results, STRATEGY, ledger_dir=tmp_path)
    assert judgement.ledger_failure is not None
    assert all(v.significance is None and v.trials is None for v in judgement.verdicts)
    error = judgement.unrecorded(tmp_path / "compare-x", "compare folder")
    assert f"the compare folder {tmp_path / 'compare-x'} is complete" in str(error) and "ledger.sqlite" in str(error)


def test_backtest_writes_metrics_json_once_with_its_significance(shared_data, tmp_path, monkeypatch) -> None:
    writes: list[str] = []
    original = Path.write_text

    def counting_write_text(self: Path, *args, **kwargs):
        if "metrics.json" in self.name:
            writes.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", counting_write_text)
    run_dir = run_backtest(_cfg(shared_data, tmp_path, "momentum"), STRATEGY).run_dir
    assert writes == ["metrics.json"]  # written once, after judging: never re-opened to patch significance in
    assert json.loads((run_dir / "metrics.json").read_text())["significance"]["n_trials"] == 1
    assert (run_dir / "forecast.html").is_file()
