"""The main window: sidebar + conversation pane, menus, settings, model management, export, and shutdown.

:class:`MainWindow` is the composition root. It owns the conversation store (GUI thread), the engine bridge, the
chores thread and the model manager, builds the widgets and wires them to :class:`desktop.controller.ChatController`,
which runs the turns. Everything it writes lives under one :class:`desktop.paths.AppPaths`, so tests and screenshots
run against a temporary folder.

Closing the window stops a running reply, saves it, spills every conversation cache to disk, pauses downloads and
joins every thread the window started (:meth:`MainWindow.shutdown`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDesktopServices,
    QKeySequence,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QSplitter,
    QStackedWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.bridge import ChoreRunner, EngineBridge
from desktop.chat_view import COLUMN_MAX, COLUMN_PAD, ChatView
from desktop.composer import Composer, StatusRow
from desktop.controller import ChatController, model_display_name
from desktop.exporting import (
    FORMATS,
    export_conversation,
    file_filter,
    read_import,
    safe_filename,
)
from desktop.model_picker import ModelPickerDialog
from desktop.models import ModelManager
from desktop.paths import HOME_ENV, AppPaths
from desktop.settings import (
    THINK_PRESET,
    Settings,
    instruct_preset,
    load_settings,
    save_settings,
)
from desktop.settings_dialog import UNCHANGED, SettingsDialog
from desktop.sidebar import ConversationRow, SearchRow, Sidebar
from desktop.widgets import ChatHeader, Toast, WelcomePanel
from olmo3.appinfo import APP_NAME

log = logging.getLogger(__name__)


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused if one exists), named so platformdirs/QSettings and the menu bar agree."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else [])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName("Ai2")
    app.setWindowIcon(th.app_icon())
    return app


def theme_manager(app: QApplication, mode: str) -> th.ThemeManager:
    """One theme manager per application (windows come and go in tests)."""
    manager = getattr(app, "_olmo_theme_manager", None)
    if manager is None:
        manager = th.ThemeManager(app, mode)
        app._olmo_theme_manager = manager  # type: ignore[attr-defined]
    elif manager.mode != mode:
        manager.set_mode(mode)
    return manager


class _BottomBar(QWidget):
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


class MainWindow(QMainWindow):
    """The Olmo Desktop window. See the module docstring."""

    def __init__(
        self,
        *,
        paths: AppPaths | None = None,
        theme_mode: str | None = None,
        start_engine: bool = True,
        model_store: Any = None,
        settings: Settings | None = None,
        auto_load: bool = True,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.paths = (paths or AppPaths.default()).ensure()
        self.settings = settings if settings is not None else load_settings(self.paths.settings_file)
        app = QApplication.instance()
        assert isinstance(app, QApplication), "create a QApplication first (desktop.app.create_application)"
        self.theme = theme_manager(app, theme_mode or self.settings.theme)
        self.theme.changed.connect(self._on_theme_changed)
        self.qsettings = QSettings(str(self.paths.window_ini), QSettings.Format.IniFormat)
        self._closed = False
        self._shutdown_ok: bool | None = None

        from olmo3.store import ConversationStore

        self.store = ConversationStore(self.paths.database)
        self.chores = ChoreRunner(self)
        self.bridge = EngineBridge(
            cache_dir=self.paths.kv_cache_dir,
            memory_budget_bytes=self.settings.memory_budget_bytes,
            session_options=engine_options,
            parent=self,
        )
        if model_store is None:
            from olmo3.hub import ModelStore

            model_store = ModelStore(self._models_dir(), include_hf_cache=not os.environ.get(HOME_ENV))
        self.models = ModelManager(model_store, self.chores, self)
        # Deleting a model also deletes the conversation caches made with it (matched by weight fingerprint).
        self.models.also_delete = model_store.conversation_cache_deleter(self.paths.kv_cache_dir)
        # Conversations purged from the Trash (after 30 days) leave their spilled caches behind: remove those.
        known = {c.id for c in self.store.list_conversations()} | {c.id for c in self.store.list_trash()}
        self.bridge.remove_orphan_caches(known)

        self._build_ui()
        self.controller = ChatController(
            store=self.store,
            bridge=self.bridge,
            view=self.chat_view,
            composer=self.composer,
            status=self.status_row,
            settings=lambda: self.settings,
            parent=self,
        )
        self.controller.ask_overflow = self._ask_overflow
        self.controller.draft_saver = self._save_draft
        self._wire()
        self._build_menus()
        self.picker: ModelPickerDialog | None = None
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(th.app_icon())
        self.resize(1100, 720)
        self.setMinimumSize(640, 460)
        self._restore_window_state()
        self.refresh_sidebar()
        self._update_empty_state()
        self._restore_draft()
        last = self.qsettings.value("last_conversation", "", type=str)
        if last:
            self.controller.open(last) if self._exists(last) else None
        if start_engine:
            self.bridge.start()
            last_model = self.settings.last_model
            if auto_load and self.settings.auto_load_last_model and last_model and Path(last_model).is_dir():
                self.controller.load_model(last_model, self._name_for_path(last_model))
        QTimer.singleShot(0, self._warm_up)

    # ---------------------------------------------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        self.sidebar = Sidebar(self)
        pane = QWidget(self)
        pane.setObjectName("conversationPane")
        pane.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        pane_layout = QVBoxLayout(pane)
        pane_layout.setContentsMargins(0, 0, 0, 0)
        pane_layout.setSpacing(0)
        self.header = ChatHeader(pane)
        self.stack = QStackedWidget(pane)
        self.chat_view = ChatView(self.stack)
        self.welcome = WelcomePanel(self.stack)
        self.welcome.setObjectName("conversationPane")
        self.welcome.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.stack.addWidget(self.chat_view)
        self.stack.addWidget(self.welcome)
        self.composer = Composer(pane)
        self.status_row = StatusRow(pane)
        self.bottom = _BottomBar(self.composer, self.status_row, pane)
        pane_layout.addWidget(self.header)
        pane_layout.addWidget(self.stack, 1)
        pane_layout.addWidget(self.bottom)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(pane)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.splitter.setHandleWidth(1)
        self.splitter.setSizes([260, 840])
        self.setCentralWidget(self.splitter)
        self.toast = Toast(self)

    def _wire(self) -> None:
        c = self.controller
        self.sidebar.new_chat_requested.connect(self.new_chat)
        self.sidebar.conversation_selected.connect(self.open_conversation)
        self.sidebar.rename_requested.connect(self.rename_conversation)
        self.sidebar.pin_requested.connect(self.pin_conversation)
        self.sidebar.duplicate_requested.connect(self.duplicate_conversation)
        self.sidebar.delete_requested.connect(self.delete_conversation)
        self.sidebar.export_requested.connect(self.export_conversation)
        self.sidebar.restore_requested.connect(self.restore_conversation)
        self.sidebar.delete_forever_requested.connect(self.delete_forever)
        self.sidebar.empty_trash_requested.connect(self.empty_trash)
        self.sidebar.search_changed.connect(self.search)
        self.sidebar.trash_button.toggled.connect(self._on_trash_toggled)
        self.header.model_clicked.connect(self.open_model_picker)
        self.header.settings_clicked.connect(self.open_settings)
        self.header.export_clicked.connect(self._export_current)
        self.header.title_edited.connect(self._rename_current)
        self.header.sidebar_toggled.connect(self.toggle_sidebar)
        self.composer.choose_model_requested.connect(self.open_model_picker)
        self.welcome.pick.connect(self._welcome_pick)
        self.welcome.open_picker.connect(self.open_model_picker)
        self.toast.action_clicked.connect(self._on_toast_action)
        self.chat_view.copied.connect(self._on_copied)
        c.conversations_changed.connect(self.refresh_sidebar)
        c.current_changed.connect(self._on_current_changed)
        c.model_changed.connect(self._on_model_changed)
        c.model_loading.connect(self._on_model_loading)
        c.model_failed.connect(self._on_model_failed)
        c.cache_state_changed.connect(self._on_cache_state)
        c.busy_changed.connect(self._on_busy_changed)
        c.message.connect(self.show_toast)
        self.models.download_event.connect(self._on_download_event)
        self.models.changed.connect(self._update_empty_state)
        self.models.error.connect(self._on_models_error)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.act_new = self._action(file_menu, "New Chat", self.new_chat, "Ctrl+N")
        self._action(file_menu, "Import Conversation…", self.import_conversation, "Ctrl+Shift+I")
        export_menu = file_menu.addMenu("Export Conversation")
        self.act_export = self._action(file_menu, "Export…", self.export_current_dialog, "Ctrl+Shift+E")
        for fmt, (label, _ext) in FORMATS.items():
            self._action(export_menu, f"{label}…", lambda _checked=False, f=fmt: self._export_current(f))
        file_menu.addSeparator()
        self.act_delete = self._action(file_menu, "Move to Trash", self.delete_current, "Ctrl+Backspace")
        file_menu.addSeparator()
        self._action(file_menu, "Close Window", self.close, QKeySequence.StandardKey.Close)
        quit_action = self._action(file_menu, "Quit Olmo Desktop", self.close, QKeySequence.StandardKey.Quit)
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)

        edit_menu = bar.addMenu("&Edit")
        self._action(edit_menu, "Copy", self._edit_copy, QKeySequence.StandardKey.Copy)
        self._action(edit_menu, "Paste", self._edit_paste, QKeySequence.StandardKey.Paste)
        self._action(edit_menu, "Select All", self._edit_select_all, QKeySequence.StandardKey.SelectAll)
        edit_menu.addSeparator()
        self._action(edit_menu, "Find…", self.sidebar.focus_search, "Ctrl+F")
        settings_action = self._action(edit_menu, "Settings…", self.open_settings, "Ctrl+,")
        settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)

        view_menu = bar.addMenu("&View")
        self._action(view_menu, "Toggle Sidebar", self.toggle_sidebar, "Ctrl+Shift+S")
        self._action(view_menu, "Show Trash", lambda: self.sidebar.show_trash(True))
        view_menu.addSeparator()
        self.act_stop = self._action(view_menu, "Stop Generating", self.controller.stop, "Ctrl+.")
        self.act_regenerate = self._action(view_menu, "Regenerate Reply", self.controller.regenerate, "Ctrl+R")
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("Appearance")
        group = QActionGroup(self)
        for value, text in (("system", "Match System"), ("light", "Light"), ("dark", "Dark")):
            action = theme_menu.addAction(text)
            action.setCheckable(True)
            action.setChecked(self.theme.mode == value)
            action.triggered.connect(lambda _checked=False, v=value: self.set_theme(v))
            group.addAction(action)

        window_menu = bar.addMenu("&Window")
        self._action(window_menu, "Minimize", self.showMinimized, "Ctrl+M")
        self._action(window_menu, "Zoom", self._toggle_zoom)
        window_menu.addSeparator()
        self._action(window_menu, "Models…", self.open_model_picker, "Ctrl+Shift+M")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Show Logs", self.show_logs)
        about = self._action(help_menu, "About Olmo Desktop", self.show_about)
        about.setMenuRole(QAction.MenuRole.AboutRole)
        self._sync_actions()

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    # -------------------------------------------------------------------------------------------- sidebar data
    def refresh_sidebar(self) -> None:
        rows = [
            ConversationRow(
                c.id,
                c.title,
                c.updated_at,
                c.pinned,
                self.controller.cache_state(c.id)[0] if hasattr(self, "controller") else "cold",
            )
            for c in self.store.list_conversations()
        ]
        self.sidebar.set_conversations(rows, trash_count=self.store.trash_count())
        if self.sidebar.in_trash():
            self._load_trash()
        elif self.sidebar.search.text().strip():
            self.search(self.sidebar.search.text().strip())
        if hasattr(self, "controller"):
            self._update_header_title()

    def _load_trash(self) -> None:
        self.sidebar.set_trash(
            [
                ConversationRow(c.id, c.title, c.updated_at, c.pinned, "cold", c.deleted_at)
                for c in self.store.list_trash()
            ]
        )

    def _on_trash_toggled(self, on: bool) -> None:
        if on:
            self._load_trash()

    def search(self, text: str) -> None:
        """FTS search as the user types (debounced by the sidebar); one row per conversation."""
        from olmo3.store import snippet_to_html

        if not text:
            return
        order: list[str] = []
        found: dict[str, tuple[str, str]] = {}  # conversation → (title, snippet of its best message hit)
        try:
            hits = self.store.search(text, limit=80)
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
        rows = [SearchRow(cid, found[cid][0], found[cid][1], self.controller.cache_state(cid)[0]) for cid in order]
        self.sidebar.show_search_results(rows)

    # --------------------------------------------------------------------------------------- conversation ops
    def new_chat(self) -> None:
        self.sidebar.show_trash(False)
        self.controller.new_chat()
        self.composer.setFocus()

    def open_conversation(self, conv_id: str) -> None:
        self.controller.open(conv_id)

    def _exists(self, conv_id: str) -> bool:
        from olmo3.store import NotFoundError

        try:
            return self.store.get_conversation(conv_id).deleted_at is None
        except NotFoundError:
            return False

    def rename_conversation(self, conv_id: str, title: str) -> None:
        self.store.rename(conv_id, title)
        self.refresh_sidebar()

    def _rename_current(self, title: str) -> None:
        if self.controller.current is not None:
            self.rename_conversation(self.controller.current, title)

    def pin_conversation(self, conv_id: str, pinned: bool) -> None:
        self.store.set_pinned(conv_id, pinned)
        self.refresh_sidebar()

    def duplicate_conversation(self, conv_id: str) -> None:
        new_id = self.store.duplicate(conv_id)
        self.refresh_sidebar()
        self.controller.open(new_id)

    def delete_conversation(self, conv_id: str) -> None:
        """Move to the Trash; the toast offers Undo for 8 s (the Trash keeps it for 30 days)."""
        title = self.store.get_conversation(conv_id).title
        self.controller.forget(conv_id)
        self.store.delete(conv_id)
        self._undo_conv = conv_id
        self.refresh_sidebar()
        self.show_toast(f"“{_ellipsize(title, 40)}” moved to Trash", "Undo")

    def delete_current(self) -> None:
        """⌘⌫. Never while the user is editing text: there the keys mean "delete to the start of the line"."""
        focus = QApplication.focusWidget()
        editing = (isinstance(focus, QLineEdit) and not focus.isReadOnly()) or (
            isinstance(focus, (QTextEdit, QPlainTextEdit)) and not focus.isReadOnly()
        )
        if self.controller.current is not None and not editing:
            self.delete_conversation(self.controller.current)

    def restore_conversation(self, conv_id: str) -> None:
        self.store.restore(conv_id)
        self.refresh_sidebar()
        self._load_trash()

    def undo_delete(self) -> None:
        conv_id = getattr(self, "_undo_conv", None)
        if conv_id is None:
            return
        self._undo_conv = None
        self.store.restore(conv_id)
        self.refresh_sidebar()
        self.controller.open(conv_id)

    def delete_forever(self, conv_id: str) -> None:
        if not self.confirm("Delete this conversation immediately?", "You can't undo this."):
            return
        self.controller.forget(conv_id, delete_cache=True)
        self.store.delete_forever(conv_id)
        self._load_trash()
        self.refresh_sidebar()

    def empty_trash(self) -> None:
        trash = self.store.list_trash()
        if not trash or not self.confirm(
            f"Delete {len(trash)} conversation(s) in the Trash immediately?", "You can't undo this."
        ):
            return
        for conv in trash:
            self.controller.forget(conv.id, delete_cache=True)
            self.store.delete_forever(conv.id)
        self._load_trash()
        self.refresh_sidebar()

    def _on_toast_action(self) -> None:
        self.undo_delete()

    def _on_current_changed(self, conv_id: object) -> None:
        self.sidebar.set_current(conv_id if isinstance(conv_id, str) else None)
        if isinstance(conv_id, str):
            self.qsettings.setValue("last_conversation", conv_id)
            state, nbytes = self.controller.cache_state(conv_id)
            self.header.set_cache_state(state, nbytes)
        else:
            self.header.set_cache_state(None)
        self._update_header_title()
        self._update_empty_state()
        self._sync_actions()

    def _update_header_title(self) -> None:
        conv_id = self.controller.current
        if conv_id is None:
            self.header.set_title("New chat", renamable=False)
            return
        try:
            self.header.set_title(self.store.get_conversation(conv_id).title, renamable=True)
        except Exception:
            self.header.set_title("", renamable=False)

    # ------------------------------------------------------------------------------------------------ export
    def export_current_dialog(self) -> None:
        conv_id = self.controller.current
        if conv_id is None:
            self.show_toast("Open a conversation to export it.")
            return
        conv = self.store.get_conversation(conv_id)
        filters = ";;".join(file_filter(f) for f in FORMATS)
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export Conversation", str(Path.home() / safe_filename(conv.title, "md")), filters
        )
        if not path:
            return
        fmt = next((f for f, (_l, ext) in FORMATS.items() if path.lower().endswith(ext)), None)
        if fmt is None:
            fmt = next((f for f in FORMATS if file_filter(f) == chosen), "md")
            path += FORMATS[fmt][1]
        self.export_to(conv_id, fmt, path)

    def _export_current(self, fmt: str) -> None:
        if self.controller.current is not None:
            self.export_conversation(self.controller.current, fmt)

    def export_conversation(self, conv_id: str, fmt: str) -> None:
        conv = self.store.get_conversation(conv_id)
        path = self.ask_save_path(safe_filename(conv.title, fmt), fmt)
        if path:
            self.export_to(conv_id, fmt, path)

    def ask_save_path(self, name: str, fmt: str) -> str | None:
        """Replaced in tests; asks where to save an export."""
        path, _ = QFileDialog.getSaveFileName(self, "Export Conversation", str(Path.home() / name), file_filter(fmt))
        return path or None

    def export_to(self, conv_id: str, fmt: str, path: str | Path) -> Path | None:
        try:
            self.store.flush()
            written = export_conversation(self.store.export_dict(conv_id), fmt, path)
        except (OSError, ValueError) as exc:
            self.show_error("Export failed", f"Couldn't write {path}: {exc}")
            return None
        self.show_toast(f"Exported to {Path(written).name}")
        return written

    def import_conversation(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import Conversation", str(Path.home()), file_filter("json"))
        if path:
            self.import_from(path)

    def import_from(self, path: str | Path) -> str | None:
        try:
            conv = read_import(path)
            conv_id = self.store.import_conversation(conv)
        except (ValueError, OSError) as exc:
            self.show_error("Import failed", str(exc))
            return None
        self.refresh_sidebar()
        self.controller.open(conv_id)
        self.show_toast(f"Imported “{_ellipsize(conv.get('title', ''), 40)}”")
        return conv_id

    # ------------------------------------------------------------------------------------------------ models
    def _models_dir(self) -> Path:
        return Path(self.settings.models_dir).expanduser() if self.settings.models_dir else self.paths.models_dir

    def _name_for_path(self, path: str) -> str:
        try:
            from olmo3.model.modelinfo import inspect_model_dir

            return model_display_name(inspect_model_dir(path), path)
        except Exception:
            return Path(path).name

    def open_model_picker(self) -> ModelPickerDialog:
        if self.picker is None:
            self.picker = ModelPickerDialog(self.models, self)
            self.picker.load_requested.connect(self.load_model)
            self.picker.unload_requested.connect(self.controller.unload_model)
        loading = self.controller.loading[0] if self.controller.loading else None
        self.picker.set_loaded(self.controller.model_path, loading=loading)
        self.picker.show()
        self.picker.raise_()
        self.picker.activateWindow()
        return self.picker

    def load_model(self, path: str, name: str = "") -> None:
        self.controller.load_model(path, name or self._name_for_path(path))

    def _on_model_loading(self, path: str, name: str) -> None:
        self.header.set_model(name, loading=True)
        if self.picker is not None:
            self.picker.set_loaded(self.controller.model_path, loading=path)
        self._update_empty_state()

    def _on_model_changed(self, info: object) -> None:
        if info is not None:
            name = self.controller.model_name or model_display_name(info)
            self.header.set_model(name)
            self.settings = replace(self.settings, last_model=self.controller.model_path or "")
            if self.settings.sampling_follows_model:
                preset = (
                    THINK_PRESET if getattr(info, "is_think", False) else instruct_preset(self.controller.model_path)
                )
                self.settings = replace(self.settings, sampling=replace(preset, seed=self.settings.sampling.seed))
            self._save_settings()
        else:
            self.header.set_model(None)
        if self.picker is not None:
            self.picker.set_loaded(self.controller.model_path)
        self._update_empty_state()

    def _on_model_failed(self, message: str) -> None:
        self.header.set_model(None)
        self.show_error("Couldn't load the model", message)
        if self.picker is not None:
            self.picker.set_loaded(self.controller.model_path)
            self.picker.show_error("Couldn't load the model", message)
        self._update_empty_state()

    def _welcome_pick(self, repo_id: str) -> None:
        self.models.start_download(repo_id)
        self._auto_load_repo = repo_id
        self.open_model_picker()

    def _on_download_event(self, event: object) -> None:
        from olmo3 import hub

        active = self.models.active_downloads()
        if active:
            done = sum(d.done_bytes for d in active)
            total = sum(d.total_bytes for d in active) or 1
            self.header.set_download_progress(done / total)
        else:
            self.header.set_download_progress(None)
        if isinstance(event, hub.DownloadCompleted):
            self.show_toast(f"{event.model.name} is ready")
            if self.controller.model_info is None and self.controller.loading is None:
                self.load_model(str(event.model.path))
        self._update_empty_state()

    def _on_models_error(self, title: str, message: str) -> None:
        if self.picker is None or not self.picker.isVisible():
            self.show_error(title, message)

    # ---------------------------------------------------------------------------------------------- settings
    def open_settings(self) -> None:
        conv_id = self.controller.current
        prompt: object = UNCHANGED
        title = ""
        if conv_id is not None:
            conv = self.store.get_conversation(conv_id)
            prompt, title = conv.system_prompt, conv.title
        dialog = SettingsDialog(
            self.settings,
            default_models_dir=self.paths.models_dir,
            model_dir=self.controller.model_path,
            conversation_prompt=prompt,
            conversation_title=title,
            parent=self,
        )
        if dialog.exec():
            self.apply_settings(dialog.result_settings())
            new_prompt = dialog.conversation_prompt()
            if conv_id is not None and new_prompt is not UNCHANGED and new_prompt != prompt:
                self.controller.set_conversation_prompt(conv_id, new_prompt)  # type: ignore[arg-type]

    def apply_settings(self, settings: Settings) -> None:
        old = self.settings
        self.settings = settings
        self._save_settings()
        if settings.theme != old.theme:
            self.set_theme(settings.theme)
        if settings.memory_budget_gb != old.memory_budget_gb:
            self.bridge.set_memory_budget(settings.memory_budget_bytes)
        if settings.models_dir != old.models_dir:
            self.models.store.models_dir = self._models_dir()
            self.models.changed.emit()

    def _save_settings(self) -> None:
        try:
            save_settings(self.paths.settings_file, self.settings)
        except OSError as exc:
            self.show_error("Couldn't save settings", str(exc))

    def set_theme(self, mode: str) -> None:
        self.theme.set_mode(mode)
        if self.settings.theme != mode:
            self.settings = replace(self.settings, theme=mode)
            self._save_settings()

    def _on_theme_changed(self, _theme: object) -> None:
        self.chat_view.apply_theme()
        self.sidebar.apply_theme()
        self.header.apply_theme()
        self.welcome.apply_theme()
        self.composer.apply_theme()

    # --------------------------------------------------------------------------------------------------- misc
    def show_toast(self, text: str, action: str | None = None) -> None:
        self.toast.show_message(text, action)

    def show_error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        self.show_toast(f"{title}: {message}")

    def confirm(self, title: str, text: str) -> bool:
        """Replaced in tests; a yes/no question as a sheet."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, title, QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText(text)
        ok = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.exec()
        return box.clickedButton() is ok

    def _ask_overflow(self, event: Any) -> str:
        """The context-overflow policy question: never decided silently."""
        what = "context window" if getattr(event, "reason", "context") == "context" else "memory budget"
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "This conversation is full",
            "This message doesn't fit in the model's " + what + ".",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setInformativeText(
            f"It needs {event.used:,} tokens of history and prompt plus up to {event.max_tokens:,} for the reply, "
            f"but the limit is {event.limit:,}. Olmo can leave out the oldest {event.droppable_turns} turn(s) "
            "(the system prompt is kept) and answer with the rest."
        )
        drop = box.addButton("Drop Oldest Turns", QMessageBox.ButtonRole.AcceptRole)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.exec()
        return "drop" if box.clickedButton() is drop else "cancel"

    def _on_copied(self, _text: str) -> None:
        self.show_toast("Copied")

    def _on_cache_state(self, conv_id: str, state: str, nbytes: int) -> None:
        self.sidebar.set_cache_state(conv_id, state)
        if conv_id == self.controller.current:
            self.header.set_cache_state(state, nbytes)

    def _on_busy_changed(self, busy: bool) -> None:
        self._sync_actions()

    def _sync_actions(self) -> None:
        if not hasattr(self, "act_stop"):
            return
        busy = self.controller.is_busy()
        has_conv = self.controller.current is not None
        self.act_stop.setEnabled(busy)
        self.act_regenerate.setEnabled(not busy and has_conv)
        self.act_export.setEnabled(has_conv)
        self.act_delete.setEnabled(has_conv)

    def _update_empty_state(self) -> None:
        c = self.controller if hasattr(self, "controller") else None
        no_model = c is None or (c.model_info is None and c.loading is None)
        show_welcome = no_model and (c is None or c.current is None) and not self._has_installed_models()
        self.stack.setCurrentWidget(self.welcome if show_welcome else self.chat_view)
        for repo_id in (r for r, _n, _d in WelcomePanel.RECOMMENDED):
            state = self.models.downloads.get(repo_id)
            self.welcome.set_pick_state(
                repo_id, f"Downloading… {state.fraction:.0%}" if state and state.active else None
            )

    def _has_installed_models(self) -> bool:
        try:
            return any(m.installed for m in self.models.store.list_models())
        except OSError:
            return False

    def toggle_sidebar(self) -> None:
        self.sidebar.setVisible(not self.sidebar.isVisible())

    def _toggle_zoom(self) -> None:
        self.showNormal() if self.isMaximized() else self.showMaximized()

    def show_logs(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.paths.log_dir)))

    def show_about(self) -> None:
        from desktop import __version__

        QMessageBox.about(
            self,
            "About Olmo Desktop",
            f"<b>Olmo Desktop</b> {__version__}<br>Ai2's Olmo 3 models, running on this Mac with MLX.",
        )

    def _edit_copy(self) -> None:
        widget = QApplication.focusWidget()
        if widget is not None and hasattr(widget, "copy"):
            widget.copy()

    def _edit_paste(self) -> None:
        widget = QApplication.focusWidget()
        if widget is not None and hasattr(widget, "paste"):
            widget.paste()

    def _edit_select_all(self) -> None:
        widget = QApplication.focusWidget()
        if widget is not None and hasattr(widget, "selectAll"):
            widget.selectAll()

    def _save_draft(self, conv_id: str | None, text: str) -> None:
        """Keep the text being sent until the store has it (a crash during prefill then loses nothing)."""
        if text:
            self.qsettings.setValue("draft/text", text)
            self.qsettings.setValue("draft/conversation", conv_id or "")
        else:
            self.qsettings.remove("draft")
        self.qsettings.sync()

    def _restore_draft(self) -> None:
        text = self.qsettings.value("draft/text", "", type=str)
        if text:
            self.composer.set_text(text)
            self.qsettings.remove("draft")
            QTimer.singleShot(
                0, lambda: self.show_toast("Your last message wasn't sent; it's back in the message box.")
            )

    def _warm_up(self) -> None:
        """Import the common pygments lexers while idle, so the first code block doesn't stall a stream."""
        from desktop import markdown as md

        md.warm_up()

    def show_chat_for_bench(self) -> None:
        self.stack.setCurrentWidget(self.chat_view)
        self.composer.set_state("ready", model_name="Benchmark")

    # ---------------------------------------------------------------------------------------- window state
    def _restore_window_state(self) -> None:
        geometry = self.qsettings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        splitter = self.qsettings.value("splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        if self.qsettings.value("sidebar_hidden", False, type=bool):
            self.sidebar.hide()

    def _save_window_state(self) -> None:
        self.qsettings.setValue("geometry", self.saveGeometry())
        self.qsettings.setValue("splitter", self.splitter.saveState())
        self.qsettings.setValue("sidebar_hidden", not self.sidebar.isVisible())
        self.qsettings.setValue("last_conversation", self.controller.current or "")
        self.qsettings.sync()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.toast.reposition()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()
        super().closeEvent(event)

    def shutdown(self) -> bool:
        """Stop generation, save everything, spill caches, pause downloads, join threads. Idempotent."""
        if self._closed:
            return bool(self._shutdown_ok)
        self._closed = True
        self._save_window_state()
        app = QApplication.instance()
        ok = self.controller.shutdown(process_events=app.processEvents if app else (lambda: None))
        self.models.shutdown()
        ok = self.chores.shutdown() and ok
        try:
            self.store.close()
        except Exception:
            log.exception("closing the conversation store failed")
            ok = False
        if self.picker is not None:
            self.picker.close()
        self._shutdown_ok = ok
        log.info("shut down %s", "cleanly" if ok else "with problems")
        return ok


def _ellipsize(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
