"""Logging set-up shared by the CLI and the compare workers: loguru on stderr, standard logging routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger


class InterceptHandler(logging.Handler):
    """Route standard-library logging (predictor plugins, libraries) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())


def setup_logging(verbose: bool, quiet: bool) -> None:
    """One stderr sink: DEBUG with ``verbose``, WARNING with ``quiet``, else INFO; the project's
    standard-library loggers (predictors, engine, feeds, reports) pass through loguru."""
    logger.remove()
    level = "DEBUG" if verbose else "WARNING" if quiet else "INFO"
    logger.add(sys.stderr, level=level, format="<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}")
    for name in ("predictors", "engine", "feeds", "reports"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.setLevel(logging.DEBUG if verbose else logging.INFO)
        std.propagate = False
