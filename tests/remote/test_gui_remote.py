"""The real window connected to a real ``olmo3 serve``: the dialog checks the server, the chat runs there, the top
bar and the picker say so, and Disconnect goes back to the models on this computer."""

from __future__ import annotations

import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    close_window,
    make_window,
    send,
    shown,
    threads_are_joined,
)
from PySide6.QtWidgets import QLineEdit
from remote_helpers import KEY

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_window_chats_on_a_server_and_disconnects(qtbot, tmp_path, olmo_server):
    window = make_window(qtbot, tmp_path / "home")
    label = olmo_server.root.removeprefix("http://")
    dialog = window.remote.open_dialog()
    dialog.url_field.setText("ftp://somewhere")
    dialog.try_connect()
    assert "http:// or https://" in dialog.status.text() and dialog.status.property("kind") == "error"
    dialog.url_field.setText(olmo_server.url)  # …/v1, as the server prints it
    dialog.key_field.setText("not-the-key")
    dialog.try_connect()
    qtbot.waitUntil(lambda: "refused the API key" in dialog.status.text(), timeout=20_000)
    assert dialog.isVisible() and window.controller.model_info is None  # nothing changed; fix it and try again
    dialog.key_field.setText(KEY)
    dialog.try_connect()
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=20_000)
    assert window.remote.dialog is None  # accepted and gone

    # The top bar: the server's model, and where it runs.
    assert window.header.model_button.text() == "tiny remote instruct"
    assert window.header.remote_chip.isVisible() and window.header.remote_chip.text() == f"remote: {label}"
    assert window.menus.disconnect is not None and window.menus.disconnect.isEnabled()
    assert (window.settings.remote_url, window.settings.remote_api_key) == (olmo_server.root, KEY)

    send(qtbot, window, "Hello, server")
    first = window.controller.last_finished
    assert first is not None and first.reply is not None
    assert shown(window) == [("user", "Hello, server"), ("assistant", first.reply.content)]
    conv = window.controller.current
    assert [m.content for m in window.store.active_path(conv)] == ["Hello, server", first.reply.content]
    send(qtbot, window, "And a follow-up")
    follow = window.controller.last_finished
    assert follow is not first and follow.stats.cached_tokens > 0  # the server kept the conversation's cache
    assert "reused" in window.status_row.stats.text() or follow.stats.cached_tokens

    # The picker: the server's card on top, connected.
    picker = window.open_model_picker()
    card = picker.cards()["remote-server"]
    assert card.name.text() == "tiny remote instruct" and card.meta.text() == f"remote: {label}"
    assert card.loaded_badge.isVisible() and "disconnect" in card._button_widgets
    picker.hide()

    # The key comes back as dots.
    again = window.remote.open_dialog()
    assert again.key_field.echoMode() == QLineEdit.EchoMode.Password and again.key_field.text() == KEY
    again.reject()

    window.remote.disconnect()
    qtbot.waitUntil(lambda: window.controller.model_info is None, timeout=10_000)
    assert window.header.remote_chip.isHidden() and window.bridge.remote is None
    assert not window.menus.disconnect.isEnabled()
    assert "connect" in window.open_model_picker().cards()["remote-server"]._button_widgets
    assert [m.content for m in window.store.active_path(conv)][-2] == "And a follow-up"  # the chat stays here
    close_window(window)


def test_an_app_that_quit_connected_reconnects_at_start(qtbot, tmp_path, olmo_server):
    from dataclasses import replace

    from gui_helpers import fast_settings

    label = olmo_server.root.removeprefix("http://")
    settings = replace(fast_settings(), remote_url=olmo_server.root, remote_api_key=KEY, remote_connected=True)
    window = make_window(qtbot, tmp_path / "home", settings=settings)
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=20_000)
    assert window.bridge.remote is not None and window.header.model_button.text() == "tiny remote instruct"
    assert window.header.remote_chip.isVisible() and window.header.remote_chip.text() == f"remote: {label}"
    send(qtbot, window, "Hello again")
    assert window.controller.last_finished is not None and window.controller.last_finished.reply is not None
    assert window.settings.remote_connected
    window.remote.disconnect()  # chosen: the next start stays on this computer
    qtbot.waitUntil(lambda: window.bridge.remote is None, timeout=10_000)
    assert not window.settings.remote_connected and window.settings.remote_url == olmo_server.root
    close_window(window)


def test_a_server_gone_at_start_is_one_notice_and_the_local_model_loads(qtbot, tmp_path, remote_model_dir):
    import socket
    from dataclasses import replace

    from gui_helpers import fast_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}"
    settings = replace(
        fast_settings(),
        remote_url=url,
        remote_api_key=KEY,
        remote_connected=True,
        auto_load_last_model=True,
        last_model=str(remote_model_dir),
    )
    window = make_window(qtbot, tmp_path / "home", settings=settings)
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=30_000)
    assert window.bridge.remote is None and window.controller.model_path == str(remote_model_dir)
    toast = window.toast.label.text()
    assert toast.startswith(f"Couldn't reach 127.0.0.1:{port}: the connection was refused") and toast.count(":") == 2
    assert "Using the models on this Mac" in toast and window.header.remote_chip.isHidden()
    # Nothing lost: the address and key stay for the dialog; the model on this computer is the next start's.
    assert (window.settings.remote_url, window.settings.remote_api_key) == (url, KEY)
    assert not window.settings.remote_connected
    dialog = window.remote.open_dialog()
    assert dialog.url_field.text() == url and dialog.key_field.text() == KEY
    dialog.reject()
    send(qtbot, window, "Hello, here")
    assert window.controller.last_finished is not None and window.controller.last_finished.reply is not None
    close_window(window)
