"""The ‹ 2 / 3 › switcher between the alternatives of a user turn (shown on both the user bubble and the reply)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from desktop.chat.message import tool_button


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
        self.prev_button = tool_button("chevron-left", "Previous version", self)
        self.next_button = tool_button("chevron-right", "Next version", self)
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
