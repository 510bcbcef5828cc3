"""The menu bar (File, Edit, View, Window, Help) and its keyboard shortcuts.

:func:`build_menus` fills the window's menu bar and returns the :class:`MenuActions` whose enabled state follows
the window (:meth:`MenuActions.sync`). Shortcuts are application-wide, so they work from any widget with focus;
Edit's Copy, Paste and Select All act on whichever widget has the focus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QApplication, QMenu

from desktop import dialogs
from desktop.remote import CONNECT_TEXT
from desktop.transfer import FORMATS

if TYPE_CHECKING:
    from desktop.app import MainWindow


@dataclass
class MenuActions:
    """The menu actions whose enabled state changes while the app runs."""

    new: QAction
    export: QAction
    delete: QAction
    stop: QAction
    regenerate: QAction
    disconnect: QAction | None = None  # "Disconnect from the Server": enabled while an Olmo server chats

    def sync(self, *, busy: bool, has_conversation: bool) -> None:
        """Stop only while a reply runs; regenerate, export and delete need an open conversation."""
        self.stop.setEnabled(busy)
        self.regenerate.setEnabled(not busy and has_conversation)
        self.export.setEnabled(has_conversation)
        self.delete.setEnabled(has_conversation)


def build_menus(window: MainWindow) -> MenuActions:
    """Build the window's menu bar; the returned actions are synced by the window (:meth:`MenuActions.sync`)."""
    bar = window.menuBar()

    def add(menu: QMenu, text: str, slot: Callable[..., Any], shortcut: Any = None) -> QAction:
        action = QAction(text, window)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    conversations, transfer, controller = window.conversations, window.transfer, window.controller
    file_menu = bar.addMenu("&File")
    new = add(file_menu, "New Chat", conversations.new_chat, "Ctrl+N")
    add(file_menu, "Import Conversation…", transfer.import_dialog, "Ctrl+Shift+I")
    export_menu = file_menu.addMenu("Export Conversation")
    export = add(file_menu, "Export…", transfer.export_current_dialog, "Ctrl+Shift+E")
    for fmt, (label, _ext) in FORMATS.items():
        add(export_menu, f"{label}…", lambda _checked=False, f=fmt: transfer.export_current(f))
    file_menu.addSeparator()
    delete = add(file_menu, "Move to Trash", conversations.delete_current, "Ctrl+Backspace")
    file_menu.addSeparator()
    add(file_menu, "Close Window", window.close, QKeySequence.StandardKey.Close)
    quit_action = add(file_menu, "Quit Olmo Desktop", window.close, QKeySequence.StandardKey.Quit)
    quit_action.setMenuRole(QAction.MenuRole.QuitRole)

    edit_menu = bar.addMenu("&Edit")
    add(edit_menu, "Copy", lambda: _on_focus("copy"), QKeySequence.StandardKey.Copy)
    add(edit_menu, "Paste", lambda: _on_focus("paste"), QKeySequence.StandardKey.Paste)
    add(edit_menu, "Select All", lambda: _on_focus("selectAll"), QKeySequence.StandardKey.SelectAll)
    edit_menu.addSeparator()
    add(edit_menu, "Find…", window.sidebar.focus_search, "Ctrl+F")
    settings_action = add(edit_menu, "Settings…", window.open_settings, "Ctrl+,")
    settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)

    view_menu = bar.addMenu("&View")
    add(view_menu, "Toggle Sidebar", window.toggle_sidebar, "Ctrl+Shift+S")
    add(view_menu, "Show Trash", lambda: window.sidebar.show_trash(True))
    view_menu.addSeparator()
    stop = add(view_menu, "Stop Generating", controller.stop, "Ctrl+.")
    regenerate = add(view_menu, "Regenerate Reply", controller.regenerate, "Ctrl+R")
    view_menu.addSeparator()
    theme_menu = view_menu.addMenu("Appearance")
    group = QActionGroup(window)
    for value, text in (("system", "Match System"), ("light", "Light"), ("dark", "Dark")):
        action = theme_menu.addAction(text)
        action.setCheckable(True)
        action.setChecked(window.theme.mode == value)
        action.triggered.connect(lambda _checked=False, v=value: window.set_theme(v))
        group.addAction(action)

    window_menu = bar.addMenu("&Window")
    add(window_menu, "Minimize", window.showMinimized, "Ctrl+M")
    add(window_menu, "Zoom", lambda: window.showNormal() if window.isMaximized() else window.showMaximized())
    window_menu.addSeparator()
    add(window_menu, "Models…", window.model_actions.open_picker, "Ctrl+Shift+M")
    add(window_menu, CONNECT_TEXT, window.remote.open_dialog)
    disconnect = add(window_menu, "Disconnect from the Server", window.remote.disconnect)
    disconnect.setEnabled(False)

    help_menu = bar.addMenu("&Help")
    add(help_menu, "Show Logs", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(window.paths.log_dir))))
    about = add(help_menu, "About Olmo Desktop", lambda: dialogs.show_about(window))
    about.setMenuRole(QAction.MenuRole.AboutRole)
    return MenuActions(new=new, export=export, delete=delete, stop=stop, regenerate=regenerate, disconnect=disconnect)


def _on_focus(method: str) -> None:
    """Call ``copy``/``paste``/``selectAll`` on the focused widget, if it has one."""
    widget = QApplication.focusWidget()
    if widget is not None and hasattr(widget, method):
        getattr(widget, method)()
