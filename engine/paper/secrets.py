"""API credentials for testnet mode: from environment variables only, never logged.

``LLM4MP_API_KEY`` and ``LLM4MP_API_SECRET`` hold the exchange sandbox key and secret.
They are read once, given to the ccxt client, and every log line of the process is
passed through :func:`install_redaction`, which replaces them with ``***``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loguru import logger

from engine.errors import UserInputError

API_KEY_ENV = "LLM4MP_API_KEY"
API_SECRET_ENV = "LLM4MP_API_SECRET"


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)

    def redact(self, text: str) -> str:
        for value in (self.secret, self.api_key):
            if value:
                text = text.replace(value, "***")
        return text


def credentials_from_env() -> Credentials:
    """The sandbox key and secret; a UserInputError naming the variables when either is unset."""
    key, secret = os.environ.get(API_KEY_ENV, ""), os.environ.get(API_SECRET_ENV, "")
    missing = [name for name, value in ((API_KEY_ENV, key), (API_SECRET_ENV, secret)) if not value]
    if missing:
        raise UserInputError(
            f"testnet mode needs the exchange sandbox API key and secret in the environment; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Export "
            f"{API_KEY_ENV}=... and {API_SECRET_ENV}=... (never put them in config.toml), or use --mode sim"
        )
    return Credentials(key, secret)


def install_redaction(credentials: Credentials) -> None:
    """Replace the key and secret by ``***`` in every loguru message from now on."""

    def patch(record: dict) -> None:
        record["message"] = credentials.redact(record["message"])
        if record["exception"] is not None:
            exc = record["exception"]
            if exc.value is not None:
                exc.value.args = tuple(credentials.redact(str(a)) for a in exc.value.args)

    logger.configure(patcher=patch)
