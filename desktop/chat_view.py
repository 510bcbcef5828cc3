"""The conversation column: user bubbles, assistant replies, reasoning, hover actions and streaming.

:class:`ChatView` is a scroll area holding one centred column of message widgets. It never talks to the engine;
it shows what it is given and emits signals for what the user asks for (regenerate, edit & resend, switch branch,
retry). Streaming text goes through :meth:`ChatView.append_delta`, which only buffers; a single-shot timer flushes
the buffers into the :class:`~desktop.rich_text.MarkdownView` of the streaming message at most every 16 ms, so
the GUI thread does a bounded amount of work per frame however fast tokens arrive.

Signals:
    regenerate_requested(): regenerate the last reply.
    edit_requested(int, str): resend user turn ``i`` with new text.
    branch_requested(int, int): show alternative ``b`` of user turn ``i``.
    retry_requested(): the last reply was interrupted or failed; try again.
    copied(str): text was put on the clipboard (the window shows a small toast).
    stop_requested(): the inline "Stop" of a pending reply was clicked.
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QPoint, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QPainter, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import markdown as md
from desktop import theme as th
from desktop.rich_text import MarkdownView, ProseView

COLUMN_MAX = 760  # text width of the conversation column
EAGER_MESSAGES = 8  # a conversation opens with its last messages built; older ones follow in the background
BACKFILL_BUDGET_S = 0.008  # GUI time per background step that builds older messages
COLUMN_PAD = 28
FLUSH_INTERVAL_MS = 16  # ≤ 60 Hz


def _tool(icon_name: str, tip: str, parent: QWidget, object_name: str = "msgAction") -> QToolButton:
    button = QToolButton(parent)
    button.setObjectName(object_name)
    button.setIcon(th.icon(icon_name, "muted"))
    button.setIconSize(QSize(15, 15))
    button.setToolTip(tip)
    button.setAccessibleName(tip)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    button.setAutoRaise(True)
    button.setProperty("iconName", icon_name)
    return button


def _retheme_tools(widget: QWidget) -> None:
    for button in widget.findChildren(QToolButton):
        name = button.property("iconName")
        if name:
            button.setIcon(th.icon(str(name), str(button.property("iconColor") or "muted")))


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


class BranchSwitcher(QWidget):
    """‹ 2 / 3 › for the alternatives of one user turn.

    Signals:
        switch(int): the branch index asked for.
    """

    switch = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("branchSwitcher")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        self.prev_button = _tool("chevron-left", "Previous version", self)
        self.next_button = _tool("chevron-right", "Next version", self)
        self.label = QLabel("1 / 1", self)
        self.label.setObjectName("branchLabel")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        row.addWidget(self.prev_button)
        row.addWidget(self.label)
        row.addWidget(self.next_button)
        self._index = 0
        self._count = 1
        self.prev_button.clicked.connect(self._prev)
        self.next_button.clicked.connect(self._next)

    def set_branch(self, index: int, count: int) -> None:
        self._index, self._count = index, count
        self.label.setText(f"{index + 1} / {count}")
        self.prev_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < count - 1)
        self.setVisible(count > 1)

    def _prev(self) -> None:
        if self._index > 0:
            self.switch.emit(self._index - 1)

    def _next(self) -> None:
        if self._index < self._count - 1:
            self.switch.emit(self._index + 1)


class MessageWidget(QWidget):
    """Common parts: the hover action row and the message dict it shows."""

    def __init__(self, message: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = dict(message)
        self.actions = QWidget(self)
        self.actions.setObjectName("messageActions")
        policy = self.actions.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.actions.setSizePolicy(policy)
        self._pinned_actions = False
        self._hover_buttons: list[QWidget] = []
        self.setAttribute(Qt.WidgetAttribute.WA_Hover, True)

    @property
    def role(self) -> str:
        return str(self.message.get("role", ""))

    def content(self) -> str:
        return str(self.message.get("content", ""))

    def _register_hover(self, *buttons: QWidget) -> None:
        for button in buttons:
            policy = button.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            button.setSizePolicy(policy)
            self._hover_buttons.append(button)
        self._show_hover(False)

    def _show_hover(self, visible: bool) -> None:
        for button in self._hover_buttons:
            button.setVisible(visible and not button.property("forceHidden"))

    def set_actions_pinned(self, pinned: bool) -> None:
        """The last reply keeps its actions visible; the others show them on hover."""
        self._pinned_actions = pinned
        self._show_hover(pinned or self.underMouse())

    def enterEvent(self, event) -> None:
        self._show_hover(True)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self._show_hover(self._pinned_actions)
        super().leaveEvent(event)

    def hover_buttons_visible(self) -> bool:
        return any(b.isVisible() for b in self._hover_buttons)

    def same_content(self, message: dict[str, Any]) -> bool:
        return (
            message.get("role") == self.message.get("role")
            and (message.get("content") or "") == (self.message.get("content") or "")
            and (message.get("reasoning") or "") == (self.message.get("reasoning") or "")
        )

    def update_meta(self, message: dict[str, Any]) -> None:
        self.message = dict(message)

    def apply_theme(self) -> None:
        _retheme_tools(self)


class _EditBox(QPlainTextEdit):
    """The inline editor of "edit & resend": Enter sends, Shift+Enter is a newline, Esc cancels."""

    submit = Signal()
    cancel = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if (
            event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submit.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancel.emit()
            return
        super().keyPressEvent(event)


class UserMessageWidget(MessageWidget):
    """A right-aligned, accent-tinted bubble with copy and edit actions.

    Signals:
        edit_submitted(int, str): user turn index and the edited text.
        copied(str)
        branch(int, int): user turn index, branch index (shown when this turn has no reply to carry the switcher).
    """

    edit_submitted = Signal(int, str)
    copied = Signal(str)
    branch = Signal(object)  # {"sid", "user_turn_index", "branch_index", "which": "user"}

    def __init__(self, message: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(message, parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        self._row = QHBoxLayout()
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.addStretch(1)
        self.bubble = QFrame(self)
        self.bubble.setObjectName("userBubble")
        self.bubble.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        bubble_layout = QVBoxLayout(self.bubble)
        bubble_layout.setContentsMargins(14, 9, 14, 9)
        self.text_view = ProseView(self.bubble)
        bubble_layout.addWidget(self.text_view)
        self._row.addWidget(self.bubble)
        outer.addLayout(self._row)

        self.editor_frame = QFrame(self)
        self.editor_frame.setObjectName("editFrame")
        self.editor_frame.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        editor_layout = QVBoxLayout(self.editor_frame)
        editor_layout.setContentsMargins(12, 10, 12, 10)
        self.editor = _EditBox(self.editor_frame)
        self.editor.setObjectName("editBox")
        self.editor.setFrameShape(QFrame.Shape.NoFrame)
        self.editor.setMinimumHeight(60)
        self.editor.setMaximumHeight(200)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.cancel_edit_button = QPushButton("Cancel", self.editor_frame)
        self.cancel_edit_button.setObjectName("secondaryButton")
        self.send_edit_button = QPushButton("Send", self.editor_frame)
        self.send_edit_button.setObjectName("primaryButton")
        buttons.addWidget(self.cancel_edit_button)
        buttons.addWidget(self.send_edit_button)
        editor_layout.addWidget(self.editor)
        editor_layout.addLayout(buttons)
        self.editor_frame.hide()
        outer.addWidget(self.editor_frame)

        act = QHBoxLayout(self.actions)
        act.setContentsMargins(0, 0, 0, 0)
        act.setSpacing(2)
        act.addStretch(1)
        self.switcher = BranchSwitcher(self.actions)
        self.copy_button = _tool("copy", "Copy message", self.actions)
        self.edit_button = _tool("edit", "Edit and resend", self.actions)
        self.context_label = QLabel("Outside the context window", self.actions)
        self.context_label.setObjectName("messageStats")
        self.context_label.hide()
        act.addWidget(self.context_label)
        act.addWidget(self.switcher)
        act.addWidget(self.copy_button)
        act.addWidget(self.edit_button)
        outer.addWidget(self.actions)
        self._register_hover(self.copy_button, self.edit_button)

        self.copy_button.clicked.connect(self._copy)
        self.edit_button.clicked.connect(self.start_edit)
        self.send_edit_button.clicked.connect(self._submit_edit)
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        self.editor.submit.connect(self._submit_edit)
        self.editor.cancel.connect(self.cancel_edit)
        self.switcher.switch.connect(self._on_switch)
        self._render()

    def _render(self) -> None:
        self.text_view.set_html(md.to_html(self.content()))
        self._apply_meta()
        self._fit_bubble()

    def _apply_meta(self) -> None:
        self.switcher.set_branch(int(self.message.get("branch_index") or 0), int(self.message.get("branch_count") or 1))
        self.context_label.setVisible(self.message.get("in_context") is False)

    def update_meta(self, message: dict[str, Any]) -> None:
        super().update_meta(message)
        self._apply_meta()

    @property
    def user_turn_index(self) -> int:
        return int(self.message.get("user_turn_index") or 0)

    def set_editable(self, editable: bool) -> None:
        self.edit_button.setEnabled(editable)

    def start_edit(self) -> None:
        self.editor.setPlainText(self.content())
        self.bubble.hide()
        self.editor_frame.show()
        self.actions.hide()
        self.editor.setMinimumWidth(0)
        self.editor.setFocus()
        cursor = self.editor.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.editor.setTextCursor(cursor)

    def cancel_edit(self) -> None:
        self.editor_frame.hide()
        self.bubble.show()
        self.actions.show()

    def is_editing(self) -> bool:
        return not self.editor_frame.isHidden()

    def _submit_edit(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text:
            return
        self.cancel_edit()
        self.edit_submitted.emit(self.user_turn_index, text)

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.content())
        self.copied.emit(self.content())

    def _on_switch(self, index: int) -> None:
        self.branch.emit(
            {
                "sid": self.message.get("sid"),
                "user_turn_index": self.user_turn_index,
                "branch_index": index,
                "which": "user",
            }
        )

    def _fit_bubble(self) -> None:
        """Shrink the bubble to its text, up to 80 % of the column."""
        available = max(120, self.width())
        limit = int(available * 0.8)
        doc = self.text_view.document()
        doc.setTextWidth(limit - 28)
        ideal = math.ceil(doc.idealWidth()) + 28 + 2
        self.bubble.setFixedWidth(max(48, min(limit, ideal)))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit_bubble()

    def apply_theme(self) -> None:
        super().apply_theme()
        self.text_view.apply_theme()


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
        layout.addWidget(self.header, 0, Qt.AlignmentFlag.AlignLeft)
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


class AssistantMessageWidget(MessageWidget):
    """A full-width reply: optional reasoning, the answer, an inline notice, and the action row.

    Signals:
        regenerate(), retry(), copied(str), branch(int, int)
    """

    regenerate = Signal()
    retry = Signal()
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
        outer.addWidget(self.reasoning)
        outer.addWidget(self.pending)
        outer.addWidget(self.answer)
        outer.addWidget(self.notice)

        act = QHBoxLayout(self.actions)
        act.setContentsMargins(0, 0, 0, 0)
        act.setSpacing(2)
        self.copy_button = _tool("copy", "Copy reply", self.actions)
        self.regenerate_button = _tool("regenerate", "Regenerate reply", self.actions)
        self.switcher = BranchSwitcher(self.actions)
        self.stats_label = QLabel("", self.actions)
        self.stats_label.setObjectName("messageStats")
        act.addWidget(self.switcher)
        act.addWidget(self.copy_button)
        act.addWidget(self.regenerate_button)
        act.addSpacing(6)
        act.addWidget(self.stats_label)
        act.addStretch(1)
        outer.addWidget(self.actions)
        self._register_hover(self.copy_button, self.regenerate_button, self.stats_label)

        self.copy_button.clicked.connect(self._copy)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.retry_button.clicked.connect(self.retry)
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
            self.show_notice(f"Something went wrong: {message['error']}", kind="error")
        elif reason == "cancelled":
            self.show_notice("Stopped before the reply was complete.", kind="info")
        elif reason == "length":
            self.show_notice("The reply reached the maximum length (Settings → Max tokens).", kind="info")
        else:
            self.notice.hide()
        self.stats_label.setText(str(message.get("stats_text") or ""))

    def update_meta(self, message: dict[str, Any]) -> None:
        super().update_meta(message)
        self._apply_meta()
        if message.get("thought_s") is not None and not self._streaming and message.get("reasoning"):
            self.reasoning.set_text(str(message.get("reasoning")), message.get("thought_s"))

    def show_notice(self, text: str, *, kind: str = "info", retry: bool | None = None) -> None:
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

    # streaming ---------------------------------------------------------------------------------------------------
    def begin_stream(self, *, pending_text: str = "") -> None:
        self._streaming = True
        self._answer_started = False
        self.notice.hide()
        self.actions.hide()
        self.actions.setProperty("streaming", True)
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
        self.actions.show()
        self.pending.hide()
        self.reasoning.stop()
        self.answer.flush()
        self.answer.finish()
        self.answer.show()
        if self.message.get("thought_s") is None and self.reasoning.seconds() is not None:
            self.message["thought_s"] = self.reasoning.seconds()

    # actions ----------------------------------------------------------------------------------------------------
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


class EmptyConversation(QWidget):
    """What an empty conversation shows: a greeting that names the loaded model."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 80, 0, 0)
        layout.setSpacing(8)
        self.logo = QLabel(self)
        self.logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel("What can I help with?", self)
        self.title.setObjectName("emptyTitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.subtitle = QLabel("", self)
        self.subtitle.setObjectName("emptySubtitle")
        self.subtitle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.subtitle.setWordWrap(True)
        layout.addWidget(self.logo)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        self.apply_theme()

    def set_model(self, name: str | None) -> None:
        self.subtitle.setText(f"Chatting with {name}. Everything runs on this Mac." if name else "")

    def apply_theme(self) -> None:
        self.logo.setPixmap(th.pixmap("sparkle", 36, "accent"))


class NewTextPill(QPushButton):
    """ "↓ New text": appears over the bottom of the chat when the user scrolled up during streaming."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__("New text", parent)
        self.setObjectName("newTextPill")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setIcon(th.icon("arrow-down", "accent_text"))
        self.setIconSize(QSize(14, 14))
        self.adjustSize()
        self.hide()

    def apply_theme(self) -> None:
        self.setIcon(th.icon("arrow-down", "accent_text"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a.get("role") == b.get("role")
        and (a.get("content") or "") == (b.get("content") or "")
        and (a.get("reasoning") or "") == (b.get("reasoning") or "")
    )


class ChatView(QScrollArea):
    """The scrolling conversation column. See the module docstring for its signals."""

    regenerate_requested = Signal()
    edit_requested = Signal(int, str)
    branch_requested = Signal(object)
    retry_requested = Signal()
    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget(self)
        content.setObjectName("chatContent")
        outer = QHBoxLayout(content)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.column = QWidget(content)
        self.column.setObjectName("chatColumn")
        self.column.setMaximumWidth(COLUMN_MAX + 2 * COLUMN_PAD)
        self.column.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        outer.addStretch(0)
        outer.addWidget(self.column, 1)
        outer.addStretch(0)
        self._column_layout = QVBoxLayout(self.column)
        self._column_layout.setContentsMargins(COLUMN_PAD, 24, COLUMN_PAD, 28)
        self._column_layout.setSpacing(12)
        self.empty = EmptyConversation(self.column)
        self._column_layout.addWidget(self.empty)
        self._column_layout.addStretch(1)
        self.setWidget(content)

        self._messages: list[MessageWidget] = []
        self._streaming: AssistantMessageWidget | None = None
        self._stick = True
        self._busy = False
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self.flush)
        self.pill = NewTextPill(self.viewport())
        self.pill.clicked.connect(self.scroll_to_bottom)
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)
        self.flush_count = 0  # number of coalesced flushes (the UI benchmark reads it)
        self._older: list[dict[str, Any]] = []  # messages above the built ones, still to be built
        self._anchor_dist: int | None = None
        self._backfill_timer = QTimer(self)
        self._backfill_timer.setSingleShot(True)
        self._backfill_timer.setInterval(0)
        self._backfill_timer.timeout.connect(self._backfill_step)

    # building -------------------------------------------------------------------------------------------------
    def messages(self) -> list[MessageWidget]:
        """The message widgets built so far (older ones may still be pending, see :meth:`finish_backfill`)."""
        return list(self._messages)

    def message_dicts(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._older] + [dict(w.message) for w in self._messages]

    def streaming_widget(self) -> AssistantMessageWidget | None:
        return self._streaming

    def clear(self) -> None:
        self._stop_stream_state()
        self._older = []
        self._backfill_timer.stop()
        self._anchor_dist = None
        for widget in self._messages:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self._messages = []
        self._update_empty()

    def set_messages(self, messages: list[dict[str, Any]]) -> None:
        """Show ``messages`` (the active path), reusing widgets whose content is unchanged.

        Only the first differing message and those after it are rebuilt, so finishing a turn or switching a late
        branch does not re-render the whole conversation. A long conversation shows its last messages at once and
        builds the older ones above them a few at a time on later event-loop turns (never one long stall).
        """
        messages = self._annotate(messages)
        n_older = len(self._older)
        if len(messages) < n_older or any(
            not _same(a, b) for a, b in zip(messages[:n_older], self._older, strict=True)
        ):
            self.clear()
            n_older = 0
        else:
            self._older = messages[:n_older]
        shown = messages[n_older:]
        keep = 0
        while keep < len(shown) and keep < len(self._messages) and self._messages[keep].same_content(shown[keep]):
            keep += 1
        if self._streaming is not None and self._streaming in self._messages[keep:]:
            self._stop_stream_state()
        for widget in self._messages[keep:]:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        del self._messages[keep:]
        for i in range(keep):
            self._messages[i].update_meta(shown[i])
        to_build = shown[keep:]
        if not self._messages and not self._older and len(to_build) > EAGER_MESSAGES:
            self._older = to_build[:-EAGER_MESSAGES]
            to_build = to_build[-EAGER_MESSAGES:]
            self._backfill_timer.start()
        for message in to_build:
            self._append_widget(message)
        self._update_roles()
        self._update_empty()

    def is_backfilling(self) -> bool:
        return bool(self._older)

    def finish_backfill(self) -> None:
        """Build every pending older message now (tests, and before edits that reach that far back)."""
        while self._older:
            self._backfill_one()

    def _backfill_step(self) -> None:
        deadline = time.perf_counter() + BACKFILL_BUDGET_S
        while self._older and time.perf_counter() < deadline:
            self._backfill_one()
        if self._older:
            self._backfill_timer.start()
        else:
            self._update_roles()

    def _backfill_one(self) -> None:
        message = self._older.pop()
        if not self._stick:
            bar = self.verticalScrollBar()
            self._anchor_dist = bar.maximum() - bar.value()  # keep what the user looks at in place
        widget = self._make_widget(message)
        self._column_layout.insertWidget(1, widget)  # 1: after the empty-state widget
        self._messages.insert(0, widget)
        widget.set_actions_pinned(False)

    def add_user_message(self, text: str, user_turn_index: int) -> UserMessageWidget:
        widget = self._append_widget(
            {"role": "user", "content": text, "user_turn_index": user_turn_index, "branch_index": 0, "branch_count": 1}
        )
        assert isinstance(widget, UserMessageWidget)
        self._stick = True
        self._update_empty()
        self._update_roles()
        return widget

    def truncate_from_user_turn(self, user_turn_index: int) -> None:
        """Remove user turn ``i`` and everything after it (edit & resend shows the new text in its place)."""
        self.finish_backfill()
        for idx, widget in enumerate(self._messages):
            if widget.role == "user" and int(widget.message.get("user_turn_index") or 0) >= user_turn_index:
                self.truncate(idx)
                return

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` built message widgets (call :meth:`finish_backfill` first to count all)."""
        if self._streaming is not None and self._streaming in self._messages[count:]:
            self._stop_stream_state()
        for widget in self._messages[count:]:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        del self._messages[count:]
        self._update_roles()
        self._update_empty()

    def remove_last_assistant(self) -> None:
        if self._messages and self._messages[-1].role == "assistant":
            self.truncate(len(self._messages) - 1)

    def _append_widget(self, message: dict[str, Any]) -> MessageWidget:
        widget = self._make_widget(message)
        self._column_layout.insertWidget(len(self._messages) + 1, widget)  # +1: the empty-state widget
        self._messages.append(widget)
        return widget

    def _make_widget(self, message: dict[str, Any]) -> MessageWidget:
        widget: MessageWidget
        if message.get("role") == "user":
            user = UserMessageWidget(message, self.column)
            user.edit_submitted.connect(self.edit_requested)
            user.copied.connect(self.copied)
            user.branch.connect(self.branch_requested)
            widget = user
        else:
            reply = AssistantMessageWidget(message, self.column)
            reply.regenerate.connect(self.regenerate_requested)
            reply.retry.connect(self.retry_requested)
            reply.copied.connect(self.copied)
            reply.branch.connect(self.branch_requested)
            reply.set_regenerate_enabled(False, is_last=False)
            widget = reply
        if isinstance(widget, UserMessageWidget):
            widget.set_editable(not self._busy)
        return widget

    @staticmethod
    def _annotate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop system messages; fill in the user turn index of replies that lack one."""
        shown = [dict(m) for m in messages if m.get("role") in ("user", "assistant")]
        turn = -1
        for message in shown:
            if message["role"] == "user":
                turn = int(message.get("user_turn_index", turn + 1))
                message["user_turn_index"] = turn
            elif "user_turn_index" not in message:
                message["user_turn_index"] = max(turn, 0)
        return shown

    def _update_roles(self) -> None:
        """Only the last reply can be regenerated/retried and keeps its actions visible."""
        last = self._messages[-1] if self._messages else None
        for widget in self._messages:
            if isinstance(widget, AssistantMessageWidget):
                is_last = widget is last
                widget.set_actions_pinned(is_last and not widget.is_streaming())
                widget.set_regenerate_enabled(not self._busy, is_last=is_last)
            elif isinstance(widget, UserMessageWidget):
                widget.set_editable(not self._busy)
                widget.set_actions_pinned(False)

    def _update_empty(self) -> None:
        self.empty.setVisible(not self._messages and not self._older)

    def set_model_name(self, name: str | None) -> None:
        self.empty.set_model(name)

    def set_busy(self, busy: bool) -> None:
        """While a job runs, actions that would start another one are disabled."""
        self._busy = busy
        self._update_roles()

    # streaming ------------------------------------------------------------------------------------------------
    def begin_assistant(self, *, pending_text: str = "") -> AssistantMessageWidget:
        """Add an assistant message that is waiting for its first token."""
        widget = self._append_widget({"role": "assistant", "content": "", "reasoning": ""})
        assert isinstance(widget, AssistantMessageWidget)
        widget.begin_stream(pending_text=pending_text)
        self._streaming = widget
        self._stick = True
        self._update_roles()
        self._update_empty()
        return widget

    def set_pending_text(self, text: str) -> None:
        if self._streaming is not None:
            self._streaming.set_pending_text(text)

    def append_delta(self, text: str, channel: str = "answer") -> None:
        """Buffer streamed text; rendering happens in :meth:`flush` at most every 16 ms."""
        if self._streaming is None:
            return
        self._streaming.append(text, channel)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Render buffered text of the streaming reply (called by the coalescing timer)."""
        self._flush_timer.stop()
        if self._streaming is None:
            return
        self._streaming.flush()
        self.flush_count += 1
        if not self._stick:
            self._show_pill()

    def end_stream(self, message: dict[str, Any] | None = None) -> AssistantMessageWidget | None:
        """Finish the streaming reply; ``message`` (the final reply dict) replaces its metadata."""
        widget = self._streaming
        if self._flush_timer.isActive():
            self.flush()  # text still buffered (a fast reply can end within one 16 ms tick): render it the usual way
        self._flush_timer.stop()
        if widget is None:
            return None
        widget.end_stream()
        if message is not None:
            merged = dict(widget.message)
            merged.update({k: v for k, v in message.items() if v is not None})
            if merged.get("thought_s") is None and widget.reasoning.seconds() is not None:
                merged["thought_s"] = widget.reasoning.seconds()
            content_changed = (merged.get("content") or "") != widget.content()
            widget.update_meta(merged)
            if content_changed:  # the engine's final text differs from what streamed (rare): show the truth
                widget.answer.set_markdown(str(merged.get("content") or ""))
        self._streaming = None
        self._update_roles()
        return widget

    def fail_stream(self, error: str) -> None:
        """The job failed mid-reply: keep what streamed and show the error inline with Retry."""
        if self._streaming is None:
            self.begin_assistant()
        self.end_stream({"error": error})

    def _stop_stream_state(self) -> None:
        self._flush_timer.stop()
        self._streaming = None

    # scrolling ------------------------------------------------------------------------------------------------
    def is_at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 8

    def scroll_to_bottom(self) -> None:
        self._stick = True
        self.pill.hide()
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(maximum)
        elif self._anchor_dist is not None:
            self.verticalScrollBar().setValue(maximum - self._anchor_dist)
            if not self._older:
                self._anchor_dist = None

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._stick = value >= bar.maximum() - 8
        if self._stick:
            self.pill.hide()

    def _show_pill(self) -> None:
        self.pill.adjustSize()
        self._place_pill()
        self.pill.show()
        self.pill.raise_()

    def _place_pill(self) -> None:
        viewport = self.viewport()
        self.pill.move((viewport.width() - self.pill.width()) // 2, viewport.height() - self.pill.height() - 14)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place_pill()

    def apply_theme(self) -> None:
        self.empty.apply_theme()
        self.pill.apply_theme()
        for widget in self._messages:
            widget.apply_theme()
