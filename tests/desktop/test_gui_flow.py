"""End to end through the real window, engine thread, conversation store and a generated tiny Olmo-3 model.

pick the model in the picker → send → tokens stream → stop → regenerate → switch branch → edit & resend →
restart the app object and continue (the KV cache comes back from disk) → export → delete and undo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    assert_no_threads,
    close_window,
    fast_settings,
    load_model,
    make_window,
    offline_model_store,
    send,
    shown,
    threads_are_joined,
    wait_idle,
)
from PySide6.QtCore import Qt

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _assistants(window):
    return [w for w in window.chat_view.messages() if w.role == "assistant"]


def _users(window):
    return [w for w in window.chat_view.messages() if w.role == "user"]


def test_chat_flow_end_to_end(qtbot, tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    window = make_window(qtbot, home)
    assert window.stack.currentWidget() is window.welcome  # first run: no model anywhere
    assert window.composer.state == "no_model" and not window.composer.choose_button.isVisible()  # the panel is
    assert "Pick a model above" in window.composer.edit.placeholderText()  # the way in; the composer points to it

    # -- pick the generated model: "Add model folder…" (used in place), then Load on its card -----------------
    picker = window.open_model_picker()
    picker.ask_folder = lambda: str(tiny_model_dir)
    picker.ask_link = lambda folder: True
    qtbot.mouseClick(picker.add_folder_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(k.startswith("local/") for k in picker.cards()), timeout=30_000)
    name = next(k for k in picker.cards() if k.startswith("local/"))
    qtbot.mouseClick(picker.cards()[name].button("load"), Qt.MouseButton.LeftButton)
    assert not picker.isVisible()  # Load returns to the chat
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=60_000)
    assert window.composer.state == "ready"
    qtbot.waitUntil(lambda: picker.cards()[name].loaded_badge.isVisibleTo(picker))
    assert "Loading" not in window.header.model_button.text()

    # -- send: tokens stream into the view while the turn runs ------------------------------------------------
    streamed: list[tuple[bool, int]] = []
    original_append = window.chat_view.append_delta

    def spy(text, channel="answer"):
        streamed.append((window.controller.is_busy(), window.chat_view.streaming_widget() is not None))
        original_append(text, channel)

    window.chat_view.append_delta = spy
    flushes = window.chat_view.flush_count
    send(qtbot, window, "Hello there")
    window.chat_view.append_delta = original_append
    finished = window.controller.last_finished
    assert len(streamed) >= 2 and all(busy and live for busy, live in streamed)
    assert window.chat_view.flush_count > flushes
    assert shown(window) == [("user", "Hello there"), ("assistant", finished.reply.content)]
    conv_id = window.controller.current
    assert conv_id is not None and window.sidebar.visible_ids() == [conv_id]
    assert "tok/s" in window.status_row.stats.text()
    assert window.status_row.context.usage() == (finished.stats.context_used, finished.stats.context_limit)

    # -- stop mid-reply: the partial reply is kept, marked, and offers Retry ------------------------------------
    window.settings = fast_settings(max_tokens=3000, temperature=1.0)  # sampled: a long reply, not an early EOS
    window.composer.set_text("Tell me a long story")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(
        lambda: (
            window.chat_view.streaming_widget() is not None and len(window.chat_view.streaming_widget().content()) > 0
        ),
        timeout=30_000,
    )
    assert window.composer.send_button.glyph() == "stop"
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)  # Send became Stop
    wait_idle(qtbot, window)
    assert window.controller.last_stats.finish_reason == "cancelled"
    stopped = _assistants(window)[-1]
    assert stopped.message["finish_reason"] == "cancelled" and stopped.content()
    assert stopped.notice.isVisibleTo(window) and stopped.retry_button.isVisibleTo(window)
    leaf = window.store.active_leaf(conv_id)
    assert leaf.state == "interrupted" and leaf.content == stopped.content()
    stopped_text = stopped.content()

    # -- regenerate: a second alternative of the reply --------------------------------------------------------
    window.settings = fast_settings(max_tokens=12, seed=7)
    last = _assistants(window)[-1]
    assert last.regenerate_button.isEnabled()
    qtbot.mouseClick(last.regenerate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    last = _assistants(window)[-1]
    assert (last.message["branch_index"], last.message["branch_count"]) == (1, 2)
    assert last.switcher.isVisibleTo(window) and last.switcher.label.text() == "2 / 2"
    regenerated_text = last.content()

    # -- switch back to the first alternative ------------------------------------------------------------------
    state = window.store.get_engine_state(conv_id)
    qtbot.mouseClick(last.switcher.prev_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _assistants(window)[-1].content() == stopped_text)
    assert _assistants(window)[-1].message["branch_index"] == 0
    qtbot.waitUntil(lambda: window.store.get_engine_state(conv_id) != state, timeout=10_000)  # BranchSwitched saved
    state = window.store.get_engine_state(conv_id)
    qtbot.mouseClick(_assistants(window)[-1].switcher.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _assistants(window)[-1].content() == regenerated_text)

    # -- edit & resend the second user message ----------------------------------------------------------------
    user = _users(window)[1]
    user.start_edit()
    assert user.is_editing()
    user.editor.setPlainText("Tell me a short story instead")
    qtbot.mouseClick(user.send_edit_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    user = _users(window)[1]
    assert user.content() == "Tell me a short story instead"
    assert (user.message["branch_index"], user.message["branch_count"]) == (1, 2)
    assert user.switcher.label.text() == "2 / 2"
    # first turn (2) + two versions of the second message + two replies to its first version + one to the second
    assert len(window.store.tree(conv_id)) == 7
    before_restart = shown(window)

    # -- restart: everything comes back, and the cache is reused from disk ---------------------------------------
    close_window(window)
    assert window.bridge.cache_path(conv_id).exists()
    window = make_window(qtbot, home, settings=fast_settings())
    assert window.controller.current == conv_id  # last conversation restored
    window.chat_view.finish_backfill()
    assert shown(window) == before_restart
    assert window.sidebar.cache_state(conv_id) == "disk"
    load_model(qtbot, window, Path(window.models.installed()[0].path))
    send(qtbot, window, "And then?")
    stats = window.controller.last_stats
    assert stats.cached_tokens > 0 and stats.reconcile == "restored"
    assert shown(window)[:-2] == before_restart

    # -- export from the conversation's context menu, then import the JSON back -----------------------------------
    out = tmp_path / "exports"
    window.transfer.ask_save_path = lambda name, fmt: str(out / name)
    menu = window.sidebar.build_context_menu(conv_id, trashed=False, pinned=False)
    export_menu = next(a.menu() for a in menu.actions() if a.menu() is not None)
    for action in export_menu.actions():
        action.trigger()
    files = {p.suffix: p for p in out.iterdir()}
    assert set(files) == {".md", ".json", ".html", ".pdf"}
    assert "Tell me a short story instead" in files[".md"].read_text()
    assert files[".pdf"].read_bytes().startswith(b"%PDF") and files[".pdf"].stat().st_size > 1000
    assert "<html" in files[".html"].read_text()
    exported = json.loads(files[".json"].read_text())
    assert len(exported["messages"]) == len(window.store.tree(conv_id))
    imported = window.import_from(files[".json"])
    assert imported is not None and imported != conv_id and window.controller.current == imported
    assert shown(window) == shown_for(window, conv_id)

    # -- delete (⌘⌫) moves to the Trash; the toast's Undo brings it back ------------------------------------------
    window.controller.open(conv_id)
    window.composer.edit.setFocus()
    window.menus.delete.trigger()  # ⌘⌫ while typing edits the text, never deletes the conversation
    assert window.store.trash_count() == 0
    window.sidebar.list.setFocus()
    window.menus.delete.trigger()
    assert conv_id not in window.sidebar.visible_ids() and window.store.trash_count() == 1
    assert window.toast.isVisible() and window.toast.button.text() == "Undo"
    qtbot.mouseClick(window.toast.button, Qt.MouseButton.LeftButton)
    assert conv_id in window.sidebar.visible_ids() and window.store.trash_count() == 0
    assert window.controller.current == conv_id
    close_window(window)


def shown_for(window, conv_id):
    from desktop.sync import view_messages

    return [(m["role"], m["content"]) for m in view_messages(window.store.active_path(conv_id))]


def test_stop_during_prefill_keeps_the_text_and_writes_nothing(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home", engine_options={"prefill_step_size": 8})
    load_model(qtbot, window, tiny_model_dir)
    text = "Please summarise this. " + " ".join(f"word{i}" for i in range(400))
    window.composer.set_text(text)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert window.composer.text() == "" and window.controller.is_busy()
    window.menus.stop.trigger()  # ⌘. before any token: the engine stops between prefill chunks
    wait_idle(qtbot, window)
    assert window.controller.last_stats.finish_reason == "cancelled"
    assert window.controller.last_finished.reply is None
    assert window.composer.text() == text  # nothing was lost
    assert shown(window) == []
    conv_id = window.controller.current
    assert window.store.tree(conv_id) == []  # no half-written rows
    close_window(window)


def test_context_overflow_asks_and_drops_oldest_turns(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home", engine_options={"context_limit": 220})
    asked = []

    def ask(event):
        asked.append(event)
        return "drop"

    window.controller.ask_overflow = ask
    load_model(qtbot, window, tiny_model_dir)
    for i in range(8):
        send(qtbot, window, f"Message number {i} with a few extra words")
        if asked:
            break
    assert asked, "a send that does not fit must ask which policy to use"
    event = asked[0]
    assert event.droppable_turns >= 1 and event.limit == 220
    stats = window.controller.last_stats
    assert stats.dropped_turns >= 1 and stats.finish_reason != "cancelled"
    first = next(w for w in window.chat_view.messages() if w.role == "user")
    assert first.context_label.isVisibleTo(window)  # shown as outside the context window
    close_window(window)


def test_overflow_cancel_restores_the_message(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home", engine_options={"context_limit": 150})
    asked = []
    window.controller.ask_overflow = lambda event: asked.append(event) or "cancel"
    load_model(qtbot, window, tiny_model_dir)
    send(qtbot, window, "first")
    count = len(window.store.tree(window.controller.current))
    before = shown(window)
    long_text = "second " * 40
    send(qtbot, window, long_text)
    assert len(asked) == 1  # never decided silently
    assert len(window.store.tree(window.controller.current)) == count  # nothing stored for the refused turn
    assert shown(window) == before
    assert window.composer.text() == long_text.strip()  # the message is back in the box
    close_window(window)


def test_think_model_shows_reasoning(qtbot, tmp_path, tiny_think_dir):
    window = make_window(qtbot, tmp_path / "home", settings=fast_settings(max_tokens=24))
    load_model(qtbot, window, tiny_think_dir)
    send(qtbot, window, "Why?")
    reply = [w for w in window.chat_view.messages() if w.role == "assistant"][-1]
    finished = window.controller.last_finished.reply
    assert finished.reasoning
    assert reply.reasoning.isVisibleTo(window)
    assert reply.reasoning.header.text().startswith("Thought for")
    assert not reply.reasoning.is_expanded()
    qtbot.mouseClick(reply.reasoning.header, Qt.MouseButton.LeftButton)
    assert reply.reasoning.body.isVisibleTo(window)
    stored = window.store.active_leaf(window.controller.current)
    assert stored.reasoning and stored.provenance.get("thought_s") is not None
    close_window(window)


def test_closing_during_generation_saves_and_stops(qtbot, tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    window = make_window(qtbot, home, settings=fast_settings(max_tokens=3000))
    load_model(qtbot, window, tiny_model_dir)
    window.composer.set_text("Keep going")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(
        lambda: (
            window.chat_view.streaming_widget() is not None and len(window.chat_view.streaming_widget().content()) > 0
        ),
        timeout=30_000,
    )
    conv_id = window.controller.current
    close_window(window)  # cancels, saves, spills, joins
    assert_no_threads()
    from olmo3.store import ConversationStore

    with ConversationStore(home / "data" / "conversations.sqlite3") as store:
        path = store.active_path(conv_id)
        assert [m.role for m in path] == ["user", "assistant"]
        assert path[1].state == "interrupted" and path[1].content
        assert store.get_engine_state(conv_id) is not None
    assert (home / "cache" / "kv" / f"{conv_id}.safetensors").exists()


def test_retry_after_a_crash_continues_the_stored_message(qtbot, tmp_path, tiny_model_dir):
    """A reply interrupted by a crash (store only, engine never saw the turn) is retried by resending it."""
    home = tmp_path / "home"
    window = make_window(qtbot, home)
    load_model(qtbot, window, tiny_model_dir)
    send(qtbot, window, "First question")
    conv_id = window.controller.current
    # Simulate the crash: the store got the next user message and a partial streaming reply, the engine state not.
    leaf = window.store.active_leaf(conv_id)
    user = window.store.append_message(conv_id, leaf.id, "user", "Second question")
    stream = window.store.begin_stream(conv_id, user)
    window.store.stream_append(stream, "Partial ans")
    window.store.finish_stream(stream, "interrupted")
    close_window(window)

    window = make_window(qtbot, home, model_store=offline_model_store(home))
    window.chat_view.finish_backfill()
    assert shown(window)[-2:] == [("user", "Second question"), ("assistant", "Partial ans")]
    last = [w for w in window.chat_view.messages() if w.role == "assistant"][-1]
    assert last.notice.isVisibleTo(window)
    load_model(qtbot, window, tiny_model_dir)
    qtbot.mouseClick(last.retry_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    path = window.store.active_path(conv_id)
    assert [m.content for m in path if m.role == "user"] == ["First question", "Second question"]
    assert len([m for m in window.store.tree(conv_id) if m.content == "Second question"]) == 1  # reused, not copied
    reply = path[-1]
    assert reply.role == "assistant" and reply.state == "complete" and reply.sibling_count == 2
    close_window(window)
