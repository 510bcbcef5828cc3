"""``ToolHub``: the app's MCP client. It owns the servers' connections and lets any thread list and call tools.

Why a thread of its own: the MCP SDK is asyncio (anyio) code, while the app is a Qt GUI thread plus the engine
thread that runs MLX. One event loop on one daemon thread holds every connection; the sync methods hand it
coroutines (``asyncio.run_coroutine_threadsafe``) and wait, so callers need no event loop and never touch the SDK.

Lifecycle: a server starts on first use (``list_tools`` or ``call``), over stdio (a child process in its own
process group, stderr kept as a bounded tail for error messages) or streamable HTTP, and stays up until ``close()``,
which stops every server (the SDK closes stdin, waits, then terminates the process tree) and the thread. A server
that fails to start, or does not answer within ``start_timeout``, gives an error naming it, with its stderr tail.

Calls: ``start_call`` returns a ``ToolCall`` handle at once; ``cancel()`` from any thread cancels the request's
anyio scope on the loop, and the SDK then tells the server (``notifications/cancelled`` on stdio; on streamable
HTTP it aborts that request's POST). A per-call timeout does the same and returns an error result. Every outcome,
failures included, is a ``ToolResult``: the session gives it to the model as the ``environment`` turn.

Names: a tool keeps its own name unless another configured server offers a tool of the same name; then both are
called ``<server>__<tool>`` (the server name with characters outside ``[A-Za-z0-9_-]`` as ``_``). That depends only
on the configured servers and their tools, not on start order or on switches, so names in a conversation stay put.
``<server>__<tool>`` is also accepted for any tool, clash or not (handy for scripts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import mcp.types as mt
from mcp import MCPError

from .config import McpConfig, StdioServer, ToolState
from .connection import Connection, ToolServerError, describe_error
from .info import ToolInfo, ToolResult, cut_text, error_result

__all__ = ["ServerStatus", "ToolCall", "ToolHub", "ToolServerError", "qualified_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_RESULT_CHARS = 16_000
DEFAULT_CALL_TIMEOUT = 120.0
DEFAULT_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerStatus:
    """A configured server as the settings page shows it."""

    name: str
    transport: str  # "stdio" | "http"
    state: str  # "disabled" | "stopped" | "running" | "failed"
    error: str | None = None
    tools: int = 0


def qualified_name(server: str, tool: str) -> str:
    """``<server>__<tool>``: the unambiguous name of a tool, used for clashes and accepted always."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", server) + "__" + tool


class ToolCall:
    """A call in flight: ``result()`` waits for its ``ToolResult``, ``cancel()`` (any thread) stops it."""

    def __init__(self, hub: ToolHub, name: str) -> None:
        self.name = name  # the name called; once resolved, the tool's listed name
        self.server = ""  # its server, once resolved
        self._hub = hub
        self._future: concurrent.futures.Future[ToolResult] | None = None
        self._scope: anyio.CancelScope | None = None
        self._cancel_requested = False

    def cancel(self) -> None:
        """Ask for the call to stop; the result then says it was cancelled (unless it had already finished)."""
        self._cancel_requested = True
        loop = self._hub._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def result(self, timeout: float | None = None) -> ToolResult:
        assert self._future is not None
        return self._future.result(timeout)

    def add_done_callback(self, fn: Callable[[ToolCall], None]) -> None:
        """``fn(self)`` once the result is ready; it runs on the hub's thread, so post to your own from there."""
        assert self._future is not None
        self._future.add_done_callback(lambda _f: fn(self))


@dataclass(frozen=True)
class _Entry:
    info: ToolInfo
    conn: Connection


class ToolHub:
    """The MCP servers of one ``McpConfig``: list their tools and call them from any thread (see the module doc)."""

    def __init__(
        self,
        config: McpConfig,
        state: ToolState | None = None,
        *,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.config = config
        self.state = state if state is not None else ToolState()
        self.max_result_chars = max_result_chars
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conns: dict[str, Connection] = {}
        self._index: dict[str, _Entry] = {}
        self._listed = False
        self._calls: set[ToolCall] = set()

    # --- the loop thread ----------------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the ToolHub is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()
                self._thread = threading.Thread(
                    target=self._loop_main, args=(loop, started), name="mcp-tools", daemon=True
                )
                self._thread.start()
                started.wait()
                self._loop = loop
                self._conns = {s.name: Connection(s, start_timeout=self.start_timeout) for s in self.config.servers}
            return self._loop

    @staticmethod
    def _loop_main(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("ToolHub's sync methods cannot be called from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    # --- listing ------------------------------------------------------------------------------------------------

    def _active(self, conn: Connection) -> bool:
        return not conn.spec.disabled and self.state.server_enabled(conn.name)

    def list_tools(self, *, refresh: bool = False) -> list[ToolInfo]:
        """Every tool of every active server (starting them as needed), with its on/off and always-allow switches.

        A server that fails is left out; ``servers()`` says why. ``refresh`` asks each server again and tries
        failed servers again (a "Retry" button); without it, a server that failed to start stays failed.
        """
        self._run(self._list_all(refresh))
        return [e.info for e in self._index.values()]

    def find_tool(self, name: str) -> ToolInfo | None:
        """The listed tool a model's call names (its listed name or ``<server>__<tool>``), e.g. for a consent card;
        ``None`` if there is none. Uses the last listing: call ``list_tools`` first."""
        entry = self._lookup(name)
        return entry.info if entry is not None else None

    def _lookup(self, name: str) -> _Entry | None:
        index = self._index
        return index.get(name) or next(
            (e for e in index.values() if qualified_name(e.info.server, e.info.tool) == name), None
        )

    def enabled_tools(self) -> list[ToolInfo]:
        """The tools to offer the model: on, on an active server."""
        return [t for t in self.list_tools() if t.enabled]

    def servers(self) -> list[ServerStatus]:
        """Each configured server and how it is doing (no server is started by asking)."""
        self._ensure_loop()
        out = []
        for conn in self._conns.values():
            kind = "stdio" if isinstance(conn.spec, StdioServer) else "http"
            if not self._active(conn):
                state, error = "disabled", None
            elif conn.client is not None:
                state, error = "running", None
            elif conn.error is not None:
                state, error = "failed", conn.error
            else:
                state, error = "stopped", None
            out.append(ServerStatus(conn.name, kind, state, error, len(conn.tools or ())))
        return out

    def server_errors(self) -> dict[str, str]:
        return {s.name: s.error for s in self.servers() if s.error}

    async def _list_all(self, refresh: bool) -> None:
        # A server whose start failed is tried again only on refresh: listing happens every turn, and a broken
        # server should not be spawned (and fail) every time.
        conns = [c for c in self._conns.values() if self._active(c) and (refresh or not c.start_failed)]
        results = await asyncio.gather(*(c.list(refresh) for c in conns), return_exceptions=True)
        listed: list[tuple[Connection, list[mt.Tool]]] = []
        for conn, result in zip(conns, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ToolServerError):
                    conn.error = f"MCP server {conn.name!r}: listing its tools failed: {describe_error(result)}"
                    log.warning("%s", conn.error)
            else:
                listed.append((conn, result))
        self._index = self._build_index(listed)
        self._listed = True

    def _build_index(self, listed: list[tuple[Connection, list[mt.Tool]]]) -> dict[str, _Entry]:
        # Clashes are counted over every server that listed, in config order, so a name only changes when
        # the set of servers or their tools does.
        counts: dict[str, int] = {}
        for _conn, tools in listed:
            for tool_name in {t.name for t in tools}:
                counts[tool_name] = counts.get(tool_name, 0) + 1
        index: dict[str, _Entry] = {}
        for conn, tools in listed:
            for tool in tools:
                name = tool.name if counts[tool.name] == 1 else qualified_name(conn.name, tool.name)
                base, n = name, 2
                while name in index:
                    name, n = f"{base}_{n}", n + 1
                info = ToolInfo(
                    name=name,
                    server=conn.name,
                    tool=tool.name,
                    title=tool.title,
                    description=(tool.description or tool.title or "").strip(),
                    input_schema=dict(tool.input_schema),
                    enabled=self.state.tool_enabled(conn.name, tool.name),
                    always_allow=self.state.always_allow(conn.name, tool.name),
                )
                index[name] = _Entry(info, conn)
        return index

    async def _resolve(self, name: str) -> _Entry | None:
        if not self._listed:  # once; a made-up name must not restart failed servers on every call
            await self._list_all(refresh=False)
        return self._lookup(name)

    # --- calling ------------------------------------------------------------------------------------------------

    def start_call(
        self, name: str, arguments: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> ToolCall:
        """Start a call and return its handle at once; see ``ToolCall``."""
        loop = self._ensure_loop()
        handle = ToolCall(self, name)
        with self._lock:
            self._calls.add(handle)
        coro = self._call(handle, name, dict(arguments or {}), self.call_timeout if timeout is None else timeout)
        handle._future = asyncio.run_coroutine_threadsafe(coro, loop)
        handle._future.add_done_callback(lambda _f: self._forget(handle))
        return handle

    def _forget(self, handle: ToolCall) -> None:
        with self._lock:
            self._calls.discard(handle)

    def call(self, name: str, arguments: Mapping[str, Any] | None = None, timeout: float | None = None) -> ToolResult:
        """Call a tool and wait for its result (errors, timeouts and cancellation are results, not exceptions)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("ToolHub.call would wait on its own thread; use start_call there")
        return self.start_call(name, arguments, timeout).result()

    async def _call(self, handle: ToolCall, name: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        result: ToolResult | None = None
        with anyio.CancelScope() as scope:
            handle._scope = scope
            if handle._cancel_requested:
                scope.cancel()
            try:
                result = await self._call_inner(handle, arguments, timeout)
            except Exception as e:  # a result, always: the model must get an answer to its call
                log.exception("calling %s failed", name)
                result = _error(handle, f"calling {name} failed: {describe_error(e)}")
        if result is None:
            result = ToolResult(
                "Error: the call was cancelled by the user.",
                True,
                cancelled=True,
                name=handle.name,
                server=handle.server,
            )
        return result

    async def _call_inner(self, handle: ToolCall, arguments: dict[str, Any], timeout: float) -> ToolResult:
        entry = await self._resolve(handle.name)
        if entry is None:
            known = ", ".join(sorted(n for n, e in self._index.items() if e.info.enabled)) or "none"
            return _error(handle, f"there is no tool called {handle.name!r} (tools: {known})")
        info, conn = entry.info, entry.conn
        handle.name, handle.server = info.name, info.server
        if not self.state.tool_enabled(info.server, info.tool) or not self._active(conn):
            return _error(handle, f"the tool {info.name!r} is turned off")
        try:
            client = await conn.ensure()
        except ToolServerError as e:
            return _error(handle, str(e))
        raw: mt.CallToolResult | None = None
        with anyio.move_on_after(timeout) as deadline:
            try:
                raw = await client.call_tool(info.tool, arguments)
            except MCPError as e:
                if e.code == mt.CONNECTION_CLOSED:
                    conn.stop.set()  # the next call starts it again
                    return _error(handle, f"the MCP server {info.server!r} closed the connection")
                return _error(handle, f"{info.name}: {e.message}")
        if deadline.cancelled_caught or raw is None:
            text = f"Error: {info.name} did not finish within {timeout:g} s and was stopped"
            return ToolResult(text, True, timed_out=True, name=info.name, server=info.server)
        text, cut = cut_text(_result_text(raw), self.max_result_chars)
        if raw.is_error and not text:
            text = f"Error: {info.name} failed (no message)"
        return ToolResult(text, raw.is_error, cut_chars=cut, name=info.name, server=info.server)

    # --- closing ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel calls in flight, stop every server, end the thread. Idempotent; the hub cannot be reused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            calls = list(self._calls)
        if loop is None or thread is None:
            return
        for handle in calls:
            handle.cancel()
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30.0)
        except Exception:
            log.exception("stopping the MCP servers failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)

    async def _shutdown(self) -> None:
        await asyncio.gather(*(c.shutdown() for c in self._conns.values()), return_exceptions=True)

    def __enter__(self) -> ToolHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(handle: ToolCall, message: str) -> ToolResult:
    return error_result(message, name=handle.name, server=handle.server)


def _result_text(result: mt.CallToolResult) -> str:
    """A tool result as text for the model: text blocks as they are, other content as a short note."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mt.TextContent):
            parts.append(block.text)
        elif isinstance(block, (mt.ImageContent, mt.AudioContent)):
            kind = "image" if isinstance(block, mt.ImageContent) else "audio"
            parts.append(f"[{kind}: {block.mime_type}, about {len(block.data) * 3 // 4:,} bytes, not shown]")
        elif isinstance(block, mt.ResourceLink):
            parts.append(f"[resource: {block.uri}{f' ({block.name})' if block.name else ''}]")
        elif isinstance(block, mt.EmbeddedResource):
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(
                text if isinstance(text, str) else f"[resource: {res.uri}, {res.mime_type or 'binary'}, not shown]"
            )
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)
