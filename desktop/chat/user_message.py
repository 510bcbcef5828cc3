"""The user's message: a right-aligned bubble with copy, "edit & resend" (an inline editor) and the branch switcher.

The documents the message carried (``message["documents"]``) show as chips under the bubble.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from desktop import markdown as md
from desktop.chat.branch_switcher import BranchSwitcher
from desktop.chat.message import MessageWidget, tool_button
from desktop.chips import ChipRow
from desktop.rich_text import ProseView


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
        self.chips = ChipRow(self, align_right=True)
        outer.addWidget(self.chips)

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

        act = QHBoxLayout(self.action_row)
        act.setContentsMargins(0, 0, 0, 0)
        act.setSpacing(2)
        act.addStretch(1)
        self.switcher = BranchSwitcher(self.action_row)
        self.copy_button = tool_button("copy", "Copy message", self.action_row)
        self.edit_button = tool_button("edit", "Edit and resend", self.action_row)
        self.context_label = QLabel("Outside the context window", self.action_row)
        self.context_label.setObjectName("messageStats")
        self.context_label.hide()
        act.addWidget(self.context_label)
        act.addWidget(self.switcher)
        act.addWidget(self.copy_button)
        act.addWidget(self.edit_button)
        outer.addWidget(self.action_row)
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
        documents = list(self.message.get("documents") or ())
        if documents or self.chips.chips():
            self.chips.set_documents(documents)

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
        self.action_row.hide()
        self.editor.setMinimumWidth(0)
        self.editor.setFocus()
        cursor = self.editor.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.editor.setTextCursor(cursor)

    def cancel_edit(self) -> None:
        self.editor_frame.hide()
        self.bubble.show()
        self.action_row.show()

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
        self.chips.apply_theme()
