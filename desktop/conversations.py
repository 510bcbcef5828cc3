"""The sidebar's conversations: listing and search, and what the user does to them.

:class:`ConversationActions` is the window's side of the sidebar: it fills the list (and the Trash, and the search
results) from the store, and carries out new, open, rename, pin, duplicate, move to Trash (with Undo in the
toast), restore and delete forever. Turns themselves are :class:`desktop.controller.ChatController`'s job; this
class only tells it when a conversation opens or goes away (``forget``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QApplication, QLineEdit, QPlainTextEdit, QTextEdit

from desktop.formatting import ellipsize
from desktop.sidebar import ConversationRow, SearchRow

if TYPE_CHECKING:
    from desktop.app import MainWindow

log = logging.getLogger(__name__)


class ConversationActions:
    """The conversations of the sidebar, for one window: see the module docstring."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self._undo_conv: str | None = None  # moved to the Trash last; the toast's Undo brings it back

    # ------------------------------------------------------------------------------------------------ listing
    def refresh_sidebar(self) -> None:
        """Re-read the list (and the Trash or search results, when one of those is showing) from the store."""
        w = self.window
        rows = [
            ConversationRow(c.id, c.title, c.updated_at, c.pinned, w.controller.cache_state(c.id)[0])
            for c in w.store.list_conversations()
        ]
        w.sidebar.set_conversations(rows, trash_count=w.store.trash_count())
        if w.sidebar.in_trash():
            self.load_trash()
        elif w.sidebar.search.text().strip():
            self.search(w.sidebar.search.text().strip())
        self.update_header_title()

    def load_trash(self) -> None:
        self.window.sidebar.set_trash(
            [
                ConversationRow(c.id, c.title, c.updated_at, c.pinned, "cold", c.deleted_at)
                for c in self.window.store.list_trash()
            ]
        )

    def on_trash_toggled(self, on: bool) -> None:
        if on:
            self.load_trash()

    def search(self, text: str) -> None:
        """FTS search as the user types (debounced by the sidebar); one row per conversation."""
        from olmo3.store import snippet_to_html

        if not text:
            return
        w = self.window
        order: list[str] = []
        found: dict[str, tuple[str, str]] = {}  # conversation → (title, snippet of its best message hit)
        try:
            hits = w.store.search(text, limit=80)
        except Exception as exc:
            log.warning("search %r failed: %s", text, exc)
            hits = []
        for hit in hits:  # title hits first, then message hits, each best first
            snippet = snippet_to_html(hit.snippet) if hit.message_id is not None else ""
            if hit.conv_id not in found:
                order.append(hit.conv_id)
                found[hit.conv_id] = (hit.title, snippet)
            elif snippet and not found[hit.conv_id][1]:
                found[hit.conv_id] = (found[hit.conv_id][0], snippet)
        rows = [SearchRow(cid, found[cid][0], found[cid][1], w.controller.cache_state(cid)[0]) for cid in order]
        w.sidebar.show_search_results(rows)

    def update_header_title(self) -> None:
        w = self.window
        conv_id = w.controller.current
        if conv_id is None:
            w.header.set_title("New chat", renamable=False)
            return
        try:
            w.header.set_title(w.store.get_conversation(conv_id).title, renamable=True)
        except Exception:
            w.header.set_title("", renamable=False)

    # ---------------------------------------------------------------------------------------------- actions
    def new_chat(self) -> None:
        self.window.sidebar.show_trash(False)
        self.window.controller.new_chat()
        self.window.composer.setFocus()

    def open(self, conv_id: str) -> None:
        self.window.controller.open(conv_id)

    def exists(self, conv_id: str) -> bool:
        """``conv_id`` is in the store and not in the Trash."""
        from olmo3.store import NotFoundError

        try:
            return self.window.store.get_conversation(conv_id).deleted_at is None
        except NotFoundError:
            return False

    def rename(self, conv_id: str, title: str) -> None:
        self.window.store.rename(conv_id, title)
        self.refresh_sidebar()

    def rename_current(self, title: str) -> None:
        if self.window.controller.current is not None:
            self.rename(self.window.controller.current, title)

    def pin(self, conv_id: str, pinned: bool) -> None:
        self.window.store.set_pinned(conv_id, pinned)
        self.refresh_sidebar()

    def duplicate(self, conv_id: str) -> None:
        new_id = self.window.store.duplicate(conv_id)
        self.refresh_sidebar()
        self.window.controller.open(new_id)

    def delete(self, conv_id: str) -> None:
        """Move to the Trash; the toast offers Undo for 8 s (the Trash keeps it for 30 days)."""
        w = self.window
        title = w.store.get_conversation(conv_id).title
        w.controller.forget(conv_id)
        w.store.delete(conv_id)
        self._undo_conv = conv_id
        self.refresh_sidebar()
        w.show_toast(f"“{ellipsize(title, 40)}” moved to Trash", "Undo")

    def delete_current(self) -> None:
        """⌘⌫. Never while the user is editing text: there the keys mean "delete to the start of the line"."""
        focus = QApplication.focusWidget()
        editing = (isinstance(focus, QLineEdit) and not focus.isReadOnly()) or (
            isinstance(focus, (QTextEdit, QPlainTextEdit)) and not focus.isReadOnly()
        )
        if self.window.controller.current is not None and not editing:
            self.delete(self.window.controller.current)

    def restore(self, conv_id: str) -> None:
        self.window.store.restore(conv_id)
        self.refresh_sidebar()
        self.load_trash()

    def undo_delete(self) -> None:
        conv_id = self._undo_conv
        if conv_id is None:
            return
        self._undo_conv = None
        self.window.store.restore(conv_id)
        self.refresh_sidebar()
        self.window.controller.open(conv_id)

    def delete_forever(self, conv_id: str) -> None:
        w = self.window
        if not w.confirm("Delete this conversation immediately?", "You can't undo this."):
            return
        w.controller.forget(conv_id, delete_cache=True)
        w.store.delete_forever(conv_id)
        self.load_trash()
        self.refresh_sidebar()

    def empty_trash(self) -> None:
        w = self.window
        trash = w.store.list_trash()
        if not trash or not w.confirm(
            f"Delete {len(trash)} conversation(s) in the Trash immediately?", "You can't undo this."
        ):
            return
        for conv in trash:
            w.controller.forget(conv.id, delete_cache=True)
            w.store.delete_forever(conv.id)
        self.load_trash()
        self.refresh_sidebar()
