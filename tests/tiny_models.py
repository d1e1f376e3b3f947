"""Tiny random-weight checkpoints of every model family, built offline in a few seconds.

Each builder writes a directory that the real loading code (``from_pretrained(path)``)
accepts, in the same format as the published checkpoints, with dimensions small enough
for 2 CPU threads. Weights are random (seeded), so forecasts are noise: tests check
shapes, contracts, determinism and batch invariance, never accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

BOLT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CHRONOS2_QUANTILES = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def build_chronos_bolt(
    path: Path,
    d_model: int = 16,
    num_layers: int = 2,
    d_ff: int = 32,
    num_heads: int = 2,
    prediction_length: int = 16,
    context_length: int = 512,
    seed: int = 0,
) -> Path:
    """A Chronos-Bolt checkpoint (``T5Config`` + ``chronos_config``, like amazon/chronos-bolt-*)."""
    from chronos.chronos_bolt import ChronosBoltModelForForecasting
    from transformers import T5Config

    _seed(seed)
    config = T5Config(
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        vocab_size=2,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        reg_token_id=1,
        architectures=["ChronosBoltModelForForecasting"],
        chronos_pipeline_class="ChronosBoltPipeline",
        chronos_config={
            "context_length": context_length,
            "prediction_length": prediction_length,
            "input_patch_size": 16,
            "input_patch_stride": 16,
            "quantiles": BOLT_QUANTILES,
            "use_reg_token": True,
        },
    )
    model = ChronosBoltModelForForecasting(config).eval()
    # Shrink the random output head so forecasts stay near the context level (positive
    # prices, like a trained model), instead of spanning many context scales.
    with __import__("torch").no_grad():
        for layer in (model.output_patch_embedding.output_layer, model.output_patch_embedding.residual_layer):
            layer.weight.mul_(0.02)
            layer.bias.mul_(0.02)
    model.save_pretrained(path)
    return Path(path)


def build_chronos_t5(path: Path, d_model: int = 16, n_tokens: int = 128, prediction_length: int = 8, seed: int = 0) -> Path:
    """A classic Chronos (T5 + MeanScaleUniformBins tokenizer) checkpoint, like amazon/chronos-t5-*."""
    from transformers import T5Config, T5ForConditionalGeneration

    _seed(seed)
    config = T5Config(
        d_model=d_model,
        d_kv=d_model // 2,
        d_ff=2 * d_model,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        vocab_size=n_tokens,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        architectures=["T5ForConditionalGeneration"],
        chronos_config={
            "tokenizer_class": "MeanScaleUniformBins",
            "tokenizer_kwargs": {"low_limit": -15.0, "high_limit": 15.0},
            "n_tokens": n_tokens,
            "n_special_tokens": 2,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "use_eos_token": True,
            "model_type": "seq2seq",
            "context_length": 512,
            "prediction_length": prediction_length,
            "num_samples": 20,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        },
    )
    T5ForConditionalGeneration(config).eval().save_pretrained(path)
    return Path(path)


def build_chronos2(path: Path, d_model: int = 16, seed: int = 0) -> Path:
    """A Chronos-2 checkpoint (``Chronos2CoreConfig`` + ``chronos_config``), like amazon/chronos-2."""
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    _seed(seed)
    config = Chronos2CoreConfig(
        d_model=d_model,
        d_kv=d_model // 2,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        dropout_rate=0.0,
        architectures=["Chronos2Model"],
        chronos_pipeline_class="Chronos2Pipeline",
        reg_token_id=1,
        chronos_config={
            "context_length": 512,
            "input_patch_size": 16,
            "input_patch_stride": 16,
            "output_patch_size": 16,
            "max_output_patches": 4,
            "quantiles": CHRONOS2_QUANTILES,
            "time_encoding_scale": 512,
            "use_arcsinh": True,
            "use_reg_token": True,
        },
    )
    Chronos2Model(config).eval().save_pretrained(path)
    return Path(path)


DIGIT_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", *"0123456789", ",", " ", "-", ".", "a", "b"]


def build_digit_tokenizer(path: Path, model_max_length: int | None = None) -> Path:
    """A character-level tokenizer over digits, separators and a few junk letters.

    WordLevel vocabulary, ``Split("", "isolated")`` pre-tokenizer (one token per
    character, spaces included), ``Fuse`` decoder; saved as a ``PreTrainedTokenizerFast``.
    The letters let an unrestricted model produce malformed samples.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(DIGIT_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
    tok.decoder = decoders.Fuse()
    limit = {} if model_max_length is None else {"model_max_length": model_max_length}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", **limit
    )
    fast.save_pretrained(path)
    return Path(path)


def build_tiny_llama(
    path: Path, hidden_size: int = 64, num_layers: int = 2, seed: int = 0, max_positions: int | None = None,
    num_kv_heads: int = 4,
) -> Path:
    """A 2-layer Llama with the digit tokenizer, saved together (tokenizer + model); ``max_positions``
    (default 8192, the tokenizer then unlimited) sets the model's ``max_position_embeddings`` and the
    tokenizer's ``model_max_length``, as a real checkpoint states its context size; ``num_kv_heads`` < 4
    makes it grouped-query attention (as Llama 3, Qwen 2.5)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _seed(seed)
    build_digit_tokenizer(path, model_max_length=max_positions)
    config = LlamaConfig(
        vocab_size=len(DIGIT_VOCAB),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions or 8192,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    # random logits are near-uniform; sharpen them so samples look like numbers sometimes
    with __import__("torch").no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(path)
    return Path(path)


def tiny_timesfm_definition():  # noqa: ANN201 - timesfm is optional
    """A TimesFM 2.5 definition with the real patch sizes and tiny widths (1 layer, 32 dims)."""
    from timesfm import configs
    from timesfm.timesfm_2p5 import timesfm_2p5_base as base

    d = 32
    full = base.TimesFM_2p5_200M_Definition()
    return dataclasses.replace(
        full,
        tokenizer=configs.ResidualBlockConfig(64, d, d, True, "swish"),
        stacked_transformers=configs.StackedTransformersConfig(
            num_layers=1,
            transformer=dataclasses.replace(full.stacked_transformers.transformer, model_dims=d, hidden_dims=d, num_heads=2),
        ),
        output_projection_point=configs.ResidualBlockConfig(d, d, 1280, False, "swish"),
        output_projection_quantiles=configs.ResidualBlockConfig(d, d, 10240, False, "swish"),
    )


def build_tiny_timesfm(path: Path, seed: int = 0) -> Path:
    """A TimesFM 2.5 ``model.safetensors`` with :func:`tiny_timesfm_definition` widths.

    Loading it through ``TimesFM_2p5_200M_torch.from_pretrained(path)`` needs the module's
    ``config`` class attribute patched to the same definition (see the timesfm tests).
    """
    from safetensors.torch import save_file
    from timesfm.timesfm_2p5 import timesfm_2p5_torch as tt

    _seed(seed)
    module_cls = type("TinyTimesFMModule", (tt.TimesFM_2p5_200M_torch_module,), {"config": tiny_timesfm_definition()})
    module = module_cls()
    Path(path).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(Path(path) / "model.safetensors"))
    (Path(path) / "config.json").write_text("{}")
    return Path(path)


def build_tiny_timesfm3(path: Path, seed: int = 0, quantiles: tuple[float, ...] | None = None) -> Path:
    """A TimesFM 3 checkpoint folder (``config.json`` + ``model.safetensors``) of random weights, built with
    the package's own ``TimesFM3Torch`` from a config and written by its ``save_pretrained``, as the
    published ``google/timesfm-3.0-pytorch`` is laid out: the real patch lengths (32 in, 64 out) and
    flags, 1 layer of 16 dims instead of 20 of 1280. ``quantiles``: the checkpoint's levels (default the
    package's deciles 0.1 ... 0.9)."""
    from timesfm3.torch import configs
    from timesfm3.torch.model import TimesFM3Torch

    _seed(seed)
    d = 16
    model = TimesFM3Torch(
        input_patch_len=32,
        output_patch_len=64,
        quantiles=list(quantiles) if quantiles is not None else None,
        residual_block_config=configs.ResidualBlockConfig(hidden_dims=d, output_dims=d, use_bias=False, activation="relu"),
        transformer_config=configs.StackedTransformersConfig(
            num_layers=1,
            transformer=configs.TransformerConfig(
                model_dims=d, hidden_dims=d, num_heads=2, attention_norm="rms", feedforward_norm="rms", qk_norm="rms",
                use_rope_seq=True, use_rope_var=True, use_bias=False, ff_activation="relu", deterministic=True,
            ),
        ),
    )
    model.save_pretrained(str(path))
    return Path(path)


def train_digit_llama(
    path: Path,
    steps: int = 120,
    n_values: int = 24,
    batch: int = 8,
    digit_sep: str = " ",
    value_sep: str = " ,",
    seed: int = 0,
) -> Path:
    """:func:`build_tiny_llama`, then a few seconds of training on serialised random walks.

    Random weights almost never emit a well-formed number; after ~100 Adam steps on
    LLMTime-formatted synthetic series (geometric random walks, scaled as the predictor
    scales them) the model continues prompts with mostly well-formed values, so tests can
    exercise parsing, quantiles and batch invariance on realistic outputs.
    """
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from predictors.llmtime import Scaler, serialize

    build_tiny_llama(path, seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path)
    model.train()
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        walks = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(batch, n_values)), axis=1))
        texts = [serialize(Scaler.fit(w).transform(w), 3, digit_sep, value_sep) for w in walks]
        enc = tok(texts, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(path)
    return Path(path)


def build_kronos(path: Path, d_model: int = 16, n_layers: int = 1, bits: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """A Kronos model and tokenizer (``predictors.kronos_model``, saved as NeoQuasar/Kronos-* are:
    config.json + model.safetensors): ``(model folder, tokenizer folder)``."""
    from predictors.kronos_model import Kronos, KronosTokenizer

    _seed(seed)
    tok = KronosTokenizer(d_in=6, d_model=d_model, n_heads=2, ff_dim=2 * d_model, n_enc_layers=2, n_dec_layers=2,
                          s1_bits=bits, s2_bits=bits, group_size=bits)
    model = Kronos(s1_bits=bits, s2_bits=bits, n_layers=n_layers, d_model=d_model, n_heads=2, ff_dim=2 * d_model,
                   learn_te=True)
    tok.save_pretrained(path / "tokenizer")
    model.save_pretrained(path / "model")
    return path / "model", path / "tokenizer"


def build_tirex(path: Path, patch: int = 8, context: int = 64, dim: int = 16, blocks: int = 2, seed: int = 0,
                heads: int = 2, ffn_factor: float = 2.0, ff_dim: int | None = None) -> Path:
    """A TiRex checkpoint as NX-AI/TiRex publishes it: one ``model.ckpt`` (a Lightning-style dict of
    ``hyper_parameters`` = the ``TiRexZero`` config and ``state_dict``; the block weights under
    ``block_stack.``, the prefix the package's ``on_load_checkpoint`` strips), built with ``tirex-ts``'s own
    ``TiRexZero`` (torch backend) and random weights. Returns the folder."""
    import torch
    from tirex.models.tirex import TiRexZero

    _seed(seed)
    hyper = {"model_config": {"input_patch_size": patch, "output_patch_size": patch, "quantiles": BOLT_QUANTILES,
                              "block_kwargs": {"embedding_dim": dim, "num_heads": heads, "num_blocks": blocks,
                                               "ffn_proj_factor": ffn_factor},
                              "input_ff_dim": ff_dim or 2 * dim},
             "train_ctx_len": context}
    model = TiRexZero(backend="torch", **hyper)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # the constructor leaves the sLSTM kernels uninitialised (torch.empty)
    state = {("block_stack." + k if k.startswith("blocks.") else k): v for k, v in model.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": hyper, "state_dict": state}, path / "model.ckpt")
    return Path(path)
def build_moirai(path: Path, d_model: int = 64, layers: int = 2, patch: int = 8, predict_tokens: int = 2,
                 max_seq_len: int = 64, seed: int = 0) -> Path:
    """A Moirai 2 checkpoint as Salesforce/moirai-2.0-R-small publishes it (``config.json`` + ``model.safetensors``
    written by the package's ``PyTorchModelHubMixin.save_pretrained``), built with ``uni2ts``'s own ``Moirai2Module``
    (9 quantile levels 0.1..0.9; one attention head per 64 of ``d_model``) and random weights. Returns the folder."""
    import contextlib
    import io

    import torch
    from uni2ts.model.moirai2 import Moirai2Module

    _seed(seed)
    module = Moirai2Module(d_model=d_model, d_ff=2 * d_model, num_layers=layers, patch_size=patch,
                           max_seq_len=max_seq_len, attn_dropout_p=0.0, dropout_p=0.0, num_predict_token=predict_tokens,
                           quantile_levels=tuple(BOLT_QUANTILES))
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.1)  # the heads start near zero: spread them so the 9 quantiles differ and cross
    with contextlib.redirect_stdout(io.StringIO()):
        module.save_pretrained(path)
    return Path(path)


def build_ttm(path: Path, context_length: int = 32, prediction_length: int = 8, quantile_head: bool = False,
              freq_prefix: bool = False, seed: int = 0) -> Path:
    """A 1-channel TinyTimeMixer (``tsfm_public``, random weights; with ``quantile_head`` TTM's multi-quantile head
    at levels 0.1..0.9, with ``freq_prefix`` the frequency token of the r2.1 branches) saved with
    ``save_pretrained`` as the ibm-granite/granite-timeseries-ttm-r2 branches are."""
    import contextlib
    import io

    from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig, TinyTimeMixerForPrediction

    _seed(seed)
    config = TinyTimeMixerConfig(
        context_length=context_length, prediction_length=prediction_length, patch_length=4, patch_stride=4,
        d_model=8, num_layers=1, decoder_num_layers=1, decoder_d_model=8, num_input_channels=1,
        adaptive_patching_levels=0, multi_quantile_head=quantile_head,
        resolution_prefix_tuning=freq_prefix, frequency_token_vocab_size=10,
    )
    with contextlib.redirect_stderr(io.StringIO()):  # the "Writing model shards" progress bar
        TinyTimeMixerForPrediction(config).save_pretrained(path)
    return path


def build_toto(path: Path, patch: int = 8, dim: int = 16, layers: int = 2, heads: int = 2, components: int = 3,
               seed: int = 0) -> Path:
    """A Toto as Datadog/Toto-Open-Base-1.0 publishes it: ``config.json`` (the ``Toto`` constructor's arguments,
    the same scaler and Student-T mixture head classes) and ``model.safetensors``, built with ``toto-ts``'s own
    ``Toto`` class and random weights (patch ``patch`` instead of 64, ``dim`` wide). Returns the folder."""
    import json

    import safetensors.torch
    from toto.model.toto import Toto

    _seed(seed)
    config = {"patch_size": patch, "stride": patch, "embed_dim": dim, "num_layers": layers, "num_heads": heads,
              "mlp_hidden_dim": 2 * dim, "dropout": 0.1, "spacewise_every_n_layers": layers,
              "scaler_cls": "<class 'model.scaler.CausalPatchStdMeanScaler'>",
              "output_distribution_classes": ["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
              "output_distribution_kwargs": {"k_components": components}, "spacewise_first": True,
              "use_memory_efficient_attention": False, "stabilize_with_global": True, "scale_factor_exponent": 10.0}
    model = Toto(**config)
    path.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return Path(path)
