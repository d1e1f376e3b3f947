"""The documentation's result blocks, rendered from ``benchmarks/results/*.json``, and the check that they match.

The figures live in the pages of the documentation site (``docs/*.md``) and in README.md: every measured
figure of the pages ``docs/results.md`` (stage 2) and ``docs/performance.md`` sits in a generated block::

    <!-- results:NAME (generated from benchmarks/results/*.json by python benchmarks/readme_results.py --write) -->
    ...tables and lines rendered by BLOCKS[NAME] from the JSON...
    <!-- /results:NAME -->

A block may stand on any page (the plausibility guard's table and the determinism cost sit in
``docs/judging.md``, the skill monitor's in ``docs/paper-trading.md``), indented inside a list item (its markers and lines by the same spaces); every block found is
checked against its JSON, wherever it is. Or, for a figure no script produces, in a block that says so and
why::

    <!-- measured-by-hand: REASON -->
    ...
    <!-- /measured-by-hand -->

and prose that interprets a result names the result file it was written against
(``<!-- commentary:stage2 DATE -->`` ... ``<!-- /commentary:stage2 -->``, DATE = ``stage2.json``'s
``date``), so a re-run that changes the numbers also flags the words about them.

``python benchmarks/readme_results.py`` checks README.md and docs/*.md (exit 1 and one line per problem: page,
block, table, row, column, the page's value, JSON value, the command to re-run); ``--write`` re-renders every block whose
JSON exists (``--only NAME ...``: those blocks only); ``--print NAME`` prints one block. ``tests/test_readme_results.py`` runs the check.
Standard library only (the test imports it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS_DIR = ROOT / "benchmarks" / "results"


Records = dict[str, dict[str, Any]]
#: Page texts by path relative to the repository root (``README.md``, ``docs/judging.md``, ...).
Pages = dict[str, str]


def read_pages(root: Path = ROOT) -> Pages:
    """README.md and every Markdown page of the documentation site (``docs/**/*.md``), by relative path."""
    paths = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in paths if p.is_file()}


# --------------------------------------------------------------------------- formatting (the documentation's rounding)


def na(value: Any) -> bool:
    return value is None


def pct(value: float | None, digits: int = 1, space: bool = True) -> str:
    """A fraction as a percentage: 0.75 -> ``75.0 %``; None -> ``n/a``."""
    if na(value):
        return "n/a"
    text = f"{value * 100:.{digits}f}"
    if text.lstrip("-").strip("0.") == "":  # -0.0 -> 0.0: no sign on a zero
        text = text.lstrip("-")
    return f"{text} %" if space else f"{text}%"


def p_value(value: float | None) -> str:
    """p >= 0.1: two decimals (0.75); 0.001 <= p < 0.1: two significant digits (0.017, 0.007); below: 7e-4."""
    if na(value):
        return "n/a"
    if value >= 0.095:
        return f"{value:.2f}"
    if value >= 0.001:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def stat(value: float | None) -> str:
    """A test statistic: |x| >= 10 with one decimal (24.1), else two (-0.55)."""
    if na(value):
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if na(value) else f"{value:,.{digits}f}"


def rate(value: float) -> str:
    """A rate: whole numbers from 100 on (523), one decimal below (13.3)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def kilo(value: float) -> str:
    """A rate in thousands: 24812 -> ``24.8k``."""
    return f"{value / 1000:.1f}k"


def duration(seconds: float | None) -> str:
    """``17 min`` from 120 s on, else ``95 s``."""
    if na(seconds):
        return "n/a"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def provenance(record: dict[str, Any]) -> str:
    """``Measured 2026-12-07 16:05 UTC on 2 cores (AMD EPYC, load 4.5 at start), commit 6100926: `cmd`.``"""
    m = record.get("machine") or {}
    stamp = record.get("date") or "n/a"
    date = f"{stamp[:10]} {stamp[11:16]} UTC" if len(stamp) >= 16 else stamp
    load, end = m.get("load_avg_1m_start"), m.get("load_avg_1m_end")
    loads = "" if load is None else f", load average {load:.1f} at the start" + ("" if end is None else f", {end:.1f} at the end")
    where = f"{m.get('cores')} cores ({m.get('cpu')}{loads})"
    commit = (record.get("git_commit") or "no git")[:7] + (" with uncommitted changes" if record.get("dirty") else "")
    return f"Measured {date} on {where}, commit {commit}: `{record['command']}`."


# --------------------------------------------------------------------------- renderers, one per block


def render_stage2(r: Records) -> str:
    rec = r["stage2"]
    n = rec["numbers"]
    rows = n["rows"]
    first = rows[0] if rows else {}
    training: dict[str, list[str]] = {}
    for row in rows:
        if row.get("train_seconds") is not None:
            training.setdefault(row["predictor"], []).append(
                f"{row['symbol'].split('/')[0]} {row['train_seconds']:.0f} s ({row['folds_trained_now']} of {row['folds']} folds trained in this run)")
    train_text = "; ".join(f"`{p}` " + ", ".join(parts) for p, parts in training.items()) or "no trained model"
    folds = max((row.get("folds") or 0) for row in rows) if rows else 0
    per_market = {row["symbol"].split("/")[0]: row.get("n_bars") or 0 for row in rows}
    bars = ", ".join(f"{market} {count:,}" for market, count in per_market.items())
    embargo = max((row.get("embargo_bars") or 0) for row in rows) if rows else 0
    lines = [provenance(rec),
             f"{duration(n['wall_s'])} for the whole comparison ({n['wall_source']}); "
             f"decision bars {bars} ({(first.get('first_bar') or '')[:10]} to {(first.get('last_bar') or '')[:10]}), "
             f"{folds} folds per market (embargo {embargo} bars). "
             f"Training, summed over the folds: {train_text}.",
             "",
             "| market | predictor | return | B&H | random sign | Sharpe [95 % CI] | trades | fees | MASE | valid pinball "
             "| dir. acc. (p) | DM vs naive (p) | DSR |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        sharpe = "n/a" if na(row["sharpe"]) else (
            f"{row['sharpe']:.2f} [{num(row['sharpe_ci_low'])}, {num(row['sharpe_ci_high'])}]")
        direction = "n/a" if na(row["dir_accuracy"]) else f"{pct(row['dir_accuracy'])} ({p_value(row['dir_p_value'])})"
        dm = "n/a" if na(row["dm_stat"]) else f"{stat(row['dm_stat'])} ({p_value(row['dm_p_value'])})"
        lines.append(
            f"| {row['symbol'].split('/')[0]} | `{row['predictor']}` | {pct(row['total_return'])} | {pct(row['bh_total_return'])} "
            f"| {pct(row['random_sign_total_return'])} | {sharpe} | {row['n_trades'] if row['n_trades'] is not None else 'n/a'} "
            f"| {num(row['fees_paid'], 0)} | {num(row['mase'], 3)} | {num(row['valid_pinball'], 5)} | {direction} | {dm} "
            f"| {num(row['dsr'])} |")
    lines += ["",
              "| market | predictor | chance (p) | vs buy-and-hold (p) | DSR (p, trials) | lookahead check | plausibility guard |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("lookahead_ok") is None:
            look = "not run"
        elif row["lookahead_ok"]:
            look = "passed" + ("" if row.get("refit_fold") is None else
                               f" (fold {row['refit_fold']} re-fit{' in a fresh process' if row.get('refit_fresh_process') else ''}: "
                               f"{'same weights digest' if row.get('refit_digest_matches') else 'DIFFERENT weights digest'})")
        else:
            look = "FAILED"
        flags = row.get("suspicious") or []
        guard = "nothing flagged" if not flags else f"SUSPICIOUS ({len(flags)} finding(s))"
        dsr = "n/a" if na(row.get("dsr_p_value")) else f"{p_value(row['dsr_p_value'])}, {row.get('n_trials')}"
        lines.append(f"| {row['symbol'].split('/')[0]} | `{row['predictor']}` | {p_value(row.get('chance_p_value'))} "
                     f"| {p_value(row.get('bh_p_value'))} | {dsr} | {look} | {guard} |")
    return "\n".join(lines)


def _backtest_row(rec: dict[str, Any]) -> str:
    n = rec["numbers"]
    bars = n["bars"]
    fills = "no trades" if not n["fills"] else f"{n['fills']:,} fills"
    label = f"{rec['config']['predictor']} ({fills})"
    return (f"| {label} | {n['raw_s']:.2f} s, {kilo(bars / n['raw_s'])} bars/s | {n['loop_s']:.2f} s, "
            f"{kilo(bars / n['loop_s'])} bars/s | {n['cache_hit_s']:.2f} s | {n['loop_over_raw']:.2f} | {n['hit_over_raw']:.2f} "
            f"| {n['peak_rss_mib']:.0f} MiB |")


def render_backtest(r: Records) -> str:
    recs = [r["backtest_speed_naive"], r["backtest_speed_momentum"]]
    lines = [provenance(rec) for rec in recs]
    first = recs[0]
    lines += [f"BTC/USDT 1h, {first['numbers']['bars']:,} decision bars, best of {first['config']['repeat']}.", "",
              "| predictor | raw backtrader | engine event loop | engine run, cache hit | loop / raw (≤ 1.15) "
              "| run / raw (≤ 1.2) | peak RSS (< 1 GiB) |",
              "|---|---|---|---|---|---|---|"]
    lines += [_backtest_row(rec) for rec in recs]
    lines.append("")
    for rec in recs:
        n = rec["numbers"]
        stages = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in n["judged_stages_s"].items())
        lines.append(f"`{rec['config']['predictor']}`: final values of raw backtrader and the engine agree to 1e-9: "
                     f"{'yes' if n['final_values_agree'] else 'NO'}; the judged run (all checks on, no ledger) took "
                     f"{n['judged_s']:.1f} s ({stages} s); candle load and validation {n['load_s']:.2f} s.")
    return "\n".join(lines)


def render_sweep(r: Records) -> str:
    rec = r["sweep_speed"]
    n, c = rec["numbers"], rec["config"]
    lines = [provenance(rec), f"BTC/USDT 1h, {n['bars']:,} decision bars.", "",
             "| strategy | backtrader | fast path | fast / backtrader (≥ 50×) | reconciled |", "|---|---|---|---|---|"]
    for name in ("llm_signal", "sma_cross"):
        s = n[name]
        lines.append(f"| `{name}` ({s['mean_fills']:,.0f} fills per variant on average) | {s['bt_variants_per_s']:.2f} variants/s "
                     f"({s['bt_s_per_variant']:.2f} s each, {c['bt_runs']} runs) | {s['fast_variants_per_s']:.1f} variants/s "
                     f"({s['fast_s_per_variant'] * 1000:.1f} ms each, {c['fast_runs']} runs) | {s['fast_over_bt']:.0f}× "
                     f"| {s['reconciled_identical']}/{s['reconciled']} identical |")
    m = n["memory"]
    lines += ["", f"Memory: {m['runs']:,} fast `llm_signal` variants, one number kept per variant as a sweep keeps its "
                  f"objective: tracemalloc peak {m['tracemalloc_peak_mib']:.0f} MiB (target < 1 GiB), process peak RSS "
                  f"{m['peak_rss_mib']:.0f} MiB; the traced pass took {m['seconds']:.0f} s."]
    s = n.get("scaling")
    if s:
        lines.append(f"Scaling (`--sweep-trials {s['trials']}`, a sweep of `llm_signal`'s threshold and stake over "
                     f"{s['timerange'][:4]}-{int(s['holdout'][:4]) - 1} with the {s['holdout'][:4]} holdout, forecasts cached, "
                     f"fresh sweep folders): `--jobs 1` {s['jobs1_s']:.1f} s, `--jobs 2` {s['jobs2_s']:.1f} s, "
                     f"{s['speedup']:.2f}×.")
    else:
        lines.append("Scaling: NOT RUN (`--sweep-trials 0`).")
    return "\n".join(lines)


def render_inference(r: Records) -> str:
    rec = r["inference_speed"]
    c = rec["config"]
    lines = [provenance(rec),
             f"Context {c['context']}, horizon {c['horizon']}, the last {c['n']:,} decision times of BTC/USDT 1h "
             f"({c['per_bar_n']} timed one call each), batch {c['batch_size']}, {c['threads']} CPU threads, best of {c['repeat']}.",
             "", "| model | engine batched | one call per bar | raw pipeline batched | engine / per-bar (≥ 4) "
                 "| engine / raw (≥ 0.9) | the same ratios in process CPU time |", "|---|---|---|---|---|---|---|"]
    for name, n in rec["numbers"].items():
        lines.append(f"| bolt-{name} shapes | {rate(n['engine_fc_per_s'])} fc/s | {rate(n['per_bar_fc_per_s'])} fc/s "
                     f"| {rate(n['raw_fc_per_s'])} fc/s | {n['engine_over_per_bar']:.2f}× | {n['engine_over_raw']:.3f} "
                     f"| {n['engine_over_per_bar_cpu']:.2f}×, {n['engine_over_raw_cpu']:.3f} |")
    return "\n".join(lines)


def render_inference_llmtime(r: Records) -> str:
    rec = r["inference_speed_llmtime"]
    c, numbers = rec["config"], rec["numbers"]
    first = next(iter(numbers.values()))
    lines = [provenance(rec),
             f"Tiny random Llama (2 layers, 64 wide), context {c['context']}, horizon {c['horizon']}, 20 samples a window, "
             f"consecutive decision times of BTC/USDT 1h, {c['threads']} CPU thread{'s' if c['threads'] != 1 else ''}; "
             f"the generate path on {first['generate_windows']} windows, the new path on {first['windows']}; `lora_llm`: "
             "`digits` objective, an untrained adapter of the default rank on the same model.",
             "", "| predictor | path | windows/s | × generate path | × in process CPU time |", "|---|---|---|---|---|"]
    for name, n in numbers.items():
        lines += [f"| `{name}` | generate (before; batch 1) | {n['generate_windows_per_s']:.3f} | 1.0× | 1.0× |",
                  f"| `{name}` | new, batch 1 | {n['new_1_windows_per_s']:.3f} | {n['new_1_over_generate']:.1f}× "
                  f"| {n['new_1_over_generate_cpu']:.1f}× |",
                  f"| `{name}` | new, batch {c['llm_batch']} | {n['new_b_windows_per_s']:.3f} | {n['new_b_over_generate']:.1f}× "
                  f"| {n['new_b_over_generate_cpu']:.1f}× |"]
    same = ", ".join(f"`{name}` {'identical' if n['identical'] else 'DIFFERENT'}" for name, n in numbers.items())
    lines += ["", f"New path, batch 1 against batch {c['llm_batch']} (`np.array_equal` of the forecasts): {same}."]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render_train(r: Records) -> str:
    rec = r["train_speed"]
    c, n = rec["config"], rec["numbers"]
    lines = [provenance(rec),
             f"Training {c['train_bars']:,} + validation {c['valid_bars']:,} bars, context {c['context']}, horizon "
             f"{c['horizon']}, batch {c['batch_size']} windows, {c['steps']} optimiser steps per torch fit, {c['rounds']} "
             f"LightGBM rounds, {c['n_predict']:,} forecasts, {c['threads']} threads, best of {c['repeat']}.", ""]
    if n.get("throughput"):
        lines += ["| model (size) | parameters | training | fit | forecasts/s |", "|---|---|---|---|---|"]
        for row in n["throughput"]:
            name, _, variant = row["model"].partition(" ")
            variant = variant.strip("()").replace("nf default", "neuralforecast's default size")
            label = f"`{name}`{', ' + variant if variant else ''} ({row['size'].split(';')[0]})"
            if "row_rounds_per_s" in row:
                train = (f"{row['row_rounds_per_s'] / 1e6:.2f} M row-rounds/s ({row['train_rows']:,} rows × "
                         f"{row['rounds']} rounds × {row['boosters']} boosters)")
                params = "—"
            else:
                train = f"{row['fit_windows_per_s']:,.0f} windows/s whole fit, {row['step_windows_per_s']:,.0f} per step"
                params = f"{row['params']:,}"
            lines.append(f"| {label} | {params} | {train} | {row['fit_s']:.1f} s | {row['predict']:,.0f} |")
        lines.append("")
    lines += ["| check | measured | target |", "|---|---|---|"]
    share, cmp = n.get("overhead"), n.get("ours_vs_nf")
    if share:
        lines.append(f"| share of a `patchtst` training step outside forward + backward + AdamW ({c['steps']} steps of "
                     f"`fit_model` vs the same steps on pre-built batches; process CPU time) | {share['share_cpu']:.1%} "
                     f"(wall {share['share']:.1%}; `FitReport.data_seconds`: {share['data_share']:.2%} of the fit) "
                     f"| < 10%: {_verdict(share['share_cpu'] < 0.10)} |")
    else:
        lines.append("| share of a `patchtst` training step outside forward + backward + AdamW | NOT RUN (`--skip 2`) | < 10% |")
    if cmp:
        ratio = cmp["ours_cpu"] / cmp["nf_cpu"]
        lines.append(f"| our `patchtst` vs neuralforecast's PatchTST at the same size, s per 1000 training windows (step "
                     f"loop, process CPU) | {cmp['ours_cpu']:.3f} vs {cmp['nf_cpu']:.3f} s: {ratio:.2f}× (wall "
                     f"{cmp['ours'] / cmp['nf']:.2f}×, whole fit {cmp['ours_fit'] / cmp['nf_fit']:.2f}×) "
                     f"| ≤ 1.0×: {_verdict(ratio <= 1.0)} |")
    else:
        lines.append("| our `patchtst` vs neuralforecast's PatchTST at the same size | NOT RUN (`--skip 3`) | ≤ 1.0× |")
    return "\n".join(lines)


def render_compare(r: Records) -> str:
    rec = r["compare_scaling"]
    c, n = rec["config"], rec["numbers"]
    return (provenance(rec) + "\n" +
            f"{len(c['predictors'])} predictors × {len(c['symbols'])} symbols, {c['timeframe']} bars, {c['timerange']}, "
            f"cold forecast cache: {n['wall_1_worker_s']:.1f} s with 1 worker, {n['wall_2_workers_s']:.1f} s with 2 "
            f"({n['speedup']:.2f}× on {rec['machine']['cores']} cores).")


def render_paper(r: Records) -> str:
    rec = r["paper_latency"]
    n = rec["numbers"]
    a = n["naive"]
    text = (f"{rec['config']['bars']} bars, one order per bar: `naive` median {a['latency_median_ms']:.1f} ms, p99 "
            f"{a['latency_p99_ms']:.1f} ms (engine's own part {a['own_median_ms']:.1f} / {a['own_p99_ms']:.1f} ms)")
    b = n.get("chronos_bolt") or {}
    if "skipped" in b:
        text += f"; tiny Chronos-Bolt: NOT RUN ({b['skipped']})"
        own = [a["own_p99_ms"]]
    else:
        text += (f"; tiny Chronos-Bolt median {b['latency_median_ms']:.1f} ms, p99 {b['latency_p99_ms']:.1f} ms (inference "
                 f"{b['inference_median_ms']:.1f} ms median; engine's own part {b['own_median_ms']:.1f} / "
                 f"{b['own_p99_ms']:.1f} ms)")
        own = [a["own_p99_ms"], b["own_p99_ms"]]
    verdict = "within" if max(own) < 50 else "ABOVE"
    return provenance(rec) + "\n" + text + f" — the engine's own part is {verdict} the 50 ms target at p99." + \
        _paper_trained(rec, "patchtst") + _paper_trained(rec, "patchtst_1_thread")


def _paper_trained(rec: dict[str, Any], key: str) -> str:
    """A trained patchtst run's line (no retrain vs during a background retrain), when the JSON has it."""
    t, c = rec["numbers"].get(key), rec["config"].get("trained")
    if t is None:
        return ""
    if "skipped" in t:
        return f"\nTrained `patchtst` during a background retrain: NOT RUN ({t['skipped']})."

    def cls(x: dict[str, Any]) -> str:
        return (f"median {x['latency_median_ms']:.1f} ms, p99 {x['latency_p99_ms']:.1f} ms (forecast call "
                f"{x['inference_median_ms']:.1f} ms median; engine's own part {x['own_median_ms']:.1f} / "
                f"{x['own_p99_ms']:.1f} ms; {x['orders']} orders)")

    a, b, ratio = t["no_retrain"], t["during_retrain"], t.get("ratio")
    secs = ", ".join(f"{s:.0f} s" for s in t["retrain_seconds"])
    if key.endswith("1_thread"):
        text = (f"\nThe same run with the serving process's torch on {t['serving_threads']} thread throughout "
                f"({t['retrains_started']} retrains: {secs}; {t['fold_switches']} fold switches): ")
    else:
        text = (f"\nTrained tiny `patchtst`, serving torch at its default {t['serving_threads']} threads (capped to the "
                f"cores left while a retrain runs), {c['bars']} bars ({c['bar_sleep_s']} s of wall time slept before "
                f"each), a fold every {c['retrain_every']}, {t['retrains_started']} background retrains ({secs}; "
                f"{c['epochs']} epochs, {c['retrain_threads']} thread, nice {c['retrain_nice']}), {t['fold_switches']} "
                "fold switches: ")
    text += f"no retrain running {cls(a)}" if a.get("orders") else "no retrain running: no orders"
    text += f"; during a retrain {cls(b)}" if b.get("orders") else "; during a retrain: no orders"
    if ratio:
        text += (f"; during / no retrain: latency {ratio['latency_median_ms']:.2f}× at the median, "
                 f"{ratio['latency_p99_ms']:.2f}× at p99, engine's own part {ratio['own_median_ms']:.2f}× / "
                 f"{ratio['own_p99_ms']:.2f}×, forecast call {ratio['inference_median_ms']:.2f}× at the median")
    else:
        text += "; during / no retrain: NOT MEASURED (a class has no orders)"
    sw = t.get("switch") or {}
    if sw.get("orders"):
        text += (f". Switch bars (a new fold loaded, or a decision waiting for its retrain): {sw['orders']}, latency "
                 f"up to {sw['latency_max_ms']:.0f} ms")
    part = t.get("partial") or {}
    if part.get("orders"):
        text += f"; orders whose window crossed a retrain's start or end: {part['orders']}, up to {part['latency_max_ms']:.0f} ms"
    return text + "."


def render_paper_parity(r: Records) -> str:
    rec = r["paper_parity_patchtst"]
    c, n = rec["config"], rec["numbers"]

    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    text = (f"Sim paper run vs the backtest of the same stretch, tiny `patchtst` (CPU, {c['epochs']} epochs), {c['symbol']} "
            f"{c['timeframe']}, {c['bars']} bars from {c['start']}, a fold every {c['retrain_every']}: "
            f"{n['decisions_paper']} paper decisions, {n['decisions_backtest']} backtest decisions, the same: "
            f"{yes(n['same_decisions'])}; folds served {n['folds_served']} ({n['fold_switches']} switches, "
            f"{n['retrains_started']} background retrains; the backtest trained {n['backtest_trained_now']} folds, "
            f"reusing the paper run's checkpoints)")
    if not n["same_decisions"]:
        return provenance(rec) + "\n" + text + "; nothing further compared (the decisions differ)."
    text += (f"; decisions served by another fold: {n['decisions_other_fold']}, by another checkpoint: "
             f"{n['decisions_other_checkpoint']}; forecasts (batch of 1 live, batched in the backtest): max |difference| "
             f"{n['forecast_max_abs_diff']:.3g} in log return over {n['forecast_shape'][0]} decisions × "
             f"{n['forecast_shape'][1]} quantiles × {n['forecast_shape'][2]} steps, {n['forecast_decisions_differing']} "
             f"decisions differing at all (median |forecast| {n['forecast_median_abs_scale']:.3g}); fills "
             f"{n['fills_paper']} paper / {n['fills_backtest']} backtest, identical (time, side, size, price, "
             f"commission): {yes(n['fills_identical'])}")
    if "equity_max_rel_diff" in n:
        text += f"; equity max relative difference {n['equity_max_rel_diff']:.2g}"
    return provenance(rec) + "\n" + text + "."


def render_lora(r: Records) -> str:
    rec = r["lora_speed"]
    c, n = rec["config"], rec["numbers"]
    d, b = n["cpu"]["digits"], n["cpu"]["bucket"]
    q = n["qwen_lora_r8_share"]
    text = (f"The tests' tiny Llama on {c['threads']} CPU thread(s) ({c['context_bars']}-bar prompts, batch {c['batch']}, "
            f"{c['steps']} steps): training {d['train_tokens_per_s']:,.0f} tokens/s with `digits` and "
            f"{b['train_tokens_per_s']:,.0f} with `bucket`; {d['forecasts_per_s']:.1f} forecasts/s with `digits` (20 samples "
            f"each) and {b['forecasts_per_s']:.0f}/s with `bucket`; adapter {d['trainable_share']:.0%} of the tiny model's "
            f"parameters ({q['Qwen2.5-0.5B']['share'] * 100:.2f} % of Qwen2.5-0.5B and {q['Qwen2.5-7B']['share'] * 100:.2f} % "
            f"of Qwen2.5-7B at rank 8, from their shapes); peak RSS {n['cpu']['peak_rss_mib']:.0f} MiB.")
    gpu = n.get("gpu") or {}
    if "skipped" in gpu:
        text += f" GPU part: NOT RUN ({gpu['skipped']})."
    else:
        parts = [f"{k} {v['mode']} {v['train_tokens_per_s']:,.0f} training tokens/s, peak {v['peak_gpu_gib']:.1f} GiB"
                 for k, v in gpu.items() if isinstance(v, dict)]
        text += f" GPU part on {gpu.get('device')}: " + "; ".join(parts) + "."
    return provenance(rec) + "\n" + text


#: metrics.json's timing steps as the documentation names them.
STEP_NAMES = {"event_loop": "event loop", "lookahead_predictor": "lookahead forecast recheck", "tearsheet": "tear-sheet",
              "forecast_page": "forecast page", "write": "writing"}


def render_verdict(r: Records) -> str:
    rec = r["verdict_speed"]
    c, n = rec["config"], rec["numbers"]
    ex = c["example"]
    later = len(n["judged_all_s"]) - 1
    lines = [provenance(rec),
             f"{ex['symbol']} {ex['timeframe']} {ex['timerange']}, `{ex['predictor']}`, {n['n_bars']:,} decision bars "
             f"(the CPU seconds are the steadier figures on a shared machine).",
             "",
             "| | wall | CPU | / bare event loop |",
             "|---|---|---|---|",
             f"| bare event loop | {n['event_loop_s']:.2f} s | {n['event_loop_cpu_s']:.2f} s | 1 |",
             f"| fully judged run, in process (best of {later}, after a first run that also imports quantstats: "
             f"{n['judged_first_s']:.2f} s) | {n['judged_s']:.2f} s | {n['judged_cpu_s']:.2f} s "
             f"| {n['ratio_judged_to_event_loop']:.1f} (CPU {n['ratio_judged_to_event_loop_cpu']:.1f}) |"]
    if n.get("cli_wall_s") is None:
        lines.append("| the command end to end | NOT RUN (`--no-subprocess`) | | |")
    else:
        lines.append(f"| the command end to end (`python -m engine backtest ...`, best of {len(n['cli_all_wall_s'])}; "
                     f"{n['cli_outside_run_s']:.1f} s of it start-up, imports and printing) | {n['cli_wall_s']:.2f} s "
                     f"| {n['cli_cpu_s']:.2f} s | {n['ratio_cli_to_event_loop']:.1f} |")
    steps = ", ".join(f"{STEP_NAMES.get(k, k)} {v:.2f}" for k, v in n["steps_s"].items() if k not in ("total", "other"))
    lines += ["", f"Per step (seconds, the best in-process run; `--timings` prints the same table for any run): {steps}."]
    if n.get("cli_wall_s") is not None:
        met = "met" if n["cli_wall_s"] <= c["target_s"] else "NOT met"
        lines.append(f"Target, the judged command within {c['target_s']:g} s on 2 cores: {met} in this run.")
    return "\n".join(lines)


def render_replay(r: Records) -> str:
    rec = r["replay_cost"]
    c, n = rec["config"], rec["numbers"]
    lines = [provenance(rec),
             f"{c['symbol']} {c['timeframe']} {c['period']} ({n['bars']:,} bars), CPU seconds, best of {c['repeat']}, "
             f"interleaved in one process; the orders of each row agree (the script stops otherwise).",
             "",
             "| strategy | backtest | replay | replay before issue 18 | replay / before |",
             "|---|---|---|---|---|"]
    for case in n["cases"]:
        b = case["best_cpu_s"]
        name = f"`{case['strategy']}`" if " " not in case["strategy"] else case["strategy"].replace("p.dataname", "`p.dataname`")
        before = "—" if b.get("previous replay") is None else f"{b['previous replay']:.2f} s"
        ratio = "—" if case.get("replay_over_previous") is None else f"{case['replay_over_previous']:.2f}"
        lines.append(f"| {name} ({case['orders']:,} orders) | {b['backtest']:.2f} s | {b['replay']:.2f} s | {before} | {ratio} |")
    frame = [case for case in n["cases"] if case.get("replay_over_previous") is None]
    if frame:
        b = frame[0]["best_cpu_s"]
        lines += ["", f"Reading `p.dataname` at every bar: the replay costs {(b['replay'] - b['backtest']) / n['bars'] * 1000:.2f} ms "
                      f"per bar more than the backtest."]
    return "\n".join(lines)



def guard_power_table(rows: list[dict]) -> str:
    """``benchmarks/guard_power.py``'s rows as a Markdown table (medians over the runs; flag rates: the
    share of runs flagged): printed by the benchmark and rendered into docs/judging.md from its JSON."""
    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    lines = ["| planted | runs | hit rate h=1 | MASE h=1 | Sharpe | flagged by accuracy | by MASE | by Sharpe | "
             "by any: all | 1h | 1d |", "|" + "---|" * 11]
    for row in rows:
        name = row["kind"] if row["strength"] is None else f"{row['kind']} {row['strength']:g}"
        f, tf = row["flag_rate"], row["any_flag_rate_by_timeframe"]
        lines.append(
            f"| {name} | {row['runs']} | {fmt(row['median_hit_rate_h1'], '.1%')} | {fmt(row['median_mase_h1'], '.2f')} | "
            f"{fmt(row['median_sharpe'], '.1f')} | {f['directional accuracy']:.0%} | {f['MASE']:.0%} | {f['Sharpe']:.0%} | "
            f"{f['any']:.0%} | {fmt(tf.get('1h'), '.0%')} | {fmt(tf.get('1d'), '.0%')} |")
    return "\n".join(lines)

def render_guard(r: Records) -> str:
    rec = r["guard_power"]
    c, n = rec["config"], rec["numbers"]

    lines = [provenance(rec),
             f"{len(c['markets'])} markets × {', '.join(c['timeframes'])}, {c['periods_per_market']} periods each "
             f"({c['n_periods']} periods; {c['bars']['1h']:,} decision bars at 1h, {c['bars']['1d']:,} at 1d), seed "
             f"{c['seed']}; bounds: accuracy {c['max_plausible_accuracy']:g}, MASE {c['min_plausible_mase']:g}, Sharpe "
             f"{c['max_plausible_sharpe']:g}, alpha {c['alpha']:g}; {duration(n['wall_s'])} in all.",
             "", guard_power_table(n["rows"])]
    return "\n".join(lines)


def render_deterministic(r: Records) -> str:
    rec = r["deterministic_fit"]
    c, n = rec["config"], rec["numbers"]
    ratio = n["ratio_cpu"]
    cost = ("nothing measurable (within 5 %)" if abs(ratio - 1) <= 0.05 else
            f"{(ratio - 1) * 100:+.0f} % CPU time (more than the 5 % of noise)")
    same = ("every fit bit-identical" if n["distinct_digests"] == 1 else
            f"{n['distinct_digests']} distinct weights digests: NOT bit-identical")
    declared = ", ".join(n["declared_nondeterministic"]) or "none"
    return (provenance(rec) + "\n" +
            f"On {c['device']} the deterministic settings cost {cost}: `{c['predictor']}` at its default size, "
            f"{c['steps']} steps of {c['batch_size']} windows, {c['threads']} threads, best of {c['repeat']}: "
            f"{n['deterministic_cpu_s']:.2f} s CPU ({n['deterministic_wall_s']:.2f} s wall) with them, "
            f"{n['default_cpu_s']:.2f} s ({n['default_wall_s']:.2f} s) without, {ratio:.3f} × the CPU time; "
            f"{same}; declared not bit-reproducible: {declared}.")


def render_monitor_rule(r: Records) -> str:
    rec = r["monitor_rule"]
    c, n = rec["config"], rec["numbers"]
    models = ", ".join(f"`{m['name']}` H={m['horizon']}" for m in c["models"])
    cases = sum(v["cases"] for v in n["summary"].values()) // len(n["summary"])
    lines = [provenance(rec),
             f"{models} on {', '.join(m.removesuffix('.csv').replace('_', '/').replace('-', ' ') for m in c['markets'])}: "
             f"{cases} stretches of "
             f"{c['live_bars']} live bars, each judged against the band of the {c['history_bars']} bars before it "
             f"(window {c['window']}, judged from {c['min_resolved']} resolved).",
             "",
             "| forecasts | stretches ever decayed | bars read decayed (mean) | first decayed decision (median) |",
             "|---|---|---|---|"]
    names = {"honest": "honest (the band's own model)", "narrow": "spread halved (too narrow)",
             "biased": "median shifted up by half the 80 % half-width"}
    for kind, v in n["summary"].items():
        first = "—" if v["median_first_decayed"] is None else f"{v['median_first_decayed']:.0f}"
        lines.append(f"| {names.get(kind, kind)} | {v['ever_decayed']} / {v['cases']} | {pct(v['mean_decayed_share'])} "
                     f"| {first} |")
    return "\n".join(lines)


def render_universe(r: Records) -> str:
    rec = r["universe_speed"]
    n, c = rec["numbers"], rec["config"]
    span = "all" if n["event_bars"] == n["bars"] else f"the first {n['event_bars']:,}"
    lines = [provenance(rec),
             f"{c['coins']} coins × {n['bars']:,} 1h bars ({c['timerange']}), `rank_long_short` k = {c['params']['k']}, "
             f"rebalance every {c['params']['rebalance']} bars, momentum over {c['lookback']} candles; the event loop "
             f"ran on {span} bars.", "",
             "| path | time | bars/s | fills |", "|---|---|---|---|",
             f"| backtrader event loop, 30 feeds | {n['event_s']:.1f} s ({n['event_bars']:,} bars) "
             f"| {n['event_bars'] / n['event_s']:,.0f} | {n['event_fills']:,} |",
             f"| fast path, same bars | {n['fast_part_s']:.2f} s | {n['event_bars'] / n['fast_part_s']:,.0f} "
             f"| {n['fast_part_fills']:,} |",
             f"| fast path, all bars | {n['fast_full_s']:.2f} s | {n['bars'] / n['fast_full_s']:,.0f} | {n['fast_fills']:,} |",
             f"| bare numpy limit (no order sizes, no cash checks), all bars | {n['bare_s'] * 1000:.0f} ms "
             f"| {n['bars'] / n['bare_s']:,.0f} | — |", "",
             f"Event loop / fast path: {n['event_over_fast']:.0f}× (target ≥ 50×); fast path / bare limit: "
             f"{n['fast_over_bare']:.0f}×; reconciled fill for fill on the event loop's bars: "
             f"{'yes' if n['reconciled'] else 'NO'}. Over the two years the strategy ends at {n['final_equity']:,.0f}, "
             f"the equal-weight universe at {n['reference_final_equity']:,.0f} (of {c['cash']:,.0f}; turnover "
             f"{n['turnover']:.0f}× equity; fees {n['fees']:,.0f}, slippage {n['slippage']:,.0f}, borrow "
             f"{n['borrow']:,.0f}); the bare limit's equity {n['bare_final_equity']:,.0f}."]
    return "\n".join(lines)


#: metrics.json ``timings`` steps of a universe run's checks (as benchmarks/universe_run_speed.py sums them).
UNIVERSE_CHECKS = ("lookahead", "plausibility", "random_ranking", "cross_section_baselines")


def render_universe_run(r: Records) -> str:
    rec = r["universe_run_speed"]
    n, c = rec["numbers"], rec["config"]
    d, f = n["default"], n["full"]
    rc = d["reconciled"]

    def steps(run: dict) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in run["timings"].items() if k != "total")

    def checks(run: dict) -> str:
        if not any(k in run["timings"] for k in UNIVERSE_CHECKS):
            return "not in this run"
        return f"{sum(run['timings'].get(k, 0.0) for k in UNIVERSE_CHECKS):.1f} s"

    lines = [provenance(rec),
             f"{c['coins']} coins × {n['bars']:,} 1h bars ({c['timerange']}), `{c['strategy']}` with config.toml's "
             f"parameters, `{c['predictor']}` forecasts cached (a first, untimed run computed them); each run is "
             "`python -m engine backtest ... --universe` in a child process (start-up and imports included); best of "
             f"{c['rounds']} round(s).", "",
             "| record | wall | CPU | the checks | steps inside the run (s) |", "|---|---|---|---|---|",
             f"| fast path, reconciled with the event loop on bars 1–{rc['bars']:,} (`{c['reconcile_default']}`, the "
             f"default) | {d['wall_s']:.1f} s | {d['cpu_s']:.1f} s | {checks(d)} | {steps(d)} |",
             f"| event loop over every bar (`--reconcile full`) | {f['wall_s']:.1f} s | {f['cpu_s']:.1f} s | {checks(f)} "
             f"| {steps(f)} |",
             "",
             "The checks: the steps " + ", ".join(f"`{k}`" for k in UNIVERSE_CHECKS) + " (lookahead across coins, the "
             "plausibility guard, random ranking, the momentum/reversal baselines; "
             "[Judging across a universe](#judging-across-a-universe)), in wall seconds inside the run.", "",
             f"Full / default: {n['full_over_default_wall']:.1f}× wall, {n['full_over_default_cpu']:.1f}× CPU; the default "
             f"run within {c['target_s']:.0f} s of wall clock: {'yes' if n['within_target'] else 'no'} (target ≤ "
             f"{c['target_s']:.0f} s); the two records are the same (fills, equity at every bar): "
             f"{'yes' if n['same_record'] else 'NO'} ({d['fills']:,} fills, final equity {d['final_equity']:,.2f})."]
    return "\n".join(lines)


def render_universe_forecast(r: Records) -> str:
    rec = r["universe_forecast_speed"]
    c, n = rec["config"], rec["numbers"]
    lines = [provenance(rec),
             f"{c['model']}, {c['coins']} coins, context {c['context']}, horizon {c['horizon']}, batch {c['batch']}, "
             f"torch on {c['torch_threads']} thread(s), forecast cache off; best of {c['repeat']}.", "",
             "| decision times | windows | per coin | batched | `--jobs 2` | per coin / batched | jobs 1 / jobs 2 "
             "| same bits |", "|---|---|---|---|---|---|---|---|"]
    for k in n["cases"]:
        same = "yes" if k["same_bits_batched"] and k["same_bits_jobs2"] else "NO"
        lines.append(f"| {k['label']} | {k['windows']:,} | {k['per_coin_s']:.2f} s | {k['batched_s']:.2f} s "
                     f"| {k['jobs2_s']:.2f} s | {k['per_coin_over_batched']:.1f}× | {k['jobs1_over_jobs2']:.2f}× | {same} |")
    return "\n".join(lines)


def render_ic_baselines(r: Records) -> str:
    rec = r["universe_ic_baselines"]
    n = rec["numbers"]
    lines = [provenance(rec), "",
             "| universe | timeframe, period | lookback / h | Rank IC (t) | IC | lower 95 % bound of \\|Rank IC\\| |",
             "|---|---|---|---|---|---|"]
    for x in n["rows"]:
        lines.append(f"| {x['universe']} ({x['coins']} coins) | {x['timeframe']} {x['timerange']} | {x['lookback']} / "
                     f"{x['horizon']} | {x['rank_ic']:+.3f} ({x['rank_ic_t']:+.1f}) | {x['ic']:+.3f} "
                     f"| {x['rank_ic_lower_95']:.3f} |")
    lines += ["", f"Largest \\|Rank IC\\| {n['max_abs_rank_ic']:.3f}, largest \\|IC\\| {n['max_abs_ic']:.3f}, largest "
              f"lower bound {n['max_rank_ic_lower_95']:.3f} (`reversal` mirrors every sign)."]
    return "\n".join(lines)


def render_tirex(r: Records) -> str:
    rec = r["tirex_speed"]
    c, n = rec["config"], rec["numbers"]
    return "\n".join([provenance(rec),
                      f"A random-weight TiRex of {c['params_m']:.1f}M parameters, context {c['train_ctx']} bars, horizon "
                      f"{c['horizon']}, {c['n']} BTC/USDT 1h windows, torch on {c['threads']} thread(s): "
                      f"{n['batch1_wall']:.2f} windows/s at batch 1 ({n['batch1_cpu']:.2f} per CPU-second), "
                      f"{n['batched_wall']:.2f} at batch {c['batch']} ({n['batched_cpu']:.2f} per CPU-second): "
                      f"{n['batched_over_batch1_wall']:.1f}× from batching."])


def render_toto(r: Records) -> str:
    rec = r["toto_speed"]
    c, n = rec["config"], rec["numbers"]
    per = "; ".join(f"{k} paths {n[f'wall_s_per_window_{k}']:.2f} s per window ({n[f'cpu_s_per_window_{k}']:.2f} CPU-s)"
                    for k in c["samples"])
    return "\n".join([provenance(rec),
                      f"A random-weight Toto of {c['params_m']:.1f}M parameters, context {c['context']} bars, horizon "
                      f"{c['horizon']}, {c['n']} BTC/USDT 1h windows, torch on {c['threads']} thread(s), all paths in one "
                      f"pass: {per}."])


def render_kronos(r: Records) -> str:
    rec = r["kronos_speed"]
    c, n = rec["config"], rec["numbers"]
    shape = "Kronos-small" if c["shape"] == "small" else "the tests' tiny Kronos"
    same = "identical" if n["forecasts_identical"] else "NOT identical"
    return "\n".join([provenance(rec),
                      f"A random-weight model in the shape of {shape} ({c['params_m']:.1f}M parameters), {c['n']} BTC/USDT "
                      f"1h window{'s' if c['n'] != 1 else ''} of {c['context']} bars in one batch, horizon {c['horizon']}, {c['samples']} paths per window, "
                      f"torch on {c['threads']} thread{'s' if c['threads'] != 1 else ''}: uncached (upstream's decoding) {n['uncached_wall']:.3f} windows/s "
                      f"({n['uncached_cpu']:.3f} per CPU-second), key/value cache {n['cached_wall']:.3f} windows/s "
                      f"({n['cached_cpu']:.3f} per CPU-second): {n['cached_over_uncached_wall']:.1f}× wall, "
                      f"{n['cached_over_uncached_cpu']:.1f}× CPU; forecasts {same}."])


def render_report_load(r: Records) -> str:
    rec = r["report_load"]
    c, n = rec["config"], rec["numbers"]
    ex, ms, pts, size = c["example"], n["drawn_ms"], n["points"], n["bytes"]
    rows = [("the forecast page as written (downsampled)", "downsampled"), ("the same page, every point drawn", "every point"),
            ("reference: plotly.js inlined (basic bundle), no chart", "plotly.js only"),
            ("for comparison: the full plotly.js bundle, no chart", "full plotly.js")]
    lines = [provenance(rec),
             f"{ex['symbol']} {ex['timeframe']} {ex['timerange']}, `{ex['predictor']}`, {n['n_decisions']:,} decision bars; "
             f"headless Chromium, median of {c['repeat']} runs per page, alternating; the page writes the time from "
             f"navigation start until every chart is drawn.",
             "",
             "| page | drawn after | charts beyond plotly.js | points drawn | file size |",
             "|---|---|---|---|---|"]
    ref = ms["plotly.js only"]
    for label, key in rows:
        beyond = "—" if key in ("plotly.js only", "full plotly.js") else f"{ms[key] - ref:.0f} ms"
        lines.append(f"| {label} | {ms[key]:.0f} ms | {beyond} | {pts[key]:,} | {size[key] / 1e6:.1f} MB |")
    met = "met" if n["target_met"] else "NOT met"
    lines += ["", f"Every point / downsampled, the charts' own time: {n['ratio_every_point_to_downsampled_charts']:.1f}x. "
                  f"Writing the page (`write_forecast_page`, in process): {n['write_s']['downsampled']:.2f} s "
                  f"({n['write_s']['every point']:.2f} s with every point). "
                  f"Target, the year's page drawn within {c['target_ms']:.0f} ms: {met} in this run."]
    return "\n".join(lines)


def render_train_defaults(r: Records) -> str:
    rec = r["train_defaults"]
    c, n = rec["config"], rec["numbers"]
    lines = [provenance(rec),
             f"`python -m engine train strategies/llm_signal.py --predictor NAME` on {c['symbol']} 1h, --timerange "
             f"{c['timerange']}, from the repository root with config.toml as shipped (training.profile = \"auto\"), a "
             "fresh checkpoint cache. Wall time of the whole command (imports, candles and the validation scoring "
             "included); fits: the seconds inside `fit`, summed over the folds; estimate: what the command printed a "
             "few steps into its first fold.", "",
             "| predictor (model) | profile: context, epochs, max_steps, batch, window | folds | wall | CPU time (share of the cores) | load average start, end | fits | estimate printed |",
             "|---|---|---|---|---|---|---|---|"]
    models = {"lora_llm": "tests' tiny Llama", "chronos": "tests' tiny Chronos-2, finetune lora"}
    for name, v in n.items():
        if name.endswith("_paper"):
            continue
        label = f"`{name}`" + (f" ({models[name]})" if name in models else "")
        if v.get("returncode") != 0:
            what = "NOT FINISHED" if str(v.get("error", "")).startswith("timed out") else "FAILED"
            lines.append(f"| {label} | — | — | {what} ({v.get('error')}) | — | — | — | — |")
            continue
        s = v["settings"]
        sizes = ", ".join(str(s.get(f"{sec}.{k}", "set")) for sec, k in (
            ("predictor", "context_length"), ("training", "epochs"), ("training", "max_steps"),
            ("training", "batch_size"), ("training", "train_window")))
        est = "none printed" if v["estimate_s"] is None else f"{v['estimate_s'] / 60:.1f} min"
        lines.append(f"| {label} | {v['profile']['applied']}: {sizes} | {v['folds']} | {v['wall_min']:.1f} min "
                     f"| {v['cpu_s'] / 60:.1f} min ({v['cpu_share']:.0%}) | {v['load_start']:.1f}, {v['load_end']:.1f} "
                     f"| {v['fit_s'] / 60:.1f} min | {est} |")
    paper = {k.removesuffix("_paper"): v for k, v in n.items() if k.endswith("_paper")}
    if paper:
        words = [f"`{k}` no estimate printed" if v["estimate_s"] is None else f"`{k}` ~{v['estimate_s'] / 60:.0f} min"
                 for k, v in paper.items()]
        lines += ["", "The paper profile (the sizes before profiles existed), started and stopped once its estimate was "
                  "printed: " + "; ".join(words) + " (estimates for all folds, not measurements)."]
    return "\n".join(lines)


def render_stage1_table(r: Records) -> str:
    """examples/stage1_table.py: every stage-1 family through ``compare`` on BTC and ETH (tiny or real weights)."""
    rec = r["stage1_table"]
    c, n = rec["config"], rec["numbers"]
    if c["weights"] == "tiny":
        weights = ("**Tiny random weights** (the tests' builders, `tests/tiny_models.py`): the numbers mean nothing "
                   "about the real models; the table shows that every stage-1 path runs end to end through `compare`, "
                   "judged like any run.")
    else:
        weights = "**Real checkpoints**: " + ", ".join(f"{k} `{v}`" for k, v in c["families"].items()) + "."
    lines = [provenance(rec), weights,
             f"`{c['strategy']}` on {' and '.join(c['symbols'])}, {c['timeframe']} bars {c['timerange']}, context "
             f"{c['context_length']} bars, horizon {c['horizon']}, with the {' and '.join(c['baselines'])} baselines "
             f"(one `python -m engine compare`, {duration(n['compare_s'])}).",
             "",
             "| market | predictor | return | Sharpe | MASE | CRPS | cov. 80% | dir. acc. | lookahead |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in n["rows"]:
        lines.append(f"| {row['market']} | {row['predictor']} | {pct(row['total_return'])} | {num(row['sharpe'])} | "
                     f"{num(row['mase'], 3)} | {num(row['crps'], 4)} | {pct(row['coverage_80'])} | "
                     f"{pct(row['dir_accuracy'])} | {row['lookahead'] or 'n/a'} |")
    lines.append("")
    if n["not_run"]:
        lines += [f"NOT RUN: {x['family']} ({x['why']})." for x in n["not_run"]]
    else:
        lines.append("Every stage-1 predictor of the registry ran (none NOT RUN).")
    return "\n".join(lines)


def render_stage1_gpu(r: Records) -> str:
    """examples/stage1_table.py's GPU recipe: estimated inference memory of each real stage-1 checkpoint."""
    rec = r["stage1_table"]
    c, n = rec["config"], rec["numbers"]

    def gib(v: float | None) -> str:
        return "n/a" if na(v) else (f"{v:.2f} GiB" if v >= 0.1 else f"{v * 1024:.0f} MiB")

    lines = [f"Computed from the parameter counts below by the run above ({rec['date'][:10]}, `{rec['command']}`).",
             f"**Every figure is an estimate**, none measured (NOT RUN on a GPU: no device was lent). Inference only: weights = "
             f"parameters × 2 bytes (bf16) or 4 (fp32); activations = batch × rows × tokens × (d_model × "
             f"{c['act_factor']} + heads × tokens) × 2 bytes (one layer live at a time), at the predictor's default "
             f"`batch_size` and a {c['real_context_length']}-bar context; n/a where the width was not read here.",
             "",
             "| family | checkpoint | parameters (source) | weights bf16 (estimate) | weights fp32 (estimate) | "
             "batch × rows × tokens | activations (estimate) | total bf16 (estimate) |",
             "|---|---|---|---|---|---|---|---|"]
    for m in n["memory"]:
        lines.append(f"| {m['family']} | `{m['model']}` | {_millions(m['params_m'])} ({m['source']}) | "
                     f"{gib(m['weights_bf16_gib'])} | {gib(m['weights_fp32_gib'])} | "
                     f"{m['batch']} × {m['rows']} × {m['tokens']} | {gib(m['activations_gib'])} | "
                     f"{gib(m['total_bf16_gib'])} |")
    return "\n".join(lines)


def _millions(params_m: float | None) -> str:
    """A parameter count in millions for the GPU table; n/a when none was read."""
    return "n/a" if params_m is None else f"{params_m:g}M"


@dataclass(frozen=True)
class Block:
    """One generated block of the documentation: the JSON files it reads (stems under benchmarks/results), the commands
    that write them, and the renderer."""

    name: str
    sources: tuple[str, ...]
    commands: tuple[str, ...]
    render: Callable[[Records], str]


BLOCKS: dict[str, Block] = {b.name: b for b in (
    Block("stage2", ("stage2",), ("bash benchmarks/results/stage2.sh",), render_stage2),
    Block("backtest_speed", ("backtest_speed_naive", "backtest_speed_momentum"),
          ("python benchmarks/backtest_speed.py", "python benchmarks/backtest_speed.py --predictor momentum"), render_backtest),
    Block("sweep_speed", ("sweep_speed",), ("python benchmarks/sweep_speed.py",), render_sweep),
    Block("inference_speed", ("inference_speed",), ("python benchmarks/inference_speed.py",), render_inference),
    Block("inference_speed_llmtime", ("inference_speed_llmtime",),
          ("python benchmarks/inference_speed.py --predictor llmtime --threads 1",), render_inference_llmtime),
    Block("train_speed", ("train_speed",), ("python benchmarks/train_speed.py",), render_train),
    Block("compare_scaling", ("compare_scaling",), ("python benchmarks/compare_scaling.py",), render_compare),
    Block("paper_latency", ("paper_latency",), ("python benchmarks/paper_latency.py --bars 300",), render_paper),
    Block("paper_parity_patchtst", ("paper_parity_patchtst",), ("python benchmarks/paper_parity_patchtst.py",),
          render_paper_parity),
    Block("lora_speed", ("lora_speed",), ("python benchmarks/lora_speed.py",), render_lora),
    Block("verdict_speed", ("verdict_speed",), ("python benchmarks/verdict_speed.py",), render_verdict),
    Block("replay_cost", ("replay_cost",), ("python benchmarks/replay_cost.py",), render_replay),
    Block("guard_power", ("guard_power",), ("python benchmarks/guard_power.py",), render_guard),
    Block("deterministic_fit", ("deterministic_fit",), ("python benchmarks/deterministic_fit.py",), render_deterministic),
    Block("monitor_rule", ("monitor_rule",), ("python benchmarks/monitor_rule.py",), render_monitor_rule),
    Block("universe_speed", ("universe_speed",), ("python benchmarks/universe_speed.py",), render_universe),
    Block("universe_run_speed", ("universe_run_speed",), ("python benchmarks/universe_run_speed.py",),
          render_universe_run),
    Block("universe_forecast_speed", ("universe_forecast_speed",), ("python benchmarks/universe_forecast_speed.py",),
          render_universe_forecast),
    Block("universe_ic_baselines", ("universe_ic_baselines",), ("python benchmarks/universe_ic_baselines.py",),
          render_ic_baselines),
    Block("tirex_speed", ("tirex_speed",), ("python benchmarks/tirex_speed.py",), render_tirex),
    Block("toto_speed", ("toto_speed",), ("python benchmarks/toto_speed.py",), render_toto),
    Block("kronos_speed", ("kronos_speed",), ("python benchmarks/kronos_speed.py",), render_kronos),
    Block("report_load", ("report_load",), ("python benchmarks/report_load.py",), render_report_load),
    Block("train_defaults", ("train_defaults",), ("python benchmarks/train_defaults.py --data-dir ../shared/data --paper --paper-predictors patchtst --timeout 900",),
          render_train_defaults),
    Block("stage1_table", ("stage1_table",), ("python examples/stage1_table.py",), render_stage1_table),
    Block("stage1_gpu", ("stage1_table",), ("python examples/stage1_table.py",), render_stage1_gpu),
)}


# --------------------------------------------------------------------------- blocks in README.md and docs/


#: A block starts a line; inside a Markdown list item it is indented (markers and every line by the same
#: spaces, which ``--write`` keeps and the check strips before comparing).
BLOCK_RE = re.compile(r"^(?P<indent>[ \t]*)<!-- results:(?P<name>[\w-]+)(?: [^\n]*?)? -->\n(?P<body>.*?)\n?"
                      r"(?P=indent)<!-- /results:(?P=name) -->", re.S | re.M)
HAND_RE = re.compile(r"<!-- measured-by-hand: (?P<reason>[^\n]*?) -->\n(?P<body>.*?)<!-- /measured-by-hand -->", re.S)
COMMENTARY_RE = re.compile(r"<!-- commentary:(?P<name>[\w-]+) (?P<date>\S+) -->\n(?P<body>.*?)<!-- /commentary:(?P=name) -->",
                           re.S)
OPEN_RE = re.compile(r"<!-- (results|commentary):([\w-]+)|<!-- measured-by-hand")
#: A measured figure written as prose: a number with a unit of time, size or rate, a speed-up, or a p-value.
FIGURE_RE = re.compile(r"(?<![\w.\-])\d[\d,]*(?:\.\d+)?\s?(?:ms|s|min|MiB|GiB|fc/s|bars/s|variants/s|tokens/s|windows/s)(?![\w/])"
                       r"|(?<![\w.])\d[\d,]*(?:\.\d+)?\s?×|\bp\s?(?:=|<|>|≥|≤|>=|<=)\s?\d")
NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")
#: Words before a figure that make it a limit or a target rather than a measurement.
LIMIT_RE = re.compile(r"(?:\bover|\bunder|\bbelow|\babove|\btarget|<|>|≤|≥)\s*~?\s*$")
#: A time figure (the test-suite timings of "Install, run, test").
TIME_RE = re.compile(r"(?<![\w.\-])\d[\d,]*(?:\.\d+)?\s?(?:ms|s|min)(?![\w/])")
#: Pages, or a section of one (title; None: the whole page), whose measured figures must come from a JSON file
#: (or sit in a block saying they were measured by hand, when and why), with what counts as a measured figure
#: there. Table rows count everywhere.
CHECKED_SECTIONS = {("README.md", "## Install, run, test"): TIME_RE, ("docs/getting-started.md", None): TIME_RE,
                    ("docs/results.md", None): FIGURE_RE, ("docs/performance.md", None): FIGURE_RE}
HEADER = "<!-- results:{name} (generated from benchmarks/results/*.json by python benchmarks/readme_results.py --write) -->"


def block_body(m: re.Match[str]) -> str:
    """The body of a BLOCK_RE match without the block's indentation."""
    indent = m.group("indent")
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in m.group("body").split("\n"))


def _indent(text: str, indent: str) -> str:
    return "\n".join(indent + line if line else line for line in text.split("\n"))


def load_records(block: Block, results_dir: Path = RESULTS_DIR) -> tuple[Records, list[str]]:
    """The block's JSON records by stem, and a problem line per missing file."""
    records, missing = {}, []
    for stem, command in zip(block.sources, block.commands * len(block.sources) if len(block.commands) == 1
                             else block.commands):
        path = results_dir / f"{stem}.json"
        if not path.is_file():
            missing.append(f"results:{block.name}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                           f"does not exist, so the documentation's figures have no source; run: {command}")
            continue
        records[stem] = json.loads(path.read_text())
    return records, missing


def render_block(name: str, *records: dict[str, Any]) -> str:
    """The body of block ``name`` from its records (given, or read from benchmarks/results)."""
    block = BLOCKS[name]
    if records:
        recs = {rec["name"]: rec for rec in records}
    else:
        recs, missing = load_records(block)
        if missing:
            raise FileNotFoundError("; ".join(missing))
    return block.render(recs)


def _section(text: str, title: str | None) -> tuple[int, int] | None:
    if title is None:
        return 0, len(text)
    start = text.find("\n" + title)
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    return start + 1, (len(text) if end < 0 else end + 1)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _diff(name: str, readme: str, rendered: str, command: str) -> list[str]:
    """Problem lines naming table, row, column, the page's value and JSON value (or the line) where they differ."""
    problems = []
    got, want = readme.strip("\n").split("\n"), rendered.strip("\n").split("\n")
    header: list[str] = []
    table = 0
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else "<missing line>"
        w = want[i] if i < len(want) else "<no such line in the JSON's rendering>"
        if w.startswith("|") and (i == 0 or not want[i - 1].startswith("|")):
            header, table = _cells(w), table + 1
        if g == w:
            continue
        if g.startswith("|") and w.startswith("|") and not set(w) <= set("|-"):
            gc, wc = _cells(g), _cells(w)
            row = f"{wc[0]} {wc[1]}" if header[:1] == ["market"] and len(wc) > 1 else wc[0]
            for j in range(max(len(gc), len(wc))):
                a = gc[j] if j < len(gc) else "<missing cell>"
                b = wc[j] if j < len(wc) else "<extra cell>"
                if a != b:
                    column = header[j] if j < len(header) else f"column {j + 1}"
                    problems.append(f"results:{name} table {table}, row '{row}', column '{column}': page {a!r}, "
                                    f"JSON {b!r}; re-run: {command}, then python benchmarks/readme_results.py --write")
        else:
            figures = [(a, b) for a, b in zip(NUMBER_RE.findall(g), NUMBER_RE.findall(w)) if a != b][:1]
            which = f" (figure {figures[0][0]} where the JSON gives {figures[0][1]})" if figures else ""
            problems.append(f"results:{name} line {i + 1}{which}: page {g!r}, JSON {w!r}; re-run: {command}, then "
                            f"python benchmarks/readme_results.py --write")
    return problems


def check(pages: Pages, results_dir: Path = RESULTS_DIR) -> list[str]:
    """Every problem of the pages ``pages`` (:func:`read_pages`) against the JSON under ``results_dir`` (empty: all
    figures match)."""
    problems: list[str] = []
    found: dict[str, list[tuple[str, re.Match[str]]]] = {}
    for page, text in pages.items():
        for m in BLOCK_RE.finditer(text):
            found.setdefault(m.group("name"), []).append((page, m))
    for name, block in BLOCKS.items():
        command = " and ".join(block.commands)
        if name not in found:
            problems.append(f"no page (README.md, docs/*.md) has the block <!-- results:{name} ... --> ... "
                            f"<!-- /results:{name} --> (its figures come from "
                            f"{', '.join(s + '.json' for s in block.sources)}; "
                            f"python benchmarks/readme_results.py --write fills it once the marker is there)")
            continue
        records, missing = load_records(block, results_dir)
        if missing:
            problems += missing
            continue
        command = " and ".join(rec.get("command") or "?" for rec in records.values())  # as they ran
        try:
            rendered = block.render(records)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            problems.append(f"results:{name}: its JSON cannot be rendered ({type(exc).__name__}: {exc}): written by an "
                            f"older script? re-run: {command}")
            continue
        for page, m in found[name]:
            problems += [f"{p} (in {page})" for p in _diff(name, block_body(m), rendered, command)]
    for name, where in found.items():
        if name not in BLOCKS:
            problems.append(f"{where[0][0]}: block results:{name} has no renderer: add it to BLOCKS in "
                            f"benchmarks/readme_results.py")
    for page, text in pages.items():
        for m in COMMENTARY_RE.finditer(text):
            path = results_dir / f"{m.group('name')}.json"
            date = json.loads(path.read_text()).get("date") if path.is_file() else None
            if date != m.group("date"):
                problems.append(f"commentary:{m.group('name')} ({page}) was written against the run of "
                                f"{m.group('date')}, but "
                                + (f"{path.name} is from {date}" if date else f"{path.name} does not exist")
                                + ": re-read the prose against the new figures and set its date")
        for m in HAND_RE.finditer(text):
            if not re.search(r"\d{4}-\d{2}-\d{2}", m.group("reason")) or len(m.group("reason")) < 20:
                problems.append(f"{page}: measured-by-hand block must say when (YYYY-MM-DD) and why no script "
                                f"measures it, got {m.group('reason')!r}")
    for (page, title), figure_re in CHECKED_SECTIONS.items():
        text = pages.get(page)
        span = None if text is None else _section(text, title)
        if span is None:
            problems.append(f"{page} has no section {title!r}" if text is not None else f"there is no page {page}")
            continue
        body = text[span[0]:span[1]]
        for regex in (BLOCK_RE, HAND_RE, COMMENTARY_RE):
            body = regex.sub(lambda m: "\n" * m.group(0).count("\n"), body)
        body = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), body, flags=re.S)
        first_line = text[:span[0]].count("\n") + 1
        for k, line in enumerate(body.split("\n")):
            where = f"{page} line {first_line + k}" + (f" (section {title!r})" if title else "")
            if OPEN_RE.search(line):
                problems.append(f"{where}: an unclosed or malformed block marker: {line.strip()!r}")
            elif line.lstrip().startswith("|"):
                problems.append(f"{where}: a table row outside a generated block, with no JSON source: {line.strip()[:80]!r}")
            else:
                for fig in figure_re.finditer(line):
                    if LIMIT_RE.search(line[:fig.start()]):
                        continue  # a limit or target ("over ~2 s", "< 50 ms"), not a measurement
                    problems.append(f"{where}: the figure {fig.group(0)!r} has no JSON source: put it in a "
                                    f"<!-- results:NAME --> block or a <!-- measured-by-hand: DATE, REASON --> block")
    return problems


def write(text: str, results_dir: Path = RESULTS_DIR, only: Collection[str] | None = None) -> tuple[str, list[str]]:
    """One page's ``text`` with every block whose JSON exists (of ``only``'s names, when given) re-rendered, and
    the names of the blocks left as they were."""
    skipped: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if only is not None and name not in only:
            return m.group(0)
        block = BLOCKS.get(name)
        if block is None:
            skipped.append(f"{name} (no renderer)")
            return m.group(0)
        records, missing = load_records(block, results_dir)
        if missing:
            skipped.append(f"{name} ({'; '.join(missing)})")
            return m.group(0)
        indent = m.group("indent")
        return f"{indent}{HEADER.format(name=name)}\n{_indent(block.render(records), indent)}\n{indent}<!-- /results:{name} -->"

    return BLOCK_RE.sub(replace, text), skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="re-render the pages' blocks from the JSON")
    parser.add_argument("--print", dest="name", help="print one block rendered from its JSON")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(BLOCKS),
                        help="with --write: re-render only these blocks (e.g. while another benchmark is still "
                             "writing its JSON)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository whose README.md and docs/ to check")
    args = parser.parse_args(argv)
    if args.name:
        print(render_block(args.name))
        return 0
    if args.write:
        for page, text in read_pages(args.root).items():
            new, skipped = write(text, only=args.only)
            if new != text:
                (args.root / page).write_text(new, encoding="utf-8")
            for line in skipped:
                print(f"left as it was ({page}): {line}")
    problems = check(read_pages(args.root))
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)" if problems else "README.md and docs/: every result block matches its JSON")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
