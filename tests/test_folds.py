"""The walk-forward fold plan (engine/training/folds.py): its rules hold for every config, on real candle
indexes with gaps, and ``FoldPlan.violations`` (the lookahead's check too) catches broken plans."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from engine.core.config import ConfigError, TrainingConfig, parse_span
from engine.training.folds import FoldPlan, plan_folds

CONFIGS = 200


def _random_index(rng: np.random.Generator, full: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """A stretch of real 1h candle times, sometimes with outages cut out (hours to days long)."""
    n = int(rng.integers(1500, 6000))
    start = int(rng.integers(0, len(full) - n))
    index = full[start : start + n]
    if rng.random() < 0.5:
        keep = np.ones(len(index), dtype=bool)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, len(index) - 1))
            keep[at : at + int(rng.choice([3, 30, 200, 900]))] = False
        index = index[keep]
    return index


def _random_training(rng: np.random.Generator, horizon: int) -> TrainingConfig:
    every = rng.choice([f"{int(rng.integers(1, 60))}d", f"{int(rng.integers(6, 96))}h", "2w",
                        f"{int(rng.integers(24, 2000))}bars"])
    window = rng.choice(["expanding", f"{int(rng.integers(20, 200))}d", f"{int(rng.integers(200, 4000))}bars"])
    return TrainingConfig(
        retrain_every=str(every), train_window=str(window),
        embargo_bars=int(rng.choice([0, horizon, horizon + int(rng.integers(1, 50))])),
        val_fraction=float(rng.choice([0.0, 0.05, 0.1, 0.25, 0.45])),
    )


def _check_plan(plan: FoldPlan, index: pd.DatetimeIndex, decisions: pd.DatetimeIndex, t: TrainingConfig,
                context: int, horizon: int) -> None:
    positions = index.get_indexer(decisions)
    embargo = t.embargo_bars or horizon
    assert plan.embargo == embargo >= horizon
    need = context + horizon
    every = parse_span(t.retrain_every, "every")
    for i, f in enumerate(plan.folds):
        assert f.k == i
        # no training or validation candle at or after the cut-off, and the cut-off is embargo bars before the fold
        assert 0 <= f.start < f.split <= f.stop < f.first <= f.last
        assert f.cutoff == index[f.stop] and f.train_end == index[f.stop - 1] < f.cutoff
        assert f.train_start == index[f.start] and f.test_start == index[f.first] and f.test_end == index[f.last]
        served = positions[(positions >= f.first) & (positions <= f.last)]
        assert len(served) and (served - f.stop >= embargo).all()
        assert f.first - f.stop == embargo  # exactly the embargo: no training candle is wasted either
        # the window: expanding from the first candle, or rolling within train_window before the cut-off
        if t.train_window == "expanding":
            assert f.start == 0
        else:
            window = parse_span(t.train_window, "window")
            if window.duration is None:
                assert f.stop - f.start == min(window.bars, f.stop)
            else:
                assert index[f.start] >= f.cutoff - window.duration
                assert f.start == 0 or index[f.start - 1] < f.cutoff - window.duration
        # validation is the end of the window, val_fraction of it; both parts hold a window and its target
        assert f.valid_bars == round((f.stop - f.start) * t.val_fraction)
        assert f.train_bars >= need and (t.val_fraction == 0 or f.valid_bars >= need)
        # the held-out part: its first half for early stopping, its second half scored (never handed to fit)
        assert f.split <= f.score <= f.stop and f.scoring_bars == f.valid_bars // 2
        assert t.val_fraction == 0 or min(f.stopping_bars, f.scoring_bars) >= horizon + 1
        if i:  # folds in time order, contiguous over the decisions
            prev = plan.folds[i - 1]
            assert prev.last < f.first and prev.cutoff < f.cutoff
            assert list(positions).index(f.first) == list(positions).index(prev.last) + 1
    # every decision time served by exactly one fold; folds cut where retrain_every says
    fold_of = plan.fold_of(positions)
    assert (fold_of >= 0).all()
    covering = sum(((positions >= f.first) & (positions <= f.last)).astype(int) for f in plan.folds)
    assert (covering == 1).all()
    if every.duration is not None:
        periods = ((decisions - decisions[0]) // every.duration).to_numpy()
        for k in range(len(plan.folds)):
            assert len(set(periods[fold_of == k])) == 1
        assert (np.diff(periods[np.r_[0, np.flatnonzero(np.diff(fold_of)) + 1]]) > 0).all()
    else:
        sizes = np.bincount(fold_of)
        assert (sizes[:-1] == every.bars).all() and 0 < sizes[-1] <= every.bars
    assert plan.violations(positions) == []
    assert plan.violations(positions, served_by=fold_of) == []


def test_fold_rules_hold_for_random_configs_on_real_candles(btc_1h):
    full = btc_1h.index
    rng = np.random.default_rng(20240601)
    planned = refused = 0
    for _ in range(CONFIGS):
        index = _random_index(rng, full)
        horizon = int(rng.integers(1, 25))
        context = int(rng.integers(8, 200))
        t = _random_training(rng, horizon)
        first_traded = int(rng.integers(len(index) // 4, len(index) * 3 // 4))
        decisions = index[first_traded:]
        try:
            plan = plan_folds(index, decisions, t, context, horizon)
        except ConfigError as exc:
            refused += 1
            text = str(exc)
            assert ("fewer than context_length + horizon" in text or "fewer than horizon + 1" in text) and \
                "history_start" in text, text
            continue
        planned += 1
        _check_plan(plan, index, decisions, t, context, horizon)
    assert planned > CONFIGS // 2 and refused > 0, (planned, refused)


def test_too_short_history_is_a_config_error_naming_the_fix(btc_1h):
    index = btc_1h.index[:2000]
    t = TrainingConfig(retrain_every="30d", val_fraction=0.1)
    with pytest.raises(ConfigError, match=r"fold 0 .* fewer than context_length \+ horizon = 524.*history_start"):
        plan_folds(index, index[400:], t, 512, 12)
    with pytest.raises(ConfigError, match="validation candles"):  # 10% of 1000 bars < 524
        plan_folds(index, index[1012:], t, 512, 12)
    assert plan_folds(index, index[1012:], dataclasses.replace(t, val_fraction=0.0), 512, 12).folds


def _plan(btc_1h) -> tuple[FoldPlan, np.ndarray]:
    index = btc_1h.index[:4000]
    decisions = index[2000:]
    plan = plan_folds(index, decisions, TrainingConfig(retrain_every="20d"), 64, 12)
    assert len(plan.folds) >= 3
    return plan, index.get_indexer(decisions)


def test_violations_catch_planted_broken_plans(btc_1h):
    plan, positions = _plan(btc_1h)
    folds = list(plan.folds)
    f1 = folds[1]

    leaky = dataclasses.replace(plan, folds=tuple(folds[:1] + [dataclasses.replace(f1, stop=f1.first - 3)] + folds[2:]))
    assert any("fewer than the embargo" in v for v in leaky.violations(positions))

    overlap = dataclasses.replace(plan, folds=tuple(folds[:1] + [dataclasses.replace(f1, first=folds[0].last)]
                                                    + folds[2:]))
    assert any("served by 2 folds" in v for v in overlap.violations(positions))

    hole = dataclasses.replace(plan, folds=tuple(folds[:1] + [dataclasses.replace(f1, first=f1.first + 1)]
                                                 + folds[2:]))
    assert any("served by 0 folds" in v for v in hole.violations(positions))

    swapped = dataclasses.replace(plan, folds=tuple(folds[:1] + [dataclasses.replace(f1, split=f1.stop + 1)]
                                                    + folds[2:]))
    assert any("out of order" in v for v in swapped.violations(positions))

    served = plan.fold_of(positions)
    late = served.copy()
    late[positions == f1.first] = 2  # a decision of fold 1 served by fold 2, trained on candles after it
    assert any("served by fold 2" in v for v in plan.violations(positions, served_by=late))
    unknown = served.copy()
    unknown[0] = 99
    assert any("no known fold" in v for v in plan.violations(positions, served_by=unknown))
    assert plan.violations(positions, served_by=served) == []
