"""Attached documents on screen: chips (composer and sent messages), the "Sources" line, and the passage viewer.

- :class:`DocumentChip`: file icon, name, and one line of detail: "Reading…", "12 pages · 3,400 tokens · whole" (or
  "4 passages"), or the one-sentence reason the file can't be attached (then the chip is tinted as an error). A
  composer chip has a × that removes it before sending.
- :class:`ChipRow`: chips that wrap onto more lines (:class:`FlowLayout`).
- :class:`SourcesLine`: "Sources", then each file a reply's turn read with a link-styled button per passage
  ("page 5", "pages 9–10") or "whole document"; clicking one emits which.
- :class:`PassageDialog`: a passage (or a whole document) as plain text, with its file and pages in the title.

Document text is shown as plain text everywhere (never HTML): it is content.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLayoutItem,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetItem,
)

from desktop import theme as th
from desktop.elided import ElidedLabel

CHIP_NAME_MAX = 280  # px of a file name before it is elided (the full name is in the tooltip)


class FlowLayout(QLayout):
    """Lays widgets out left to right and wraps them onto new lines (Qt's flow-layout example, trimmed)."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6, align_right: bool = False) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self._right = align_right
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), apply=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._arrange(rect, apply=True)

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size

    def _arrange(self, rect: QRect, *, apply: bool) -> int:
        lines: list[list[tuple[QLayoutItem, QSize]]] = [[]]
        x = 0
        for item in self._items:
            widget = item.widget()
            if widget is not None and widget.isHidden():
                continue
            hint = item.sizeHint().boundedTo(QSize(rect.width(), 10_000))
            if lines[-1] and x + hint.width() > rect.width():
                lines.append([])
                x = 0
            lines[-1].append((item, hint))
            x += hint.width() + self._spacing
        y = rect.y()
        for line in lines:
            if not line:
                continue
            height = max(h.height() for _i, h in line)
            used = sum(h.width() for _i, h in line) + self._spacing * (len(line) - 1)
            x = rect.x() + (rect.width() - used if self._right else 0)
            for item, hint in line:
                if apply:
                    item.setGeometry(QRect(QPoint(x, y + (height - hint.height()) // 2), hint))
                x += hint.width() + self._spacing
            y += height + self._spacing
        return max(0, y - rect.y() - self._spacing)


class DocumentChip(QFrame):
    """One document: icon, name and a line of detail; tinted with the reason when the file can't be attached.

    Signals:
        remove_requested(): the × was clicked (composer chips only).
    """

    remove_requested = Signal()

    def __init__(self, name: str, *, removable: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("docChip")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.setMaximumWidth(420)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 5, 4 if removable else 10, 5)
        row.setSpacing(8)
        self.icon = QLabel(self)
        self.icon.setFixedSize(18, 18)
        text = QVBoxLayout()
        text.setContentsMargins(0, 0, 0, 0)
        text.setSpacing(0)
        self.name_label = ElidedLabel(name, self)
        self.name_label.setObjectName("docChipName")
        self.name_label.setMaximumWidth(CHIP_NAME_MAX)
        self.name_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.detail = QLabel("", self)
        self.detail.setObjectName("docChipDetail")
        self.detail.setMaximumWidth(360)
        text.addWidget(self.name_label)
        text.addWidget(self.detail)
        row.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignVCenter)
        row.addLayout(text)
        self.remove_button: QToolButton | None = None
        if removable:
            self.remove_button = QToolButton(self)
            self.remove_button.setObjectName("docChipRemove")
            self.remove_button.setIconSize(QSize(12, 12))
            self.remove_button.setToolTip(f"Remove {name}")
            self.remove_button.setAccessibleName(f"Remove {name}")
            self.remove_button.setCursor(Qt.CursorShape.PointingHandCursor)
            self.remove_button.clicked.connect(self.remove_requested)
            row.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignTop)
        self.name = name
        self.state = "ready"
        self.setToolTip(name)
        self.apply_theme()

    def set_detail(self, text: str, state: str = "ready") -> None:
        """``state``: "reading", "ready" or "error" (the detail is then the reason)."""
        self.state = state
        self.detail.setWordWrap(state == "error")  # a reason may need two lines; the numbers never do
        self.detail.setText(text)
        if state == "error":  # a wrapping label asks for little width: give a short reason its one line
            self.detail.setMinimumWidth(min(self.detail.fontMetrics().horizontalAdvance(text) + 4, 320))
        self.setProperty("state", state)
        self.setToolTip(f"{self.name}\n{text}" if text else self.name)
        for widget in (self, self.detail):
            widget.style().unpolish(widget)
            widget.style().polish(widget)
        self.apply_theme()

    def apply_theme(self) -> None:
        error = self.state == "error"
        self.icon.setPixmap(th.pixmap("warning" if error else "document", 18, "danger" if error else "accent"))
        if self.remove_button is not None:
            self.remove_button.setIcon(th.icon("close", "muted"))


def chip_detail(attachment: Any) -> str:
    """ "12 pages · 3,400 tokens · whole" for a turn's attachment (a :class:`~olmo3.docs.prompt.TurnAttachment`)."""
    return attachment.chip_label.split(" · ", 1)[1] if " · " in attachment.chip_label else attachment.chip_label


class ChipRow(QWidget):
    """Chips that wrap; hidden while empty."""

    def __init__(self, parent: QWidget | None = None, *, align_right: bool = False) -> None:
        super().__init__(parent)
        self.flow = FlowLayout(self, spacing=6, align_right=align_right)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.hide()

    def chips(self) -> list[DocumentChip]:
        items = (self.flow.itemAt(i) for i in range(self.flow.count()))
        return [w for item in items if item is not None and isinstance(w := item.widget(), DocumentChip)]

    def add(self, chip: DocumentChip) -> DocumentChip:
        chip.setParent(self)
        self.flow.addItem(QWidgetItem(chip))
        chip.show()
        self.setVisible(True)
        self.updateGeometry()
        return chip

    def remove(self, chip: DocumentChip) -> None:
        for i in range(self.flow.count()):
            item = self.flow.itemAt(i)
            if item is not None and item.widget() is chip:
                self.flow.takeAt(i)
                break
        chip.hide()
        chip.deleteLater()
        self.setVisible(bool(self.chips()))
        self.updateGeometry()

    def clear(self) -> None:
        for chip in self.chips():
            self.remove(chip)

    def set_documents(self, documents: list[Any]) -> None:
        """Show a sent message's documents (read-only chips)."""
        self.clear()
        for a in documents:
            self.add(DocumentChip(a.name)).set_detail(chip_detail(a))

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self.flow.heightForWidth(width)

    def sizeHint(self) -> QSize:
        width = self.width() if self.width() > 0 else 600
        return QSize(width, self.flow.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        return QSize(0, self.flow.heightForWidth(max(self.width(), 1)) if self.chips() else 0)

    def apply_theme(self) -> None:
        for chip in self.chips():
            chip.apply_theme()


def source_label(attachment: Any, hit: Any | None) -> str:
    """ "report.pdf, pages 9–10" or "memo.docx, whole document": what a source button shows and says."""
    return f"{attachment.name}, {hit.page_label if hit is not None else 'whole document'}"


class SourcesLine(QWidget):
    """ "Sources", then per file its name and a link per passage (or "whole document") the reply's turn read.

    Signals:
        source_clicked(object): ``(TurnAttachment, Hit | None)``: the passage, or None for a whole document.
    """

    source_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sourcesLine")
        self.flow = FlowLayout(self, spacing=2)
        self.caption = QLabel("Sources", self)
        self.caption.setObjectName("sourcesCaption")
        self.flow.addWidget(self.caption)
        self.buttons: list[QPushButton] = []
        self._names: list[QLabel] = []  # the files' names
        self.hide()

    def set_sources(self, documents: list[Any]) -> None:
        for widget in [*self.buttons, *self._names]:
            self.flow.removeWidget(widget)
            widget.deleteLater()
        self.buttons, self._names = [], []
        for a in documents:
            hits = a.passages if a.mode == "retrieved" else (None,)
            if not hits:
                continue
            # A dot before each file after the first (on the name itself, so it never dangles at a line's end).
            name = ElidedLabel(f"·  {a.name}" if self._names else a.name, self)
            name.setObjectName("sourceFile")
            name.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
            name.setMaximumWidth(320)
            name.setToolTip(a.name)
            self.flow.addWidget(name)
            self._names.append(name)
            for hit in hits:
                label = hit.page_label if hit is not None else "whole document"
                button = QPushButton(label, self)
                button.setObjectName("sourceLink")
                button.setCursor(Qt.CursorShape.PointingHandCursor)
                what = source_label(a, hit)
                button.setToolTip(f"Show {what}")
                button.setAccessibleName(what)
                button.clicked.connect(lambda _=False, a=a, hit=hit: self.source_clicked.emit((a, hit)))
                self.flow.addWidget(button)
                self.buttons.append(button)
        self.setVisible(bool(self.buttons))
        self.updateGeometry()

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self.flow.heightForWidth(width)

    def sizeHint(self) -> QSize:
        width = self.width() if self.width() > 0 else 600
        return QSize(width, self.flow.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        return QSize(0, self.flow.heightForWidth(max(self.width(), 1)) if self.buttons else 0)


def reflow(text: str) -> str:
    """PDF text for reading: lines broken by the page layout are joined; paragraphs (blank lines) stay."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


class PassageDialog(QDialog):
    """A passage or a document, as plain text, titled with its file and pages."""

    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("passageDialog")
        self.setWindowTitle(title)
        self.resize(640, 460)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 12)
        layout.setSpacing(10)
        self.heading = QLabel(title, self)
        self.heading.setObjectName("passageTitle")
        self.heading.setWordWrap(True)
        self.view = QPlainTextEdit(self)
        self.view.setObjectName("passageText")
        self.view.setReadOnly(True)
        self.view.setPlainText(text)
        self.view.setFont(th.ui_font(th.BODY_PX))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        layout.addWidget(self.heading)
        layout.addWidget(self.view, 1)
        layout.addWidget(buttons)

    def text(self) -> str:
        return self.view.toPlainText()
