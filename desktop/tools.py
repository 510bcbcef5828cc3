"""The app's MCP tools: one :class:`olmo3.tools.toolhub.ToolHub` per app, its ``mcp.json`` and its switches.

:class:`AppTools` is made by the main window and closed at quit (after the engine, so a call in flight is cancelled
by its turn first). The hub is created on first use (the MCP SDK is imported then, not at start-up) and every
server starts when its tools are first listed: at the first turn with tools, or when Settings → Tools opens.

Threads: listing may start servers and take seconds, so :meth:`AppTools.list_async` runs it on a short-lived
thread and hands the outcome back through a queued signal (GUI thread). Calls run on the hub's own thread; the
engine thread waits for them (``olmo3.chat.tool_turns``). Editing ``mcp.json`` from Settings replaces the hub; the
old one is closed on a background thread (its servers take a moment to stop).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.paths import AppPaths
from olmo3.fileio import write_atomic
from olmo3.tools.config import McpConfig, ToolConfigError, ToolState, load_bounded_json, load_config, parse_config

log = logging.getLogger(__name__)

EXAMPLE_CONFIG = """{
  "mcpServers": {
  }
}
"""


@dataclass(frozen=True)
class Listing:
    """What a listing found: the tools (``olmo3.tools.info.ToolInfo``) and each server's state."""

    tools: list[Any] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)  # olmo3.tools.toolhub.ServerStatus
    error: str | None = None  # the config could not be read


class AppTools(QObject):
    """See the module docstring.

    Signals:
        listed(object): a :class:`Listing`, after :meth:`list_async` (GUI thread).
    """

    listed = Signal(object)

    def __init__(self, paths: AppPaths, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config_path: Path = paths.mcp_config
        self.state = ToolState(paths.tools_state)
        self._hub: Any = None
        self._config: McpConfig | None = None
        self.config_error: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._load()

    # --- the config file ------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            self._config = load_config(self.config_path, missing_ok=True)
            self.config_error = None
        except ToolConfigError as e:
            self._config, self.config_error = None, str(e)
            log.warning("tools: %s", e)

    @property
    def config(self) -> McpConfig | None:
        return self._config

    def config_text(self) -> str:
        try:
            return self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return EXAMPLE_CONFIG
        except OSError as e:
            return f"// cannot read {self.config_path}: {e.strerror}\n"

    @staticmethod
    def check(text: str) -> tuple[McpConfig | None, str | None]:
        """Validate ``mcp.json`` text: ``(config, None)`` or ``(None, one-line error)``."""
        try:
            config = parse_config(load_bounded_json(text.encode("utf-8"), "mcp.json"), source="mcp.json")
        except ToolConfigError as e:
            return None, str(e)
        return config, None

    def save_config(self, text: str) -> str | None:
        """Write new ``mcp.json`` text (after checking it) and use it: the servers restart on next use. Returns
        the error, or None."""
        config, error = self.check(text)
        if config is None:
            return error
        try:
            write_atomic(self.config_path, text.encode("utf-8"))
        except OSError as e:
            return f"cannot save {self.config_path}: {e.strerror}"
        self._replace_hub()
        self._load()
        return None

    # --- the hub --------------------------------------------------------------------------------------------
    def has_servers(self) -> bool:
        return self._config is not None and bool(self._config.servers)

    def hub(self) -> Any:
        """The hub (made now if need be), or None when no server is configured or the config is broken."""
        with self._lock:
            if self._closed or self._config is None or not self._config.servers:
                return None
            if self._hub is None:
                from olmo3.tools.toolhub import ToolHub  # the MCP SDK: only once tools are used

                self._hub = ToolHub(self._config, self.state)
            return self._hub

    def runner(self, settings: Any) -> Any:
        """The turn's tools (``olmo3.tools.runner.HubTools``), or None when tools are off or there are none."""
        if not getattr(settings, "tools_enabled", True):
            return None
        hub = self.hub()
        if hub is None:
            return None
        from olmo3.tools.runner import HubTools

        timeout = max(1.0, float(getattr(settings, "tool_timeout_s", 120.0)))
        return HubTools(hub, timeout=timeout, max_rounds=max(1, int(getattr(settings, "tool_max_rounds", 8))))

    def find_tool(self, name: str) -> Any:
        hub = self._hub
        return hub.find_tool(name) if hub is not None else None

    def always_allow(self, name: str) -> None:
        """Remember "Always allow" for the tool a call named."""
        info = self.find_tool(name)
        if info is not None:
            self.state.set_always_allow(info.server, info.tool, True)

    def list_async(self, *, refresh: bool = False) -> None:
        """List every server's tools on a helper thread; ``listed`` brings the :class:`Listing`."""
        if self.config_error is not None:
            self.listed.emit(Listing(error=self.config_error))
            return
        hub = self.hub()
        if hub is None:
            self.listed.emit(Listing())
            return

        def work() -> None:
            try:
                tools = hub.list_tools(refresh=refresh)
                listing = Listing(tools=tools, servers=hub.servers())
            except Exception as e:  # a closed hub (the config was replaced meanwhile): nothing to show
                log.info("tools: listing failed: %s", e)
                listing = Listing(error=str(e))
            self.listed.emit(listing)  # queued to the GUI thread

        threading.Thread(target=work, name="mcp-settings-list", daemon=True).start()

    def _replace_hub(self) -> None:
        with self._lock:
            old, self._hub = self._hub, None
        if old is not None:
            threading.Thread(target=old.close, name="mcp-close", daemon=True).start()

    def close(self) -> None:
        """Stop every server (at quit). Idempotent."""
        with self._lock:
            self._closed = True
            hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()
