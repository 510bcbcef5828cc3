"""The composer (message field + Send/Stop) and the status row under it (context bar + last reply's stats).

The composer's disabled states explain themselves: without a model it says so and offers a button that opens the
model picker; while a model loads it says which one. While a reply streams, the field stays editable (the next
message can be drafted) and the round Send button turns into a Stop square. :class:`BottomBar` centres both under
the conversation column.

Signals (Composer):
    send_requested(str): the text to send (already stripped, never empty).
    stop_requested(): stop the running job (also during prefill).
    choose_model_requested(): open the model picker.
    attach_requested(): the 📎 button: choose files to attach.
    files_attached(object): local file paths pasted or dropped on the field (a list of str).
    data_attached(str, bytes): a pasted file that has no path (a name made from its type, and its bytes).

Attached documents show as chips above the field (:attr:`Composer.chips`, a :class:`desktop.chips.ChipRow`); while
one is still being read, Send waits and the hint says why (:meth:`Composer.set_documents_note`).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QMimeData, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QPainter, QPainterPath
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.chat import COLUMN_MAX, COLUMN_PAD
from desktop.chips import ChipRow
from desktop.elided import ElidedLabel
from desktop.formatting import format_stats, short_count  # noqa: F401 (re-exported)

MAX_LINES = 8

# Pasted file data that comes without a path (some apps put a document's bytes on the clipboard): its type names it.
PASTED_TYPES = {
    "application/pdf": "Pasted document.pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Pasted document.docx",
}


def local_files(mime: QMimeData) -> list[str]:
    """The local files a drop or paste carries (URLs of other kinds are left to the text field)."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


def pasted_document(mime: QMimeData) -> tuple[str, bytes] | None:
    """A document pasted as data without a path or text (``(name, bytes)``), or None."""
    if mime.hasText() or mime.hasImage() or mime.hasUrls():
        return None
    for kind, name in PASTED_TYPES.items():
        if mime.hasFormat(kind):
            return name, bytes(mime.data(kind).data())
    return None


class ComposerEdit(QTextEdit):
    """Plain-text field that grows to eight lines. Enter sends; Shift+Enter (or Alt+Enter) inserts a newline.

    Files pasted or dropped on it are attached, not inserted as their paths.

    Signals:
        submit(): Enter was pressed.
        files_pasted(object): local file paths (a list of str) pasted or dropped.
        data_pasted(str, bytes): a document pasted as data.
    """

    submit = Signal()
    files_pasted = Signal(object)
    data_pasted = Signal(str, bytes)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composerEdit")
        self.setAcceptRichText(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTabChangesFocus(True)
        self.setFont(th.ui_font(th.BODY_PX))
        self.document().setDocumentMargin(2)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            mods = event.modifiers()
            if mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier):
                self.textCursor().insertText("\n")
                return
            if not (mods & Qt.KeyboardModifier.ControlModifier and mods & Qt.KeyboardModifier.MetaModifier):
                self.submit.emit()
                return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return bool(local_files(source)) or pasted_document(source) is not None or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        files = local_files(source)
        if files:
            self.files_pasted.emit(files)
            return
        data = pasted_document(source)
        if data is not None:
            self.data_pasted.emit(*data)
            return
        super().insertFromMimeData(source)

    def _fit(self, *_args: object) -> None:
        line = self.fontMetrics().lineSpacing()
        margin = 2 * int(self.document().documentMargin()) + 2
        doc_h = math.ceil(self.document().size().height())
        height = max(line + margin, min(doc_h + 2, MAX_LINES * line + margin))
        if height != self.height():
            self.setFixedHeight(height)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def focusInEvent(self, event) -> None:
        super().focusInEvent(event)
        self._mark_focus(True)

    def focusOutEvent(self, event) -> None:
        super().focusOutEvent(event)
        self._mark_focus(False)

    def _mark_focus(self, focused: bool) -> None:
        """The rounded frame around the field shows the focus ring (the field itself has no border)."""
        frame = self.parentWidget()
        if frame is not None:
            frame.setProperty("focused", focused)
            frame.style().unpolish(frame)
            frame.style().polish(frame)


class RoundButton(QToolButton):
    """The circular Send / Stop button (painted: a filled accent circle with a white glyph)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sendButton")
        self.setFixedSize(32, 32)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._glyph = "send"

    def set_glyph(self, glyph: str) -> None:
        self._glyph = glyph
        self.update()

    def glyph(self) -> str:
        return self._glyph

    def paintEvent(self, _event) -> None:
        theme = th.current()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if not self.isEnabled():
            fill = theme.qcolor("field_bg")
            fg = "faint"
        elif self._glyph == "stop":
            fill = theme.qcolor("text")
            fg = "bg"
        else:
            fill = theme.qcolor("accent_hover" if self.underMouse() else "accent")
            fg = "accent_text"
        path = QPainterPath()
        path.addEllipse(QRectF(0.5, 0.5, self.width() - 1, self.height() - 1))
        painter.fillPath(path, fill)
        size = 18 if self._glyph == "send" else 16
        pm = th.pixmap(self._glyph, size, fg)
        painter.drawPixmap((self.width() - size) // 2, (self.height() - size) // 2, pm)
        if self.hasFocus():
            pen = painter.pen()
            pen.setColor(theme.qcolor("accent"))
            pen.setWidthF(2)
            painter.setPen(pen)
            painter.drawEllipse(QRectF(1, 1, self.width() - 2, self.height() - 2))

    def enterEvent(self, event) -> None:
        self.update()
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self.update()
        super().leaveEvent(event)


class Composer(QWidget):
    """Message field + Send/Stop + the self-explaining disabled state. See the module docstring for signals."""

    send_requested = Signal(str)
    stop_requested = Signal()
    choose_model_requested = Signal()
    attach_requested = Signal()
    files_attached = Signal(object)
    data_attached = Signal(str, bytes)

    STATES = ("no_model", "loading", "ready", "generating", "busy")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.frame = QFrame(self)
        self.frame.setObjectName("composerFrame")
        self.frame.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        frame_layout = QVBoxLayout(self.frame)
        frame_layout.setContentsMargins(14, 10, 8, 8)
        frame_layout.setSpacing(4)
        self.edit = ComposerEdit(self.frame)
        self.chips = ChipRow(self.frame)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        self.attach_button = QToolButton(self.frame)
        self.attach_button.setObjectName("composerAttach")
        self.attach_button.setIconSize(QSize(18, 18))
        self.attach_button.setToolTip("Attach files: PDF, Word, text, Markdown, HTML or code (or drop them here)")
        self.attach_button.setAccessibleName("Attach files")
        self.attach_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.hint = QLabel("", self.frame)
        self.hint.setObjectName("composerHint")
        self.choose_button = QPushButton("Choose a model…", self.frame)
        self.choose_button.setObjectName("primaryButton")
        self.choose_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.choose_button.hide()
        self.send_button = RoundButton(self.frame)
        row.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.hint, 1)
        row.addWidget(self.choose_button)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        frame_layout.addWidget(self.chips)
        frame_layout.addWidget(self.edit)
        frame_layout.addLayout(row)
        outer.addWidget(self.frame)
        self.setFocusProxy(self.edit)

        self.edit.submit.connect(self._on_submit)
        self.edit.textChanged.connect(self._update_send_enabled)
        self.send_button.clicked.connect(self._on_button)
        self.choose_button.clicked.connect(self.choose_model_requested)
        self.attach_button.clicked.connect(self.attach_requested)
        self.edit.files_pasted.connect(self.files_attached)
        self.edit.data_pasted.connect(self.data_attached)
        self._state = ""
        self._model_name = ""
        self._choose_elsewhere = False
        self._documents_note = ""
        self._hint = ""
        self.apply_theme()
        self.set_state("no_model")

    # state ------------------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    def set_state(self, state: str, *, model_name: str | None = None, detail: str = "") -> None:
        """Switch between the composer states; each shows a short explanation of what is going on."""
        if state not in self.STATES:
            raise ValueError(f"unknown composer state {state!r}")
        if model_name is not None:
            self._model_name = model_name
        self._state = state
        generating = state == "generating"
        self.send_button.set_glyph("stop" if generating else "send")
        self.send_button.setToolTip("Stop generating (⌘.)" if generating else "Send (Enter)")
        self.send_button.setAccessibleName("Stop" if generating else "Send")
        self.choose_button.setVisible(state == "no_model" and not self._choose_elsewhere)
        self.send_button.setVisible(state != "no_model")
        if state == "no_model":
            self.edit.setEnabled(False)
            self.edit.setPlaceholderText(
                "Pick a model above to start chatting." if self._choose_elsewhere else "No model loaded."
            )
            self.hint.setText("")
        elif state == "loading":
            self.edit.setEnabled(True)
            self.edit.setPlaceholderText(f"Loading {self._model_name or 'the model'}…")
            self.hint.setText(detail or f"Loading {self._model_name}…")
        elif state == "busy":
            self.edit.setEnabled(True)
            self.edit.setPlaceholderText("Message Olmo…")
            self.hint.setText(detail)
        else:
            self.edit.setEnabled(True)
            self.edit.setPlaceholderText("Message Olmo…")
            if generating and not detail:
                stop = QKeySequence("Ctrl+.").toString(QKeySequence.SequenceFormat.NativeText)
                detail = f"Generating · {stop} to stop"
            self.hint.setText(detail)
        if self._documents_note:
            self._hint = self.hint.text()
            self.hint.setText(self._documents_note)
        self._update_send_enabled()

    def set_choose_elsewhere(self, elsewhere: bool) -> None:
        """The screen already offers the models (the welcome panel): no "Choose a model…" button here then."""
        if elsewhere != self._choose_elsewhere:
            self._choose_elsewhere = elsewhere
            self.set_state(self._state)

    def set_hint(self, text: str) -> None:
        self.hint.setText(text)

    def set_documents_note(self, note: str) -> None:
        """While attached files are still being read, Send waits and the hint says so ("" when all are ready)."""
        if note == self._documents_note:
            return
        if note and not self._documents_note:
            self._hint = self.hint.text()
        self._documents_note = note
        self.hint.setText(note or self._hint)
        self._update_send_enabled()

    def _update_send_enabled(self) -> None:
        if self._state == "generating":
            self.send_button.setEnabled(True)
        else:
            self.send_button.setEnabled(self._can_send())
        self.send_button.update()

    def _can_send(self) -> bool:
        return self._state == "ready" and bool(self.edit.toPlainText().strip()) and not self._documents_note

    # actions ----------------------------------------------------------------------------------------------------
    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)

    def _on_submit(self) -> None:
        if self._state != "ready" or self._documents_note:
            return  # Enter while generating/loading/reading a file keeps the draft; the hint says why
        text = self.edit.toPlainText().strip()
        if not text:
            return
        self.edit.clear()
        self.send_requested.emit(text)

    def _on_button(self) -> None:
        if self._state == "generating":
            self.stop_requested.emit()
        else:
            self._on_submit()

    def apply_theme(self) -> None:
        self.send_button.update()
        self.attach_button.setIcon(th.icon("paperclip", "muted"))
        self.chips.apply_theme()


class ContextBar(QWidget):
    """A thin used/limit bar with a label; turns amber from 80 % and red from 95 % and says so in its tooltip."""

    WARN = 0.8
    CRITICAL = 0.95

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("contextBar")
        self._used = 0
        self._limit = 0
        self._details: list[str] = []
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        self._bar = _BarPaint(self)
        self.label = QLabel("", self)
        self.label.setObjectName("statusText")
        row.addWidget(self._bar)
        row.addWidget(self.label)
        self.set_usage(0, 0)

    def set_usage(self, used: int, limit: int) -> None:
        self._used, self._limit = max(0, used), max(0, limit)
        frac = self.fraction()
        self._bar.set_fraction(frac, self.level())
        if limit:
            self.label.setText(f"{short_count(used)} / {short_count(limit)} tokens")
            tip = f"This conversation uses {used:,} of {limit:,} context tokens ({frac:.0%})."
            if self.level() == "critical":
                tip += (
                    " It is almost full: the next message may not fit. "
                    "You'll be asked whether to drop the oldest turns."
                )
            elif self.level() == "warn":
                tip += " It is getting full."
            self.setToolTip("\n".join([tip, *self._details]))
            self.label.setProperty("level", self.level())
        else:
            self.label.setText("")
            self.setToolTip("")
        self.label.style().unpolish(self.label)
        self.label.style().polish(self.label)
        self.setVisible(bool(limit))

    def set_details(self, lines: list[str]) -> None:
        """Extra tooltip lines (context freed by dropping earlier reasoning, memory saved by 8-bit KV)."""
        self._details = list(lines)
        self.set_usage(self._used, self._limit)

    def details(self) -> list[str]:
        return list(self._details)

    def fraction(self) -> float:
        return min(1.0, self._used / self._limit) if self._limit else 0.0

    def level(self) -> str:
        frac = self.fraction()
        return "critical" if frac >= self.CRITICAL else "warn" if frac >= self.WARN else "ok"

    def usage(self) -> tuple[int, int]:
        return self._used, self._limit


class _BarPaint(QWidget):
    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setFixedSize(72, 6)
        self._frac = 0.0
        self._level = "ok"

    def set_fraction(self, frac: float, level: str) -> None:
        self._frac, self._level = frac, level
        self.update()

    def paintEvent(self, _event) -> None:
        theme = th.current()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(0, 0, self.width(), self.height())
        path = QPainterPath()
        path.addRoundedRect(rect, 3, 3)
        painter.fillPath(path, theme.qcolor("field_bg"))
        if self._frac > 0:
            color = {"ok": "accent", "warn": "warning", "critical": "danger"}[self._level]
            fill = QPainterPath()
            fill.addRoundedRect(QRectF(0, 0, max(self.height(), self.width() * self._frac), self.height()), 3, 3)
            painter.fillPath(fill, theme.qcolor(color))


class StatusRow(QWidget):
    """Context bar on the left, the local server's line (while it serves), last reply's stats on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 6, 6, 0)
        row.setSpacing(12)
        self.context = ContextBar(self)
        self.server = QLabel("", self)
        self.server.setObjectName("statusText")
        self.server.hide()
        self.stats = ElidedLabel("", self)
        self.stats.setObjectName("statusText")
        self.stats.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.context)
        row.addWidget(self.server)
        row.addWidget(self.stats, 1)
        self.setFixedHeight(24)

    def set_stats_text(self, text: str) -> None:
        self.stats.setText(text)
        self.stats.setToolTip(text)

    def set_server_text(self, text: str) -> None:
        """ "Serving on 127.0.0.1:8000 · 3 requests", or "" while the local server is off."""
        self.server.setText(text)
        self.server.setVisible(bool(text))

    def sizeHint(self) -> QSize:
        return QSize(400, 24)


class BottomBar(QWidget):
    """Composer + status row, centred under the conversation column with the same maximum width."""

    def __init__(self, composer: Composer, status: StatusRow, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("conversationPane")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 12)
        inner = QWidget(self)
        inner.setMaximumWidth(COLUMN_MAX + 2 * COLUMN_PAD)
        column = QVBoxLayout(inner)
        column.setContentsMargins(COLUMN_PAD - 8, 4, COLUMN_PAD - 8, 0)
        column.setSpacing(2)
        column.addWidget(composer)
        column.addWidget(status)
        row.addStretch(0)
        row.addWidget(inner, 1)
        row.addStretch(0)
