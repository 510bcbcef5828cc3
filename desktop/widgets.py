"""Smaller pieces of the main window: the chat header (toolbar), the undo toast and the first-run welcome card.

Signals (ChatHeader):
    model_clicked(): open the model picker.
    download_clicked(): the download chip ("Downloading 36 %") was clicked: open the picker.
    title_edited(str): the conversation was renamed by double-clicking its title.
    settings_clicked()
    export_clicked(str): "md" | "json" | "html" | "pdf"
    sidebar_toggled()

Signals (Toast):
    action_clicked(): the toast's button (e.g. Undo) was pressed.

Signals (WelcomePanel):
    pick(str): a recommended catalog repo id to download.
    open_picker()
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.elided import ElidedLabel


class ProgressRing(QWidget):
    """A small circular progress indicator for downloads running while the picker is closed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedSize(18, 18)
        self._fraction = 0.0

    def set_fraction(self, fraction: float) -> None:
        self._fraction = max(0.0, min(1.0, fraction))
        self.update()

    def paintEvent(self, _event) -> None:
        theme = th.current()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(2, 2, self.width() - 4, self.height() - 4)
        pen = QPen(theme.qcolor("field_bg"))
        pen.setWidthF(2.5)
        painter.setPen(pen)
        painter.drawEllipse(rect)
        pen.setColor(theme.qcolor("accent"))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        painter.setPen(pen)
        painter.drawArc(rect, 90 * 16, -int(360 * 16 * self._fraction))


class DownloadChip(QFrame):
    """The ring with its label ("Downloading 36 %", "Quantizing 40 %") beside the model name; a click opens the
    picker, where the download's card has the details and Pause/Cancel."""

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("downloadChip")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 2, 8, 2)
        row.setSpacing(6)
        self.ring = ProgressRing(self)
        self.label = QLabel("", self)
        self.label.setObjectName("downloadChipText")
        row.addWidget(self.ring)
        row.addWidget(self.label)

    def set_progress(self, fraction: float, text: str) -> None:
        self.ring.set_fraction(fraction)
        self.label.setText(text)
        self.setToolTip(f"{text}. Click to see it in the model list.")
        self.setAccessibleName(text)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            self.clicked.emit()
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.clicked.emit()
            return
        super().keyPressEvent(event)


class _TitleLabel(ElidedLabel):
    double_clicked = Signal()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.double_clicked.emit()
        super().mouseDoubleClickEvent(event)


class ChatHeader(QWidget):
    """Model selector on the left, conversation title in the middle, cache chip and actions on the right."""

    model_clicked = Signal()
    download_clicked = Signal()
    title_edited = Signal(str)
    settings_clicked = Signal()
    export_clicked = Signal(str)
    sidebar_toggled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chatHeader")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setFixedHeight(48)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 6, 10, 6)
        row.setSpacing(6)
        self.sidebar_button = self._button("sidebar", "Show or hide the sidebar (⌘⇧S)")
        self.model_button = QToolButton(self)
        self.model_button.setObjectName("modelButton")
        self.model_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.model_button.setLayoutDirection(Qt.LayoutDirection.RightToLeft)
        self.model_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.model_button.setIconSize(QSize(14, 14))
        self.model_button.setToolTip("Choose a model")
        self.download_chip = DownloadChip(self)
        self.download_chip.hide()
        self.ring = self.download_chip.ring
        self.title_stack = QStackedWidget(self)
        self.title = _TitleLabel("", self)
        self.title.setObjectName("chatTitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title.setToolTip("Double-click to rename")
        self.title_edit = QLineEdit(self)
        self.title_edit.setObjectName("titleEdit")
        self.title_edit.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title_stack.addWidget(self.title)
        self.title_stack.addWidget(self.title_edit)
        self.title_stack.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.cache_chip = QLabel("", self)
        self.cache_chip.setObjectName("cacheChip")
        self.cache_chip.hide()
        self.remote_chip = QLabel("", self)  # "remote: host:port" while an Olmo server chats
        self.remote_chip.setObjectName("remoteChip")
        self.remote_chip.setTextFormat(Qt.TextFormat.PlainText)
        self.remote_chip.hide()
        self.export_button = self._button("share", "Export this conversation (⌘⇧E)")
        self.settings_button = self._button("sliders", "Settings (⌘,)")
        row.addWidget(self.sidebar_button)
        row.addWidget(self.model_button)
        row.addWidget(self.remote_chip, 0, Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.download_chip)
        row.addWidget(self.title_stack, 1)
        row.addWidget(self.cache_chip)
        row.addWidget(self.export_button)
        row.addWidget(self.settings_button)

        self.export_menu = QMenu(self)
        for fmt, label in (("md", "Markdown…"), ("json", "JSON…"), ("html", "HTML…"), ("pdf", "PDF…")):
            action = self.export_menu.addAction(label)
            action.setData(fmt)
        self.export_menu.triggered.connect(self._on_export_action)
        self.export_button.setMenu(self.export_menu)
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)

        self.sidebar_button.clicked.connect(self.sidebar_toggled)
        self.model_button.clicked.connect(self.model_clicked)
        self.download_chip.clicked.connect(self.download_clicked)
        self.settings_button.clicked.connect(self.settings_clicked)
        self.title.double_clicked.connect(self.begin_rename)
        self.title_edit.editingFinished.connect(self._finish_rename)
        self.title_edit.installEventFilter(self)
        self._renamable = False
        self.set_model(None)
        self.apply_theme()

    def _button(self, icon_name: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setObjectName("headerButton")
        button.setProperty("iconName", icon_name)
        button.setIconSize(QSize(18, 18))
        button.setToolTip(tip)
        button.setAccessibleName(tip)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        return button

    def set_model(self, name: str | None, *, loading: bool = False) -> None:
        if loading and name:
            self.model_button.setText(f"Loading {name}…")
        else:
            self.model_button.setText(name or "No model")  # "Choose a model" is said once, elsewhere

    def set_remote(self, label: str | None) -> None:
        """ "remote: host:port" beside the model while a server chats (None: the model runs here)."""
        self.remote_chip.setVisible(bool(label))
        self.remote_chip.setText(f"remote: {label}" if label else "")
        self.remote_chip.setToolTip(
            f"Replies come from the Olmo server at {label}; its caches live there." if label else ""
        )
        self.model_button.setToolTip("Choose a model or a server" if label else "Choose a model")

    def set_title(self, title: str, *, renamable: bool) -> None:
        self.title.setText(title)
        self.title.setToolTip(f"{title}\nDouble-click to rename" if renamable else title)
        self._renamable = renamable
        self.export_button.setEnabled(renamable)

    def set_cache_state(self, state: str | None, nbytes: int = 0) -> None:
        if not state:
            self.cache_chip.hide()
            return
        from olmo3.units import format_bytes

        if state == "cold":
            self.cache_chip.hide()  # nothing cached: nothing worth a chip
            return
        text = {"warm": "● In memory", "disk": "○ Saved to disk"}.get(state, state)
        tips = {
            "warm": "This conversation's memory is loaded: a follow-up starts right away.",
            "disk": "This conversation's memory is saved on disk and comes back on the next message.",
            "cold": "No saved memory: the next message re-reads the conversation.",
        }
        self.cache_chip.setText(text)
        tip = tips.get(state, "")
        if nbytes:
            tip += f" ({format_bytes(nbytes)})"
        self.cache_chip.setToolTip(tip)
        self.cache_chip.show()

    def set_download_progress(self, fraction: float | None, text: str | None = None) -> None:
        """The download chip: hidden for None, else the ring at ``fraction`` and ``text`` ("Downloading 36 %")."""
        if fraction is None:
            self.download_chip.hide()
        else:
            self.download_chip.set_progress(fraction, text or f"Downloading {fraction:.0%}")
            self.download_chip.show()

    def begin_rename(self) -> None:
        if not self._renamable:
            return
        self.title_edit.setText(self.title.text())
        self.title_stack.setCurrentWidget(self.title_edit)
        self.title_edit.setFocus()
        self.title_edit.selectAll()

    def _finish_rename(self) -> None:
        if self.title_stack.currentWidget() is not self.title_edit:
            return
        text = " ".join(self.title_edit.text().split())
        self.title_stack.setCurrentWidget(self.title)
        if text and text != self.title.text():
            self.title.setText(text)
            self.title_edited.emit(text)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.title_edit
            and isinstance(event, QKeyEvent)
            and event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_Escape
        ):
            self.title_stack.setCurrentWidget(self.title)
            return True
        return super().eventFilter(watched, event)

    def _on_export_action(self, action) -> None:
        self.export_clicked.emit(str(action.data()))

    def apply_theme(self) -> None:
        for button in (self.sidebar_button, self.export_button, self.settings_button):
            button.setIcon(th.icon(str(button.property("iconName")), "muted"))
        self.model_button.setIcon(th.icon("chevron-down", "muted"))
        self.ring.update()


class Toast(QFrame):
    """A dark rounded note at the bottom of the window with an optional action (Undo); hides itself."""

    action_clicked = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("toast")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        row = QHBoxLayout(self)
        row.setContentsMargins(14, 8, 8, 8)
        row.setSpacing(12)
        self.label = QLabel("", self)
        self.button = QPushButton("", self)
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        row.addWidget(self.label)
        row.addWidget(self.button)
        self.button.clicked.connect(self._on_button)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, action: str | None = None, *, timeout_ms: int = 8000) -> None:
        self.label.setText(text)
        self.button.setText(action or "")
        self.button.setVisible(bool(action))
        self.adjustSize()
        self.reposition()
        self.show()
        self.raise_()
        self._timer.start(timeout_ms)

    def reposition(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        self.adjustSize()
        self.move((parent.width() - self.width()) // 2, parent.height() - self.height() - 96)

    def _on_button(self) -> None:
        self.hide()
        self._timer.stop()
        self.action_clicked.emit()


def _recommended() -> tuple[tuple[str, str, str, str], ...]:
    """(repo id, title, description, "4.1 GB download") of the catalog's quick picks (olmo3.hub.CATALOG)."""
    from olmo3.hub import CATALOG
    from olmo3.units import format_bytes

    descriptions = {
        "Instruct": "Everyday assistant: quick, direct answers.",
        "Think": "Shows its reasoning first. Slower, better at maths and code.",
    }
    return tuple(
        (e.repo_id, e.title, descriptions.get(e.variant, ""), f"{format_bytes(e.download_bytes)} download")
        for e in CATALOG
        if e.recommended
    )


class WelcomePanel(QWidget):
    """The first thing a new user sees: "Choose a model to start" with the catalog's recommended picks (repos on
    record only), each with its download size."""

    pick = Signal(str)
    open_picker = Signal()

    RECOMMENDED = tuple((r, n, d) for r, n, d, _size in _recommended())

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 24, 24, 24)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        self.card = QFrame(self)
        self.card.setObjectName("welcomeCard")
        self.card.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.card.setMaximumWidth(520)
        self.card.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        card_layout = QVBoxLayout(self.card)
        card_layout.setContentsMargins(28, 28, 28, 24)
        card_layout.setSpacing(10)
        self.logo = QLabel(self.card)
        self.logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title = QLabel("Choose a model to start", self.card)
        title.setObjectName("welcomeTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel(
            "Olmo runs entirely on this Mac: nothing you type leaves it. "
            "Pick one of these to download, or open the full list.",
            self.card,
        )
        text.setObjectName("welcomeText")
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text.setWordWrap(True)
        card_layout.addWidget(self.logo)
        card_layout.addWidget(title)
        card_layout.addWidget(text)
        card_layout.addSpacing(6)
        self.pick_buttons: dict[str, QPushButton] = {}
        self._pick_desc: dict[str, QLabel] = {}
        self.pick_sizes: dict[str, QLabel] = {}
        for repo_id, name, desc, size in _recommended():
            button = QPushButton(self.card)
            button.setObjectName("pickCard")
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.setProperty("repo", repo_id)
            button.setAccessibleName(f"Download {name}, {size}")
            button.setToolTip(repo_id)
            button.clicked.connect(self._on_pick)
            inner = QVBoxLayout(button)
            inner.setContentsMargins(16, 10, 16, 10)
            inner.setSpacing(2)
            top = QHBoxLayout()
            top.setSpacing(8)
            title_label = QLabel(name, button)
            title_label.setObjectName("pickName")
            size_label = QLabel(size, button)
            size_label.setObjectName("pickSize")
            desc_label = QLabel(desc, button)
            desc_label.setObjectName("pickDescription")
            top.addWidget(title_label, 1)
            top.addWidget(size_label)
            inner.addLayout(top)
            inner.addWidget(desc_label)
            for label in (title_label, size_label, desc_label):
                label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
            button.setMinimumHeight(60)
            card_layout.addWidget(button)
            self.pick_buttons[repo_id] = button
            self.pick_sizes[repo_id] = size_label
            self._pick_desc[repo_id] = desc_label
        self.more = QPushButton("See all models…", self.card)
        self.more.setObjectName("linkButton")
        self.more.setCursor(Qt.CursorShape.PointingHandCursor)
        self.more.clicked.connect(self.open_picker)
        card_layout.addWidget(self.more, 0, Qt.AlignmentFlag.AlignCenter)
        row.addWidget(self.card, 10)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self.apply_theme()

    def set_pick_state(self, repo_id: str, text: str | None) -> None:
        """Show e.g. "Downloading… 42 %" on a recommended pick (None restores its description)."""
        label = self._pick_desc.get(repo_id)
        if label is None:
            return
        desc = next(d for r, _n, d in self.RECOMMENDED if r == repo_id)
        label.setText(text or desc)

    def _on_pick(self) -> None:
        sender = self.sender()
        if sender is not None:
            self.pick.emit(str(sender.property("repo")))

    def apply_theme(self) -> None:
        self.logo.setPixmap(th.pixmap("sparkle", 40, "accent"))
