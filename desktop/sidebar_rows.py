"""The sidebar's rows: what a row shows (:class:`ConversationRow`, :class:`SearchRow`), the item roles, the delegate
that paints them (title, search snippet, cache-state dot; in the Trash: when it was deleted and a Restore button),
the list view with its keys, and the viewport filter that turns a click on a painted Restore button into a signal.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from desktop import theme as th

if TYPE_CHECKING:
    from desktop.sidebar import Sidebar

KIND = Qt.ItemDataRole.UserRole + 1
CONV_ID = Qt.ItemDataRole.UserRole + 2
SNIPPET = Qt.ItemDataRole.UserRole + 3
PINNED = Qt.ItemDataRole.UserRole + 4
CACHE = Qt.ItemDataRole.UserRole + 5
TRASHED = Qt.ItemDataRole.UserRole + 6
DELETED_AT = Qt.ItemDataRole.UserRole + 7

ROW_H = 34
SNIPPET_ROW_H = 66  # title + two lines of snippet
HEADER_H = 30
TRASH_ROW_H = 52  # title + "Deleted …"
RESTORE_W, RESTORE_H = 68, 24

Index = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class ConversationRow:
    """What the sidebar needs to show one conversation."""

    id: str
    title: str
    updated_at: float
    pinned: bool = False
    cache_state: str = "cold"  # "warm" | "disk" | "cold"
    deleted_at: float | None = None


@dataclass(frozen=True)
class SearchRow:
    id: str
    title: str
    snippet_html: str  # escaped, matches in <b>
    cache_state: str = "cold"


def recency_group(ts: float, now: dt.datetime | None = None) -> str:
    """ "Today", "Yesterday", "Previous 7 days", "Previous 30 days" or "Older" (local time)."""
    now = now or dt.datetime.now()
    day = dt.datetime.fromtimestamp(ts).date()
    delta = (now.date() - day).days
    if delta <= 0:
        return "Today"
    if delta == 1:
        return "Yesterday"
    if delta <= 7:
        return "Previous 7 days"
    if delta <= 30:
        return "Previous 30 days"
    return "Older"


def deleted_label(ts: float, now: dt.datetime | None = None) -> str:
    """ "Deleted just now", "Deleted today at 14:05", "Deleted yesterday at 09:12", "Deleted 3 days ago", "Deleted on
    4 Mar" (local time)."""
    now = now or dt.datetime.now()
    when = dt.datetime.fromtimestamp(ts)
    days = (now.date() - when.date()).days
    if days <= 0:
        return "Deleted just now" if (now - when).total_seconds() < 60 else f"Deleted today at {when:%H:%M}"
    if days == 1:
        return f"Deleted yesterday at {when:%H:%M}"
    if days < 7:
        return f"Deleted {days} days ago"
    return f"Deleted on {when.day} {when:%b}" + (f" {when.year}" if when.year != now.year else "")


def restore_rect(row: QRect) -> QRect:
    """Where a Trash row's Restore button is painted (and clicked)."""
    return QRect(row.right() - 8 - RESTORE_W, row.top() + (row.height() - RESTORE_H) // 2, RESTORE_W, RESTORE_H)


GROUP_ORDER = ["Pinned", "Today", "Yesterday", "Previous 7 days", "Previous 30 days", "Older"]


class RowDelegate(QStyledItemDelegate):
    """Paints headers and conversation rows; edits titles inline with a QLineEdit."""

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        kind = index.data(KIND)
        if kind == "header":
            return QSize(option.rect.width(), HEADER_H)
        if index.data(TRASHED):
            return QSize(option.rect.width(), TRASH_ROW_H)
        return QSize(option.rect.width(), SNIPPET_ROW_H if index.data(SNIPPET) else ROW_H)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        theme = th.current()
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = option.rect
        kind = index.data(KIND)
        if kind == "header":
            painter.setFont(th.ui_font(th.SMALL_PX - 1, QFont.Weight.DemiBold))
            painter.setPen(theme.qcolor("muted"))
            painter.drawText(
                rect.adjusted(12, 8, -8, 0),
                Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                str(index.data(Qt.ItemDataRole.DisplayRole) or ""),
            )
            painter.restore()
            return
        body = QRectF(rect.adjusted(6, 1, -6, -1))
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        if selected or hovered:
            path = QPainterPath()
            path.addRoundedRect(body, 7, 7)
            painter.fillPath(path, theme.qcolor("sidebar_selected" if selected else "sidebar_hover"))
        if option.state & QStyle.StateFlag.State_HasFocus and selected:
            pen = QPen(theme.qcolor("accent"))
            pen.setWidthF(1.2)
            painter.setPen(pen)
            painter.drawRoundedRect(body.adjusted(0.5, 0.5, -0.5, -0.5), 7, 7)
        if index.data(TRASHED):
            self._paint_trashed(painter, option, index, body, hovered)
            painter.restore()
            return
        # cache dot
        cache = index.data(CACHE) or "cold"
        dot_x = body.right() - 14
        title_right = dot_x - 8
        cy = body.top() + (ROW_H - 2) / 2
        if cache in ("warm", "disk"):
            color = theme.qcolor("accent")
            if cache == "warm":
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(color)
            else:
                pen = QPen(color)
                pen.setWidthF(1.3)
                painter.setPen(pen)
                painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(QRectF(dot_x - 3.5, cy - 3.5, 7, 7))
        # pin glyph for pinned rows
        left = body.left() + 10
        if index.data(PINNED):
            painter.drawPixmap(int(left), int(cy - 6), th.pixmap("pin", 12, "faint"))
            left += 16
        title = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        font = th.ui_font(th.UI_PX)
        painter.setFont(font)
        painter.setPen(theme.qcolor("text"))
        metrics = painter.fontMetrics()
        title_rect = QRect(int(left), int(body.top()), int(title_right - left), ROW_H - 2)
        painter.drawText(
            title_rect,
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            metrics.elidedText(title, Qt.TextElideMode.ElideRight, title_rect.width()),
        )
        snippet = index.data(SNIPPET)
        if snippet:
            doc = QTextDocument()
            doc.setDocumentMargin(0)
            doc.setDefaultFont(th.ui_font(th.SMALL_PX))
            doc.setDefaultStyleSheet(f"body {{ color: {theme['muted']}; }} b {{ color: {theme['text']}; }}")
            doc.setHtml(f"<body>{snippet}</body>")
            doc.setTextWidth(body.width() - 20)
            painter.translate(body.left() + 10, body.top() + ROW_H - 8)
            lines = 2 * QFontMetricsF(th.ui_font(th.SMALL_PX)).lineSpacing()
            clip = QRectF(0, 0, body.width() - 20, math.ceil(lines) + 1)  # whole lines only
            painter.setClipRect(clip)
            doc.drawContents(painter, clip)
        painter.restore()

    def _paint_trashed(
        self, painter: QPainter, option: QStyleOptionViewItem, index: Index, body: QRectF, hovered: bool
    ) -> None:
        theme = th.current()
        button = restore_rect(option.rect)
        left = int(body.left()) + 10
        width = button.left() - 8 - left
        painter.setFont(th.ui_font(th.UI_PX))
        painter.setPen(theme.qcolor("text"))
        title = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        title_rect = QRect(left, int(body.top()) + 6, width, 20)
        painter.drawText(
            title_rect,
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            painter.fontMetrics().elidedText(title, Qt.TextElideMode.ElideRight, width),
        )
        deleted = index.data(DELETED_AT)
        if deleted:
            painter.setFont(th.ui_font(th.SMALL_PX))
            painter.setPen(theme.qcolor("muted"))
            painter.drawText(
                QRect(left, int(body.top()) + 26, width, 18),
                Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                painter.fontMetrics().elidedText(deleted_label(float(deleted)), Qt.TextElideMode.ElideRight, width),
            )
        # The Restore button: a small outlined pill, accent-tinted under the mouse.
        over = hovered and button.contains(self._mouse)
        path = QPainterPath()
        path.addRoundedRect(QRectF(button).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        painter.fillPath(path, theme.qcolor("accent_soft" if over else "card"))
        pen = QPen(theme.qcolor("accent" if over else "border_strong"))
        pen.setWidthF(1.0)
        painter.setPen(pen)
        painter.drawPath(path)
        painter.setFont(th.ui_font(th.SMALL_PX, QFont.Weight.DemiBold))
        painter.setPen(theme.qcolor("link"))
        painter.drawText(button, Qt.AlignmentFlag.AlignCenter, "Restore")

    _mouse = QPoint(-1, -1)  # the mouse on the list's viewport (for the Restore button's hover state)

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem, index: Index) -> QWidget:
        editor = QLineEdit(parent)
        editor.setObjectName("titleEdit")
        return editor

    def updateEditorGeometry(self, editor: QWidget, option: QStyleOptionViewItem, index: Index) -> None:
        editor.setGeometry(option.rect.adjusted(8, 3, -8, -3))


class ConversationList(QListView):
    """The list itself; Enter opens, F2 renames, Delete/Backspace moves to the trash."""

    activated_row = Signal(QModelIndex)
    delete_pressed = Signal(QModelIndex)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("conversationList")
        self.setMouseTracking(True)
        self.setUniformItemSizes(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.viewport().setAttribute(Qt.WidgetAttribute.WA_Hover, True)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        index = self.currentIndex()
        if index.isValid() and self.state() != QAbstractItemView.State.EditingState:
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.activated_row.emit(index)
                return
            if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
                self.delete_pressed.emit(index)
                return
        super().keyPressEvent(event)


class RestoreClicks(QObject):
    """Catches clicks on the painted Restore buttons of Trash rows (and tracks the mouse for their hover state)."""

    def __init__(self, sidebar: Sidebar) -> None:
        super().__init__(sidebar)
        self.sidebar = sidebar

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.MouseMove and isinstance(event, QMouseEvent):
            self.sidebar.delegate._mouse = event.position().toPoint()
            self.sidebar.list.viewport().update()
        elif kind == QEvent.Type.Leave:
            self.sidebar.delegate._mouse = QPoint(-1, -1)
        elif kind == QEvent.Type.MouseButtonRelease and isinstance(event, QMouseEvent):
            pos = event.position().toPoint()
            index = self.sidebar.list.indexAt(pos)
            if (
                event.button() == Qt.MouseButton.LeftButton
                and index.isValid()
                and index.data(TRASHED)
                and restore_rect(self.sidebar.list.visualRect(index)).contains(pos)
            ):
                self.sidebar.restore_requested.emit(str(index.data(CONV_ID)))
                return True
        return False
