"""The reasoning of a Think model's reply: "Thinking… 4 s" while it streams, then a collapsed, expandable block."""

from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from desktop import theme as th
from desktop.rich_text import MarkdownView


class ReasoningBlock(QWidget):
    """ "Thinking… 4 s" while reasoning streams, then a collapsed "Thought for 12 s ›" that expands."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.header = QToolButton(self)
        self.header.setObjectName("reasoningHeader")
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setCursor(Qt.CursorShape.PointingHandCursor)
        self.header.setCheckable(True)
        self.header.setIconSize(QSize(14, 14))
        self.body = QFrame(self)
        self.body.setObjectName("reasoningBody")
        self.body.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        body_layout = QVBoxLayout(self.body)
        body_layout.setContentsMargins(14, 2, 0, 2)
        self.view = MarkdownView(self.body, muted=True, body_px=th.BODY_PX - 1)
        body_layout.addWidget(self.view)
        self.body.hide()
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.setSpacing(8)
        self.note = QLabel("", self)  # "Reasoning stopped at 4,096 tokens" (the thinking budget closed it)
        self.note.setObjectName("reasoningNote")
        self.note.hide()
        head.addWidget(self.header)
        head.addWidget(self.note)
        head.addStretch(1)
        layout.addLayout(head)
        layout.addWidget(self.body)
        self.header.toggled.connect(self._toggle)
        self._started: float | None = None
        self._seconds: float | None = None
        self._thinking = False
        self._tick = QTimer(self)
        self._tick.setInterval(250)
        self._tick.timeout.connect(self._update_header)
        self._dots = 0
        self._update_header()

    def start(self) -> None:
        self._thinking = True
        self._started = time.monotonic()
        self.view.begin_stream()
        self._tick.start()
        self._update_header()

    def stop(self) -> None:
        """The answer started (or the turn ended): freeze the duration."""
        if self._thinking:
            self._thinking = False
            self._tick.stop()
            if self._started is not None:
                self._seconds = time.monotonic() - self._started
            self.view.flush()
            self.view.finish()
            self._update_header()

    def set_text(self, text: str, seconds: float | None) -> None:
        self._thinking = False
        self._tick.stop()
        self._seconds = seconds
        self.view.set_markdown(text)
        self._update_header()

    def set_note(self, text: str | None) -> None:
        self.note.setText(text or "")
        self.note.setVisible(bool(text))

    def seconds(self) -> float | None:
        return self._seconds

    def is_expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        self.header.setChecked(expanded)

    def _toggle(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self._update_header()

    def _update_header(self) -> None:
        if self._thinking:
            elapsed = time.monotonic() - (self._started or time.monotonic())
            text = f"Thinking… {elapsed:.0f} s"
        elif self._seconds is not None:
            text = f"Thought for {max(1, round(self._seconds))} s"
        else:
            text = "Reasoning"
        self.header.setText(text)
        self.header.setIcon(th.icon("chevron-down" if self.header.isChecked() else "chevron-right", "muted"))

    def apply_theme(self) -> None:
        self._update_header()
        self.view.apply_theme()
