"""The main window: sidebar + conversation pane, settings, and shutdown; the composition root.

:class:`MainWindow` owns the conversation store (GUI thread), the engine bridge, the chores thread and the model
manager, builds the widgets and wires them to :class:`desktop.controller.ChatController`, which runs the turns.
Everything it writes lives under one :class:`desktop.paths.AppPaths`, so tests and screenshots run against a
temporary folder. The window's actions live in helpers it owns, each given the window:

- :class:`desktop.conversations.ConversationActions`: the sidebar's list, search, Trash, and new/open/rename/pin/
  duplicate/delete/restore/undo;
- :class:`desktop.transfer.Transfer`: export and import, with their dialogs;
- :class:`desktop.model_actions.ModelActions`: the model picker, loading, downloads;
- :class:`desktop.remote.RemoteActions`: "Connect to an Olmo server" (the bridge then chats on the server);
- :class:`desktop.attachments.DocumentAttacher`: documents attached with 📎, dropped on the window or pasted;
- :func:`desktop.menus.build_menus`: the menu bar; :class:`desktop.window_state.WindowState`: geometry and drafts.

The window also owns the app's MCP tools (:class:`desktop.tools.AppTools`: one ``ToolHub``, servers started on first
use). Closing the window stops a running reply (and a running tool call), saves it, spills every conversation cache
to disk, stops the MCP servers, pauses downloads and joins every thread the window started
(:meth:`MainWindow.shutdown`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QResizeEvent
from PySide6.QtWidgets import QApplication, QMainWindow, QSplitter, QStackedWidget, QVBoxLayout, QWidget

from desktop import dialogs
from desktop import theme as th
from desktop.attachments import DocumentAttacher
from desktop.bridge import ChoreRunner, EngineBridge
from desktop.chat import ChatView
from desktop.composer import BottomBar, Composer, StatusRow, local_files
from desktop.controller import ChatController
from desktop.conversations import ConversationActions
from desktop.local_server import LocalServerControl
from desktop.menus import build_menus
from desktop.model_actions import ModelActions, name_for_path
from desktop.model_picker import ModelPickerDialog
from desktop.models import ModelManager
from desktop.paths import HOME_ENV, AppPaths
from desktop.remote import RemoteActions
from desktop.settings import Settings, load_settings, save_settings
from desktop.settings_dialog import UNCHANGED, SettingsDialog
from desktop.sidebar import Sidebar
from desktop.store_recovery import DamagedStoreNotice, open_store
from desktop.transfer import Transfer
from desktop.widgets import ChatHeader, Toast, WelcomePanel
from desktop.window_state import WindowState
from olmo3.appinfo import APP_NAME

log = logging.getLogger(__name__)

SIDEBAR_COLLAPSE_PX = 900  # narrower windows hide the sidebar (the toolbar's sidebar button shows it)


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
        memory_limit_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.paths = (paths or AppPaths.default()).ensure()
        self.settings = settings if settings is not None else load_settings(self.paths.settings_file)
        app = QApplication.instance()
        assert isinstance(app, QApplication), "create a QApplication first (desktop.app.create_application)"
        self.theme = theme_manager(app, theme_mode or self.settings.theme)
        self.theme.changed.connect(self._on_theme_changed)
        self.window_state = WindowState(self.paths.window_ini)
        self._closed = False
        self._shutdown_ok: bool | None = None
        self._sidebar_wanted = True  # the user's choice at wide widths
        self._narrow: bool | None = None

        # A damaged store is kept aside and a new one started (the note below offers to salvage it); a store
        # from a newer Olmo Desktop raises NewerStoreError, untouched (run_app says so and quits).
        self.store, kept_aside = open_store(self.paths.database)
        self.damaged_store_notice: DamagedStoreNotice | None = None
        self.chores = ChoreRunner(self)
        from desktop.tools import AppTools

        self.tools = AppTools(self.paths, self)  # the MCP servers' tools; nothing starts until they are used
        self.bridge = EngineBridge(
            cache_dir=self.paths.kv_cache_dir,
            memory_budget_bytes=self.settings.memory_budget_bytes,
            memory_limit_bytes=memory_limit_bytes,
            kv_bits=self.settings.kv_bits,
            session_options=engine_options,
            parent=self,
        )
        if model_store is None:
            from olmo3.hub import ModelStore

            model_store = ModelStore(self._models_dir(), include_hf_cache=not os.environ.get(HOME_ENV))
        self.models = ModelManager(model_store, self.chores, self)
        # Deleting a model also deletes the conversation caches made with it (matched by weight fingerprint).
        self.models.also_delete = model_store.conversation_cache_deleter(self.paths.kv_cache_dir)
        # "Download and quantize" quantizes as an engine job (MLX runs only there); search results are cached here.
        self.models.quantizer = self.bridge.run_quantize
        self.models.search_cache = self.paths.cache_dir / "hub-search.json"
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
            tools=self.tools,
            parent=self,
        )
        self.controller.ask_overflow = lambda event: dialogs.ask_overflow(self, event)
        # Replaced in tests (offscreen, no modal dialogs): True loads a model that won't fit anyway.
        self.ask_load_anyway: Any = lambda event, name: dialogs.ask_load_anyway(self, event, name)
        self.controller.draft_saver = self.window_state.save_draft
        self.documents = DocumentAttacher(
            store=self.store, chores=self.chores, composer=self.composer, controller=self.controller, parent=self
        )
        self.documents.parent_widget = self
        self.controller.documents = self.documents
        self.setAcceptDrops(True)
        self.conversations = ConversationActions(self)
        self.transfer = Transfer(self)
        self.model_actions = ModelActions(self)
        self.remote = RemoteActions(self)
        self.local_server = LocalServerControl(self.bridge, self)
        self._wire()
        self.menus = build_menus(self)
        self._sync_actions()
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(th.app_icon())
        self.resize(1100, 720)
        self.setMinimumSize(640, 460)
        self.window_state.restore(self)
        self.refresh_sidebar()
        self.update_empty_state()
        self._restore_draft()
        last = self.window_state.last_conversation()
        if last and self.conversations.exists(last):
            self.controller.open(last)
        if start_engine:
            self.bridge.start()
            self.local_server.apply(self.settings)
            last_model = self.settings.last_model
            if auto_load and self.settings.remote_connected and self.settings.remote_url:
                self.remote.reconnect()  # connected when the app quit: the server again (or, failing, the local model)
            elif auto_load and self.settings.auto_load_last_model and last_model and Path(last_model).is_dir():
                self.controller.load_model(last_model, name_for_path(last_model))
        if kept_aside is not None:
            self.damaged_store_notice = DamagedStoreNotice(self, kept_aside)
            QTimer.singleShot(0, self.damaged_store_notice.show)
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
        self.bottom = BottomBar(self.composer, self.status_row, pane)
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
        c, convs, models = self.controller, self.conversations, self.model_actions
        self.sidebar.new_chat_requested.connect(convs.new_chat)
        self.sidebar.conversation_selected.connect(convs.open)
        self.sidebar.rename_requested.connect(convs.rename)
        self.sidebar.pin_requested.connect(convs.pin)
        self.sidebar.duplicate_requested.connect(convs.duplicate)
        self.sidebar.delete_requested.connect(convs.delete)
        self.sidebar.export_requested.connect(self.transfer.export_conversation)
        self.sidebar.restore_requested.connect(convs.restore)
        self.sidebar.delete_forever_requested.connect(convs.delete_forever)
        self.sidebar.empty_trash_requested.connect(convs.empty_trash)
        self.sidebar.search_changed.connect(convs.search)
        self.sidebar.trash_button.toggled.connect(convs.on_trash_toggled)
        self.header.model_clicked.connect(models.open_picker)
        self.header.settings_clicked.connect(self.open_settings)
        self.header.export_clicked.connect(self.transfer.export_current)
        self.header.title_edited.connect(convs.rename_current)
        self.header.sidebar_toggled.connect(self.toggle_sidebar)
        self.composer.choose_model_requested.connect(models.open_picker)
        self.welcome.pick.connect(models.welcome_pick)
        self.welcome.open_picker.connect(models.open_picker)
        self.toast.action_clicked.connect(convs.undo_delete)
        self.chat_view.copied.connect(lambda _text: self.show_toast("Copied"))
        self.chat_view.source_requested.connect(self.documents.show_source)
        c.current_changed.connect(self.documents.reload)
        c.busy_changed.connect(lambda _busy: self.documents.refresh_previews())
        c.conversations_changed.connect(self.refresh_sidebar)
        c.current_changed.connect(self._on_current_changed)
        c.model_changed.connect(models.on_changed)
        c.model_changed.connect(self.remote.on_model_changed)
        c.model_failed.connect(self.remote.on_failed)
        c.model_loading.connect(models.on_loading)
        c.model_failed.connect(models.on_failed)
        c.model_wont_fit.connect(models.on_wont_fit)
        c.cache_state_changed.connect(self._on_cache_state)
        c.busy_changed.connect(lambda _busy: self._sync_actions())
        c.message.connect(self.show_toast)
        self.models.download_event.connect(models.on_download_event)
        self.models.changed.connect(self.update_empty_state)
        self.models.error.connect(models.on_error)
        self.models.download_failed.connect(models.on_download_failed)
        self.header.download_clicked.connect(models.open_picker)
        self.local_server.status_changed.connect(self.status_row.set_server_text)
        self.local_server.failed.connect(self.show_toast)
        c.model_changed.connect(lambda _info: self.local_server.set_model_name(self.controller.model_name))

    # ------------------------------------------------------------------ what tests and screenshots call directly
    def refresh_sidebar(self) -> None:
        self.conversations.refresh_sidebar()

    def open_conversation(self, conv_id: str) -> None:
        self.conversations.open(conv_id)

    def duplicate_conversation(self, conv_id: str) -> None:
        self.conversations.duplicate(conv_id)

    def delete_conversation(self, conv_id: str) -> None:
        self.conversations.delete(conv_id)

    def delete_forever(self, conv_id: str) -> None:
        self.conversations.delete_forever(conv_id)

    def import_from(self, path: str | Path) -> str | None:
        return self.transfer.import_from(path)

    def open_model_picker(self) -> ModelPickerDialog:
        return self.model_actions.open_picker()

    def load_model(self, path: str, name: str = "") -> None:
        self.model_actions.load(path, name)

    # ---------------------------------------------------------------------------------- what the window shows
    def _on_current_changed(self, conv_id: object) -> None:
        self.sidebar.set_current(conv_id if isinstance(conv_id, str) else None)
        if isinstance(conv_id, str):
            self.window_state.set_last_conversation(conv_id)
            state, nbytes = self.controller.cache_state(conv_id)
            self.header.set_cache_state(state, nbytes)
        else:
            self.header.set_cache_state(None)
        self.conversations.update_header_title()
        self.update_empty_state()
        self._sync_actions()

    def _on_cache_state(self, conv_id: str, state: str, nbytes: int) -> None:
        self.sidebar.set_cache_state(conv_id, state)
        if conv_id == self.controller.current:
            self.header.set_cache_state(state, nbytes)

    def _sync_actions(self) -> None:
        if hasattr(self, "menus"):
            self.menus.sync(busy=self.controller.is_busy(), has_conversation=self.controller.current is not None)

    def update_empty_state(self) -> None:
        """The welcome panel instead of the chat while no model is loaded, installed or loading.

        "Choose a model" appears once per screen: on the welcome panel, the panel is the way in (the composer
        points up to it); in an empty chat without a model, the composer's button is.
        """
        c = self.controller if hasattr(self, "controller") else None
        no_model = c is None or (c.model_info is None and c.loading is None)
        show_welcome = no_model and (c is None or c.current is None) and not self._has_installed_models()
        self.stack.setCurrentWidget(self.welcome if show_welcome else self.chat_view)
        self.composer.set_choose_elsewhere(show_welcome)
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
        """Show or hide the sidebar; below SIDEBAR_COLLAPSE_PX it shows until the window widens or it is hidden."""
        show = self.sidebar.isHidden()
        self.sidebar.setVisible(show)
        if not self._narrow:
            self._sidebar_wanted = show

    def _follow_width(self) -> None:
        narrow = self.width() < SIDEBAR_COLLAPSE_PX
        if narrow == self._narrow:
            return
        self._narrow = narrow
        self.sidebar.setVisible(not narrow and self._sidebar_wanted)

    def _restore_draft(self) -> None:
        text = self.window_state.take_draft()
        if text:
            self.composer.set_text(text)
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

    # ---------------------------------------------------------------------------------------------- settings
    def _models_dir(self) -> Path:
        return Path(self.settings.models_dir).expanduser() if self.settings.models_dir else self.paths.models_dir

    def open_settings(self) -> None:
        conv_id = self.controller.current
        prompt: object = UNCHANGED
        own: object = UNCHANGED
        title = ""
        if conv_id is not None:
            conv = self.store.get_conversation(conv_id)
            prompt, own, title = conv.system_prompt, conv.sampling, conv.title
        dialog = SettingsDialog(
            self.settings,
            default_models_dir=self.paths.models_dir,
            model_dir=self.controller.model_path,
            conversation_prompt=prompt,
            conversation_sampling=own,
            conversation_title=title,
            budget=self.bridge.engine.budget(),
            tools=self.tools,
            parent=self,
        )
        if dialog.exec():
            self.apply_settings(dialog.result_settings())
            new_prompt = dialog.conversation_prompt()
            if conv_id is not None and new_prompt is not UNCHANGED and new_prompt != prompt:
                self.controller.set_conversation_prompt(conv_id, new_prompt)  # type: ignore[arg-type]
            new_own = dialog.conversation_sampling()
            if conv_id is not None and isinstance(new_own, dict) and new_own != own:
                self.controller.set_conversation_sampling(conv_id, new_own)

    def apply_settings(self, settings: Settings) -> None:
        old = self.settings
        self.settings = settings
        self.save_settings()
        if settings.theme != old.theme:
            self.set_theme(settings.theme)
        if settings.memory_budget_gb != old.memory_budget_gb:
            self.bridge.set_memory_budget(settings.memory_budget_bytes)
        if settings.kv_bits != old.kv_bits:
            self.bridge.set_kv_bits(settings.kv_bits)
        if settings.models_dir != old.models_dir:
            self.models.store.models_dir = self._models_dir()
            self.models.changed.emit()
        path = self.controller.model_path
        if path and settings.model_context.get(path) != old.model_context.get(path):
            self.controller.load_model(path, self.controller.model_name)  # the new context takes a reload
        elif settings.model_context != old.model_context:
            self.models.changed.emit()  # fit badges follow the contexts
        if self.bridge.running:
            self.local_server.apply(settings)

    def save_settings(self) -> None:
        try:
            save_settings(self.paths.settings_file, self.settings)
        except OSError as exc:
            self.show_error("Couldn't save settings", str(exc))

    def set_theme(self, mode: str) -> None:
        self.theme.set_mode(mode)
        if self.settings.theme != mode:
            self.settings = replace(self.settings, theme=mode)
            self.save_settings()

    def _on_theme_changed(self, _theme: object) -> None:
        self.chat_view.apply_theme()
        self.sidebar.apply_theme()
        self.header.apply_theme()
        self.welcome.apply_theme()
        self.composer.apply_theme()

    # ------------------------------------------------------------------------------------- notes and questions
    def show_toast(self, text: str, action: str | None = None) -> None:
        self.toast.show_message(text, action)

    def show_error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        self.show_toast(f"{title}: {message}")

    def confirm(self, title: str, text: str) -> bool:
        """Replaced in tests; a yes/no question as a sheet."""
        return dialogs.confirm_delete(self, title, text)

    # --------------------------------------------------------------------------------------------- lifecycle
    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._follow_width()
        self.toast.reposition()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Files dragged over the window may be dropped anywhere on it: they are attached to the message."""
        if local_files(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        files = local_files(event.mimeData())
        if files:
            event.acceptProposedAction()
            self.documents.attach_paths(files)
            self.composer.setFocus()
        else:
            super().dropEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()
        super().closeEvent(event)

    def shutdown(self) -> bool:
        """Stop generation, save everything, spill caches, pause downloads, join threads. Idempotent."""
        if self._closed:
            return bool(self._shutdown_ok)
        self._closed = True
        self.window_state.save(self)
        ok = self.local_server.stop()  # before the engine: its requests are cancelled, its thread joined
        app = QApplication.instance()
        # Downloads first: one that is quantizing stops between two layers, so its engine job ends before the engine.
        self.models.shutdown()
        ok = self.controller.shutdown(process_events=app.processEvents if app else (lambda: None)) and ok
        try:
            self.tools.close()  # after the engine: a call in flight was cancelled with its turn
        except Exception:
            log.exception("stopping the MCP servers failed")
            ok = False
        ok = self.chores.shutdown() and ok
        try:
            self.store.close()
        except Exception:
            log.exception("closing the conversation store failed")
            ok = False
        self.model_actions.close()
        self._shutdown_ok = ok
        log.info("shut down %s", "cleanly" if ok else "with problems")
        return ok
