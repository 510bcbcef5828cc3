"""The app's local server: Settings → Local server turns on ``olmo3 serve`` inside the app, on the window's engine.

The server shares the loaded model and every conversation cache with the chat window (the bridge hands it the one
engine); it listens on 127.0.0.1 only. :class:`LocalServerControl` starts and stops it as the settings say and
turns its request counts (reported from the server's threads) into ``status_changed`` on the GUI thread:
"Serving on 127.0.0.1:8000 · 3 requests".
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def base_url(port: int) -> str:
    return f"http://{HOST}:{port}/v1"


class LocalServerControl(QObject):
    """Starts/stops the server for the window. Signals: ``status_changed(str)`` ("" while off), ``failed(str)``."""

    status_changed = Signal(str)
    failed = Signal(str)
    _counts = Signal(object)  # ServerStats from the server's threads, queued to the GUI thread

    def __init__(self, bridge: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.server: Any = None
        self._config: tuple[int, str] | None = None
        self._model_name = ""
        self._counts.connect(self._on_counts)

    @property
    def running(self) -> bool:
        return self.server is not None and bool(self.server.running)

    @property
    def port(self) -> int | None:
        return int(self.server.port) if self.server is not None else None

    def apply(self, settings: Settings) -> None:
        """Start, restart or stop the server so it matches ``settings``."""
        wanted = (settings.server_port, settings.server_api_key) if settings.server_enabled else None
        if wanted == self._config and (wanted is None or self.running):
            return
        self.stop()
        if wanted is None:
            return
        from olmo3.serve.server import ServeConfig

        config = ServeConfig(host=HOST, port=wanted[0], api_key=wanted[1] or None, model_id=self._model_name or None)
        try:
            self.server = self.bridge.start_local_server(config, self._counts.emit)
        except (OSError, RuntimeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("the local server could not start on port %s: %s", wanted[0], reason)
            self.failed.emit(f"Couldn't start the local server on port {wanted[0]}: {reason}")
            self.status_changed.emit("")
            return
        self._config = wanted
        self._on_counts(self.server.stats)

    def set_model_name(self, name: str) -> None:
        """The name ``/v1/models`` lists for the loaded model (the folder's name is accepted too)."""
        self._model_name = name
        if self.server is not None:
            self.server.backend.model_id_override = name or None

    def stop(self) -> bool:
        """Stop serving (requests in flight are cancelled). True if the server's thread ended in time."""
        server, self.server, self._config = self.server, None, None
        if server is None:
            return True
        ok = bool(server.stop())
        self.status_changed.emit("")
        return ok

    def _on_counts(self, stats: Any) -> None:
        if self.server is None:
            return
        n = int(stats.total)
        self.status_changed.emit(f"Serving on {HOST}:{self.server.port} · {n} request{'s' if n != 1 else ''}")
