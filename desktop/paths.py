"""Where Olmo Desktop keeps its files.

Every path the app writes to comes from one :class:`AppPaths` value so that tests, screenshots and benchmarks can
point the whole app at a temporary folder (``OLMO_DESKTOP_HOME`` or an explicit ``home``) and never touch the
user's real configuration, conversations, caches or models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from olmo3 import appinfo

HOME_ENV = "OLMO_DESKTOP_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The folders the app uses; created on demand by :meth:`ensure`."""

    config_dir: Path  # settings.json, window.ini, mcp.json, tools-state.json
    data_dir: Path  # conversations.sqlite3
    cache_dir: Path  # spilled KV caches (in kv/)
    log_dir: Path  # rotating logs
    models_dir: Path  # default folder for downloaded models (the settings may point elsewhere)

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def mcp_config(self) -> Path:
        """The ``mcpServers`` JSON of the MCP servers whose tools models may call (``olmo3.tools.config``)."""
        return self.config_dir / "mcp.json"

    @property
    def tools_state(self) -> Path:
        """Which tools are on and which run without asking (kept beside ``mcp.json``, which is the user's)."""
        return self.config_dir / "tools-state.json"

    @property
    def window_ini(self) -> Path:
        return self.config_dir / "window.ini"

    @property
    def database(self) -> Path:
        return self.data_dir / appinfo.DB_FILENAME

    @property
    def kv_cache_dir(self) -> Path:
        return self.cache_dir / appinfo.KV_CACHE_SUBDIR

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
            models_dir=root / appinfo.MODELS_SUBDIR,
        )

    @classmethod
    def default(cls) -> AppPaths:
        """``$OLMO_DESKTOP_HOME`` when set, else the platform's per-user folders (``olmo3.appinfo``)."""
        home = os.environ.get(HOME_ENV)
        if home:
            return cls.under(home)
        return cls(
            config_dir=appinfo.config_dir(),
            data_dir=appinfo.data_dir(),
            cache_dir=appinfo.cache_dir(),
            log_dir=appinfo.log_dir(),
            models_dir=appinfo.models_dir(),
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
