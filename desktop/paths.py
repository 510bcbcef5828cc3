"""Where Olmo Desktop keeps its files.

Every path the app writes to comes from one :class:`AppPaths` value so that tests, screenshots and benchmarks can
point the whole app at a temporary folder (``OLMO_DESKTOP_HOME`` or an explicit ``home``) and never touch the
user's real configuration, conversations, caches or models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Olmo Desktop"
HOME_ENV = "OLMO_DESKTOP_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The folders the app uses; created on demand by :meth:`ensure`."""

    config_dir: Path  # settings.json, window.ini
    data_dir: Path  # conversations.sqlite3
    cache_dir: Path  # spilled KV caches
    log_dir: Path  # rotating logs
    models_dir: Path  # default folder for downloaded models (the settings may point elsewhere)

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def window_ini(self) -> Path:
        return self.config_dir / "window.ini"

    @property
    def database(self) -> Path:
        return self.data_dir / "conversations.sqlite3"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "olmo-desktop.log"

    @classmethod
    def under(cls, home: str | Path) -> AppPaths:
        """All folders inside one root (tests, screenshots, portable installs)."""
        root = Path(home).expanduser().resolve()
        return cls(
            config_dir=root / "config",
            data_dir=root / "data",
            cache_dir=root / "cache",
            log_dir=root / "logs",
            models_dir=root / "models",
        )

    @classmethod
    def default(cls) -> AppPaths:
        """``$OLMO_DESKTOP_HOME`` when set, else the platform's per-user folders."""
        home = os.environ.get(HOME_ENV)
        if home:
            return cls.under(home)
        data = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            data_dir=data,
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
            models_dir=data / "models",
        )

    def ensure(self) -> AppPaths:
        for folder in (self.config_dir, self.data_dir, self.cache_dir, self.log_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def resources_dir() -> Path:
    """The ``resources/`` folder: next to the package in a checkout, or inside a frozen bundle."""
    import sys

    here = Path(__file__).resolve().parent
    candidates = [here.parent / "resources", here / "resources"]
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        candidates.insert(0, Path(meipass) / "resources")
    for candidate in candidates:
        if (candidate / "icons").is_dir():
            return candidate
    return candidates[-1]
