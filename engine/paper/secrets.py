"""API credentials for testnet mode: from environment variables only, never shown.

``LLM4MP_API_KEY`` and ``LLM4MP_API_SECRET`` hold the exchange sandbox key and secret.
They are read once and given to the ccxt client. Every character the process shows
passes one redaction point, :func:`redact`, which replaces each registered secret with
``***``: :class:`RedactingStream` wraps ``sys.stdout`` and ``sys.stderr`` (installed by
:func:`redact_output` at the start of the command line, before any log sink exists, so
loguru's console sink, ``print``, warnings and the tracebacks ``sys.excepthook`` and
``threading.excepthook`` print all go through it) and the paper run's ``paper.log`` file.
An exchange echoing the key in an error body therefore shows ``***``. Output is
redacted a line at a time, so a secret split across two writes of one line is still caught.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

from engine.core.errors import UserInputError

API_KEY_ENV = "LLM4MP_API_KEY"
API_SECRET_ENV = "LLM4MP_API_SECRET"


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)

    def redact(self, text: str) -> str:
        return _redact_values(text, (self.secret, self.api_key))


#: every secret registered in this process (see :func:`register_secret`)
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def _redact_values(text: str, values: tuple[str, ...] | set[str]) -> str:
    for value in sorted(values, key=len, reverse=True):  # a longer secret first if one contains another
        if value and value in text:
            text = text.replace(value, "***")
    return text


def register_secret(value: str) -> None:
    """Redact ``value`` from all output from now on (values under 4 characters are not secrets)."""
    if value and len(value) >= 4:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``: the one redaction point."""
    with _SECRETS_LOCK:
        values = set(_SECRETS)
    return _redact_values(text, values) if values else text


class RedactingStream(io.TextIOBase):
    """A text stream that passes whole lines (ended by ``\\n`` or ``\\r``) through :func:`redact`.

    A partial line is held until its end, a ``flush()`` or ``close()``; everything else
    (``isatty``, ``fileno``, ``encoding``) is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
            if cut >= 0:
                done, self._pending = self._pending[: cut + 1], self._pending[cut + 1:]
                self.stream.write(redact(done))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if getattr(self.stream, "closed", False):
                return
            if self._pending:
                self.stream.write(redact(self._pending))
                self._pending = ""
            self.stream.flush()

    def close(self) -> None:
        """Flush; the wrapped stream stays open (its owner closes it)."""
        if not self.closed:
            self.flush()
            super().close()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def redact_output() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in :class:`RedactingStream` (idempotent), and
    register the API key and secret of the environment right away, before anything can print.

    Call it before any log sink is added: a sink holds the stream object it was given.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
    for env in (API_KEY_ENV, API_SECRET_ENV):
        register_secret(os.environ.get(env, ""))


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
    register_secret(key)
    register_secret(secret)
    return Credentials(key, secret)


def install_redaction(credentials: Credentials) -> None:
    """Redact the key and secret from all output from now on (see the module docstring).

    Registers them with :func:`redact`; the streams are wrapped by :func:`redact_output`,
    which the command line calls first thing (an embedding program calls it itself).
    """
    register_secret(credentials.api_key)
    register_secret(credentials.secret)
