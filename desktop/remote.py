"""Connect to an Olmo server: the dialog, the picker's card, and what the window does while a server chats.

:class:`ConnectDialog` asks for the server's address and (optional) API key, checks the address, then asks the
server itself (``/health`` and ``/v1/olmo/info``, on the chores thread) before it accepts: a server that cannot be
reached, refuses the key, is down or is no Olmo server is one line in the dialog, which stays open to fix it.
:class:`RemoteActions` (one per window) connects the window's bridge (``desktop.bridge.EngineBridge.connect_remote``),
remembers the address and key in the settings, shows "remote: host:port" beside the model in the top bar and on the
picker's card, and disconnects back to the local models (reloading the last local model, if there is one).
An app that quit while connected reconnects at its next start (:meth:`RemoteActions.reconnect`, the settings'
``remote_connected``); a server that does not answer then is one notice, and the local models are used as usual
(the address and key stay saved for the dialog). Disconnecting clears the flag.

Text from the server (its model's name, its error messages) is shown as plain text, never as markup.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.controller import model_display_name

if TYPE_CHECKING:
    from desktop.app import MainWindow
    from desktop.model_cards import ModelCard

log = logging.getLogger(__name__)

CONNECT_TEXT = "Connect to an Olmo Server…"


def _plain(label: QLabel) -> QLabel:
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


class ConnectDialog(QDialog):
    """The address and key of an ``olmo3 serve``; accepted once the server answered (``server`` holds what it said:
    an ``olmo3.remote.client.ServerInfo``; ``address`` and ``api_key`` what was typed)."""

    def __init__(self, chores: Any, *, url: str = "", api_key: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("connectDialog")
        self.setWindowTitle("Connect to an Olmo Server")
        self.setModal(True)
        self.setMinimumWidth(460)
        self.chores = chores
        self.server: Any = None
        self.address: Any = None
        self.api_key: str | None = None
        self._probing = False

        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 16)
        outer.setSpacing(10)
        title = QLabel("Connect to an Olmo server", self)
        title.setObjectName("pickerTitle")
        intro = QLabel(
            "Chat with the model another computer serves with olmo3 serve. Conversations stay on this Mac; the "
            "model and its caches live on the server.",
            self,
        )
        intro.setObjectName("pickerSubtitle")
        intro.setWordWrap(True)
        outer.addWidget(title)
        outer.addWidget(intro)

        form = QFormLayout()
        form.setContentsMargins(0, 6, 0, 0)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(8)
        self.url_field = QLineEdit(url, self)
        self.url_field.setPlaceholderText("http://192.168.1.20:8000")
        self.key_field = QLineEdit(api_key, self)
        self.key_field.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_field.setPlaceholderText("Optional: the server's --api-key")
        form.addRow("Address", self.url_field)
        form.addRow("API key", self.key_field)
        outer.addLayout(form)
        self.status = _plain(QLabel("", self))
        self.status.setObjectName("formHint")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("secondaryButton")
        self.cancel_button.setAutoDefault(False)
        self.connect_button = QPushButton("Connect", self)
        self.connect_button.setObjectName("primaryButton")
        self.connect_button.setDefault(True)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.connect_button)
        outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.connect_button.clicked.connect(self.try_connect)
        self.url_field.textEdited.connect(lambda _text: self.say(""))

    def say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("kind", "error" if error else "")
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)

    def try_connect(self) -> None:
        """Check the address, then ask the server (on the chores thread); accept when it answered as one."""
        from olmo3.remote.client import ServerClient, parse_address

        if self._probing:
            return
        try:
            address = parse_address(self.url_field.text())
        except ValueError as e:
            msg = str(e)
            self.say(msg[:1].upper() + msg[1:] + ".", error=True)
            return
        key = self.key_field.text().strip() or None
        self.address, self.api_key = address, key
        self._probing = True
        self.connect_button.setEnabled(False)
        self.say(f"Connecting to {address.label}…")
        client = ServerClient(address, key)
        self.chores.submit(client.info, self._on_probed)

    def _on_probed(self, result: object, error: BaseException | None) -> None:
        self._probing = False
        self.connect_button.setEnabled(True)
        if error is not None:
            from olmo3.remote.client import RemoteError

            message = error.message if isinstance(error, RemoteError) else f"{type(error).__name__}: {error}"
            self.say(message, error=True)
            return
        self.server = result
        self.accept()


def remote_card(parent: QWidget, label: str | None, model_name: str, on_connect: Any, on_disconnect: Any) -> ModelCard:
    """The picker's card for a server: "Connect to an Olmo Server…", or the connected model with Disconnect."""
    from desktop.model_cards import ModelCard

    card = ModelCard("remote-server", parent)
    card.badge.hide()
    _plain(card.name)
    _plain(card.description)
    _plain(card.meta)
    if label:
        card.set_name(model_name or "Olmo server")
        card.description.setText("Served by another computer: replies and their caches come from the server.")
        card.meta.setText(f"remote: {label}")
        card.loaded_badge.setText("Connected")
        card.set_loaded(True)
        card.add_button("disconnect", "Disconnect", on_disconnect)
    else:
        card.set_name("An Olmo server")
        card.description.setText("Chat with a model another computer serves with olmo3 serve (address and API key).")
        card.meta.setText("The model and its caches stay on the server.")
        card.add_button("connect", "Connect…", on_connect)
    return card


class RemoteActions:
    """The window's side of a server connection: see the module docstring."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.dialog: ConnectDialog | None = None
        self.label: str | None = None  # "host:port" while connected
        self.reconnecting: str | None = None  # "host:port" while the start-up reconnection asks the server
        self.model_name = ""

    @property
    def connected(self) -> bool:
        return self.window.bridge.remote is not None

    def open_dialog(self) -> ConnectDialog:
        """The dialog, shown (not modal-blocking: it calls :meth:`connect` when the server answered)."""
        w = self.window
        if self.dialog is None:
            self.dialog = ConnectDialog(
                w.chores, url=w.settings.remote_url, api_key=w.settings.remote_api_key, parent=w
            )
            self.dialog.accepted.connect(self._on_accepted)
            self.dialog.finished.connect(self._forget_dialog)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def _forget_dialog(self, _result: int) -> None:
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = None

    def _on_accepted(self) -> None:
        d = self.dialog
        if d is not None and d.server is not None:
            self.connect(d.address, d.api_key, d.server)

    def connect(self, address: Any, api_key: str | None, server: Any) -> bool:
        """Chat on ``address`` (its ``server`` info as the dialog got it). False while a reply runs."""
        from olmo3.remote.turns import model_info_from_dict

        w, ctl = self.window, self.window.controller
        if ctl.is_busy():
            w.show_toast("Stop the running reply first, then connect.")
            return False
        w.settings = replace(w.settings, remote_url=address.url, remote_api_key=api_key or "", remote_connected=True)
        w.save_settings()
        self.label = address.label
        self.model_name = model_display_name(model_info_from_dict(server.info, server.model_id))
        ctl.loading = ("", self.model_name)
        ctl._load_job = w.bridge.connect_remote(address, api_key)
        ctl.composer.set_state("loading", model_name=self.model_name)
        ctl.model_loading.emit("", self.model_name)
        return True

    def disconnect(self) -> None:
        """Back to the models on this Mac: the last one loaded comes back, if it is still there."""
        w = self.window
        if not self.connected:
            return
        if w.controller.is_busy():
            w.controller.stop()
        w.bridge.disconnect_remote()
        w.settings = replace(w.settings, remote_connected=False)  # chosen: the next start stays on this Mac
        w.save_settings()
        self._load_last_local()

    def _load_last_local(self) -> None:
        last = self.window.settings.last_model
        if last and Path(last).is_dir():
            self.window.model_actions.load(last)

    def reconnect(self) -> None:
        """At start-up, when the app quit connected: ask the saved server (on the chores thread) and chat there
        again; if it does not answer as one, one notice, and the models on this Mac (the address stays saved)."""
        from olmo3.remote.client import ServerClient, parse_address

        w = self.window
        try:
            address = parse_address(w.settings.remote_url)
        except ValueError as e:
            self._reconnect_failed(w.settings.remote_url, str(e))
            return
        key = w.settings.remote_api_key or None
        self.reconnecting = address.label
        w.header.set_model(f"Connecting to {address.label}…", loading=True)

        def probed(result: object, error: BaseException | None) -> None:
            from olmo3.remote.client import RemoteError

            self.reconnecting = None
            if error is not None:
                message = error.message if isinstance(error, RemoteError) else f"{type(error).__name__}: {error}"
                self._reconnect_failed(address.label, message)
            elif self.connected or w.controller.model_info is not None or w.controller.loading:
                pass  # the person chose another model meanwhile
            elif not self.connect(address, key, result):
                self._reconnect_failed(address.label, "a reply was running")

        w.chores.submit(ServerClient(address, key).info, probed)

    def _reconnect_failed(self, where: str, message: str) -> None:
        w = self.window
        w.header.set_model(None)
        reason = message.rstrip(".")
        if not reason.startswith("Couldn't"):  # the client's messages already say "Couldn't reach HOST: …"
            reason = f"Couldn't reconnect to {where}: {reason}"
        w.show_toast(f"{reason}. Using the models on this Mac.")
        if w.settings.auto_load_last_model:
            self._load_last_local()

    def on_model_changed(self, info: object) -> None:
        """The top bar and the picker say where the model runs."""
        w = self.window
        remote = info is not None and self.connected
        if not self.connected:
            self.label = None
        w.header.set_remote(self.label if remote else None)
        if getattr(w, "menus", None) is not None and w.menus.disconnect is not None:
            w.menus.disconnect.setEnabled(self.connected)
        picker = w.model_actions.picker
        if picker is not None:
            picker.set_remote(self.label if remote else None, w.controller.model_name if remote else "")

    def on_failed(self, message: str) -> None:
        """A connection that failed after the dialog accepted (the server went away meanwhile)."""
        if self.connected and self.window.controller.model_info is None:
            self.window.bridge.disconnect_remote()
            self.label = None
