"""Every error the predictors package raises, under two bases that say what the user must do.

- :class:`PredictorError` (a ``ValueError``) — **fix the input**: an unknown predictor name,
  bad parameters, a model id or path that does not exist, a model that is not in the local
  cache while ``HF_HUB_OFFLINE=1`` forbids downloading it, or a plugin whose output breaks
  the Forecast contract.
- :class:`PredictorUnavailable` (a ``RuntimeError``) — **retry later**: the model hub cannot
  be reached (or failed mid-download) for a model that is not in the local cache.

The predictors package imports no other project package (DESIGN.md), so these bases are
local; ``engine.core.errors`` maps them to exit codes (input 2, retry later 1).
"""

from __future__ import annotations


class PredictorError(ValueError):
    """A predictor was misconfigured or returned something that breaks the contract (exit code 2)."""


class PredictorUnavailable(RuntimeError):
    """A model could not be fetched because the model hub is unreachable or failing; retrying
    later, or passing a local checkpoint folder, fixes it (exit code 1)."""
