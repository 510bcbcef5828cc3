"""Settings → Local server in the real window: off by default; on, it serves the window's own model and caches."""

from __future__ import annotations

from dataclasses import replace

import httpx2 as httpx
import openai
import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    close_window,
    load_model,
    make_window,
    send,
    threads_are_joined,
)
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_local_server_is_off_by_default_and_serves_the_windows_model(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home")
    assert not window.local_server.running and window.status_row.server.isHidden()
    load_model(qtbot, window, tiny_model_dir)
    send(qtbot, window, "Hello from the window")

    window.apply_settings(replace(window.settings, server_enabled=True, server_port=0, server_api_key="k3y"))
    assert window.local_server.running
    port = window.local_server.port
    qtbot.waitUntil(lambda: window.status_row.server.text() == f"Serving on 127.0.0.1:{port} · 0 requests")
    assert window.status_row.server.isVisible()

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3y", max_retries=0)
    model = client.models.list().data[0].id
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi from a script"}], max_tokens=3, temperature=0
    )
    assert r.usage.completion_tokens <= 3
    qtbot.waitUntil(lambda: window.status_row.server.text().endswith("· 1 request"))
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    # The window keeps chatting on the same engine; the server's conversation never shows up in it.
    send(qtbot, window, "And the window again")
    assert len(window.sidebar.visible_ids()) == 1

    window.apply_settings(replace(window.settings, server_enabled=False))
    assert not window.local_server.running and window.status_row.server.isHidden()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    window.apply_settings(replace(window.settings, server_enabled=True, server_port=0))
    assert window.local_server.running
    close_window(window)  # stops the server thread too


def test_a_taken_port_is_a_message_not_a_crash(qtbot, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        window = make_window(qtbot, tmp_path / "home")
        messages = []
        window.local_server.failed.connect(messages.append)
        window.apply_settings(replace(window.settings, server_enabled=True, server_port=port))
        assert not window.local_server.running and messages and str(port) in messages[0]
        close_window(window)


def test_settings_page_edits_the_server_and_copies_the_base_url(qtbot, tmp_path):
    from desktop.settings import Settings, load_settings, save_settings
    from desktop.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), default_models_dir=tmp_path)
    qtbot.addWidget(dialog)
    dialog.nav.setCurrentRow(dialog.PAGES.index("Local server"))
    assert not dialog.server_enabled.isChecked() and dialog.server_port.value() == 8000
    dialog.server_enabled.setChecked(True)
    dialog.server_port.setValue(8123)
    dialog.server_key.setText("  secret ")
    assert dialog.server_url.text() == "http://127.0.0.1:8123/v1"
    dialog.copy_url_button.click()
    assert QApplication.clipboard().text() == "http://127.0.0.1:8123/v1"
    result = dialog.result_settings()
    assert (result.server_enabled, result.server_port, result.server_api_key) == (True, 8123, "secret")
    save_settings(tmp_path / "settings.json", result)
    assert load_settings(tmp_path / "settings.json") == result
    assert Settings.from_dict({"server_port": "80a"}).server_port == 8000
    assert Settings.from_dict({"server_port": 99999}).server_port == 8000
