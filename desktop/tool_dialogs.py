"""The question before a tool runs: "Allow Olmo to use add?" with Allow Once, Always Allow, Deny.

It is window-modal (a sheet on macOS) but not blocking: the controller opens it and carries on; the engine thread
waits for the answer (``olmo3.chat.tool_turns``). ``decided`` gives "once", "always" or "deny"; closing the
question any other way (Esc, the window closing, the turn being stopped) counts as "deny".
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from desktop import theme as th


class ConsentDialog(QDialog):
    """See the module docstring. ``request`` is an ``olmo3.chat.events.ToolCallRequested``."""

    decided = Signal(str)

    def __init__(self, request: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("consentDialog")
        self.setWindowTitle("Allow a tool?")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.request = request
        self.decision: str | None = None
        self.setFixedWidth(460)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 18, 20, 16)
        layout.setSpacing(10)

        head = QHBoxLayout()
        head.setSpacing(10)
        icon = QLabel(self)
        icon.setPixmap(th.pixmap("chip", 28, "accent"))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.title = QLabel(f"Allow Olmo to use “{request.name}”?", self)
        self.title.setObjectName("infoTitle")
        self.title.setWordWrap(True)
        head.addWidget(icon)
        head.addWidget(self.title, 1)
        layout.addLayout(head)

        where = f"A tool of the MCP server “{request.server}”." if request.server else "A tool of an MCP server."
        description = str(getattr(request, "description", "") or "").strip()
        self.about = QLabel(where + (f" {description}" if description else ""), self)
        self.about.setWordWrap(True)
        self.about.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.about)

        arguments = request.arguments if isinstance(request.arguments, dict) else {}
        layout.addWidget(QLabel("With these arguments:" if arguments else "Without arguments.", self))
        self.arguments = QPlainTextEdit(self)
        self.arguments.setObjectName("toolArguments")
        self.arguments.setReadOnly(True)
        self.arguments.setPlainText(json.dumps(arguments, indent=2, ensure_ascii=False))
        # Room for the arguments as they wrap at this width (up to 12 lines; more scroll).
        metrics = QFontMetrics(th.mono_font(th.SMALL_PX))
        per_line = max(20, (460 - 40 - 24) // max(1, metrics.horizontalAdvance("x")))
        text_lines = self.arguments.toPlainText().splitlines() or [""]
        lines = min(12, sum(max(1, -(-len(line) // per_line)) for line in text_lines))
        self.arguments.setFixedHeight((lines + 1) * metrics.lineSpacing() + 14)
        self.arguments.setVisible(bool(arguments))
        layout.addWidget(self.arguments)

        hint = QLabel(
            "Tools can read and change things on this Mac or online. “Always Allow” lets this tool run without "
            "asking from now on; Settings → Tools undoes it.",
            self,
        )
        hint.setObjectName("formHint")
        hint.setWordWrap(True)
        layout.addWidget(hint)

        buttons = QHBoxLayout()
        buttons.setSpacing(10)
        self.deny_button = QPushButton("Deny", self)
        self.always_button = QPushButton("Always Allow", self)
        self.once_button = QPushButton("Allow Once", self)
        self.once_button.setObjectName("primaryButton")
        self.once_button.setDefault(True)
        for button in (self.deny_button, self.always_button, self.once_button):
            button.setMinimumWidth(96)
        buttons.addWidget(self.deny_button)
        buttons.addStretch(1)
        buttons.addWidget(self.always_button)
        buttons.addWidget(self.once_button)
        layout.addLayout(buttons)

        self.deny_button.clicked.connect(lambda: self._decide("deny"))
        self.always_button.clicked.connect(lambda: self._decide("always"))
        self.once_button.clicked.connect(lambda: self._decide("once"))
        self.finished.connect(lambda _code: self._decide("deny"))

    def _decide(self, decision: str) -> None:
        if self.decision is not None:
            return
        self.decision = decision
        self.decided.emit(decision)
        if self.isVisible():
            self.done(QDialog.DialogCode.Accepted if decision != "deny" else QDialog.DialogCode.Rejected)
