"""Model resolution without network: local paths, the local HF cache, fast offline errors;
the contamination table; the batch-invariant sampler; the optional timesfm predictor."""

from __future__ import annotations

import shutil
import sys
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from conftest import TORCH_THREADS
from engine.forecasting.signals import predictor_identity
from predictors import PredictorError, make_predictor
from predictors.contamination import cutoff_source, training_cutoff
from predictors.errors import PredictorUnavailable
from predictors.hub import resolve_model, snapshot_revision

UNCACHED = "amazon/chronos-bolt-small-not-cached-here"


# -- resolve_model -------------------------------------------------------------------------------
def test_local_directory_is_returned_as_is(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_path_that_is_not_a_directory(tmp_path):
    with pytest.raises(PredictorError, match="not a directory"):
        resolve_model(str(tmp_path / "missing-model"))


@pytest.fixture()
def model_library_loaded(name):
    """The predictor's model library imported before the test times a call: "fast" is about
    waiting on the network, and the first import of torch + transformers in a worker takes seconds."""
    pytest.importorskip({"chronos": "chronos", "llmtime": "transformers"}[name])


@pytest.mark.parametrize("name", ["chronos", "llmtime"])
def test_uncached_model_offline_fails_fast_with_the_fix(monkeypatch, empty_hf_cache, name, model_library_loaded):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        make_predictor(name, {"model": UNCACHED, "device": "cpu"})
    assert time.monotonic() - start < 3.0
    msg = str(err.value)
    assert UNCACHED in msg and "HF_HUB_OFFLINE" in msg
    assert f"hf download {UNCACHED}" in msg and f"huggingface-cli download {UNCACHED}" in msg
    assert "--model PATH" in msg


def test_uncached_model_unreachable_hub_fails_fast(monkeypatch, empty_hf_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    start = time.monotonic()
    with pytest.raises(PredictorUnavailable, match="cannot be reached") as err:  # an outage: retry later
        resolve_model(UNCACHED, revision="v1")
    assert time.monotonic() - start < 5.0
    assert "--revision v1" in str(err.value)


def test_cached_hub_id_resolves_to_snapshot_and_loads(monkeypatch, empty_hf_cache, tmp_path):
    """A hub id present in the local cache loads offline, and its commit becomes the revision."""
    pytest.importorskip("chronos")
    import torch

    import tiny_models

    torch.set_num_threads(min(TORCH_THREADS, torch.get_num_threads()))  # 2 cores over the xdist workers
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--amazon--chronos-bolt-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    shutil.copytree(tiny_models.build_chronos_bolt(tmp_path / "bolt"), snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert resolve_model("amazon/chronos-bolt-tiny") == str(snapshot)
    assert snapshot_revision(str(snapshot)) == sha
    pred = make_predictor("chronos", {"model": "amazon/chronos-bolt-tiny", "device": "cpu"})
    assert predictor_identity(pred, 64, 2, 1)["revision"] == sha  # the cache key pins the cached snapshot
    info = pred.model_info()
    assert info.revision == sha and info.training_cutoff == datetime(2024, 11, 30, tzinfo=timezone.utc)
    assert "release" in info.source
    assert pred.predict(np.linspace(100, 110, 64)[None, :], 2).shape == (1, 3, 2)


# -- contamination table -----------------------------------------------------------------------------
def test_training_cutoffs():
    utc = timezone.utc
    assert training_cutoff("gpt2") == datetime(2017, 12, 31, tzinfo=utc)
    assert training_cutoff("meta-llama/Meta-Llama-3-8B") == datetime(2023, 3, 31, tzinfo=utc)
    assert training_cutoff("amazon/chronos-t5-small") == datetime(2024, 3, 31, tzinfo=utc)
    assert training_cutoff("/models/chronos-bolt-base/") == datetime(2024, 11, 30, tzinfo=utc)
    assert training_cutoff("amazon/chronos-2") == datetime(2025, 10, 31, tzinfo=utc)
    assert training_cutoff("google/timesfm-2.5-200m-pytorch") == datetime(2025, 9, 30, tzinfo=utc)
    assert training_cutoff("mistralai/Mistral-7B-Instruct-v0.3") is None
    assert training_cutoff("someone/my-own-model") is None
    assert "training-data end" in cutoff_source("gpt2")
    assert "upper bound" in cutoff_source("amazon/chronos-bolt-small")
    assert "unknown" in cutoff_source("someone/my-own-model")


# -- batch-invariant sampler ---------------------------------------------------------------------------
def test_hashed_gumbel_sampler_matches_the_distribution_and_ignores_neighbours():
    torch = pytest.importorskip("torch")
    from predictors._torch import HashedGumbelSampler, row_seeds

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 4000
    seeds = torch.from_numpy(row_seeds(np.arange(rows, dtype=np.float64)[:, None], seed=0, num_samples=1))
    scores = probs.log().repeat(rows, 1)
    picked = HashedGumbelSampler(seeds)(torch.zeros(rows, 3, dtype=torch.long), scores).argmax(-1)
    freq = torch.bincount(picked, minlength=4).double() / rows
    assert torch.allclose(freq, probs.double(), atol=0.03)
    # a row's choice depends on its seed only, not on the batch around it
    alone = HashedGumbelSampler(seeds[7:8])(torch.zeros(1, 3, dtype=torch.long), scores[:1]).argmax(-1)
    assert alone.item() == picked[7].item()
    # top_k=1 is greedy
    greedy = HashedGumbelSampler(seeds[:50], top_k=1)(torch.zeros(50, 3, dtype=torch.long), scores[:50]).argmax(-1)
    assert (greedy == 0).all()


def test_row_seeds_depend_on_content_and_seed():
    from predictors._torch import row_seeds

    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    s = row_seeds(a, 0, 3)
    assert s.shape == (6,) and len(set(s.tolist())) == 6
    np.testing.assert_array_equal(row_seeds(a[1:], 0, 3), s[3:])
    assert not np.array_equal(row_seeds(a, 1, 3), s)


# -- timesfm (optional extra) ---------------------------------------------------------------------------
def test_timesfm_missing_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timesfm", None)  # makes `import timesfm` fail
    with pytest.raises(PredictorError, match=r"pip install -e '\.\[timesfm\]'"):
        make_predictor("timesfm", {"model": str(tmp_path)})


def test_timesfm_tiny_model(monkeypatch, tmp_path, btc_1h):
    pytest.importorskip("timesfm")
    torch = pytest.importorskip("torch")
    from timesfm.timesfm_2p5 import timesfm_2p5_torch as tt

    import tiny_models

    torch.set_num_threads(min(TORCH_THREADS, torch.get_num_threads()))  # 2 cores over the xdist workers
    path = tiny_models.build_tiny_timesfm(tmp_path / "timesfm")
    # the package hard-codes the 200M shapes; load the tiny widths through the same from_pretrained
    monkeypatch.setattr(tt.TimesFM_2p5_200M_torch_module, "config", tiny_models.tiny_timesfm_definition())
    close = btc_1h["close"].to_numpy()[-500:]
    ctx = np.stack([close[i : i + 100] for i in range(0, 20 * 7, 7)])
    levels = (0.1, 0.25, 0.5, 0.9)
    a = make_predictor("timesfm", {"model": str(path), "device": "cpu", "batch_size": 1}, quantile_levels=levels)
    b = make_predictor("timesfm", {"model": str(path), "device": "cpu", "batch_size": 16}, quantile_levels=levels)
    out_a, out_b = a.predict(ctx, 12), b.predict(ctx, 12)
    assert out_a.shape == (20, 4, 12) and np.isfinite(out_a).all()
    assert (np.diff(out_a, axis=1) >= 0).all()
    np.testing.assert_allclose(np.exp(out_a), np.exp(out_b), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out_a, a.predict(ctx, 12))
    assert a.config.model == str(path) and a.model_info().training_cutoff is None


def test_local_model_folder_revision_changes_when_weights_change(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    first = snapshot_revision(str(folder))
    assert first.startswith("local-")
    assert snapshot_revision(str(folder)) == first  # stable while nothing changes
    (folder / "model.safetensors").write_bytes(b"weights v2, retrained")
    assert snapshot_revision(str(folder)) != first  # so the forecast cache key changes too
