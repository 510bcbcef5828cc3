"""What the rest of the app sees of a tool and of a call's outcome: plain data, no MCP SDK types.

Kept apart from ``toolhub`` so that ``messages`` (the template side) and the GUI can use these without importing
the MCP SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolInfo:
    """One tool of one server.

    ``name`` is what the model sees and calls: the tool's own name, or ``<server>__<tool>`` when two servers
    offer a tool of the same name (see ``ToolHub``). ``tool`` is the server's own name for it; the on/off and
    "always allow" switches are kept under (``server``, ``tool``).
    """

    name: str
    server: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    enabled: bool = True
    always_allow: bool = False
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "tool": self.tool,
            "title": self.title,
            "description": self.description,
            "input_schema": self.input_schema,
            "enabled": self.enabled,
            "always_allow": self.always_allow,
        }


@dataclass(frozen=True)
class ToolResult:
    """A call's outcome as text for the model's ``environment`` turn.

    Failures are results too (``is_error``), never exceptions: the model reads the message and can try again.
    ``cut_chars`` says how many characters were cut from a long result (the text ends with a note saying so).
    """

    text: str
    is_error: bool = False
    cancelled: bool = False
    timed_out: bool = False
    cut_chars: int = 0
    name: str = ""
    server: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "text": self.text,
            "is_error": self.is_error,
            "cancelled": self.cancelled,
            "timed_out": self.timed_out,
            "cut_chars": self.cut_chars,
        }


def cut_text(text: str, max_chars: int) -> tuple[str, int]:
    """Keep the first ``max_chars`` characters and say how much was cut, so the model knows it saw a part."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, 0
    cut = len(text) - max_chars
    note = f"\n\n[Cut: {cut:,} more characters not shown; the tool returned {len(text):,} characters.]"
    return text[:max_chars] + note, cut


def error_result(message: str, *, name: str = "", server: str = "") -> ToolResult:
    """A failure the model should read as the call's result (``Error: …``): a call it wrote that could not be
    parsed, a tool that does not exist, a server that is down."""
    return ToolResult(f"Error: {message}", is_error=True, name=name, server=server)


def declined_result(name: str, server: str = "") -> ToolResult:
    """The result to give the model when the person says no to a call, so it can carry on without it."""
    return ToolResult(
        "Error: the user declined this call; do not call it again unless asked.", True, name=name, server=server
    )
