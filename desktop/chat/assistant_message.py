"""The assistant's reply: reasoning, the streamed answer, an inline notice (error, stopped, too long) and actions.

While a reply has been asked for but no token has arrived yet it shows a :class:`TypingIndicator` and a short
note (e.g. "Reading the conversation…"). Under a finished reply, "Sources" lists the passages (file and pages) and
whole documents its turn read (``message["sources"]``); clicking one shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPainter
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop import provenance
from desktop import theme as th
from desktop.chat.branch_switcher import BranchSwitcher
from desktop.chat.info_popover import InfoPopover
from desktop.chat.message import MessageWidget, tool_button
from desktop.chat.reasoning import ReasoningBlock
from desktop.chips import SourcesLine
from desktop.rich_text import MarkdownView


def error_text(error: str) -> str:
    """What a failed reply says: out-of-memory errors as what to do, others as "Something went wrong: …"."""
    from olmo3.memory import describe_error

    friendly = describe_error(error)
    return friendly if friendly != error else f"Something went wrong: {error}"


class TypingIndicator(QWidget):
    """Three softly pulsing dots shown while a reply has been asked for but no token has arrived yet."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedSize(40, 18)
        self._phase = 0
        self._timer = QTimer(self)
        self._timer.setInterval(120)
        self._timer.timeout.connect(self._tick)

    def showEvent(self, event) -> None:
        self._timer.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:
        self._timer.stop()
        super().hideEvent(event)

    def _tick(self) -> None:
        self._phase = (self._phase + 1) % 12
        self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        base = th.current().qcolor("muted")
        for i in range(3):
            phase = (self._phase - i * 2) % 12
            alpha = 0.3 + 0.7 * max(0.0, math.cos(phase / 12 * 2 * math.pi))
            color = QColor(base)
            color.setAlphaF(alpha)
            painter.setBrush(color)
            painter.drawEllipse(QPoint(6 + i * 12, 9), 3.5, 3.5)


class AssistantMessageWidget(MessageWidget):
    """A full-width reply: optional reasoning, the answer, an inline notice, and the action row.

    Signals:
        regenerate(), retry(), continue_requested() (the reply filled the context), copied(str), branch(int, int),
        reproduce(str): the reply's id
    """

    regenerate = Signal()
    reproduce = Signal(str)
    retry = Signal()
    continue_requested = Signal()
    copied = Signal(str)
    branch = Signal(object)  # {"sid", "user_turn_index", "branch_index", "which": "reply"}

    def __init__(self, message: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(message, parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(8)
        self.reasoning = ReasoningBlock(self)
        self.reasoning.hide()
        self.pending = QWidget(self)
        pending_row = QHBoxLayout(self.pending)
        pending_row.setContentsMargins(0, 4, 0, 4)
        pending_row.setSpacing(8)
        self.typing = TypingIndicator(self.pending)
        self.pending_label = QLabel("", self.pending)
        self.pending_label.setObjectName("pendingLabel")
        pending_row.addWidget(self.typing)
        pending_row.addWidget(self.pending_label)
        pending_row.addStretch(1)
        self.pending.hide()
        self.answer = MarkdownView(self)
        self.notice = QFrame(self)
        self.notice.setObjectName("inlineNotice")
        self.notice.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        notice_row = QHBoxLayout(self.notice)
        notice_row.setContentsMargins(10, 6, 6, 6)
        notice_row.setSpacing(8)
        self.notice_icon = QLabel(self.notice)
        self.notice_label = QLabel("", self.notice)
        self.notice_label.setObjectName("noticeLabel")
        self.notice_label.setWordWrap(True)
        self.retry_button = QPushButton("Retry", self.notice)
        self.retry_button.setObjectName("linkButton")
        self.retry_button.setCursor(Qt.CursorShape.PointingHandCursor)
        notice_row.addWidget(self.notice_icon)
        notice_row.addWidget(self.notice_label, 1)
        notice_row.addWidget(self.retry_button)
        self.notice.hide()
        self.sources = SourcesLine(self)
        outer.addWidget(self.reasoning)
        outer.addWidget(self.pending)
        outer.addWidget(self.answer)
        outer.addWidget(self.sources)
        outer.addWidget(self.notice)

        act = QHBoxLayout(self.action_row)
        act.setContentsMargins(0, 0, 0, 0)
        act.setSpacing(2)
        self.copy_button = tool_button("copy", "Copy reply", self.action_row)
        self.regenerate_button = tool_button("regenerate", "Regenerate reply", self.action_row)
        self.info_button = tool_button("info", "About this reply: model, settings, seed · Reproduce", self.action_row)
        self.switcher = BranchSwitcher(self.action_row)
        self.stats_label = QLabel("", self.action_row)
        self.stats_label.setObjectName("messageStats")
        act.addWidget(self.switcher)
        act.addWidget(self.copy_button)
        act.addWidget(self.regenerate_button)
        act.addWidget(self.info_button)
        act.addSpacing(6)
        act.addWidget(self.stats_label)
        act.addStretch(1)
        outer.addWidget(self.action_row)
        self._register_hover(self.copy_button, self.regenerate_button, self.info_button, self.stats_label)
        # Why a reproduction could differ now (another model loaded, 8-bit KV switched): set by the chat view.
        self.reproduce_note: Callable[[dict[str, Any]], str | None] = lambda _provenance: None
        self.popover: InfoPopover | None = None
        self._can_reproduce = False

        self.copy_button.clicked.connect(self._copy)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.retry_button.clicked.connect(self._on_notice_action)
        self._notice_action = "retry"
        self.info_button.clicked.connect(self.show_info)
        self.switcher.switch.connect(self._on_switch)
        self._streaming = False
        self._answer_started = False
        self._render()

    # rendering ---------------------------------------------------------------------------------------------------
    def _render(self) -> None:
        reasoning = str(self.message.get("reasoning") or "")
        if reasoning:
            self.reasoning.show()
            self.reasoning.set_text(reasoning, self.message.get("thought_s"))
        else:
            self.reasoning.hide()
        self.answer.set_markdown(self.content())
        self._apply_meta()

    def _apply_meta(self) -> None:
        message = self.message
        self.switcher.set_branch(int(message.get("branch_index") or 0), int(message.get("branch_count") or 1))
        reason = message.get("finish_reason")
        if message.get("error"):
            self.show_notice(error_text(str(message["error"])), kind="error")
        elif reason == "cancelled":
            self.show_notice("Stopped before the reply was complete.", kind="info")
        elif reason == "length":
            self.show_notice("The reply reached the maximum length (Settings → Max tokens).", kind="info")
        elif reason == "context":
            self.show_notice(
                "The reply filled the model's context. Continue goes on without the oldest turns.",
                kind="info",
                action="continue",
            )
        else:
            self.notice.hide()
        self.stats_label.setText(str(message.get("stats_text") or ""))
        self.reasoning.set_note(provenance.reasoning_note(message.get("stats")))
        self.reasoning.note.setToolTip(
            "The thinking budget closed the reasoning here and the answer followed (Settings → Thinking budget)."
        )
        has_provenance = bool(provenance.rows(message.get("provenance")))
        self.info_button.setProperty("forceHidden", not has_provenance)
        self._show_hover(self._pinned_actions or self.underMouse())
        if not self._streaming:
            self.sources.set_sources(list(message.get("sources") or ()))

    def update_meta(self, message: dict[str, Any]) -> None:
        super().update_meta(message)
        self._apply_meta()
        if message.get("thought_s") is not None and not self._streaming and message.get("reasoning"):
            self.reasoning.set_text(str(message.get("reasoning")), message.get("thought_s"))

    def show_notice(self, text: str, *, kind: str = "info", retry: bool | None = None, action: str = "retry") -> None:
        """An inline notice under the reply; its button retries, or (``action="continue"``) continues."""
        self._notice_action = action
        self.retry_button.setText("Continue" if action == "continue" else "Retry")
        self.notice.setProperty("kind", kind)
        self.notice.style().unpolish(self.notice)
        self.notice.style().polish(self.notice)
        self.notice_icon.setPixmap(
            th.pixmap("warning" if kind == "error" else "info", 16, "danger" if kind == "error" else "muted")
        )
        self.notice_label.setText(text)
        if retry is not None:
            self.retry_button.setVisible(retry)
        self.notice.show()

    def set_actions_pinned(self, pinned: bool) -> None:
        # The last reply's numbers are already in the status row under the composer.
        self.stats_label.setProperty("forceHidden", pinned)
        super().set_actions_pinned(pinned)

    def set_regenerate_enabled(self, enabled: bool, *, is_last: bool = True) -> None:
        """Only the last reply can be regenerated or retried, and not while another job runs."""
        self.regenerate_button.setProperty("forceHidden", not is_last)
        self.regenerate_button.setEnabled(enabled)
        self.regenerate_button.setVisible(is_last and (self._pinned_actions or self.underMouse()))
        self.retry_button.setVisible(is_last)
        self.retry_button.setEnabled(enabled)
        self._can_reproduce = enabled and is_last

    def show_info(self) -> InfoPopover:
        """The Info popover: what this reply was made with, and Reproduce."""
        if self.popover is not None:  # one at a time; the old one goes once closed
            self.popover.close()
            self.popover.deleteLater()
        data = self.message.get("provenance")
        note = self.reproduce_note(data) if isinstance(data, dict) else None
        popover = InfoPopover(self.message, note=note, can_reproduce=self._can_reproduce, parent=self)
        popover.reproduce.connect(self._reproduce)
        popover.copied.connect(self.copied)
        self.popover = popover
        popover.show_below(self.info_button)
        return popover

    def _reproduce(self) -> None:
        self.reproduce.emit(str(self.message.get("sid") or ""))

    # streaming ---------------------------------------------------------------------------------------------------
    def begin_stream(self, *, pending_text: str = "") -> None:
        self._streaming = True
        self._answer_started = False
        self.notice.hide()
        self.action_row.hide()
        self.action_row.setProperty("streaming", True)
        self.sources.hide()
        self.reasoning.hide()
        self.answer.begin_stream()
        self.answer.hide()
        self.pending.show()
        self.pending_label.setText(pending_text)

    def is_streaming(self) -> bool:
        return self._streaming

    def set_pending_text(self, text: str) -> None:
        self.pending_label.setText(text)

    def append(self, text: str, channel: str) -> None:
        if not self.pending.isHidden():
            self.pending.hide()
        if channel == "reasoning":
            if self.reasoning.isHidden():
                self.reasoning.show()
                self.reasoning.start()
            self.reasoning.view.append(text)
            self.message["reasoning"] = str(self.message.get("reasoning") or "") + text
        else:
            if not self._answer_started:
                self._answer_started = True
                self.reasoning.stop()
                self.answer.show()
            self.answer.append(text)
            self.message["content"] = self.content() + text

    def flush(self) -> None:
        if self.reasoning.view.is_streaming() and self.reasoning.view.has_pending():
            self.reasoning.view.flush()
        if self.answer.has_pending():
            self.answer.flush()

    def end_stream(self) -> None:
        self._streaming = False
        self.action_row.show()
        self.pending.hide()
        self.reasoning.stop()
        self.answer.flush()
        self.answer.finish()
        self.answer.show()
        if self.message.get("thought_s") is None and self.reasoning.seconds() is not None:
            self.message["thought_s"] = self.reasoning.seconds()

    # actions ----------------------------------------------------------------------------------------------------
    def _on_notice_action(self) -> None:
        if self._notice_action == "continue":
            self.continue_requested.emit()
        else:
            self.retry.emit()

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.content())
        self.copied.emit(self.content())

    def _on_switch(self, index: int) -> None:
        self.branch.emit(
            {
                "sid": self.message.get("sid"),
                "user_turn_index": int(self.message.get("user_turn_index") or 0),
                "branch_index": index,
                "which": "reply",
            }
        )

    def apply_theme(self) -> None:
        super().apply_theme()
        self.reasoning.apply_theme()
        self.answer.apply_theme()
        if self.notice.isVisible():
            kind = str(self.notice.property("kind") or "info")
            self.notice_icon.setPixmap(
                th.pixmap("warning" if kind == "error" else "info", 16, "danger" if kind == "error" else "muted")
            )
