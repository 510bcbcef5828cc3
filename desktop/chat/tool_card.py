"""A tool call in the conversation: a card with the tool, its server, the arguments, how it went and the result.

A card is the chat view's widget for an ``environment`` message (a tool's result). While a turn runs, the
controller adds it early, as "Waiting for you" (the consent question is open) or "Running… 3 s" (with Stop), and
fills it in when the result comes. Long results show their first lines with "Show all"; a result the app cut
before giving it to the model says so.

Message dict keys read here: ``content`` (the result text, exactly as the model got it), ``tool`` (``name``,
``server``, ``arguments``, ``is_error``, ``cancelled``, ``timed_out``, ``declined``, ``cut_chars``,
``elapsed_s``, ``parse_error``) and, for a live card, ``pending``: ``"asking"`` or ``"running"``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop import theme as th
from desktop.chat.message import MessageWidget

PREVIEW_LINES = 8
PREVIEW_CHARS = 1_200
ARGUMENT_CHARS = 600


def call_text(name: str, arguments: Any) -> str:
    """``add(a=2, b=40)``: the call as Olmo writes it (arguments as JSON)."""
    args = arguments if isinstance(arguments, dict) else {}
    return f"{name}(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) + ")"


def status_of(message: dict[str, Any]) -> tuple[str, str]:
    """(text, kind) of the card's status: kind is "asking", "running", "ok", "error" or "muted"."""
    found = message.get("tool")
    tool: dict[str, Any] = found if isinstance(found, dict) else {}
    pending = message.get("pending")
    if pending == "asking":
        return "Waiting for your permission", "asking"
    if pending == "running":
        return "Running…", "running"
    took = tool.get("elapsed_s")
    seconds = f" · {took:.1f} s" if isinstance(took, int | float) and took >= 0.05 else ""
    text = str(message.get("content") or "")
    if tool.get("declined"):
        return "Declined", "muted"
    if tool.get("cancelled"):
        return ("Stopped" if "cancelled by the user" in text else "Not run"), "muted"
    if tool.get("timed_out"):
        return f"Timed out{seconds}", "error"
    if tool.get("parse_error"):
        return "Couldn't read the call", "error"
    if tool.get("is_error"):
        return ("Not run" if text.startswith("Error: not run") else f"Error{seconds}"), "error"
    return f"Done{seconds}", "ok"


class ToolCallCard(MessageWidget):
    """See the module docstring.

    Signals:
        stop_requested(): the running call's Stop was clicked (stops the turn, which cancels the call).
    """

    stop_requested = Signal()

    def __init__(self, message: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(message, parent)
        self.setObjectName("toolCardRow")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.frame = QFrame(self)
        self.frame.setObjectName("toolCard")
        self.frame.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        outer.addWidget(self.frame)
        body = QVBoxLayout(self.frame)
        body.setContentsMargins(12, 9, 12, 10)
        body.setSpacing(6)

        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.setSpacing(8)
        self.icon = QLabel(self.frame)
        self.title = QLabel("", self.frame)
        self.title.setObjectName("toolCardTitle")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.server = QLabel("", self.frame)
        self.server.setObjectName("toolCardServer")
        self.server.setTextFormat(Qt.TextFormat.PlainText)
        self.status = QLabel("", self.frame)
        self.status.setObjectName("toolCardStatus")
        self.stop_button = QPushButton("Stop", self.frame)
        self.stop_button.setObjectName("linkButton")
        self.stop_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.stop_button.setToolTip("Stop this call and the reply (⌘.)")
        self.stop_button.hide()
        head.addWidget(self.icon)
        head.addWidget(self.title)
        head.addWidget(self.server, 1)
        head.addWidget(self.status)
        head.addWidget(self.stop_button)
        body.addLayout(head)

        self.arguments = QLabel("", self.frame)
        self.arguments.setObjectName("toolCardArguments")
        self.arguments.setTextFormat(Qt.TextFormat.PlainText)
        self.arguments.setWordWrap(True)
        self.arguments.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.arguments.setFont(th.mono_font(th.SMALL_PX))
        body.addWidget(self.arguments)

        self.result = QLabel("", self.frame)
        self.result.setObjectName("toolCardResult")
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result.setFont(th.mono_font(th.SMALL_PX))
        self.result.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        body.addWidget(self.result)

        foot = QHBoxLayout()
        foot.setContentsMargins(0, 0, 0, 0)
        foot.setSpacing(8)
        self.note = QLabel("", self.frame)
        self.note.setObjectName("toolCardNote")
        self.note.setWordWrap(True)
        self.more = QPushButton("Show all", self.frame)
        self.more.setObjectName("linkButton")
        self.more.setCursor(Qt.CursorShape.PointingHandCursor)
        foot.addWidget(self.note, 1)
        foot.addWidget(self.more)
        body.addLayout(foot)

        self._expanded = False
        self._started = time.monotonic()
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._update_status)
        self.more.clicked.connect(self._toggle_more)
        self.stop_button.clicked.connect(self.stop_requested)
        self._render()

    # ---------------------------------------------------------------------------------------------- state
    @property
    def tool(self) -> dict[str, Any]:
        tool = self.message.get("tool")
        return tool if isinstance(tool, dict) else {}

    @property
    def call_id(self) -> str:
        return str(self.message.get("call_id") or self.message.get("sid") or "")

    def set_pending(self, pending: str | None) -> None:
        """ "asking" (the consent question is open), "running", or None (finished: see :meth:`finish`)."""
        self.message["pending"] = pending
        if pending == "running":
            self._started = time.monotonic()
        self._render()

    def finish(self, message: dict[str, Any]) -> None:
        """The call's outcome: the environment message (``content``, ``tool``, ``sid``)."""
        merged = {**self.message, **message, "pending": None}
        self.update_meta(merged)

    def same_content(self, message: dict[str, Any]) -> bool:
        return (
            message.get("role") == "environment"
            and not self.message.get("pending")
            and (message.get("content") or "") == (self.message.get("content") or "")
        )

    def update_meta(self, message: dict[str, Any]) -> None:
        super().update_meta(message)
        self._render()

    def status_text(self) -> str:
        return self.status.text()

    def result_text(self) -> str:
        return self.result.text()

    # ---------------------------------------------------------------------------------------------- drawing
    def _render(self) -> None:
        tool = self.tool
        name = str(tool.get("name") or "")
        self.icon.setPixmap(th.pixmap("chip", 16, "muted"))
        self.title.setText(name or "Tool call")
        self.server.setText(f"· {tool['server']}" if tool.get("server") else "")
        arguments = tool.get("arguments")
        shown = call_text(name, arguments) if name else ""
        if len(shown) > ARGUMENT_CHARS:
            shown = shown[:ARGUMENT_CHARS] + "…"
        self.arguments.setText(shown)
        self.arguments.setVisible(bool(shown))
        pending = self.message.get("pending")
        text = str(self.message.get("content") or "")
        self.result.setVisible(bool(text) and not pending)
        lines = text.splitlines()
        long = len(lines) > PREVIEW_LINES or len(text) > PREVIEW_CHARS
        if long and not self._expanded:
            preview = "\n".join(lines[:PREVIEW_LINES])[:PREVIEW_CHARS]
            self.result.setText(preview.rstrip() + "\n…")
        else:
            self.result.setText(text)
        self.more.setVisible(long and not pending)
        self.more.setText("Show less" if self._expanded else f"Show all ({len(lines):,} lines)")
        notes = []
        cut = tool.get("cut_chars")
        if isinstance(cut, int) and cut > 0:
            notes.append(f"Long result: the model got the first part; {cut:,} more characters were left out.")
        if pending == "asking":
            notes.append("Olmo wants to use this tool: answer the question to go on.")
        self.note.setText(" ".join(notes))
        self.note.setVisible(bool(notes))
        self.stop_button.setVisible(pending == "running")
        if pending == "running":
            self._tick.start()
        else:
            self._tick.stop()
        self._update_status()

    def _update_status(self) -> None:
        text, kind = status_of(self.message)
        if kind == "running":
            text = f"Running… {time.monotonic() - self._started:.0f} s"
        self.status.setText(text)
        if self.status.property("kind") != kind:
            self.status.setProperty("kind", kind)
            self.status.style().unpolish(self.status)
            self.status.style().polish(self.status)
        self.frame.setProperty("kind", kind)
        self.frame.style().unpolish(self.frame)
        self.frame.style().polish(self.frame)

    def _toggle_more(self) -> None:
        self._expanded = not self._expanded
        self._render()

    def apply_theme(self) -> None:
        super().apply_theme()
        self._render()
