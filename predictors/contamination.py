"""Training-data cut-offs of well-known public checkpoints (rule 5 of DESIGN.md).

A pretrained model may have seen the backtest period. For each known family this table
gives what is published:

- ``data_end``: the last date of the training data, where the authors state one;
- ``released``: the public release of the weights, an **upper bound** on the data end
  (no model trains on data from after its release). Given as the last day of the release
  month, so the bound is conservative (flags a little more, never less).

:func:`training_cutoff` returns ``data_end`` where published, else the ``released`` upper
bound, else ``None``; :func:`cutoff_source` says which one it was and where it comes from.
Nothing here is guessed: families without a published date return ``None``. Model ids are
matched case-insensitively on their last path component (``amazon/chronos-bolt-small``
and ``/models/chronos-bolt-small`` both match ``chronos-bolt-``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class CutoffEntry:
    pattern: str  # regex on the lower-cased last path component of the model id
    data_end: datetime | None
    released: datetime | None
    source: str


def _d(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=timezone.utc)


# Order matters: the first matching pattern wins (put specific ones first).
CUTOFFS: tuple[CutoffEntry, ...] = (
    # Chronos-2: arXiv 2510.15821 "Chronos-2: From Univariate to Universal Forecasting"
    # (Oct 2025); weights amazon/chronos-2 released October 2025 (chronos-forecasting README
    # news). The report lists training corpora but no end date of the data.
    CutoffEntry(r"^chronos-2", None, _d(2025, 10, 31), "Chronos-2 release, Oct 2025 (arXiv 2510.15821); data end unpublished"),
    # Chronos-Bolt: released on the HF hub in November 2024 (chronos-forecasting README
    # news, 26 Nov 2024); trained on the Chronos corpus plus more; no data end published.
    CutoffEntry(r"^chronos-bolt", None, _d(2024, 11, 30), "Chronos-Bolt release, Nov 2024 (chronos-forecasting README); data end unpublished"),
    # Chronos (T5): arXiv 2403.07815 (Ansari et al., March 2024), weights released with it.
    # The paper lists the training datasets (Table 2 / App. B) but no common end date.
    CutoffEntry(r"^chronos-t5", None, _d(2024, 3, 31), "Chronos-T5 release, Mar 2024 (arXiv 2403.07815); data end unpublished"),
    # TimesFM 3.0: google/timesfm-3.0-pytorch, released August 2026 ("Update - August 2026: TimesFM 3.0 is out",
    # timesfm 3.0.2 README). The model card lists GiftEvalPretrain (minus fev-bench overlaps), Wikimedia pageviews
    # (cutoff Nov 2023), Google Trends top queries (cutoff end of 2022) and synthetic data; GiftEvalPretrain's end is
    # not stated and no TimesFM 3 paper was found, so the release month bounds the data end.
    CutoffEntry(r"^timesfm-3", None, _d(2026, 8, 31), "TimesFM 3.0 release, Aug 2026 (timesfm 3.0.2 README); data end unpublished"),
    # TimesFM 2.5: google/timesfm-2.5-200m-pytorch, released September 2025 (timesfm README).
    CutoffEntry(r"^timesfm-2\.5", None, _d(2025, 9, 30), "TimesFM 2.5 release, Sep 2025 (google-research/timesfm README); data end unpublished"),
    # TimesFM 2.0: google/timesfm-2.0-500m, released December 2024 (timesfm README).
    CutoffEntry(r"^timesfm-2\.0", None, _d(2024, 12, 31), "TimesFM 2.0 release, Dec 2024 (google-research/timesfm README); data end unpublished"),
    # TimesFM 1.0: google/timesfm-1.0-200m, released May 2024 (timesfm README); the paper
    # (arXiv 2310.10688) describes Wiki pageviews and Google Trends corpora without one end date.
    CutoffEntry(r"^timesfm-1\.0", None, _d(2024, 5, 31), "TimesFM 1.0 release, May 2024 (google-research/timesfm README); data end unpublished"),
    # Kronos (mini/small/base, tokenizers): arXiv 2508.02739 (Shi et al., Aug 2025) describes the pretraining
    # corpus (12 billion K-line records, 45 exchanges) without an end date of the data; the weights were on the
    # hub (NeoQuasar/Kronos-*) by the paper's release, so its month bounds the data end.
    CutoffEntry(r"^kronos-", None, _d(2025, 8, 31), "Kronos paper, Aug 2025 (arXiv 2508.02739), weights public by then; data end unpublished"),
    # TiRex (NX-AI/TiRex): arXiv 2505.23719 (Auer et al., May 2025), weights on the hub with it. Pretrained on the
    # Chronos training corpus (autogluon/chronos_datasets), GiftEvalPretrain and synthetic series (model card's
    # datasets); no end date of the data is published, so the release month bounds it.
    CutoffEntry(r"^tirex", None, _d(2025, 5, 31), "TiRex paper, May 2025 (arXiv 2505.23719), weights public with it; data end unpublished"),
    # Toto (Datadog/Toto-Open-Base-1.0): arXiv 2505.14766 (Cohen et al., May 2025), weights on the hub with it. The
    # model card and toto-ts README: ~1 trillion points of Datadog's internal observability metrics, public sets
    # (GiftEvalPretrain, a subset of the Chronos training corpora) and ~1/3 synthetic series; no end date of the data
    # is published, so the release month bounds it.
    CutoffEntry(r"^toto-open-base-1\.0", None, _d(2025, 5, 31), "Toto paper, May 2025 (arXiv 2505.14766), weights public with it; data end unpublished"),
    # Granite TTM r2 (ibm-granite/granite-timeseries-ttm-r2): TTM paper arXiv 2401.03955 (Ekambaram et al., Jan 2024,
    # NeurIPS 2024); the r2 weights were committed to the hub on 9 Oct 2024 (commit defc940 "512-96-r2"). The model card
    # lists public pretraining sets but no end date of the data, so the release month bounds it.
    CutoffEntry(r"^granite-timeseries-ttm-r2", None, _d(2024, 10, 31), "Granite TTM r2 weights, Oct 2024 (hub commit defc940; arXiv 2401.03955); data end unpublished"),
    # Moirai 2.0 (Salesforce/moirai-2.0-R-small): weights released Aug 2025 (uni2ts 2.0.0 README news), paper arXiv
    # 2511.11698 (Liu et al., Nov 2025): a corpus of ~36M series (GIFT-Eval pretraining data and train splits,
    # Chronos-Mixup, KernelSynth, internal Salesforce data), no end date of the data. The hub repository was updated
    # again in Jan 2026 (the Moirai-R collection page) and what changed is not visible from here, so the bound is
    # that later month (conservative: flags more, never less).
    CutoffEntry(r"^moirai-2", None, _d(2026, 1, 31), "Moirai 2.0 weights, Aug 2025, hub repo updated Jan 2026 (uni2ts README; arXiv 2511.11698); data end unpublished"),
    # GPT-2: Radford et al. 2019, WebText "does not include links created after Dec 2017".
    CutoffEntry(r"^(gpt2|distilgpt2)", _d(2017, 12, 31), None, "GPT-2 paper (Radford et al. 2019): WebText links up to Dec 2017"),
    # Llama 3 (8B): model card "knowledge cutoff March 2023"; 70B: December 2023.
    CutoffEntry(r"^(meta-)?llama-3-70b", _d(2023, 12, 31), None, "Meta Llama 3 model card: 70B knowledge cutoff December 2023"),
    CutoffEntry(r"^(meta-)?llama-3-8b", _d(2023, 3, 31), None, "Meta Llama 3 model card: 8B knowledge cutoff March 2023"),
    # Llama 3.1 / 3.2: model cards state "data cutoff of December 2023".
    CutoffEntry(r"^(meta-)?llama-3\.[12]", _d(2023, 12, 31), None, "Llama 3.1/3.2 model cards: pretraining data cutoff December 2023"),
    # Llama 2: model card "The pretraining data has a cutoff of September 2022".
    CutoffEntry(r"^(meta-)?llama-2", _d(2022, 9, 30), None, "Llama 2 model card: pretraining data cutoff September 2022"),
    # Mistral-7B-v0.1: released 27 Sep 2023 (Mistral AI announcement); no data end published.
    CutoffEntry(r"^mistral-7b-v0\.1", None, _d(2023, 9, 30), "Mistral 7B v0.1 release, Sep 2023 (Mistral AI); data end unpublished"),
    # Other Mistral-7B versions: no data end published; release dates vary -> unknown.
    CutoffEntry(r"^mistral-7b", None, None, "Mistral 7B: no training-data end published"),
    # Qwen2.5: released September 2024 (Qwen2.5 blog / technical report arXiv 2412.15115);
    # no data end published.
    CutoffEntry(r"^qwen2\.5", None, _d(2024, 9, 30), "Qwen2.5 release, Sep 2024 (Qwen blog, arXiv 2412.15115); data end unpublished"),
)


def _key(model_id: str) -> str:
    return str(model_id).rstrip("/\\").replace("\\", "/").split("/")[-1].lower()


def lookup(model_id: str) -> CutoffEntry | None:
    """The table entry for a hub id or local path, or ``None`` for an unknown model."""
    key = _key(model_id)
    for entry in CUTOFFS:
        if re.match(entry.pattern, key):
            return entry
    return None


def training_cutoff(model_id: str) -> datetime | None:
    """Published training-data end, else the release date as an upper bound, else ``None`` (UTC)."""
    entry = lookup(model_id)
    if entry is None:
        return None
    return entry.data_end or entry.released


def cutoff_source(model_id: str) -> str:
    """Human-readable provenance of :func:`training_cutoff` (for ``ModelInfo.source``)."""
    entry = lookup(model_id)
    if entry is None:
        return f"no published training-data end for {model_id!r}; contamination unknown"
    kind = "training-data end" if entry.data_end else ("upper bound (release date)" if entry.released else "unknown")
    return f"{kind}: {entry.source}"
