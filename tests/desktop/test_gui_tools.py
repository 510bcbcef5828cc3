"""Tools in the real window: the consent question answered like a person would, cards, Stop during a slow tool,
records in the store (searchable, exported), Settings → Tools, and the servers stopped at quit."""

from __future__ import annotations

import json
import os

import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    close_window,
    fast_settings,
    load_model,
    make_window,
    shown,
    threads_are_joined,
    wait_idle,
)
from PySide6.QtCore import Qt
from tool_helpers import Script, mcp_config, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _type_and_send(qtbot, window, text: str) -> None:
    window.composer.set_text(text)
    qtbot.keyClick(window.composer.edit, "\r")
    qtbot.waitUntil(window.controller.is_busy, timeout=5000)


def _consent(qtbot, window):
    qtbot.waitUntil(lambda: window.controller.tool_calls.consent_dialog is not None, timeout=60_000)
    dialog = window.controller.tool_calls.consent_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    return dialog


def test_tool_calls_in_the_window(qtbot, tmp_path, tiny, tiny_model_dir):
    from desktop.paths import AppPaths
    from olmo3.store import interchange

    home = tmp_path / "home"
    paths = AppPaths.under(home).ensure()
    root = tmp_path / "server"
    paths.mcp_config.write_text(json.dumps(mcp_config(root)))
    _model, tok = tiny
    script = Script(tok, "Let me check.<function_calls>add(a=2, b=40)</function_calls>", "The answer is 42.")
    window = make_window(qtbot, home, settings=fast_settings(max_tokens=64))
    window.bridge.engine.logits_processors.append(script)  # the tiny model "decides" to call add, then answers
    load_model(qtbot, window, tiny_model_dir)

    # -- the model calls a tool: a card waits while the question is open; "Always Allow" runs it -----------------
    _type_and_send(qtbot, window, "What is 2 + 40?")
    dialog = _consent(qtbot, window)
    assert dialog.title.text() == "Allow Olmo to use “add”?"
    assert "calc" in dialog.about.text() and "Add two numbers." in dialog.about.text()
    assert json.loads(dialog.arguments.toPlainText()) == {"a": 2, "b": 40}
    (card,) = window.chat_view.tool_cards()
    assert card.status_text() == "Waiting for your permission" and card.arguments.text() == "add(a=2, b=40)"
    qtbot.mouseClick(dialog.always_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    assert shown(window) == [
        ("user", "What is 2 + 40?"),
        ("assistant", "Let me check."),
        ("environment", "42.0"),
        ("assistant", "The answer is 42."),
    ]
    (card,) = window.chat_view.tool_cards()
    assert card.status_text().startswith("Done") and card.result_text() == "42.0"
    assert card.title.text() == "add" and card.server.text() == "· calc"
    state = json.loads(paths.tools_state.read_text())
    assert state["servers"]["calc"]["tools"]["add"]["always_allow"] is True

    # Stored like any message: the reply with its calls, the result, searchable, exported.
    conv_id = window.controller.current
    path = window.store.active_path(conv_id)
    assert [m.role for m in path] == ["user", "assistant", "environment", "assistant"]
    assert path[1].tool["raw_calls"] == "add(a=2, b=40)" and path[2].tool["name"] == "add"
    assert {h.message_id for h in window.store.search("42.0")} >= {path[2].id}
    markdown = interchange.to_markdown(window.store.export_dict(conv_id))
    assert "add(a=2, b=40)" in markdown and "## Tool result · add (calc)" in markdown
    assert window.controller.last_finished.stats.reconcile == "append"

    # -- a slow tool, allowed once; Stop cancels it (the server sees the cancellation) and the turn --------------
    script.add(tok, "<function_calls>slow(seconds=60)</function_calls>")
    _type_and_send(qtbot, window, "Now take your time.")
    dialog = _consent(qtbot, window)
    assert dialog.title.text() == "Allow Olmo to use “slow”?"  # add runs without asking now, slow does not
    qtbot.mouseClick(dialog.once_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: (root / "slow-started").exists(), "the slow tool to start")
    card = window.chat_view.tool_cards()[-1]
    qtbot.waitUntil(lambda: card.status_text().startswith("Running"), timeout=10_000)
    assert card.stop_button.isVisible()
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)  # the Stop square
    wait_idle(qtbot, window)
    wait_for(lambda: (root / "slow-cancelled").exists(), "the server to see the cancellation")
    card = window.chat_view.tool_cards()[-1]
    assert card.status_text() == "Stopped" and "cancelled by the user" in card.result_text()
    assert window.controller.last_finished.stats.finish_reason == "cancelled"
    last = window.store.active_path(conv_id)[-1]
    assert last.role == "environment" and last.tool["cancelled"] and last.tool["name"] == "slow"
    assert window.composer.state == "ready"

    # -- the conversation reopens with its cards (from the store) ----------------------------------------------
    window.controller.new_chat()
    window.open_conversation(conv_id)
    cards = window.chat_view.tool_cards()
    assert [c.title.text() for c in cards] == ["add", "slow"]
    assert cards[0].status_text().startswith("Done") and cards[1].status_text() == "Stopped"

    # -- quitting stops the server -------------------------------------------------------------------------------
    pid = int((root / "pid-calc").read_text())
    assert _alive(pid)
    close_window(window)
    wait_for(lambda: not _alive(pid), "the MCP server to stop at quit")


def test_settings_tools_page(qtbot, tmp_path):
    """Settings → Tools: mcp.json checked as it is typed, servers with their tools and switches, a broken
    server's stderr with Retry."""
    from desktop.paths import AppPaths
    from desktop.settings import Settings
    from desktop.settings_dialog import SettingsDialog
    from desktop.tools import AppTools

    paths = AppPaths.under(tmp_path / "home").ensure()
    root = tmp_path / "server"
    config = mcp_config(root)
    broken = mcp_config(tmp_path / "broken", "broken", "--fail-start")["mcpServers"]
    paths.mcp_config.write_text(json.dumps({"mcpServers": {**config["mcpServers"], **broken}}))
    tools = AppTools(paths)
    try:
        dialog = SettingsDialog(Settings(), default_models_dir=tmp_path, tools=tools)
        qtbot.addWidget(dialog)
        dialog.show_page("Tools")
        dialog.show()
        page = dialog.tools_page
        qtbot.waitUntil(lambda: not page.is_listing(), timeout=60_000)
        calc, failed = page.server_rows
        assert calc.state_label.text() == "local program · Running · 5 tools"
        assert [r.info.name for r in calc.tool_rows] == ["add", "echo", "read_file", "big", "slow"]
        assert failed.retry.isVisible() and "missing API key TEST_TOKEN" in failed.error.text()

        # Per-tool switches apply at once; the schema is one click away.
        echo = calc.tool_rows[1]
        echo.enabled.setChecked(False)
        assert not tools.state.tool_enabled("calc", "echo")
        echo.always.setChecked(True)
        assert tools.state.always_allow("calc", "echo")
        qtbot.waitUntil(lambda: echo.schema_button.isVisible() and echo.schema_button.height() > 0)
        qtbot.mouseClick(echo.schema_button, Qt.MouseButton.LeftButton)
        assert echo.schema.isVisible() and '"text"' in echo.schema.toPlainText()

        # mcp.json: errors as you type, Apply only when valid and changed.
        assert page.config_status.text() == "Valid: 2 servers" and not page.apply_button.isEnabled()
        page.editor.setPlainText('{"mcpServers": {"x": {"url": "ftp://example.com"}}}')
        page.check()
        assert page.config_status.text().startswith("mcp.json: server 'x': \"url\" must be an http:// or https://")
        assert not page.apply_button.isEnabled()
        page.editor.setPlainText(json.dumps(config, indent=2))
        page.check()
        assert page.config_status.text() == "Valid: 1 server Apply to use it." and page.apply_button.isEnabled()
        qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not page.is_listing() and len(page.server_rows) == 1, timeout=60_000)
        assert json.loads(paths.mcp_config.read_text()) == config
        assert [r.info.name for r in page.server_rows[0].tool_rows] == ["add", "echo", "read_file", "big", "slow"]
        assert not page.server_rows[0].tool_rows[1].enabled.isChecked()  # the switch stayed off

        # The page's settings are saved with Save.
        page.enabled.setChecked(False)
        page.rounds.setValue(3)
        result = dialog.result_settings()
        assert (result.tools_enabled, result.tool_max_rounds, result.tool_timeout_s) == (False, 3, 120.0)
    finally:
        tools.close()
