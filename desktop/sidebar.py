"""The sidebar: new chat, search, conversations grouped by recency (pinned first), trash.

The sidebar only displays rows and emits what the user asked for; the window reads the store and calls
:meth:`Sidebar.set_conversations`, :meth:`Sidebar.show_search_results` and :meth:`Sidebar.set_trash`.
Rows are painted by :class:`RowDelegate` (title, optional search snippet, cache-state dot: filled = warm in memory,
ring = on disk, nothing = cold). In the Trash each row also says when it was deleted and has a Restore button
(painted by the delegate; a click on it is caught on the list's viewport).

Signals:
    new_chat_requested()
    conversation_selected(str)
    rename_requested(str, str)
    pin_requested(str, bool)
    duplicate_requested(str)
    delete_requested(str)
    export_requested(str, str): conversation id, format ("md" | "json" | "html" | "pdf")
    restore_requested(str)
    delete_forever_requested(str)
    empty_trash_requested()
    search_changed(str): debounced search text ("" when cleared)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.sidebar_rows import (  # the rows live there; the sidebar composes them
    CACHE,
    CONV_ID,
    DELETED_AT,
    GROUP_ORDER,
    KIND,
    PINNED,
    SNIPPET,
    TRASHED,
    ConversationList,
    ConversationRow,
    RestoreClicks,
    RowDelegate,
    SearchRow,
    deleted_label,
    recency_group,
)

__all__ = ["ConversationRow", "SearchRow", "Sidebar", "deleted_label", "recency_group"]


class Sidebar(QWidget):
    """See the module docstring for the signals."""

    new_chat_requested = Signal()
    conversation_selected = Signal(str)
    rename_requested = Signal(str, str)
    pin_requested = Signal(str, bool)
    duplicate_requested = Signal(str)
    delete_requested = Signal(str)
    export_requested = Signal(str, str)
    restore_requested = Signal(str)
    delete_forever_requested = Signal(str)
    empty_trash_requested = Signal()
    search_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setMinimumWidth(200)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 10, 8, 8)
        layout.setSpacing(6)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        self.new_chat_button = QPushButton("New chat", self)
        self.new_chat_button.setObjectName("newChatButton")
        self.new_chat_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.new_chat_button.setToolTip("New chat (⌘N)")
        top.addWidget(self.new_chat_button, 1)
        layout.addLayout(top)

        self.search = QLineEdit(self)
        self.search.setObjectName("searchField")
        self.search.setPlaceholderText("Search")
        self.search.setClearButtonEnabled(True)
        self._search_action = self.search.addAction(
            th.icon("search", "faint"), QLineEdit.ActionPosition.LeadingPosition
        )
        layout.addWidget(self.search)

        self.mode_title = QWidget(self)
        title_row = QHBoxLayout(self.mode_title)
        title_row.setContentsMargins(6, 4, 0, 0)
        self.mode_label = QLabel("Trash", self.mode_title)
        self.mode_label.setObjectName("sidebarTitle")
        self.empty_trash_button = QPushButton("Empty Trash…", self.mode_title)
        self.empty_trash_button.setObjectName("emptyTrashButton")
        self.empty_trash_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.empty_trash_button.setToolTip("Delete everything in the Trash now; this can't be undone")
        title_row.addWidget(self.mode_label)
        title_row.addStretch(1)
        title_row.addWidget(self.empty_trash_button)
        self.mode_title.hide()
        layout.addWidget(self.mode_title)

        self.model = QStandardItemModel(self)
        self.list = ConversationList(self)
        self.list.setModel(self.model)
        self.delegate = RowDelegate(self.list)
        self.list.setItemDelegate(self.delegate)
        self._restore_clicks = RestoreClicks(self)
        self.list.viewport().installEventFilter(self._restore_clicks)
        layout.addWidget(self.list, 1)
        self.empty_label = QLabel("", self)
        self.empty_label.setObjectName("sidebarEmpty")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.empty_label.setWordWrap(True)
        self.empty_label.setContentsMargins(8, 24, 8, 0)
        self.empty_label.hide()
        layout.addWidget(self.empty_label, 1)

        self.trash_button = QPushButton("Trash", self)
        self.trash_button.setObjectName("sidebarFooterButton")
        self.trash_button.setCheckable(True)
        self.trash_button.setCursor(Qt.CursorShape.PointingHandCursor)
        layout.addWidget(self.trash_button)

        self._rows: list[ConversationRow] = []
        self._trash: list[ConversationRow] = []
        self._trash_count = 0
        self._current: str | None = None
        self._populating = False
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(120)
        self._search_timer.timeout.connect(self._emit_search)

        self.new_chat_button.clicked.connect(self.new_chat_requested)
        self.search.textChanged.connect(self._on_search_text)
        self.list.clicked.connect(self._on_clicked)
        self.list.activated_row.connect(self._on_clicked)
        self.list.delete_pressed.connect(self._on_delete_pressed)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.model.itemChanged.connect(self._on_item_changed)
        self.trash_button.toggled.connect(self._on_trash_toggled)
        self.empty_trash_button.clicked.connect(self.empty_trash_requested)
        self.apply_theme()

    # data ----------------------------------------------------------------------------------------------------
    def set_conversations(self, rows: list[ConversationRow], *, trash_count: int | None = None) -> None:
        self._rows = list(rows)
        if trash_count is not None:
            self.set_trash_count(trash_count)
        if not self.in_trash() and not self.search.text().strip():
            self._populate_grouped()

    def set_trash(self, rows: list[ConversationRow]) -> None:
        self._trash = list(rows)
        self.set_trash_count(len(rows))
        if self.in_trash():
            self._populate_trash()

    def set_trash_count(self, count: int) -> None:
        self._trash_count = count
        if self.in_trash():
            self.trash_button.setText("Back to conversations")
            self.trash_button.setIcon(th.icon("chevron-left", "muted"))
        else:
            self.trash_button.setText(f"Trash  ·  {count}" if count else "Trash")
            self.trash_button.setIcon(th.icon("trash", "muted"))

    def show_search_results(self, rows: list[SearchRow]) -> None:
        self._populating = True
        self.model.clear()
        if rows:
            self._add_header(f"{len(rows)} result{'s' if len(rows) != 1 else ''}")
        for row in rows:
            item = self._conv_item(row.id, row.title, pinned=False, cache=row.cache_state)
            item.setData(row.snippet_html, SNIPPET)
            self.model.appendRow(item)
        self._populating = False
        self._show_empty("No conversations match." if not rows else "")
        self._select_current()

    def set_current(self, conv_id: str | None) -> None:
        self._current = conv_id
        self._select_current()

    def current(self) -> str | None:
        return self._current

    def set_cache_state(self, conv_id: str, state: str) -> None:
        self._rows = [
            r if r.id != conv_id else ConversationRow(r.id, r.title, r.updated_at, r.pinned, state, r.deleted_at)
            for r in self._rows
        ]
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            if item is not None and item.data(CONV_ID) == conv_id:
                self._populating = True
                item.setData(state, CACHE)
                self._populating = False

    def cache_state(self, conv_id: str) -> str | None:
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            if item is not None and item.data(CONV_ID) == conv_id:
                return str(item.data(CACHE))
        return None

    def visible_ids(self) -> list[str]:
        return [
            str(self.model.item(r).data(CONV_ID))
            for r in range(self.model.rowCount())
            if self.model.item(r).data(KIND) == "conv"
        ]

    def visible_headers(self) -> list[str]:
        return [
            str(self.model.item(r).text())
            for r in range(self.model.rowCount())
            if self.model.item(r).data(KIND) == "header"
        ]

    def in_trash(self) -> bool:
        return self.trash_button.isChecked()

    def show_trash(self, show: bool) -> None:
        self.trash_button.setChecked(show)

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def begin_rename(self, conv_id: str) -> None:
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            if item is not None and item.data(CONV_ID) == conv_id:
                index = self.model.indexFromItem(item)
                self.list.setCurrentIndex(index)
                self.list.edit(index)
                return

    # population ----------------------------------------------------------------------------------------------
    def _populate_grouped(self) -> None:
        self._populating = True
        self.model.clear()
        groups: dict[str, list[ConversationRow]] = {}
        now = dt.datetime.now()
        for row in self._rows:
            group = "Pinned" if row.pinned else recency_group(row.updated_at, now)
            groups.setdefault(group, []).append(row)
        for group in GROUP_ORDER:
            if group not in groups:
                continue
            self._add_header(group)
            for row in groups[group]:
                self.model.appendRow(self._conv_item(row.id, row.title, pinned=row.pinned, cache=row.cache_state))
        self._populating = False
        self._show_empty("No conversations yet.\nStart one with New chat." if not self._rows else "")
        self._select_current()

    def _populate_trash(self) -> None:
        self._populating = True
        self.model.clear()
        for row in self._trash:
            item = self._conv_item(row.id, row.title, pinned=False, cache="cold")
            item.setData(True, TRASHED)
            item.setData(row.deleted_at, DELETED_AT)
            item.setEditable(False)
            if row.deleted_at:
                item.setToolTip(f"{row.title}\n{deleted_label(row.deleted_at)}")
            self.model.appendRow(item)
        self._populating = False
        self._show_empty("Trash is empty." if not self._trash else "")
        self.empty_trash_button.setEnabled(bool(self._trash))

    def _add_header(self, text: str) -> None:
        item = QStandardItem(text)
        item.setData("header", KIND)
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        self.model.appendRow(item)

    def _conv_item(self, conv_id: str, title: str, *, pinned: bool, cache: str) -> QStandardItem:
        item = QStandardItem(title)
        item.setData("conv", KIND)
        item.setData(conv_id, CONV_ID)
        item.setData(pinned, PINNED)
        item.setData(cache, CACHE)
        item.setToolTip(title)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable)
        return item

    def _show_empty(self, text: str) -> None:
        self.empty_label.setText(text)
        self.empty_label.setVisible(bool(text))
        self.list.setVisible(not text or self.model.rowCount() > 0)

    def _select_current(self) -> None:
        self.list.clearSelection()
        if self._current is None:
            return
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            if item is not None and item.data(CONV_ID) == self._current:
                self.list.setCurrentIndex(self.model.indexFromItem(item))
                return

    # events ---------------------------------------------------------------------------------------------------
    def _on_search_text(self, _text: str) -> None:
        self._search_timer.start()

    def _emit_search(self) -> None:
        text = self.search.text().strip()
        if not text and not self.in_trash():
            self._populate_grouped()
        self.search_changed.emit(text)

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.data(KIND) != "conv" or index.data(TRASHED):
            return
        conv_id = str(index.data(CONV_ID))
        self._current = conv_id
        self.conversation_selected.emit(conv_id)

    def _on_delete_pressed(self, index: QModelIndex) -> None:
        if index.data(KIND) != "conv":
            return
        if index.data(TRASHED):
            self.delete_forever_requested.emit(str(index.data(CONV_ID)))
        else:
            self.delete_requested.emit(str(index.data(CONV_ID)))

    def _on_item_changed(self, item: QStandardItem) -> None:
        if self._populating or item.data(KIND) != "conv":
            return
        title = " ".join(item.text().split())
        if title:
            self.rename_requested.emit(str(item.data(CONV_ID)), title)

    def _on_trash_toggled(self, on: bool) -> None:
        self.mode_title.setVisible(on)
        self.search.setVisible(not on)
        self.new_chat_button.setVisible(not on)
        self.set_trash_count(self._trash_count)
        if on:
            self._populate_trash()
        else:
            self._populate_grouped()

    def _context_menu(self, pos: QPoint) -> None:
        index = self.list.indexAt(pos)
        if not index.isValid() or index.data(KIND) != "conv":
            return
        menu = self.build_context_menu(
            str(index.data(CONV_ID)), trashed=bool(index.data(TRASHED)), pinned=bool(index.data(PINNED))
        )
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def build_context_menu(self, conv_id: str, *, trashed: bool, pinned: bool) -> QMenu:
        """The row's context menu (also used by tests to trigger actions)."""
        menu = QMenu(self)
        if trashed:
            self._add_action(menu, "Restore", lambda: self.restore_requested.emit(conv_id))
            menu.addSeparator()
            self._add_action(menu, "Delete Immediately…", lambda: self.delete_forever_requested.emit(conv_id))
            return menu
        self._add_action(menu, "Rename", lambda: self.begin_rename(conv_id))
        self._add_action(menu, "Unpin" if pinned else "Pin", lambda: self.pin_requested.emit(conv_id, not pinned))
        self._add_action(menu, "Duplicate", lambda: self.duplicate_requested.emit(conv_id))
        export = menu.addMenu("Export")
        for fmt, label in (("md", "Markdown…"), ("json", "JSON…"), ("html", "HTML…"), ("pdf", "PDF…")):
            self._add_action(export, label, lambda _checked=False, f=fmt: self.export_requested.emit(conv_id, f))
        menu.addSeparator()
        self._add_action(menu, "Move to Trash", lambda: self.delete_requested.emit(conv_id))
        return menu

    @staticmethod
    def _add_action(menu: QMenu, text: str, slot: Any) -> QAction:
        # Menu actions fire on the GUI thread, so a small closure here is safe (no cross-thread signal).
        action = menu.addAction(text)
        action.triggered.connect(slot)
        return action

    def apply_theme(self) -> None:
        self.new_chat_button.setIcon(th.icon("new-chat", "text"))
        self._search_action.setIcon(th.icon("search", "faint"))
        self.set_trash_count(self._trash_count)
        self.list.viewport().update()
