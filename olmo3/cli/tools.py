"""``olmo3 tools list`` and ``olmo3 tools call NAME 'JSON'``: the MCP tools of ``mcp.json``, from a terminal.

For trying a server before using it in a chat, and for scripts. Exit codes: 0 done; 1 a server or the tool
failed (the message on stderr); 2 refused input (bad config, bad JSON, no such tool), one line on stderr.
The per-tool switches are read from ``tools-state.json`` beside the ``mcp.json`` in use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..fileio import loads_json
from ..tools.config import STATE_NAME, ToolConfigError, default_config_path, load_config


def add_tools_parser(sub: Any) -> None:
    """Register ``tools`` on the ``olmo3`` subparsers."""
    p = sub.add_parser("tools", help="MCP tools from mcp.json: list | call")
    tsub = p.add_subparsers(dest="tools_command", required=True)
    config_help = f"the mcp.json to use (default: {default_config_path()})"

    s = tsub.add_parser("list", help="list the tools of every configured MCP server")
    s.add_argument("--config", help=config_help)
    s.add_argument("--json", action="store_true", help="one JSON document with tools, servers and errors")
    s.set_defaults(fn=cmd_tools_list)

    s = tsub.add_parser("call", help="call one tool and print its result")
    s.add_argument("name", help="the tool's name, as `olmo3 tools list` shows it (or SERVER__TOOL)")
    s.add_argument("arguments", nargs="?", default="{}", help="the arguments as one JSON object (default: {})")
    s.add_argument("--config", help=config_help)
    s.add_argument("--timeout", type=float, default=120.0, help="seconds before the call is stopped (default: 120)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(fn=cmd_tools_call)


def _refuse(message: str) -> int:
    print(f"olmo3 tools: {message}", file=sys.stderr)
    return 2


def _open_hub(config_arg: str | None) -> Any:
    from ..appinfo import config_dir
    from ..tools.config import ToolState

    config = load_config(config_arg)
    from ..tools.toolhub import ToolHub  # the MCP SDK: only once the config is known to be good

    state_dir = Path(config_arg).expanduser().parent if config_arg else config_dir()
    return ToolHub(config, ToolState(state_dir / STATE_NAME))


def cmd_tools_list(args: argparse.Namespace) -> int:
    try:
        hub = _open_hub(args.config)
    except ToolConfigError as e:
        return _refuse(str(e))
    with hub:
        for warning in hub.config.warnings:
            print(f"olmo3 tools: warning: {warning}", file=sys.stderr)
        if not hub.config.servers:
            if args.json:
                print(json.dumps({"tools": [], "servers": [], "errors": {}}, indent=2))
            else:
                print(f"olmo3 tools: no MCP servers configured in {hub.config.source}", file=sys.stderr)
            return 0
        tools = hub.list_tools()
        errors = hub.server_errors()
        if args.json:
            doc = {
                "tools": [t.to_dict() for t in tools],
                "servers": [{"name": s.name, "transport": s.transport, "state": s.state} for s in hub.servers()],
                "errors": errors,
            }
            print(json.dumps(doc, indent=2, ensure_ascii=False))
        else:
            _print_table(tools)
        for message in errors.values():
            print(f"olmo3 tools: {message}", file=sys.stderr)
        return 1 if errors else 0


def _print_table(tools: list[Any]) -> None:
    rows = [("NAME", "SERVER", "ON", "DESCRIPTION")]
    for t in tools:
        first_line = (t.description.splitlines() or [""])[0]
        on = ("yes" if t.enabled else "no") + (" (always allow)" if t.always_allow else "")
        rows.append((t.name, t.server, on, first_line[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip())


def cmd_tools_call(args: argparse.Namespace) -> int:
    try:
        arguments = loads_json(args.arguments, what="the arguments' JSON")  # bounded: deep nesting is refused
    except json.JSONDecodeError as e:
        return _refuse(f"the arguments are not valid JSON: {e.msg} at column {e.colno}")
    except ValueError as e:
        return _refuse(str(e))
    if not isinstance(arguments, dict):
        return _refuse("the arguments must be one JSON object, like '{\"a\": 1}'")
    if args.timeout <= 0:
        return _refuse("--timeout must be more than 0 seconds")
    try:
        hub = _open_hub(args.config)
    except ToolConfigError as e:
        return _refuse(str(e))
    from ..tools.toolhub import qualified_name

    with hub:
        tools = hub.list_tools()
        known = {t.name for t in tools} | {qualified_name(t.server, t.tool) for t in tools}
        if args.name not in known:
            errors = hub.server_errors()
            for message in errors.values():
                print(f"olmo3 tools: {message}", file=sys.stderr)
            if errors:
                return 1
            return _refuse(f"no tool called {args.name!r} (see `olmo3 tools list`)")
        result = hub.call(args.name, arguments, timeout=args.timeout)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif result.is_error:
        print(f"olmo3 tools: {result.text}", file=sys.stderr)
    else:
        print(result.text)
    return 1 if result.is_error else 0
