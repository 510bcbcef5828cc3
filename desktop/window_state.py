"""What the window remembers between runs: geometry, the sidebar split, the open conversation and an unsent draft.

All of it lives in one ``QSettings`` INI file (:attr:`desktop.paths.AppPaths.window_ini`); what the user chooses
lives in :mod:`desktop.settings` instead. The draft is the text of a message being sent, kept until the store
has it, so a crash during prefill loses nothing: the next start puts it back into the message box.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QSettings

if TYPE_CHECKING:
    from desktop.app import MainWindow


class WindowState:
    """The window's ``window.ini``: see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)

    def restore(self, window: MainWindow) -> None:
        """Geometry, splitter sizes and whether the sidebar was hidden, as the last run left them."""
        geometry = self.qsettings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            window.restoreGeometry(geometry)
        splitter = self.qsettings.value("splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            window.splitter.restoreState(splitter)
        if self.qsettings.value("sidebar_hidden", False, type=bool):
            window.sidebar.hide()

    def save(self, window: MainWindow) -> None:
        self.qsettings.setValue("geometry", window.saveGeometry())
        self.qsettings.setValue("splitter", window.splitter.saveState())
        self.qsettings.setValue("sidebar_hidden", not window.sidebar.isVisible())
        self.qsettings.setValue("last_conversation", window.controller.current or "")
        self.qsettings.sync()

    def last_conversation(self) -> str:
        """The id of the conversation open when the app last closed ("" if none)."""
        return str(self.qsettings.value("last_conversation", "", type=str))

    def set_last_conversation(self, conv_id: str) -> None:
        self.qsettings.setValue("last_conversation", conv_id)

    def save_draft(self, conv_id: str | None, text: str) -> None:
        """Keep the text being sent until the store has it (a crash during prefill then loses nothing)."""
        if text:
            self.qsettings.setValue("draft/text", text)
            self.qsettings.setValue("draft/conversation", conv_id or "")
        else:
            self.qsettings.remove("draft")
        self.qsettings.sync()

    def take_draft(self) -> str:
        """The draft a previous run left unsent ("" if none); it is forgotten here, the message box has it now."""
        text = str(self.qsettings.value("draft/text", "", type=str))
        if text:
            self.qsettings.remove("draft")
        return text
