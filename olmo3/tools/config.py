"""Which MCP servers to run (the user's ``mcp.json``) and which of their tools are on (our ``tools-state.json``).

``mcp.json`` has the shape Claude Desktop, LM Studio and Cursor use, so a person can paste their existing file::

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "~/Notes"],
                  "env": {"DEBUG": "1"}, "cwd": "~"},
        "web":   {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer …"}}}}

A server with ``command`` runs as a child process over stdio; one with ``url`` is reached over streamable HTTP.
We also read ``type`` (``"stdio"``, ``"http"``/``"streamable-http"``; VS Code writes it) and ``disabled`` (Cline
writes it); other keys other apps add (``autoApprove``, ``timeout``, …) are kept out of the way as warnings rather
than errors, so a file that works elsewhere is not refused here. Errors name the server and the key.

The file is the person's: we never write it. Per-tool switches ("on", "always allow") live apart in
``tools-state.json`` next to it, written atomically. They are keyed by server name and the tool's own name (not the
name shown to the model, which can change when another server adds a tool of the same name).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import appinfo
from ..fileio import write_atomic

log = logging.getLogger(__name__)

CONFIG_NAME = "mcp.json"
STATE_NAME = "tools-state.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_SERVERS = 100
_KNOWN_KEYS = {"command", "args", "env", "cwd", "url", "headers", "type", "disabled"}
_HTTP_TYPES = {"http", "streamable-http", "streamable_http", "streamableHttp"}


class ToolConfigError(ValueError):
    """``mcp.json`` (or the state file) cannot be used; the message names the file, the server and the key."""


def default_config_path() -> Path:
    return appinfo.config_dir() / CONFIG_NAME


def default_state_path() -> Path:
    return appinfo.config_dir() / STATE_NAME


@dataclass(frozen=True)
class StdioServer:
    """A server we start as a child process and talk to over its stdin/stdout."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    disabled: bool = False


@dataclass(frozen=True)
class HttpServer:
    """A server reached over streamable HTTP at ``url``, with extra request ``headers`` (e.g. a bearer token)."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False


ServerConfig = StdioServer | HttpServer


@dataclass(frozen=True)
class McpConfig:
    """The servers of one ``mcp.json``, in file order, and the keys we did not use (as readable warnings)."""

    servers: tuple[ServerConfig, ...] = ()
    source: str = ""
    warnings: tuple[str, ...] = ()

    def get(self, name: str) -> ServerConfig | None:
        return next((s for s in self.servers if s.name == name), None)


def json_depth_ok(text: str, max_depth: int) -> bool:
    """Whether ``text``'s brackets nest at most ``max_depth`` deep (strings skipped), before ``json.loads`` sees it:
    the C parser recurses per level, and a file of ten thousand ``[`` should be an error message, not a crash."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def load_bounded_json(data: bytes, source: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a small JSON file with bounds on size and nesting; errors say which file and where."""
    if len(data) > max_bytes:
        raise ToolConfigError(f"{source}: the file is too large ({len(data):,} bytes; at most {max_bytes:,})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ToolConfigError(f"{source}: not UTF-8 text (byte {e.start})") from None
    if not json_depth_ok(text, MAX_JSON_DEPTH):
        raise ToolConfigError(f"{source}: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolConfigError(f"{source}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None


def load_config(path: str | Path | None = None, *, missing_ok: bool | None = None) -> McpConfig:
    """Read ``mcp.json``: the default one (a missing default file means no servers), or ``path`` (which must
    exist unless ``missing_ok``)."""
    explicit = path is not None
    p = Path(path).expanduser() if path is not None else default_config_path()
    if missing_ok is None:
        missing_ok = not explicit
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return McpConfig(source=str(p))
        raise ToolConfigError(f"{p}: no such file") from None
    except OSError as e:
        raise ToolConfigError(f"{p}: cannot read it ({e.strerror})") from None
    return parse_config(load_bounded_json(data, str(p)), source=str(p))


def parse_config(doc: Any, *, source: str = CONFIG_NAME) -> McpConfig:
    """Validate a parsed ``mcp.json`` document and return its servers."""
    if not isinstance(doc, dict):
        raise ToolConfigError(f'{source}: expected a JSON object with an "mcpServers" object')
    servers_doc = doc.get("mcpServers")
    if servers_doc is None:
        # VS Code's file says "servers"; accept it rather than make people rename the key.
        servers_doc = doc.get("servers")
    if servers_doc is None:
        raise ToolConfigError(f'{source}: no "mcpServers" object')
    if not isinstance(servers_doc, dict):
        raise ToolConfigError(f'{source}: "mcpServers" must be an object of servers by name')
    if len(servers_doc) > MAX_SERVERS:
        raise ToolConfigError(f"{source}: too many servers ({len(servers_doc)}; at most {MAX_SERVERS})")
    servers: list[ServerConfig] = []
    warnings: list[str] = []
    for name, spec in servers_doc.items():
        servers.append(_parse_server(name, spec, source, warnings))
    return McpConfig(servers=tuple(servers), source=source, warnings=tuple(warnings))


def _parse_server(name: str, spec: Any, source: str, warnings: list[str]) -> ServerConfig:
    where = f"{source}: server {name!r}"
    if not name.strip() or len(name) > 100 or any(ord(c) < 32 for c in name):
        raise ToolConfigError(f"{source}: {name!r} is not a usable server name (1–100 characters, no control codes)")
    if not isinstance(spec, dict):
        raise ToolConfigError(f'{where}: expected an object with "command" or "url"')
    for key in spec:
        if key not in _KNOWN_KEYS:
            warnings.append(f"{where}: {key!r} is not used here")
    disabled = spec.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ToolConfigError(f'{where}: "disabled" must be true or false')
    kind = spec.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ToolConfigError(f'{where}: "type" must be a string')
    if kind == "sse":
        raise ToolConfigError(
            f'{where}: "type": "sse" (the old HTTP+SSE transport) is not supported; '
            "use the server's streamable HTTP URL"
        )
    has_command, has_url = "command" in spec, "url" in spec
    if has_command and has_url:
        raise ToolConfigError(f'{where}: has both "command" and "url"; give one')
    if kind == "stdio" and has_url:
        raise ToolConfigError(f'{where}: "type": "stdio" needs "command", not "url"')
    if kind is not None and kind != "stdio" and kind not in _HTTP_TYPES:
        raise ToolConfigError(f'{where}: "type" {kind!r} is not one of "stdio", "http"')
    if has_url or kind in _HTTP_TYPES:
        return _parse_http(name, spec, where, disabled)
    if has_command:
        return _parse_stdio(name, spec, where, disabled)
    raise ToolConfigError(f'{where}: needs "command" (a program to run) or "url" (a streamable HTTP server)')


def _string_map(value: Any, where: str, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ToolConfigError(f'{where}: "{key}" must be an object of strings')
    for k, v in value.items():
        if not isinstance(v, str):
            raise ToolConfigError(f'{where}: "{key}" → {k!r} must be a string, not {_json_kind(v)}')
        if "\x00" in k or "\x00" in v:
            raise ToolConfigError(f'{where}: "{key}" → {k!r} has a NUL character')
    return dict(value)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _parse_stdio(name: str, spec: dict[str, Any], where: str, disabled: bool) -> StdioServer:
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolConfigError(f'{where}: "command" must be a non-empty string')
    if "\x00" in command:
        raise ToolConfigError(f'{where}: "command" has a NUL character')
    args = spec.get("args", [])
    if not isinstance(args, list):
        raise ToolConfigError(f'{where}: "args" must be a list of strings')
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise ToolConfigError(f'{where}: "args" item {i + 1} must be a string, not {_json_kind(arg)}')
        if "\x00" in arg:
            raise ToolConfigError(f'{where}: "args" item {i + 1} has a NUL character')
    env = _string_map(spec["env"], where, "env") if spec.get("env") is not None else None
    cwd = spec.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd.strip()):
        raise ToolConfigError(f'{where}: "cwd" must be a folder path')
    if "headers" in spec:
        raise ToolConfigError(f'{where}: "headers" is for "url" servers, not "command" ones')
    return StdioServer(
        name=name,
        command=os.path.expanduser(command) if command.startswith("~") else command,
        args=tuple(args),
        env=env,
        cwd=os.path.expanduser(cwd) if cwd else None,
        disabled=disabled,
    )


def _parse_http(name: str, spec: dict[str, Any], where: str, disabled: bool) -> HttpServer:
    url = spec.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ToolConfigError(f'{where}: "url" must be a non-empty string')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ToolConfigError(f'{where}: "url" must be an http:// or https:// address, not {url!r}')
    for key in ("args", "env", "cwd"):
        if key in spec:
            raise ToolConfigError(f'{where}: "{key}" is for "command" servers, not "url" ones')
    headers = _string_map(spec["headers"], where, "headers") if spec.get("headers") is not None else {}
    for k, v in headers.items():
        if any(c in k + v for c in "\r\n"):
            raise ToolConfigError(f'{where}: "headers" → {k!r} has a line break')
    return HttpServer(name=name, url=url, headers=headers, disabled=disabled)


class ToolState:
    """Per-server and per-tool switches the app keeps: is a tool on, does it run without asking.

    Defaults: every tool on, none allowed without asking. Thread-safe; every change is saved at once
    (atomically), because the switches are few and a crash should not forget a person's "always allow".
    A state file that cannot be read is set aside as ``tools-state.json.bad`` on the next save, not lost.
    """

    VERSION = 1

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._servers: dict[str, dict[str, Any]] = {}
        self._unreadable = False
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read %s: %s", self.path, e)
            self._unreadable = True
            return
        try:
            doc = load_bounded_json(data, str(self.path))
            servers = doc.get("servers", {}) if isinstance(doc, dict) else None
            if not isinstance(servers, dict):
                raise ToolConfigError(f'{self.path}: no "servers" object')
        except ToolConfigError as e:
            log.warning("%s; starting from defaults", e)
            self._unreadable = True
            return
        for name, entry in servers.items():
            if isinstance(entry, dict):
                tools = entry.get("tools")
                self._servers[name] = {
                    "enabled": entry.get("enabled", True) is not False,
                    "tools": {
                        t: {
                            "enabled": v.get("enabled", True) is not False,
                            "always_allow": v.get("always_allow") is True,
                        }
                        for t, v in (tools.items() if isinstance(tools, dict) else ())
                        if isinstance(v, dict)
                    },
                }

    def _tool(self, server: str, tool: str) -> dict[str, bool]:
        return self._servers.get(server, {}).get("tools", {}).get(tool, {})  # type: ignore[no-any-return]

    def server_enabled(self, server: str) -> bool:
        with self._lock:
            return bool(self._servers.get(server, {}).get("enabled", True))

    def tool_enabled(self, server: str, tool: str) -> bool:
        with self._lock:
            return bool(
                self._servers.get(server, {}).get("enabled", True) and self._tool(server, tool).get("enabled", True)
            )

    def always_allow(self, server: str, tool: str) -> bool:
        with self._lock:
            return bool(self._tool(server, tool).get("always_allow", False))

    def set_server_enabled(self, server: str, enabled: bool) -> None:
        with self._lock:
            self._servers.setdefault(server, {"enabled": True, "tools": {}})["enabled"] = bool(enabled)
            self._save()

    def set_tool_enabled(self, server: str, tool: str, enabled: bool) -> None:
        self._set(server, tool, "enabled", enabled)

    def set_always_allow(self, server: str, tool: str, allow: bool) -> None:
        self._set(server, tool, "always_allow", allow)

    def _set(self, server: str, tool: str, key: str, value: bool) -> None:
        with self._lock:
            entry = self._servers.setdefault(server, {"enabled": True, "tools": {}})
            entry["tools"].setdefault(tool, {"enabled": True, "always_allow": False})[key] = bool(value)
            self._save()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"version": self.VERSION, "servers": json.loads(json.dumps(self._servers))}

    def _save(self) -> None:
        if self.path is None:
            return
        if self._unreadable and self.path.exists():
            os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            self._unreadable = False
        doc = {"version": self.VERSION, "servers": self._servers}
        write_atomic(self.path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
