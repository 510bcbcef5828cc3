"""A conversation database that cannot be opened at start-up: keep it aside, start fresh, offer to salvage.

:func:`open_store` opens the store; when the file is damaged (or is not a conversation store at all) it renames the
file (and its ``-wal``/``-shm``) to ``<name>.damaged-YYYYmmdd-HHMMSS`` (its bytes unchanged), starts a new empty
store and returns a :class:`KeptAside` note. The window shows the note in a window-modal box (never a blocking
one) that names the kept file and the command that salvages it, with a button that salvages it right away: every
readable conversation is copied into a scratch store (:func:`olmo3.store.salvage.salvage`) and imported from there.
A store written by a newer Olmo Desktop is never moved: :class:`olmo3.store.NewerStoreError` goes to the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from olmo3.store import ConversationStore, DamagedStoreError, NotAStoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptAside:
    """A damaged database was renamed to ``aside`` and a new one started at ``path``."""

    path: Path
    aside: Path
    reason: str

    def recover_command(self) -> str:
        return f"olmo3 store recover ~/recovered-conversations.sqlite3 --db {shlex.quote(str(self.aside))}"

    def text(self) -> str:
        return (
            f"Your conversations database could not be read, so Olmo Desktop started a new, empty one. "
            f"The old file was kept, unchanged, as:\n\n{self.aside}\n\n"
            f"Salvage copies every conversation that is still readable into the new database. "
            f"From a terminal: {self.recover_command()}"
        )


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # SQLite pairs them by name: they move with the file
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    return aside


def open_store(path: Path) -> tuple[ConversationStore, KeptAside | None]:
    """The store at ``path``; a damaged or foreign file there is kept aside and a new store started."""
    try:
        return ConversationStore(path), None
    except (DamagedStoreError, NotAStoreError) as exc:
        aside = _move_aside(path)
        log.error("conversation store %s unusable (%s); kept as %s, starting a new one", path, exc, aside)
        return ConversationStore(path), KeptAside(path, aside, str(exc))


def salvage_into(store: ConversationStore, aside: Path) -> tuple[int, int]:
    """Import every readable, not-trashed conversation of ``aside`` into ``store``; (imported, refused)."""
    from olmo3.store.salvage import salvage

    imported = refused = 0
    with tempfile.TemporaryDirectory(prefix="olmo-salvage-") as tmp:
        scratch = Path(tmp) / "salvaged.sqlite3"
        report = salvage(aside, scratch)
        log.info("salvage of %s: %s", aside, report.summary())
        with ConversationStore(scratch, trash_retention_days=None) as source:
            for conv in source.list_conversations():
                try:
                    store.import_conversation(source.export_dict(conv.id))
                    imported += 1
                except ValueError as exc:
                    log.warning("salvage: conversation %s not imported: %s", conv.id, exc)
                    refused += 1
    return imported, refused


class DamagedStoreNotice:
    """The note about a kept-aside database, with a Salvage button; ``window`` refreshes its sidebar after."""

    def __init__(self, window: Any, kept: KeptAside) -> None:
        self.window = window
        self.kept = kept
        self.result: tuple[int, int] | None = None
        parent: QWidget = window
        self.box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Conversations database damaged",
            kept.text(),
            QMessageBox.StandardButton.Close,
            parent,
        )
        self.box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.salvage_button = self.box.addButton("Salvage Conversations", QMessageBox.ButtonRole.AcceptRole)
        self.box.setWindowModality(Qt.WindowModality.WindowModal)
        self.box.buttonClicked.connect(self._clicked)

    def show(self) -> None:
        self.box.open()  # not exec(): the window keeps running behind the sheet

    def _clicked(self, button: object) -> None:
        if button is self.salvage_button:
            self.salvage()

    def salvage(self) -> tuple[int, int]:
        try:
            self.result = salvage_into(self.window.store, self.kept.aside)
        except Exception as exc:  # the file is beyond the row-by-row copy: say so, keep it
            log.exception("salvage of %s failed", self.kept.aside)
            self.window.show_error("Salvage failed", f"{exc}. The file is still at {self.kept.aside}.")
            return (0, 0)
        imported, refused = self.result
        self.window.refresh_sidebar()
        note = f"Salvaged {imported} conversation(s) from the damaged database"
        if refused:
            note += f"; {refused} could not be read back"
        self.window.show_toast(note + ".")
        with contextlib.suppress(RuntimeError):  # the box may be gone with its window
            self.box.close()
        return self.result
