"""Find a model's files: a local directory, the local Hugging Face cache, or the hub.

:func:`resolve_model` never hangs and never prints a long traceback for the common
offline case: a hub id that is not cached while ``HF_HUB_OFFLINE=1`` is set, or while
the hub cannot be reached (probed with a short timeout), is one error naming the model
and the two fixes (download it once, or pass a local path): a :class:`PredictorError`
(fix the input: the id is malformed, the path is not a folder, or ``HF_HUB_OFFLINE=1``
forbids the download) or, when the hub is unreachable or fails mid-download, a
:class:`PredictorUnavailable` (retry later: an outage, exit code 1).
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from predictors.base import ModelInfo
from predictors.contamination import cutoff_source, training_cutoff
from predictors.errors import PredictorError, PredictorUnavailable

#: Seconds the reachability probe may take before the hub counts as unreachable.
PROBE_TIMEOUT_S = 3.0

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set in the environment."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(model: str) -> bool:
    """A string meant as a filesystem path rather than an ``org/name`` hub id."""
    return model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1) or Path(model).exists()


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Probe the hub endpoint (``HF_ENDPOINT``, proxies respected) within ``timeout_s``.

    Any HTTP answer counts as reachable; DNS failures, refused connections and the
    timeout do not. Runs in a daemon thread so that a slow DNS lookup cannot hang us.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/status", method="HEAD"), timeout=timeout_s)
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the server answered
        except Exception:  # noqa: BLE001 - any network failure means "not reachable"
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(result and result[0])


def _fetch_hint(model: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"Fetch it once on a machine with internet access: `hf download {model}{rev}` "
        f"(or `huggingface-cli download {model}{rev}`), then copy ~/.cache/huggingface over if needed; "
        "or download the checkpoint folder yourself and pass its path with `--model PATH` "
        "(config: [predictor] model = \"PATH\")."
    )


def resolve_model(model: str, revision: str | None = None) -> str:
    """Return something ``from_pretrained`` can load without surprises.

    - a local directory: returned as is (``revision`` does not apply to it);
    - a hub id cached locally (at ``revision`` if given): the snapshot directory;
    - a hub id not cached, hub reachable and not offline: the hub id (it downloads);
    - otherwise: :class:`PredictorError` with the fix (a malformed id, a path that is not a
      folder, ``HF_HUB_OFFLINE=1``), or :class:`PredictorUnavailable` (the hub cannot be
      reached: an outage, retry later).
    """
    if not isinstance(model, str) or not model.strip():
        raise PredictorError(f"model must be a hub id like 'amazon/chronos-bolt-small' or a local path, got {model!r}")
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return expanded
    if looks_like_path(model):
        raise PredictorError(
            f"model path {model!r} is not a directory; pass the folder holding config.json and the weights "
            "(or a hub id like 'amazon/chronos-bolt-small')"
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ModuleNotFoundError as exc:  # pragma: no cover - comes with transformers
        raise PredictorError("huggingface_hub is needed to load hub models: pip install huggingface_hub") from exc
    try:
        return snapshot_download(model, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a malformed id etc.
        raise PredictorError(f"model {model!r} is not a local directory nor a valid hub id: {exc}") from exc
    if hub_offline():
        raise PredictorError(
            f"model {model!r}{f' at revision {revision!r}' if revision else ''} is not in the local Hugging Face "
            f"cache and HF_HUB_OFFLINE=1 forbids downloading it. {_fetch_hint(model, revision)}"
        )
    if not hub_reachable():
        raise PredictorUnavailable(
            f"model {model!r}{f' at revision {revision!r}' if revision else ''} is not in the local Hugging Face "
            f"cache and the hub ({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) cannot be reached. "
            f"{_fetch_hint(model, revision)}"
        )
    return model


def snapshot_revision(path: str) -> str:
    """What identifies the weights in ``path``, for the forecast cache key and the run record.

    A hub-cache snapshot directory (``.../snapshots/<sha>``) -> the commit hash. Any other
    local directory -> ``"local-<hash>"`` of its files' names, sizes and modification
    times, so retrained weights saved to the same folder never reuse stale forecasts.
    """
    p = Path(path)
    if p.parent.name == "snapshots" and len(p.name) == 40:
        return p.name
    if not p.is_dir():
        return ""
    digest = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        st = f.stat()
        digest.update(f"{f.relative_to(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"local-{digest.hexdigest()[:12]}"


#: Names of the exception types (anywhere in a failure's cause chain) that mean the hub or
#: the network failed rather than the model id: ``requests``/``httpx``/``urllib3`` connection
#: and timeout errors, and the built-in ``ConnectionError``/``TimeoutError``.
_OUTAGE_TYPES = frozenset({
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutError", "ConnectError",
    "TimeoutException", "NewConnectionError", "MaxRetryError", "ProtocolError", "RemoteDisconnected",
})


def _is_outage(exc: BaseException) -> bool:
    """True if ``exc`` or a cause of it is a network failure or an HTTP 429/5xx answer of the hub."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in _OUTAGE_TYPES:
            return True
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def load_error(model: str, revision: str | None, exc: BaseException) -> PredictorError | PredictorUnavailable:
    """Turn a ``from_pretrained`` failure into one error with the fetch hint: a
    :class:`PredictorUnavailable` when the hub or the network failed (retry later), else a
    :class:`PredictorError` (fix the model id, revision or checkpoint)."""
    message = (
        f"could not load model {model!r}{f' at revision {revision!r}' if revision else ''}: "
        f"{type(exc).__name__}: {exc}. {_fetch_hint(model, revision)}"
    )
    if _is_outage(exc):
        return PredictorUnavailable(f"the model hub failed; retry later. {message}")
    return PredictorError(message)


def download_snapshot(model: str, revision: str | None, allow_patterns: list[str] | None = None) -> str:
    """The local snapshot folder of hub id ``model`` at ``revision``, downloaded now (``allow_patterns``: only those
    files). For a predictor whose package loads from a folder only, after :func:`resolve_model` returned the hub id
    (not cached, hub reachable). A failure is :func:`load_error`'s one line with the fetch hint."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, revision=revision, **({"allow_patterns": allow_patterns} if allow_patterns else {}))
    except Exception as exc:  # noqa: BLE001 - one line naming the fix (load_error sorts outage vs input)
        raise load_error(model, revision, exc) from exc


def hub_model_info(model: str, revision: str | None, path: str | None) -> ModelInfo:
    """ModelInfo of a hub or local checkpoint: the pinned revision (or the cached snapshot's
    commit) and the training-data cut-off from :mod:`predictors.contamination`."""
    return ModelInfo(
        name=model,
        revision=revision or (snapshot_revision(path) if path else "") or "",
        training_cutoff=training_cutoff(model),
        source=cutoff_source(model),
    )
