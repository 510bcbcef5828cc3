"""One MCP server's connection: starting it (stdio or streamable HTTP), its stderr tail, listing, stopping.

Split from ``toolhub`` (which owns the thread, the names and the calls). Everything here runs on the hub's event
loop. A runner task enters the SDK ``Client`` and then waits for ``stop``: anyio's task groups and cancel scopes
must be entered and left by the same task, so one long-lived task owns the connection while calls run in others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import deque
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp.types as mt
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client

from .config import HttpServer, ServerConfig, StdioServer

log = logging.getLogger(__name__)

_STDERR_TAIL_BYTES = 4096
_STDERR_TAIL_LINES = 20
_MAX_LIST_PAGES = 100
# A GUI app on macOS starts with PATH=/usr/bin:/bin:/usr/sbin:/sbin, where `npx` and `uvx` are not: look in the
# usual install folders too before saying a command is missing.
_EXTRA_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "~/.local/bin", "~/.cargo/bin", "~/.volta/bin")


class ToolServerError(RuntimeError):
    """A server that could not be started or reached; the message names it and ends with its stderr tail."""


class _StderrTail(asyncio.Protocol):
    """Keeps the last few KiB a server wrote to stderr (bounded, however chatty it is) and logs each line."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.buf: deque[bytes] = deque()
        self.size = 0
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buf.append(data)
        self.size += len(data)
        while self.size > _STDERR_TAIL_BYTES and len(self.buf) > 1:
            self.size -= len(self.buf.popleft())
        for line in data.decode("utf-8", "replace").splitlines():
            log.debug("[%s] %s", self.server, line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def text(self) -> str:
        raw = b"".join(self.buf)[-_STDERR_TAIL_BYTES:].decode("utf-8", "replace")
        lines = [line.rstrip() for line in raw.strip().splitlines()]
        return "\n".join(lines[-_STDERR_TAIL_LINES:])


class Connection:
    """One server's connection, driven by a runner task on the hub's loop (see the module docstring)."""

    def __init__(self, spec: ServerConfig, *, start_timeout: float) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self.client: Client | None = None
        self.error: str | None = None
        self.tools: list[mt.Tool] | None = None
        self.task: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.start_lock = asyncio.Lock()
        self.stderr: _StderrTail | None = None
        self.stderr_pipe: asyncio.ReadTransport | None = None
        self.timed_out = False
        self.start_failed = False

    @property
    def name(self) -> str:
        return self.spec.name

    async def ensure(self) -> Client:
        """The connected client, starting the server if it is not running (again, if it stopped)."""
        async with self.start_lock:
            running = self.task is not None and not self.task.done()
            if self.client is not None and running and not self.stop.is_set():
                return self.client
            if self.task is not None and running:  # stopping (or asked to, after a lost connection): wait for it
                self.stop.set()
                await asyncio.wait({self.task}, timeout=15.0)
            self.ready = asyncio.Event()
            self.stop = asyncio.Event()
            self.error = None
            self.tools = None
            self.task = asyncio.create_task(self._run(), name=f"mcp:{self.name}")
            await self.ready.wait()
            if self.client is None:
                raise ToolServerError(self.error or f"MCP server {self.name!r} could not start")
            return self.client

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.timed_out = False
        errlog = None
        failure: BaseException | None = None
        watchdog = None
        try:
            with anyio.CancelScope() as scope:
                self.scope = scope
                watchdog = loop.call_later(self.start_timeout, self._start_timed_out)
                async with AsyncExitStack() as stack:
                    if isinstance(self.spec, StdioServer):
                        params, errlog = await self._stdio_params()
                        transport: Any = stdio_client(params, errlog=errlog)
                    else:
                        transport = await self._http_transport(self.spec, stack)
                    client = Client(
                        transport,
                        cache=None,
                        client_info=mt.Implementation(name="Olmo Desktop", version=_app_version()),
                    )
                    try:
                        await stack.enter_async_context(client)
                    finally:
                        if errlog is not None:  # the child holds its own copy; ours would keep the pipe open
                            errlog.close()
                    watchdog.cancel()
                    self.client = client
                    self.ready.set()
                    log.info("MCP server %r started", self.name)
                    await self.stop.wait()
        except Exception as e:
            failure = e
        finally:
            if watchdog is not None:
                watchdog.cancel()
            was_running = self.client is not None
            self.client = None
            self.scope = None
            if errlog is not None and not errlog.closed:
                errlog.close()
        self.start_failed = not was_running
        if not was_running:
            self.error = await self._start_error(failure)
            log.warning("%s", self.error)
        elif failure is not None:
            self.error = f"MCP server {self.name!r} stopped: {describe_error(failure)}"
            log.warning("%s", self.error)
        if self.stderr is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stderr.closed.wait(), 2.0)
        if self.stderr_pipe is not None:
            self.stderr_pipe.close()  # a grandchild may hold stderr open; we stop reading it either way
            self.stderr_pipe = None
        self.ready.set()

    def _start_timed_out(self) -> None:
        if self.client is None and self.scope is not None:
            self.timed_out = True
            self.scope.cancel()

    async def _stdio_params(self) -> tuple[StdioServerParameters, Any]:
        spec = self.spec
        assert isinstance(spec, StdioServer)
        env = get_default_environment() | dict(spec.env or {})
        command = find_command(spec.command, env)
        if command is None:
            raise ToolServerError(f"command not found: {spec.command} (looked in PATH and {', '.join(_EXTRA_PATH)})")
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            raise ToolServerError(f"the folder {spec.cwd} does not exist")
        if os.sep in command:
            # Let the server find its own helpers (node for npx, python for uvx) next to it.
            folder = os.path.dirname(command)
            if folder not in env.get("PATH", "").split(os.pathsep):
                env["PATH"] = os.pathsep.join(p for p in (env.get("PATH"), folder) if p)
        read_fd, write_fd = os.pipe()
        loop = asyncio.get_running_loop()
        tail = self.stderr = _StderrTail(self.name)
        self.stderr_pipe, _ = await loop.connect_read_pipe(lambda: tail, os.fdopen(read_fd, "rb", buffering=0))
        errlog = os.fdopen(write_fd, "w")
        return StdioServerParameters(command=command, args=list(spec.args), env=env, cwd=spec.cwd), errlog

    async def _http_transport(self, spec: HttpServer, stack: AsyncExitStack) -> Any:
        import httpx2  # the MCP SDK's HTTP client; imported here so stdio-only use never loads it

        self.stderr = None
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=dict(spec.headers), timeout=httpx2.Timeout(30.0, read=300.0))
        )
        return streamable_http_client(spec.url, http_client=http)

    async def _start_error(self, failure: BaseException | None) -> str:
        if self.stderr is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stderr.closed.wait(), 2.0)
        if self.timed_out:
            reason = f"it did not answer within {self.start_timeout:g} s"
        elif failure is None:
            reason = "it was stopped while starting"
        else:
            reason = describe_error(failure)
        message = f"MCP server {self.name!r} could not start: {reason}"
        tail = self.stderr.text() if self.stderr is not None else ""
        if tail:
            message += f"\nIts last output (stderr):\n{tail}"
        return message

    async def list(self, refresh: bool) -> list[mt.Tool]:
        client = await self.ensure()
        if self.tools is None or refresh:
            tools: list[mt.Tool] = []
            cursor: str | None = None
            for _ in range(_MAX_LIST_PAGES):
                with anyio.fail_after(self.start_timeout):  # a server that never answers must not hang the app
                    page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            self.tools = tools
        return self.tools

    async def shutdown(self) -> None:
        task = self.task
        if task is None or task.done():
            return
        self.stop.set()
        done, _ = await asyncio.wait({task}, timeout=10.0)
        if not done and self.scope is not None:
            self.scope.cancel()
            await asyncio.wait({task}, timeout=5.0)


def describe_error(e: BaseException) -> str:
    """One readable line for an exception, looking inside anyio's exception groups for the real cause."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, MCPError):
        if e.code == mt.CONNECTION_CLOSED:
            return "it closed the connection (the process exited or the server hung up)"
        return e.message
    if isinstance(e, (ToolServerError, ValueError)):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def find_command(command: str, env: Mapping[str, str]) -> str | None:
    if os.sep in command:
        return command if os.access(command, os.X_OK) else None
    extra = [os.path.expanduser(p) for p in _EXTRA_PATH]
    path = os.pathsep.join([env.get("PATH", os.defpath), *extra])
    return shutil.which(command, path=path)


def _app_version() -> str:
    from .. import __version__

    return __version__
