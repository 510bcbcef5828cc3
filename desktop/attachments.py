"""Attaching documents in the window: 📎, drop and paste, read and indexed off the GUI thread, shown as chips.

A file goes through two chores on the chores thread (:class:`desktop.bridge.ChoreRunner`), so the window never
waits on a 300-page PDF:

1. **prepare** (:func:`olmo3.docs.turn.prepare`): read, split into passages, count tokens with the loaded model's own
   tokenizer. A file that can't be attached stops here: its chip shows the one-sentence reason, and nothing was
   written anywhere.
2. **index** (:func:`olmo3.store.attachments.index_document`, on a connection of its own): the text and passages go
   into the conversation store, *pending* (no message yet). A new chat becomes a stored conversation at this point,
   so the document is kept like a draft: reopening the conversation brings its chip back.

Sending binds the pending attachments to the user message (:class:`desktop.turns.TurnRecorder`); the chips leave
the composer and appear on the sent message. A turn stopped before its first token, or refused for its length,
leaves them pending, and :meth:`DocumentAttacher.reload` puts them back. Removing a chip removes the attachment.

Clicking a source under a reply opens the passage (or the whole document) in a :class:`desktop.chips.PassageDialog`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from desktop.chips import DocumentChip, PassageDialog, reflow
from desktop.formatting import short_count
from olmo3.docs.chunk import TokenCounter
from olmo3.docs.extract import DocumentError
from olmo3.docs.prompt import choose_modes, format_whole
from olmo3.docs.turn import Prepared, prepare, prepare_bytes, tokenizer_counter

log = logging.getLogger(__name__)

FILE_FILTER = (
    "Documents (*.pdf *.docx *.txt *.md *.markdown *.html *.htm *.csv *.json *.py *.js *.ts *.c *.cpp *.h *.rs "
    "*.go *.java *.rb *.sh *.yaml *.yml *.toml *.xml *.tex *.rst);;All files (*)"
)


@dataclass
class _Item:
    """One chip's document on its way from a file to the store."""

    key: int
    name: str
    chip: DocumentChip | None
    conv_id: str | None = None
    attachment_id: int | None = None
    pages: int = 0
    tokens: int = 0
    state: str = "reading"  # reading → indexing → ready, or error
    removed: bool = False  # the chip's × while in flight: nothing is kept
    detached: bool = False  # the composer moved to another conversation while in flight: it goes on without a chip


def _refusal_as_result(work: Callable[[], Prepared]) -> Prepared | DocumentError:
    """A file we won't attach is an expected answer, not a failure of the chore (no traceback in the log)."""
    try:
        return work()
    except DocumentError as exc:
        return exc


def _describe_error(exc: object) -> str:
    if isinstance(exc, DocumentError):
        return exc.reason
    return f"the file could not be read ({exc})"


def _pages(n: int) -> str:
    return f"{n} page{'s' if n != 1 else ''}"


class DocumentAttacher(QObject):
    """The composer's attachments for the current conversation (see the module docstring).

    Signals:
        changed(): chips were added, finished or removed (tests and the window listen).
    """

    changed = Signal()

    def __init__(self, *, store: Any, chores: Any, composer: Any, controller: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.chores = chores
        self.composer = composer
        self.controller = controller
        self._items: list[_Item] = []
        self._keys = itertools.count(1)
        self._counters: dict[str | None, TokenCounter] = {}  # chores thread only
        self.dialog: PassageDialog | None = None
        self.parent_widget: QWidget | None = None
        self._creating = False  # a new chat is being saved for its first document: not a conversation switch
        # Replaced in tests (no native dialogs offscreen): the files the user chose.
        self.ask_files: Callable[[], list[str]] = self._ask_files
        composer.attach_requested.connect(self.choose_files)
        composer.files_attached.connect(self.attach_paths)
        composer.data_attached.connect(self.attach_data)

    # --------------------------------------------------------------------------------------------- attaching
    def _ask_files(self) -> list[str]:
        paths, _ = QFileDialog.getOpenFileNames(self.parent_widget, "Attach Files", str(Path.home()), FILE_FILTER)
        return list(paths)

    def choose_files(self) -> None:
        self.attach_paths(self.ask_files())

    def attach_paths(self, paths: object) -> None:
        for path in paths if isinstance(paths, list | tuple) else ():
            name = Path(str(path)).name or str(path)
            self._start(name, self._reader(str(path), self.controller.model_path))

    def _reader(self, path: str, model_path: str | None) -> Callable[[], Prepared | DocumentError]:
        return lambda: _refusal_as_result(lambda: prepare(path, count_tokens=self._counter(model_path)))

    def attach_data(self, name: str, data: bytes) -> None:
        model = self.controller.model_path
        self._start(
            name,
            lambda: _refusal_as_result(lambda: prepare_bytes(name, bytes(data), count_tokens=self._counter(model))),
        )

    def _counter(self, model_path: str | None) -> TokenCounter:
        """The loaded model's content-token counter (made and used on the chores thread only)."""
        if model_path not in self._counters:
            self._counters[model_path] = tokenizer_counter(model_path)
        return self._counters[model_path]

    def _start(self, name: str, work: Callable[[], Prepared | DocumentError]) -> None:
        chip = DocumentChip(name, removable=True)
        item = _Item(next(self._keys), name, chip, conv_id=self.controller.current)
        chip.set_detail("Reading…", "reading")
        chip.remove_requested.connect(lambda item=item: self.remove(item))
        self.composer.chips.add(chip)
        self._items.append(item)
        self.chores.submit(work, lambda result, error, item=item: self._prepared(item, result, error))
        self._update()

    def _prepared(self, item: _Item, result: Any, error: BaseException | None) -> None:
        if item.removed or (item.detached and item.conv_id is None):
            return  # removed, or its new chat was left: nothing was written
        if error is not None or not isinstance(result, Prepared):
            self._fail(item, _describe_error(error or result))
            return
        try:
            if item.conv_id is None:
                self._creating = True
                try:
                    item.conv_id = self.controller.ensure_conversation()
                finally:
                    self._creating = False
            conv_id = item.conv_id
        except Exception as exc:
            self._fail(item, f"the conversation could not be saved ({exc})")
            return
        item.conv_id, item.state = conv_id, "indexing"
        item.pages, item.tokens = result.doc.page_count, result.tokens
        path = self.store.path
        self.chores.submit(
            lambda: self._index(path, conv_id, result), lambda r, e, item=item: self._indexed(item, r, e)
        )

    @staticmethod
    def _index(path: Path, conv_id: str, prepared: Prepared) -> int:
        from olmo3.store.attachments import index_document

        return index_document(path, conv_id, prepared)

    def _indexed(self, item: _Item, result: Any, error: BaseException | None) -> None:
        if error is not None or not isinstance(result, int):
            if not (item.removed or item.detached):
                self._fail(item, f"the document could not be saved ({error})")
            return
        item.attachment_id = result
        if item.removed:  # the chip was removed while the document was being saved
            self.store.remove_attachment(result)
            return
        if item.detached:
            return  # the composer moved on: the document waits, pending, in its conversation
        item.state = "ready"
        self._update()

    def _fail(self, item: _Item, reason: str) -> None:
        item.state = "error"
        if item.chip is not None:
            item.chip.set_detail(reason, "error")
        self._update()

    # ------------------------------------------------------------------------------------------ the composer
    def remove(self, item: _Item) -> None:
        """The chip's ×: forget the file (and its stored text, if it got that far)."""
        item.removed = True
        if item.attachment_id is not None and item.state == "ready":
            self.store.remove_attachment(item.attachment_id)
        self._drop(item)
        self._update()

    def _drop(self, item: _Item) -> None:
        if item.chip is not None:
            self.composer.chips.remove(item.chip)
            item.chip = None
        if item in self._items:
            self._items.remove(item)

    def items(self) -> list[_Item]:
        return list(self._items)

    def pending_ids(self) -> tuple[int, ...]:
        """The ready attachments in the composer: what the next message carries."""
        return tuple(i.attachment_id for i in self._items if i.state == "ready" and i.attachment_id is not None)

    def busy(self) -> bool:
        return any(i.state in ("reading", "indexing") for i in self._items)

    def sent(self) -> None:
        """The message went with the ready documents: their chips leave the composer (error chips too)."""
        for item in list(self._items):
            if item.state in ("ready", "error"):
                self._drop(item)
        self._update()

    def reload(self, *_args: object) -> None:
        """Show the current conversation's pending attachments (after a switch, or a turn that never started)."""
        if self._creating:
            return
        for item in list(self._items):
            if item.state in ("reading", "indexing") and item.conv_id == self.controller.current:
                continue  # still on its way into this conversation
            item.detached = item.state in ("reading", "indexing")
            self._drop(item)
        conv_id = self.controller.current
        known = {i.attachment_id for i in self._items}
        for a in self.store.attachments(conv_id, pending=True) if conv_id is not None else ():
            if a.id in known:
                continue
            chip = DocumentChip(a.name, removable=True)
            item = _Item(next(self._keys), a.name, chip, conv_id, a.id, a.page_count, a.tokens, "ready")
            chip.remove_requested.connect(lambda item=item: self.remove(item))
            self.composer.chips.add(chip)
            self._items.append(item)
        self._update()

    def _update(self) -> None:
        reading = [i.name for i in self._items if i.state in ("reading", "indexing")]
        self.composer.set_documents_note(
            f"Reading {reading[0]}…" if len(reading) == 1 else f"Reading {len(reading)} files…" if reading else ""
        )
        self.refresh_previews()
        self.changed.emit()

    def refresh_previews(self) -> None:
        """Ready chips say whether they would go in whole or be retrieved from, with the context left now."""
        ready = [i for i in self._items if i.state == "ready" and i.chip is not None]
        if not ready:
            return
        modes = choose_modes([i.tokens for i in ready], self.controller.remaining_context())
        for item, mode in zip(ready, modes, strict=True):
            how = "whole" if mode == "whole" else "passages"
            assert item.chip is not None
            item.chip.set_detail(f"{_pages(item.pages)} · {short_count(item.tokens)} tokens · {how}")

    # ------------------------------------------------------------------------------------------------ sources
    def show_source(self, source: object) -> PassageDialog | None:
        """A "Sources" link was clicked: show the passage (or the whole document) it names."""
        if not isinstance(source, tuple) or len(source) != 2:
            return None
        attachment, hit = source
        if hit is not None:
            title, text = f"{attachment.name} — {hit.page_label}", hit.text
            if attachment.name.lower().endswith(".pdf"):
                text = reflow(text)
        else:
            title = f"{attachment.name} — whole document"
            try:
                text = format_whole(self.store.attachment_document(attachment.attachment_id))
            except Exception:
                text = "This document is no longer stored."
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = PassageDialog(title, text, self.parent_widget)
        self.dialog.show()
        return self.dialog
