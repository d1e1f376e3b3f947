"""reports.render.tearsheet (quantstats HTML, offline, quiet) and reports.render.summary (text table)."""

from __future__ import annotations

import logging
import math
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.core.costs import Costs
from engine.backtesting.simulate import buy_and_hold_equity
from reports.metrics import SUMMARY_KEYS, simple_returns
from reports.render.summary import format_metric, summary_table
from reports.render.tearsheet import daily_returns, write_tearsheet

def _strategy_and_benchmark(candles: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Real returns: a 30-bar SMA filter (decided at the close, held from the next bar)
    against buy-and-hold of the same bars with the same costs."""
    close = candles["close"]
    bh = buy_and_hold_equity(candles["open"], close, 10_000.0, Costs(0.001, 0.0005))
    bench = simple_returns(bh).rename("buy_and_hold")
    held = (close > close.rolling(30).mean()).shift(1, fill_value=False).astype(float)
    strat = (close.pct_change() * held).iloc[1:].rename("sma_filter")
    return strat, bench


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):  # noqa: ANN001
        attempts.append(address)
        raise OSError(f"network access attempted in a test: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# ------------------------------------------------------------------- tear-sheet


@pytest.mark.slow
def test_tearsheet_on_real_btc_is_offline_quiet_and_self_contained(
    btc_1d: pd.DataFrame,
    tmp_path: Path,
    no_network: list[object],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib

    strat, bench = _strategy_and_benchmark(btc_1d)
    font_logger = logging.getLogger("matplotlib.font_manager")
    before = (matplotlib.rcParams["font.family"], font_logger.level)
    caplog.set_level(logging.DEBUG)

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    agg_draws: list[object] = []
    agg_draw = FigureCanvasAgg.draw
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self, *a, **k: agg_draws.append(self) or agg_draw(self, *a, **k))
    out = write_tearsheet(strat, bench, tmp_path / "run" / "tearsheet.html",
                          "BTC <SMA> & co", periods_per_year=365)
    # each chart is rendered into its SVG, not a second time on Agg after pyplot.savefig (issue 18: 15 Agg
    # renders before); the one left is seaborn's heatmap laying out its labels while the chart is made
    assert len(agg_draws) == 1

    assert out == tmp_path / "run" / "tearsheet.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert "<title>BTC &lt;SMA&gt; &amp; co</title>" in text
    assert "<h1>BTC &lt;SMA&gt; &amp; co" in text
    assert "EOY Returns vs Benchmark" in text and "<th>buy_and_hold</th>" in text
    assert "<th>sma_filter</th>" in text and "Periods/Year: 365" in text
    assert (strat.iloc[:29] == 0).all()  # flat warm-up: still part of the report
    assert strat.index[0].strftime("%e %b, %Y") + " - " in text
    assert text.count("<svg") >= 10  # charts are inline
    no_comments = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    assert not re.search(r'(?:src|href)="https?://(?!quantstats\.io)', no_comments)
    assert no_network == []
    captured = capfd.readouterr()
    assert "findfont" not in captured.err + captured.out
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    assert (matplotlib.rcParams["font.family"], font_logger.level) == before


@pytest.mark.slow
def test_tearsheet_compounds_hourly_bars_to_days(btc_1h: pd.DataFrame, tmp_path: Path) -> None:
    candles = btc_1h.iloc[-24 * 120:]  # the last 120 days
    strat, bench = _strategy_and_benchmark(candles)
    out = write_tearsheet(strat, bench, tmp_path / "h.html", "hourly", periods_per_year=8760)
    text = out.read_text(encoding="utf-8")
    assert "Periods/Year: 365" in text and "EOY Returns vs Benchmark" in text


def test_tearsheet_refuses_a_string_or_misaligned_benchmark(
    btc_1d: pd.DataFrame, tmp_path: Path
) -> None:
    strat, bench = _strategy_and_benchmark(btc_1d.iloc[:200])
    with pytest.raises(ValueError, match="Series"):
        write_tearsheet(strat, "SPY", tmp_path / "x.html", "t", 365)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same bars"):
        write_tearsheet(strat, bench.iloc[1:], tmp_path / "x.html", "t", 365)
    with pytest.raises(ValueError, match="periods_per_year"):
        write_tearsheet(strat, bench, tmp_path / "x.html", "t", 0)
    assert not (tmp_path / "x.html").exists()


def test_daily_returns_compounds_within_utc_days() -> None:
    idx = pd.date_range("2024-01-01 22:00", periods=4, freq="1h", tz="UTC")
    r = pd.Series([0.10, -0.10, 0.05, 0.02], index=idx)
    d = daily_returns(r)
    assert list(d.index) == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02")]
    np.testing.assert_allclose(d.to_numpy(), [1.1 * 0.9 - 1, 1.05 * 1.02 - 1])
    daily = pd.Series([0.1, 0.2], index=pd.date_range("2024-01-01", periods=2, tz="UTC"))
    np.testing.assert_allclose(daily_returns(daily).to_numpy(), [0.1, 0.2])


# ---------------------------------------------------------------- summary table


def _summary(**changes: float) -> dict[str, float]:
    base = {
        "total_return": 0.1234, "cagr": -0.05, "sharpe": 1.2345, "sortino": 2.0,
        "max_drawdown": -0.25, "volatility": 0.6, "calmar": 0.5, "n_trades": 12,
        "win_rate": 0.5, "profit_factor": 1.5, "avg_trade_return": 0.001,
        "exposure": 0.75, "fees_paid": 1234.5, "final_equity": 11234.0,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("total_return", 0.1234, "12.34%"),
        ("max_drawdown", -0.05, "-5.00%"),
        ("cagr", 12.5, "1,250.00%"),
        ("exposure", 1.0, "100.00%"),
        ("sharpe", 1.2345, "1.23"),
        ("profit_factor", math.inf, "inf"),
        ("win_rate", math.nan, "n/a"),
        ("sortino", None, "n/a"),
        ("n_trades", 12, "12"),
        ("n_trades", 12.0, "12"),
        ("fees_paid", 1234.5, "1,234.50"),
        ("final_equity", 1_000_000.0, "1,000,000.00"),
        ("some_new_ratio", 0.333, "0.33"),
    ],
)
def test_format_metric(key: str, value: float | None, text: str) -> None:
    assert format_metric(key, value) == text


def test_summary_table_rows_columns_and_plain_text() -> None:
    table = summary_table(
        {
            "strategy": _summary(),
            "buy & hold": _summary(n_trades=1, win_rate=math.nan, profit_factor=math.inf),
            "naive": {**_summary(), "extra_stat": 3.0},
        },
        title="BTC/USDT 1h, 2021-2025",
    )
    assert "\x1b" not in table
    lines = table.splitlines()
    assert lines[0].strip() == "BTC/USDT 1h, 2021-2025"
    header = next(line for line in lines if "strategy" in line)
    assert header.index("strategy") < header.index("buy & hold") < header.index("naive")
    labels = [line.split()[0] for line in lines if re.match(r"^\s+[A-Z]", line)]
    assert labels[:3] == ["Total", "CAGR", "Sharpe"] and labels[-1] == "Final"
    order = [table.index(label) for label in ("Total return", "Max drawdown", "Trades",
                                               "Win rate", "Fees paid", "Final equity",
                                               "extra_stat")]  # unknown keys last
    assert order == sorted(order)
    row = next(line for line in lines if "Win rate" in line).split()
    assert row[2:] == ["50.00%", "n/a", "50.00%"]
    row = next(line for line in lines if "Profit factor" in line).split()
    assert row[2:] == ["1.50", "inf", "1.50"]
    row = next(line for line in lines if "extra_stat" in line).split()
    assert row[1:] == ["n/a", "n/a", "3.00"]  # missing from two columns
    assert all(line == line.rstrip() for line in lines)


def test_summary_table_covers_every_summary_key_once() -> None:
    table = summary_table({"strategy": _summary()})
    assert len([line for line in table.splitlines() if "%" in line or re.search(r"\d", line)]) \
        == len(SUMMARY_KEYS)


def test_summary_table_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        summary_table({})
    with pytest.raises(ValueError, match="sharpe"):
        summary_table({"s": _summary(sharpe="high")})  # type: ignore[arg-type]


def test_a_strategy_that_never_trades_gets_a_plain_page(tmp_path, btc_1d):
    from reports.metrics import simple_returns
    from reports.render.tearsheet import write_tearsheet

    bh = simple_returns(buy_and_hold_equity(btc_1d["open"], btc_1d["close"], 10_000.0, Costs(0.001, 0.0005)))
    flat = bh * 0.0
    out = write_tearsheet(flat, bh, tmp_path / "t.html", title="never traded", periods_per_year=365)
    text = out.read_text()
    assert "never held a position" in text and "never traded" in text
