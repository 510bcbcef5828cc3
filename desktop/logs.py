"""Logging to a rotating file in the platform's log folder (Help → Show Logs opens it)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
_installed: list[logging.Handler] = []


def setup_logging(log_file: Path, *, level: int = logging.INFO, to_stderr: bool | None = None) -> logging.Handler:
    """Log to ``log_file`` (1 MB × 5 files); also to stderr when running from a terminal. Idempotent per file."""
    root = logging.getLogger()
    for handler in _installed:
        if getattr(handler, "baseFilename", None) == str(log_file):
            return handler
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    _installed.append(handler)
    if to_stderr is None:
        to_stderr = bool(sys.stderr) and sys.stderr.isatty() and not getattr(sys, "frozen", False)
    if to_stderr and not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers
    ):
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(FORMAT))
        stream.setLevel(logging.WARNING)
        root.addHandler(stream)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def remove_logging(handler: logging.Handler) -> None:
    """Detach a handler installed by :func:`setup_logging` (tests that use several homes)."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    if handler in _installed:
        _installed.remove(handler)


def install_excepthook() -> None:
    """Unhandled exceptions on the GUI thread go to the log instead of vanishing with the window."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb) -> None:
        logging.getLogger("desktop").critical("unhandled exception", exc_info=(exc_type, exc, tb))
        previous(exc_type, exc, tb)

    sys.excepthook = hook
