"""Downloads through ccxt against a loopback Binance stub serving the real BTC/USDT 1h candles."""

from __future__ import annotations

import pandas as pd
import pytest

import feeds.download as download_module
from binance_stub import KLINES_PATH, BinanceStub
from feeds.download import cache_path, download_candles
from feeds.errors import ExchangeRequestError, ExchangeUnavailable
from feeds.exchange import make_exchange
from feeds.files import read_candle_parquet
from feeds.history import load_candles
from feeds.timeframes import TimeRange
from feeds.validate import find_gaps
from feeds_helpers import HOUR, btc_1h_candles, exchange, ms, stub, utc  # noqa: F401

# 2018-01-01 .. 2018-08-01: 5,036 candles across several outages, the 34 h one of 2018-02-08 too.
RANGE_2018 = TimeRange(utc("2018-01-01"), utc("2018-08-01"))
FAST = {"backoff_base": 0.01, "progress": False}


def download(exchange, tmp_path, timerange=RANGE_2018, **kwargs):
    return download_candles(exchange, "BTC/USDT", "1h", tmp_path, timerange, **{**FAST, **kwargs})


def klines_starts(stub: BinanceStub) -> list[pd.Timestamp]:
    return [pd.Timestamp(int(r.params["startTime"]), unit="ms", tz="UTC") for r in stub.requests_to(KLINES_PATH)]


def test_api_overrides_rebase_every_url(stub):
    exchange = make_exchange("binance", api_overrides=stub.url)
    assert exchange.urls["api"]["public"] == f"{stub.url}/api/v3"
    assert exchange.urls["api"]["fapiPublic"] == f"{stub.url}/fapi/v1"
    assert all(url.startswith(stub.url) for url in exchange.urls["api"].values())
    assert exchange.enableRateLimit is True
    with pytest.raises(ExchangeRequestError, match=r"binance: invalid api_overrides '127.0.0.1:9'.*http://127.0.0.1:8080"):
        make_exchange("binance", api_overrides="127.0.0.1:9")


def test_pagination_equals_the_csv(exchange, stub, tmp_path, btc_1h_candles):
    frame = download(exchange, tmp_path, page_limit=1000)
    expected = RANGE_2018.slice(btc_1h_candles)
    assert len(expected) == 5_036 and find_gaps(expected, "1h").longest == pd.Timedelta(hours=34)
    pd.testing.assert_frame_equal(frame, expected)
    pd.testing.assert_frame_equal(read_candle_parquet(tmp_path / "binance" / "BTC_USDT-1h.parquet", "1h"), expected)
    starts = klines_starts(stub)
    assert len(starts) == 6 and starts[0] == utc("2018-01-01")
    assert all(r.params["limit"] == "1000" for r in stub.requests_to(KLINES_PATH))
    # a second call finds everything cached and asks the exchange for no candles
    pd.testing.assert_frame_equal(download(exchange, tmp_path), expected)
    assert len(stub.requests_to(KLINES_PATH)) == 6


def test_default_page_limit_is_the_exchange_maximum(exchange, stub, tmp_path):
    download(exchange, tmp_path, TimeRange(utc("2024-01-01"), utc("2024-01-02")))
    assert [r.params["limit"] for r in stub.requests_to(KLINES_PATH)] == ["1000"]


def test_rate_limits_server_errors_and_dropped_connections_are_retried(exchange, stub, tmp_path, btc_1h_candles):
    stub.fail_next(429, times=2)
    stub.fail_next(500, times=2)
    stub.fail_next("drop", times=1)
    frame = download(exchange, tmp_path, page_limit=1000, max_retries=5)
    pd.testing.assert_frame_equal(frame, RANGE_2018.slice(btc_1h_candles))
    answers = [r.answered for r in stub.requests_to(KLINES_PATH)]
    assert answers == ["429", "429", "500", "500", "drop"] + ["ok"] * 6


def test_a_rate_limit_mid_download_is_retried(exchange, stub, tmp_path, btc_1h_candles):
    stub.fail_after, stub.fail_status, stub.fail_times = 2, 429, 2  # page 3 gets 429 twice, then recovers
    frame = download(exchange, tmp_path, page_limit=1000)
    pd.testing.assert_frame_equal(frame, RANGE_2018.slice(btc_1h_candles))
    assert [r.answered for r in stub.requests_to(KLINES_PATH)] == ["ok", "ok", "429", "429", "ok", "ok", "ok", "ok"]


def test_retries_exhausted(exchange, stub, tmp_path):
    stub.fail_next(500, times=10)
    with pytest.raises(ExchangeUnavailable) as exc:
        download(exchange, tmp_path, max_retries=2)
    message = str(exc.value)
    assert "binance BTC/USDT" in message and "failed 3 time(s)" in message and "ExchangeNotAvailable" in message
    assert "run again later" in message and "cached" in message
    assert len(stub.requests_to(KLINES_PATH)) == 3
    assert not cache_path(tmp_path, "binance", "BTC/USDT", "1h").exists()


def test_interrupted_download_resumes_without_duplicates_or_holes(exchange, stub, tmp_path, btc_1h_candles):
    stub.fail_after = 3  # three good pages of 500, then HTTP 500 for ever
    with pytest.raises(ExchangeUnavailable, match="failed 2 time"):
        download(exchange, tmp_path, page_limit=500, max_retries=1)
    path = cache_path(tmp_path, "binance", "BTC/USDT", "1h")
    partial = read_candle_parquet(path, "1h")
    expected = RANGE_2018.slice(btc_1h_candles)
    pd.testing.assert_frame_equal(partial, expected.iloc[:1500])  # saved on the way out

    stub.fail_after = None
    before = len(stub.requests_to(KLINES_PATH))
    frame = download(exchange, tmp_path, page_limit=500)
    pd.testing.assert_frame_equal(frame, expected)
    pd.testing.assert_frame_equal(read_candle_parquet(path, "1h"), expected)
    resumed = klines_starts(stub)[before:]
    assert resumed[0] == partial.index[-1] + HOUR  # only candles after the cached ones
    assert all(start > partial.index[-1] for start in resumed)


def test_ctrl_c_saves_what_was_downloaded(exchange, stub, tmp_path, btc_1h_candles, monkeypatch):
    real_fetch = exchange.fetch_ohlcv
    calls = []

    def fetch_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(exchange, "fetch_ohlcv", fetch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        download(exchange, tmp_path, page_limit=100)
    partial = read_candle_parquet(cache_path(tmp_path, "binance", "BTC/USDT", "1h"), "1h")
    pd.testing.assert_frame_equal(partial, RANGE_2018.slice(btc_1h_candles).iloc[:300])


def test_cache_is_written_every_ten_pages(exchange, stub, tmp_path, monkeypatch):
    writes = []
    real_write = download_module.write_candle_parquet
    monkeypatch.setattr(download_module, "write_candle_parquet", lambda df, path: (writes.append(len(df)), real_write(df, path)))
    download(exchange, tmp_path, TimeRange(utc("2024-01-01"), utc("2024-01-11")), page_limit=10)  # 240 candles, 24 pages
    assert writes == [100, 200, 240]


def test_backfill_before_the_cache(exchange, stub, tmp_path, btc_1h_candles):
    download(exchange, tmp_path, TimeRange(utc("2021-03-01"), utc("2021-04-01")))
    before = len(stub.requests_to(KLINES_PATH))
    wide = TimeRange(utc("2021-01-01"), utc("2021-05-01"))
    frame = download(exchange, tmp_path, wide, page_limit=1000)
    pd.testing.assert_frame_equal(frame, wide.slice(btc_1h_candles))
    starts = klines_starts(stub)[before:]
    assert starts[0] == utc("2021-01-01")  # backfill up to the cached candles ...
    assert utc("2021-04-01") in starts  # ... then forward from after the last one
    assert not any(utc("2021-03-01") < s < utc("2021-04-01") for s in starts)  # never the cached month


def test_unfinished_last_candle_is_not_stored(stub, tmp_path, btc_1h_candles):
    now = utc("2024-01-10 12:30")
    stub.now_ms = ms(now)  # the stub serves the 12:00 candle, still open at 12:30
    exchange = make_exchange("binance", api_overrides=stub.url)
    frame = download(exchange, tmp_path, TimeRange(utc("2024-01-10"), None), now_ms=ms(now))
    assert frame.index[-1] == utc("2024-01-10 11:00")  # closed at 12:00 <= now
    assert len(frame) == 12
    served_up_to = stub.requests_to(KLINES_PATH)
    assert len(served_up_to) == 1
    pd.testing.assert_frame_equal(frame, btc_1h_candles.loc["2024-01-10 00:00":"2024-01-10 11:00"])
    # an hour later the 12:00 candle is closed and is the only one fetched
    stub.now_ms = ms(now + HOUR)
    frame = download(exchange, tmp_path, TimeRange(utc("2024-01-10"), None), now_ms=ms(now + HOUR))
    assert frame.index[-1] == utc("2024-01-10 12:00") and len(frame) == 13
    assert klines_starts(stub)[-1] == utc("2024-01-10 12:00")


def test_progress_bar_runs(exchange, tmp_path, capsys):
    download(exchange, tmp_path, TimeRange(utc("2024-01-01"), utc("2024-01-02")), progress=True)
    assert "binance BTC/USDT 1h" in capsys.readouterr().err


def test_unknown_symbol(exchange, stub, tmp_path):
    with pytest.raises(ExchangeRequestError, match=r"binance: unknown symbol 'BTC/USDX'; did you mean 'BTC/USDT'"):
        download_candles(exchange, "BTC/USDX", "1h", tmp_path, RANGE_2018, **FAST)
    with pytest.raises(ExchangeRequestError, match=r"unknown symbol 'BTCUSDT'; did you mean 'BTC/USDT'\?.*BASE/QUOTE"):
        download_candles(exchange, "BTCUSDT", "1h", tmp_path, RANGE_2018, **FAST)
    assert stub.requests_to(KLINES_PATH) == []


def test_symbol_refused_by_the_exchange(exchange, stub, tmp_path):
    stub.markets.append({**stub.markets[0], "symbol": "SOLUSDT", "baseAsset": "SOL"})  # listed, but no klines
    stub.routes[KLINES_PATH] = lambda params: (400, {"code": -1121, "msg": "Invalid symbol."})
    with pytest.raises(ExchangeRequestError, match=r"binance SOL/USDT: the exchange refused the symbol.*Invalid symbol"):
        download_candles(exchange, "SOL/USDT", "1h", tmp_path, RANGE_2018, **FAST)
    assert len(stub.requests_to(KLINES_PATH)) == 1  # not retried


def test_unknown_exchange():
    with pytest.raises(ExchangeRequestError, match=r"unknown exchange 'binanse'; did you mean 'binance'"):
        make_exchange("binanse")
    with pytest.raises(ExchangeRequestError, match=r"unknown exchange 'nosuchplace'; Use a ccxt exchange id"):
        make_exchange("nosuchplace")


# --- load_candles, the engine's entry point ------------------------------------------------


def test_load_candles_downloads_then_uses_the_cache(stub, tmp_path, btc_1h_candles):
    timerange = TimeRange(utc("2021-02-01"), utc("2021-03-01"))
    kwargs = dict(data_dir=None, cache_dir=tmp_path, exchange_id="binance", progress=False, api_overrides=stub.url)
    frame, report = load_candles("BTC/USDT", "1h", timerange, warmup_bars=24, **kwargs)
    pd.testing.assert_frame_equal(frame, btc_1h_candles.loc["2021-01-31 00:00":"2021-02-28 23:00"])
    assert report == find_gaps(frame, "1h") and report.count == 1  # Binance's outage of 2021-02-11 04:00
    count = len(stub.requests)
    again, _ = load_candles("BTC/USDT", "1h", timerange, warmup_bars=24, **kwargs)
    pd.testing.assert_frame_equal(again, frame)
    assert len(stub.requests) == count  # covered by the cache: no exchange call at all


def test_load_candles_offline_without_cache(tmp_path):
    with pytest.raises(Exception, match=r"no cached candles for binance BTC/USDT 1h and download=False"):
        load_candles("BTC/USDT", "1h", RANGE_2018, data_dir=None, cache_dir=tmp_path, exchange_id="binance",
                     download=False)
