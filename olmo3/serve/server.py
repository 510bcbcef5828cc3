"""Running the server: uvicorn over :func:`create_app`, in the calling thread (``olmo3 serve``) or in its own (the app).

The socket is bound by :meth:`LocalServer.bind` before uvicorn starts, so a port in use is an immediate, clear
``OSError`` and ``port=0`` picks a free port that :attr:`LocalServer.port` reports. :func:`check_config` refuses a
non-loopback host without an API key: anyone on the network could otherwise use the model.

uvicorn is configured without its importable-by-name defaults (``log_config=None``, ``http="h11"``,
``ws="none"``, ``lifespan="off"``, ``loop="asyncio"``), so the modules it imports through strings are few and
known; ``build_app.py`` lists them as hidden imports (:data:`UVICORN_MODULES`).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .app import BODY_LIMIT_BYTES, KEEPALIVE_S, AppConfig, create_app
from .backend import Backend, EngineLike, ServerStats

__all__ = ["UVICORN_MODULES", "LocalServer", "ServeConfig", "check_config", "is_loopback"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_MAX_QUEUE = 32
# What uvicorn imports by name with the configuration below (for PyInstaller's hidden imports).
UVICORN_MODULES = (
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.off",
    "uvicorn.loops.asyncio",
)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = BODY_LIMIT_BYTES
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    keepalive_s: float = KEEPALIVE_S
    model_id: str | None = None  # the name /v1/models lists (default: the model folder's name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServeConfig) -> None:
    """Refuse settings that would be unsafe or cannot work (ValueError with one clear line)."""
    if not is_loopback(config.host) and not config.api_key:
        raise ValueError(
            f"refusing to listen on {config.host} without an API key: anyone on the network could use the model "
            "(give --api-key, or keep the default host 127.0.0.1)"
        )
    if not 0 <= config.port <= 65535:
        raise ValueError(f"port {config.port} is not between 0 and 65535")
    if config.max_queue < 0:
        raise ValueError("--max-queue must be 0 or more")
    if config.max_body_bytes < 1024:
        raise ValueError("the request body limit must be at least 1024 bytes")


class LocalServer:
    """The OpenAI-compatible server over ``engine`` (see the module docstring)."""

    def __init__(
        self, engine: EngineLike, config: ServeConfig, *, on_change: Callable[[ServerStats], None] | None = None
    ):
        check_config(config)
        self.config = config
        self.backend = Backend(engine, max_queue=config.max_queue, model_id=config.model_id)
        self.backend.on_change = on_change
        self.app = create_app(
            self.backend,
            AppConfig(
                api_key=config.api_key,
                max_body_bytes=config.max_body_bytes,
                cors_origins=config.cors_origins,
                keepalive_s=config.keepalive_s,
            ),
        )
        self._socket: socket.socket | None = None
        self._server: object | None = None
        self._stop_requested = False
        # While run() serves: called with SIGINT/SIGTERM; True when it took care of the signal (else uvicorn stops).
        self.signal_hook: Callable[[int], bool] | None = None
        self._thread: threading.Thread | None = None

    def bind(self) -> None:
        """Bind the listening socket now (``OSError`` if the address is in use or not ours)."""
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.host, self.config.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._socket = sock

    @property
    def port(self) -> int:
        if self._socket is None:
            return self.config.port
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/v1"

    @property
    def stats(self) -> ServerStats:
        return self.backend.stats

    def _uvicorn(self) -> object:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            log_config=None,
            http="h11",
            ws="none",
            lifespan="off",
            loop="asyncio",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        server.should_exit = self._stop_requested  # a stop asked for before uvicorn started
        hook, default = self.signal_hook, server.handle_exit
        if hook is not None:

            def handle_exit(sig: int, frame: Any) -> None:
                if not hook(sig):
                    default(sig, frame)

            server.handle_exit = handle_exit  # type: ignore[method-assign]
        self._server = server
        return server

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM, then return (the caller spills the caches).

        uvicorn handles both signals while it serves and raises the one it caught again once it has stopped;
        a no-op handler installed around it turns that into a plain return instead of the process's death."""
        self.bind()
        assert self._socket is not None
        server = self._uvicorn()
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            server.run(sockets=[self._socket])  # type: ignore[attr-defined]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.backend.abandon_all()
            self._close_socket()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (any thread): as SIGINT does, requests in flight are cancelled."""
        self._stop_requested = True
        self.backend.abandon_all()
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]

    def start(self, timeout: float = 10.0) -> None:
        """Serve on a thread of its own (the app); returns once uvicorn accepts connections."""
        self.bind()
        server = self._uvicorn()
        sock = self._socket

        def serve() -> None:
            try:
                server.run(sockets=[sock])  # type: ignore[attr-defined]
            except Exception:
                log.exception("the local server stopped with an error")

        self._thread = threading.Thread(target=serve, name="olmo3-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not getattr(server, "started", False) and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not getattr(server, "started", False):
            self.stop()
            raise RuntimeError("the local server did not start (see the log)")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving (requests in flight are cancelled); True if the thread ended in time."""
        self.backend.abandon_all()
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
            self._thread = None
        self._close_socket()
        return stopped

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
