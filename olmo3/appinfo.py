"""The app's name and its default per-user folders, in one place for the GUI, the CLI and the core.

Folders come from ``platformdirs`` and are computed on every call, so the environment it reads (``HOME``,
``XDG_*_HOME``) is honoured as it is at that moment. Nothing here honours ``OLMO_DESKTOP_HOME``: the GUI's
``--home`` override lives in ``desktop/paths.py`` (``AppPaths.under``), which takes everything else from here.
``platformdirs`` is imported inside the functions so that importing this module stays cheap.

On macOS: data ``~/Library/Application Support/Olmo Desktop``, cache ``~/Library/Caches/Olmo Desktop``, logs
``~/Library/Logs/Olmo Desktop``, config ``~/Library/Application Support/Olmo Desktop`` (platformdirs' choice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = [
    "APP_NAME",
    "DB_FILENAME",
    "KV_CACHE_SUBDIR",
    "MODELS_SUBDIR",
    "cache_dir",
    "config_dir",
    "conversation_db_path",
    "data_dir",
    "kv_cache_dir",
    "log_dir",
    "models_dir",
]

APP_NAME: Final = "Olmo Desktop"
DB_FILENAME: Final = "conversations.sqlite3"  # in the data folder
MODELS_SUBDIR: Final = "models"  # in the data folder: downloaded and imported models
KV_CACHE_SUBDIR: Final = "kv"  # in the cache folder: conversations' spilled KV caches


def data_dir() -> Path:
    """``platformdirs.user_data_dir("Olmo Desktop")``: conversations and models."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """``platformdirs.user_config_dir("Olmo Desktop")``: settings."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """``platformdirs.user_cache_dir("Olmo Desktop")``: what can be rebuilt (spilled KV caches)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    """``platformdirs.user_log_dir("Olmo Desktop")``: rotating logs."""
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def models_dir() -> Path:
    """Where downloads and imports go by default: ``<data dir>/models``."""
    return data_dir() / MODELS_SUBDIR


def kv_cache_dir() -> Path:
    """Where the engine spills conversations' KV caches by default: ``<cache dir>/kv``."""
    return cache_dir() / KV_CACHE_SUBDIR


def conversation_db_path() -> Path:
    """The SQLite conversation store: ``<data dir>/conversations.sqlite3``."""
    return data_dir() / DB_FILENAME
