"""``olmo3 chat --tools``: MCP tools in a terminal chat (the servers of ``mcp.json``, consent asked in the terminal).

The engine runs the calls between rounds of one turn (``olmo3.chat.tool_turns``). A call that needs consent
arrives as a ``ToolCallRequested`` on the engine thread; :class:`TerminalConsent` queues it, and the main thread,
which waits for the turn, asks on stderr and reads the answer from stdin: ``y`` once, ``a`` always (remembered in
``tools-state.json``), anything else no. End of input means no. ``--yes`` allows every call without asking.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
from typing import Any

from ..chat.events import (
    Event,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallStarted,
    ToolRoundFinished,
)
from ..tools.config import ToolConfigError

PREVIEW_CHARS = 400  # of a result, printed under its call


class ToolSetupError(ValueError):
    """``--tools`` cannot be used as given (bad config, option without --tools); one line, exit 2."""


def add_tool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tools", action="store_true", help="let the model call the tools of your MCP servers")
    parser.add_argument("--config", help="with --tools: the mcp.json to use (default: the app's)")
    parser.add_argument("--yes", action="store_true", help="with --tools: allow every call without asking")
    parser.add_argument(
        "--tool-rounds", type=int, default=8, help="with --tools: at most this many rounds of calls per turn (8)"
    )


def open_tools(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """``(hub, runner)`` for ``--tools``, None without it. Raises ToolSetupError with a one-line message."""
    if not getattr(args, "tools", False):
        given = [flag for flag, value in (("--config", args.config), ("--yes", args.yes)) if value]
        if given:
            raise ToolSetupError(f"{' and '.join(given)} only apply with --tools")
        return None
    if args.tool_rounds < 1:
        raise ToolSetupError("--tool-rounds must be at least 1")
    from .tools import _open_hub

    try:
        hub = _open_hub(args.config)
    except ToolConfigError as e:
        raise ToolSetupError(str(e)) from None
    from ..tools.runner import HubTools

    for warning in hub.config.warnings:
        print(f"olmo3: warning: {warning}", file=sys.stderr)
    if not hub.config.servers:
        print(f"olmo3: no MCP servers in {hub.config.source}; chatting without tools", file=sys.stderr)
    return hub, HubTools(hub, ask=not args.yes, max_rounds=args.tool_rounds)


def call_text(name: str, arguments: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return f"{name}({args})"


class TerminalConsent:
    """Collects consent questions (engine thread) for the main thread to ask (see the module docstring)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.questions: queue.Queue[ToolCallRequested] = queue.Queue()

    def on_event(self, event: Event) -> None:
        if isinstance(event, ToolCallRequested):
            self.questions.put(event)

    def ask_pending(self, engine: Any) -> None:
        """Ask every waiting question now (main thread)."""
        while True:
            try:
                request = self.questions.get_nowait()
            except queue.Empty:
                return
            where = f" from {request.server}" if request.server else ""
            sys.stderr.write(
                f"\nAllow {call_text(request.name, request.arguments)}{where}? [y] once, [a] always, [n] no: "
            )
            sys.stderr.flush()
            answer = sys.stdin.readline().strip().lower()
            if answer in ("a", "always"):
                info = self.hub.find_tool(request.name)
                if info is not None:
                    self.hub.state.set_always_allow(info.server, info.tool, True)
                engine.answer_tool_call(request.request_id, "always")
            elif answer in ("y", "yes", "once"):
                engine.answer_tool_call(request.request_id, "allow")
            else:
                engine.answer_tool_call(request.request_id, "deny")


def wait_turn(engine: Any, job: int, consent: TerminalConsent | None) -> None:
    """Wait for a job, asking consent questions as they come; Ctrl-C stops the turn (and a running tool)."""
    try:
        while not engine.wait(job, 0.1):
            if consent is not None:
                consent.ask_pending(engine)
    except KeyboardInterrupt:
        engine.cancel()
        engine.wait(job)


def print_tool_event(event: Event) -> str | None:
    """What the interactive chat prints for a tool event (None: nothing)."""
    if isinstance(event, ToolRoundFinished) and event.parse_error:
        return f"\n  ! the call could not be read: {event.parse_error}\n"
    if isinstance(event, ToolCallStarted):
        where = f" · {event.server}" if event.server else ""
        return f"\n  → {call_text(event.name, event.arguments)}{where}\n"
    if isinstance(event, ToolCallFinished):
        result = event.result
        if event.declined:
            return f"  ✗ {event.name}: declined\n"
        text = str(result.get("text") or "")
        shown = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + f"… ({len(text):,} characters)"
        mark = "!" if result.get("is_error") else "←"
        lines = shown.splitlines() or [""]
        return "".join(f"  {mark if i == 0 else ' '} {line}\n" for i, line in enumerate(lines)) + (
            f"    ({event.elapsed_s:.2f} s)\n" if event.name else ""
        )
    return None


def tool_calls_json(events: list[Event]) -> list[dict[str, Any]]:
    """The calls of one turn and their results, for ``chat --json`` (in order)."""
    out = []
    for e in events:
        if isinstance(e, ToolCallFinished):
            out.append(
                {
                    "name": e.name,
                    "server": e.server,
                    "arguments": e.arguments,
                    "round": e.round,
                    "result": e.result,
                    "declined": e.declined,
                    "elapsed_s": e.elapsed_s,
                    "message_id": e.call_id,
                }
            )
    return out
