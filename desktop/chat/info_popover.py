"""The Info popover of a reply: what it was made with (model, weights, sampling, seed, budget, KV, cache), a warning
when the loaded model differs, and Reproduce (regenerate with exactly those settings)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop import provenance


class InfoPopover(QWidget):
    """A popup card; ``reproduce`` fires when Reproduce is clicked (the popover then closes).

    Signals:
        reproduce(), copied(str)
    """

    reproduce = Signal()
    copied = Signal(str)

    def __init__(
        self,
        message: dict[str, Any],
        *,
        note: str | None = None,
        can_reproduce: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent, Qt.WindowType.Popup | Qt.WindowType.FramelessWindowHint)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        self._data = message.get("provenance") if isinstance(message.get("provenance"), dict) else {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.card = QFrame(self)
        self.card.setObjectName("infoPopover")
        self.card.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        outer.addWidget(self.card)
        layout = QVBoxLayout(self.card)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(10)
        title = QLabel("About this reply", self.card)
        title.setObjectName("infoTitle")
        layout.addWidget(title)

        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(5)
        self.rows = provenance.rows(self._data, message.get("stats"))
        for i, (label, value) in enumerate(self.rows):
            key = QLabel(label, self.card)
            key.setObjectName("infoKey")
            key.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            val = QLabel(value, self.card)
            val.setObjectName("infoValue")
            val.setWordWrap(True)
            val.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(key, i, 0)
            grid.addWidget(val, i, 1)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)

        self.note = QLabel(note or "", self.card)
        self.note.setObjectName("infoNote")
        self.note.setWordWrap(True)
        self.note.setVisible(bool(note))
        layout.addWidget(self.note)

        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        self.copy_button = QPushButton("Copy details", self.card)
        self.reproduce_button = QPushButton("Reproduce", self.card)
        self.reproduce_button.setObjectName("primaryButton")
        self.reproduce_button.setEnabled(can_reproduce and bool(self.rows))
        self.reproduce_button.setToolTip(
            "Regenerate this reply with exactly these settings and seed"
            if can_reproduce
            else "Only the last reply can be reproduced, when nothing else is running"
        )
        if not self.reproduce_button.isEnabled():
            hint = QLabel("Reproduce works on the last reply, when nothing else is running.", self.card)
            hint.setObjectName("infoKey")
            hint.setWordWrap(True)
            layout.addWidget(hint)
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.reproduce_button)
        layout.addLayout(buttons)
        self.copy_button.clicked.connect(self._copy)
        self.reproduce_button.clicked.connect(self._reproduce)
        self.card.setFixedWidth(440)

    def show_below(self, anchor: QWidget) -> None:
        """Open under ``anchor`` (the Info button), or above it when the window has no room below."""
        self.adjustSize()
        window = anchor.window()
        area = window.geometry() if window is not None else anchor.screen().availableGeometry()
        pos = anchor.mapToGlobal(QPoint(0, anchor.height() + 4))
        pos.setX(max(area.left() + 8, min(pos.x(), area.right() - self.width() - 8)))
        if pos.y() + self.height() > area.bottom() - 8:
            pos.setY(anchor.mapToGlobal(QPoint(0, 0)).y() - self.height() - 4)
        pos.setY(max(area.top() + 8, min(pos.y(), area.bottom() - 8 - self.height())))  # inside the window
        self.move(pos)
        self.show()

    def json_text(self) -> str:
        return json.dumps(self._data, indent=2, sort_keys=True)

    def _copy(self) -> None:
        text = self.json_text()
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)

    def _reproduce(self) -> None:
        self.reproduce.emit()
        self.close()
