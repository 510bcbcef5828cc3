"""HTTP to a remote ``olmo3 serve``: its address, what it serves, and one streamed chat completion. MLX-free, Qt-free.

Stdlib ``http.client`` only, so a stream can be cut from another thread (:meth:`ChatStream.close` shuts its socket
down: the reading thread sees the end at once). Everything read from the network is bounded: JSON answers by
:data:`MAX_JSON_BYTES` (and :func:`olmo3.fileio.loads_json`'s depth limit), every Server-Sent-Events line by
:data:`MAX_LINE_BYTES`; a connection waits :data:`CONNECT_TIMEOUT_S` to open and :data:`READ_TIMEOUT_S` for each
read (the server sends a keep-alive comment every 10 s while it prefills, so a silent connection is a dead one).

Every failure is a :class:`RemoteError` whose message is one line a person can act on: the host that cannot be
reached, the key the server refused (401), the reason a server is down (503, with ``/health``'s ``error``), or an
answer that is not what an Olmo server sends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..fileio import loads_json

__all__ = [
    "DEFAULT_PORT",
    "ChatStream",
    "RemoteError",
    "ServerAddress",
    "ServerClient",
    "ServerInfo",
    "parse_address",
]

DEFAULT_PORT = 8000  # olmo3 serve's
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_JSON_BYTES = 1024**2
MAX_LINE_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 300  # of a server's error message, as shown


class RemoteError(Exception):
    """A request to the server that failed; ``str()`` is one line for the window. ``status``: the HTTP status (0:
    none came back); ``code``: the error's code in OpenAI's shape (``invalid_api_key``, ``context_length_exceeded``)."""

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def one_line(text: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A server's text as one short line of plain text (control characters become spaces)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in str(text))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class ServerAddress:
    """Where the server listens: ``scheme://host:port`` plus a path prefix (a server behind a proxy), no ``/v1``."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @property
    def label(self) -> str:
        """``host:port`` (what the window shows as "remote: …")."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.label}{self.prefix}"


def parse_address(text: str) -> ServerAddress:
    """Read what a person typed: ``host``, ``host:port``, ``http://host:port`` or ``…/v1`` (ValueError says why not).

    Without a scheme the address is ``http`` and, without a port too, on ``olmo3 serve``'s default port 8000."""
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter the server's address, for example http://192.168.1.20:8000")
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ValueError("the address must not contain spaces")
    bare = "://" not in raw
    try:
        parts = urllib.parse.urlsplit(f"http://{raw}" if bare else raw)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"that is not an address: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the address must start with http:// or https://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("the address has no host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put the API key in the key field, not in the address")
    if parts.query or parts.fragment:
        raise ValueError("the address must not have a query (?…) or a fragment (#…)")
    if port is None:
        port = DEFAULT_PORT if bare else (443 if parts.scheme == "https" else 80)
    if port == 0:
        raise ValueError("port 0 is not a port a server listens on")
    prefix = parts.path.rstrip("/")
    prefix = prefix.removesuffix("/v1")
    return ServerAddress(parts.scheme, parts.hostname, port, prefix)


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /v1/olmo/info`` (and ``/health``) said: the served model and its context."""

    address: ServerAddress
    model_id: str  # the name requests must carry
    info: dict[str, Any]  # the model's ModelInfo as a dict (olmo3.remote.engine makes it a ModelInfo)
    context_tokens: int
    version: str
    status: str  # /health's: "ok" (or "no_model", "group_down")
    capabilities: frozenset[str] = frozenset()  # the extension fields its chat requests take ("thinking_budget")


class ServerClient:
    """Requests to one server; thread-safe (each request opens its own connection)."""

    def __init__(self, address: ServerAddress, api_key: str | None = None) -> None:
        self.address = address
        self.api_key = api_key or None

    # ------------------------------------------------------------------ connections
    def _connection(self) -> http.client.HTTPConnection:
        a = self.address
        conn: http.client.HTTPConnection
        if a.scheme == "https":
            conn = http.client.HTTPSConnection(
                a.host, a.port, timeout=CONNECT_TIMEOUT_S, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(a.host, a.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
        except Exception as e:
            conn.close()
            raise self._network_error(e, connecting=True) from None
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT_S)
        return conn

    def _headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "olmo-desktop"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _network_error(self, e: BaseException, *, connecting: bool = False) -> RemoteError:
        where = self.address.label
        if isinstance(e, RemoteError):
            return e
        if isinstance(e, socket.gaierror):
            return RemoteError(f"Couldn't find the server {self.address.host}: no such host name.")
        if isinstance(e, ConnectionRefusedError):
            return RemoteError(f"Couldn't reach {where}: the connection was refused (is olmo3 serve running there?).")
        if isinstance(e, TimeoutError | socket.timeout):
            wait = CONNECT_TIMEOUT_S if connecting else READ_TIMEOUT_S
            return RemoteError(f"{where} did not answer within {wait:.0f} s.")
        if isinstance(e, ssl.SSLError):
            return RemoteError(f"Couldn't talk securely to {where}: {one_line(e)}.")
        if isinstance(e, http.client.HTTPException):
            return RemoteError(f"{where} sent something that is not HTTP ({type(e).__name__}).")
        if isinstance(e, ConnectionError | OSError):
            reason = one_line(getattr(e, "strerror", None) or e) or type(e).__name__
            return RemoteError(f"Lost the connection to {where}: {reason}.")
        return RemoteError(f"Couldn't talk to {where}: {type(e).__name__}.")

    # ------------------------------------------------------------------ plain requests
    def get_json(self, path: str, *, allow_error: bool = False) -> Any:
        """``GET path`` as JSON; an error status raises :class:`RemoteError` (``allow_error``: return its body)."""
        conn = self._connection()
        try:
            conn.request("GET", self.address.prefix + path, headers=self._headers())
            response = conn.getresponse()
            data = _read_bounded(response, MAX_JSON_BYTES, self.address.label)
        except RemoteError:
            raise
        except Exception as e:
            raise self._network_error(e) from None
        finally:
            conn.close()
        if response.status >= 400 and not allow_error:
            raise self._status_error(response.status, data, path)
        return self._json(data, path)

    def _json(self, data: bytes, path: str) -> Any:
        try:
            return loads_json(data, what=f"{path}'s answer")
        except ValueError:
            raise RemoteError(f"{self.address.label} answered {path} with something that is not JSON.") from None

    def _status_error(self, status: int, data: bytes, path: str) -> RemoteError:
        """The message for an error status: the server's own words when it sent them in OpenAI's shape."""
        message, code = "", None
        with contextlib.suppress(RemoteError, ValueError):
            body = loads_json(data, what="an error")
            error = body.get("error") if isinstance(body, Mapping) else None
            if isinstance(error, Mapping):
                message = one_line(error.get("message") or "")
                code = error.get("code") if isinstance(error.get("code"), str) else None
            elif isinstance(error, str):
                message = one_line(error)
        where = self.address.label
        if status == 401:
            told = f": {message.rstrip('.')}" if message else ""
            return RemoteError(f"{where} refused the API key{told}. Check the key.", status=401, code=code)
        if status == 404 and path.startswith("/v1/olmo/"):
            return RemoteError(f"{where} is not an Olmo server (it has no {path}).", status=404, code=code)
        if status == 503:
            reason = message or self._health_reason() or "it is not ready"
            return RemoteError(f"The server at {where} is unavailable: {reason}.", status=503, code=code)
        return RemoteError(
            f"{where} answered {status}: {message or http.client.responses.get(status, 'error')}",
            status=status,
            code=code,
        )

    def _health_reason(self) -> str:
        with contextlib.suppress(RemoteError):
            body = self.get_json("/health", allow_error=True)
            if isinstance(body, Mapping):
                return one_line(body.get("error") or body.get("status") or "")
        return ""

    def health(self) -> dict[str, Any]:
        """``GET /health`` (a down server's 503 body too: it says why)."""
        body = self.get_json("/health", allow_error=True)
        if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
            raise RemoteError(f"{self.address.label} is not an Olmo server (its /health says nothing of one).")
        return dict(body)

    def info(self) -> ServerInfo:
        """What the server serves: ``/health`` first (no key needed: is it there and up?), then ``/v1/olmo/info``."""
        health = self.health()
        status = str(health["status"])
        if status != "ok":
            reason = one_line(health.get("error") or {"no_model": "no model is loaded"}.get(status, status))
            raise RemoteError(f"The server at {self.address.label} is unavailable: {reason}.", status=503)
        body = self.get_json("/v1/olmo/info")
        if not isinstance(body, Mapping) or body.get("object") != "olmo.info" or not isinstance(body.get("info"), dict):
            raise RemoteError(f"{self.address.label} is not an Olmo server (its /v1/olmo/info is not one).")
        model = body.get("model")
        context = body.get("context_tokens")
        caps = body.get("capabilities")
        if not isinstance(model, str) or not model:
            raise RemoteError(f"{self.address.label} did not say which model it serves.")
        return ServerInfo(
            address=self.address,
            model_id=model,
            info=dict(body["info"]),
            context_tokens=context if isinstance(context, int) and not isinstance(context, bool) and context > 0 else 0,
            version=one_line(body.get("version") or "", 40),
            status=status,
            capabilities=frozenset(k for k, v in caps.items() if v is True) if isinstance(caps, dict) else frozenset(),
        )

    # ------------------------------------------------------------------ streaming
    def stream_chat(self, body: dict[str, Any], opened: Callable[[ChatStream], None] | None = None) -> ChatStream:
        """``POST /v1/chat/completions`` with ``stream: true``; an error status raises :class:`RemoteError`.

        ``opened(stream)`` is called once the connection is open, before the request goes out, so another thread
        can :meth:`ChatStream.close` it while the server is still reading the prompt."""
        conn = self._connection()
        stream = ChatStream(conn, self.address.label)
        if opened is not None:
            opened(stream)
        try:
            payload = json.dumps({**body, "stream": True}, ensure_ascii=False).encode("utf-8")
            conn.request(
                "POST", self.address.prefix + "/v1/chat/completions", body=payload, headers=self._headers(True)
            )
            response = conn.getresponse()
        except Exception as e:
            cancelled = stream.closed_by_us
            stream.release()
            if cancelled:
                raise RemoteError("cancelled", code="cancelled") from None
            raise self._network_error(e) from None
        if stream.closed_by_us:
            stream.release()
            raise RemoteError("cancelled", code="cancelled")
        if response.status >= 400:
            try:
                data = _read_bounded(response, MAX_JSON_BYTES, self.address.label)
            except Exception:
                data = b""
            stream.release()
            raise self._status_error(response.status, data, "/v1/chat/completions")
        ctype = response.getheader("Content-Type", "")
        if "text/event-stream" not in ctype:
            stream.release()
            raise RemoteError(f"{self.address.label} did not stream its reply (it sent {one_line(ctype, 60)}).")
        stream.response = response
        return stream


class ChatStream:
    """One streamed reply: :meth:`chunks` yields each ``data:`` JSON object; :meth:`close` (any thread) ends it."""

    def __init__(self, conn: http.client.HTTPConnection, label: str) -> None:
        self.conn, self.label = conn, label
        self.response: http.client.HTTPResponse | None = None
        self.closed_by_us = False
        self._lock = threading.Lock()

    def close(self) -> None:
        """Cut the connection (from any thread): a read blocked on it returns at once."""
        with self._lock:
            self.closed_by_us = True
            sock = self.conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        # http.client's close is not thread-safe; the reading thread calls release() when it is done.

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def chunks(self) -> Iterator[dict[str, Any]]:
        """The stream's ``data:`` objects until ``[DONE]``. RemoteError when it breaks off or is not SSE."""
        assert self.response is not None
        data: list[bytes] = []
        while True:
            try:
                line = self.response.readline(MAX_LINE_BYTES + 1)
            except Exception as e:
                if self.closed_by_us:
                    return
                raise _lost(self.label, e) from None
            if not line:
                if self.closed_by_us:
                    return
                raise RemoteError(f"{self.label} closed the connection before the reply was complete.")
            if len(line) > MAX_LINE_BYTES:
                raise RemoteError(f"{self.label} sent a line longer than {MAX_LINE_BYTES // 1024} KiB.")
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
                continue
            if line or not data:  # a comment (": keepalive"), another field, or a blank line between nothing
                continue
            payload = b"\n".join(data)
            data = []
            if payload.strip() == b"[DONE]":
                return
            try:
                chunk = loads_json(payload, what="a streamed chunk")
            except ValueError:
                raise RemoteError(f"{self.label} streamed something that is not JSON.") from None
            if not isinstance(chunk, dict):
                raise RemoteError(f"{self.label} streamed something that is not a chunk.")
            yield chunk


def _lost(label: str, e: BaseException) -> RemoteError:
    if isinstance(e, TimeoutError | socket.timeout):
        return RemoteError(f"{label} stopped sending for {READ_TIMEOUT_S:.0f} s; the connection was given up.")
    reason = one_line(getattr(e, "strerror", None) or e) or type(e).__name__
    return RemoteError(f"Lost the connection to {label}: {reason}.")


def _read_bounded(response: http.client.HTTPResponse, limit: int, label: str) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise RemoteError(f"{label} sent an answer larger than {limit // 1024} KiB.")
    return data
