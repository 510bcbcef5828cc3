"""The first hour in the real window: the memory guard and "Load anyway", a context per model, a 4,096-context model
answering "Hello" with default settings, the context-full notice and Continue, start-up, empty states, the collapsing
sidebar, the Trash, error messages. Real engine thread, real tiny models, real store, offscreen widgets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from gui_helpers import (
    close_window,
    fast_settings,
    load_model,
    make_window,
    send,
    threads_are_joined,  # noqa: F401 - autouse fixture
)
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QAbstractButton, QLabel, QPlainTextEdit, QWidget

MiB = 1024**2


@pytest.fixture(scope="module")
def ctx4k(tmp_path_factory):
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "Olmo-3-Tiny-4k", max_position_embeddings=4096)


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    """A tiny model whose stop tokens never win a greedy pick: their output rows are zero, so their logit is 0
    while the best of the other 380 random logits is far above it. Every greedy reply runs until it is cut."""
    import mlx.core as mx

    from olmo3.model.modelinfo import inspect_model_dir
    from olmo3.model.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("models") / "Olmo-3-Endless", max_position_embeddings=4096)
    weights = mx.load(str(folder / "model.safetensors"))
    head = weights["lm_head.weight"]
    for token in inspect_model_dir(folder).eos_token_ids:
        head[token] = 0
    weights["lm_head.weight"] = head
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    return folder


def visible_texts(root: QWidget) -> list[str]:
    """Every piece of text a person can see in ``root``: labels, buttons, placeholders of empty fields."""
    out = []
    for w in root.findChildren(QWidget):
        if not w.isVisibleTo(root):
            continue
        if isinstance(w, QLabel | QAbstractButton) and w.text():
            out.append(w.text())
        elif isinstance(w, QPlainTextEdit) and not w.toPlainText():
            out.append(w.placeholderText())
    return out


# ------------------------------------------------------------------------------------------------ memory guard


def test_a_model_that_wont_fit_is_refused_with_the_numbers_and_loads_anyway(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home", memory_limit_bytes=100 * MiB)
    asked = []
    window.ask_load_anyway = lambda event, name: asked.append((event, name)) or False
    window.load_model(str(tiny_model_dir))
    qtbot.waitUntil(lambda: bool(asked), timeout=30_000)
    event, name = asked[0]
    assert event.path == str(tiny_model_dir) and event.budget_bytes == 100 * MiB
    assert event.needed_bytes > event.budget_bytes and "Won't fit" in event.message
    assert window.controller.model_info is None and window.controller.loading is None  # refused: nothing loaded
    assert window.composer.state == "no_model" and "Loading" not in window.header.model_button.text()
    # The dialog's text has the numbers and says what to do.
    from desktop import dialogs

    box, load = dialogs.load_anyway_box(window, event, name)
    text = box.informativeText()
    assert "About 105 MB is available" in text and "shorter context" not in text  # weights + runtime alone: too big
    assert "smaller model or quantization" in text and load.text() == "Load Anyway"
    box.deleteLater()
    # "Load Anyway" loads it.
    window.ask_load_anyway = lambda event, name: asked.append((event, name)) or True
    load_model(qtbot, window, tiny_model_dir)
    assert len(asked) == 2 and window.composer.state == "ready"
    send(qtbot, window, "Hello")
    assert window.controller.last_finished.reply is not None
    close_window(window)


def test_a_4096_context_model_with_default_settings_answers_hello(qtbot, tmp_path, ctx4k):
    from desktop.settings import Sampling, Settings

    settings = Settings(sampling=Sampling(seed=2), auto_load_last_model=False, theme="light")  # defaults + a seed
    window = make_window(qtbot, tmp_path / "home", settings=settings)
    asked = []
    window.controller.ask_overflow = lambda event: asked.append(event) or "cancel"
    load_model(qtbot, window, ctx4k)
    assert window.settings.sampling.max_tokens == 4096 == window.controller.context_tokens
    send(qtbot, window, "Hello", timeout=120_000)
    finished = window.controller.last_finished
    assert not asked and finished is not None and finished.reply is not None
    assert finished.stats.generated_tokens >= 1 and finished.stats.context_limit == 4096
    assert [role for role, _ in [(m["role"], 0) for m in window.chat_view.message_dicts()]] == ["user", "assistant"]
    close_window(window)


def test_the_context_chosen_in_settings_drives_the_engine_the_badge_and_the_notice(qtbot, tmp_path, endless):
    window = make_window(qtbot, tmp_path / "home", settings=fast_settings(max_tokens=4096))
    model = window.models.store.import_model(str(endless), link=True)  # as "Add model folder…" does
    window.models.changed.emit()
    load_model(qtbot, window, model.path)
    assert window.controller.context_tokens == 4096  # the default: the model's maximum (it fits)
    # Settings → Model: a shorter context for this model.
    from desktop.settings_dialog import SettingsDialog

    dialog = SettingsDialog(
        window.settings,
        default_models_dir=window.paths.models_dir,
        model_dir=window.controller.model_path,
        budget=window.bridge.engine.budget(),
        parent=window,
    )
    qtbot.addWidget(dialog)
    dialog.show_page("Model")
    assert dialog.context.value() == 4096 and dialog.context.maximum() == 4096
    assert "is the model's maximum" in dialog.context_hint.text() and "Fits" in dialog.context_fit.text()
    dialog.context.setValue(300)
    assert "300 tokens" in dialog.context_fit.text() and dialog.context_default.isEnabled()
    dialog.accept()
    window.apply_settings(dialog.result_settings())
    assert window.settings.model_context == {str(model.path): 300}
    qtbot.waitUntil(
        lambda: window.controller.context_tokens == 300 and window.controller.loading is None, timeout=60_000
    )
    # The picker's badge uses it.
    picker = window.open_model_picker()
    assert "300 tokens" in picker.cards()[model.name].badge.toolTip()
    picker.close()
    # A greedy reply runs into the end of the context: finish reason "context", a notice with Continue.
    send(qtbot, window, "Hello")
    stats = window.controller.last_stats
    assert stats.finish_reason == "context" and stats.context_used == 300 and stats.context_limit == 300
    reply = [w for w in window.chat_view.messages() if w.role == "assistant"][-1]
    assert reply.notice.isVisibleTo(window) and "filled the model's context" in reply.notice_label.text()
    assert reply.retry_button.text() == "Continue" and reply.retry_button.isVisibleTo(window)
    asked = []
    window.controller.ask_overflow = lambda event: asked.append(event) or "cancel"
    qtbot.mouseClick(reply.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.controller.is_busy() or window.controller.last_stats is not stats, timeout=5000)
    qtbot.waitUntil(lambda: not window.controller.is_busy(), timeout=60_000)
    after = window.controller.last_stats
    assert not asked and after is not stats and after.dropped_turns == 1  # continued, oldest turn left out
    users = [w for w in window.chat_view.messages() if w.role == "user"]
    assert [u.message["content"] for u in users] == ["Hello", "Continue."]
    assert users[0].context_label.isVisibleTo(window)  # shown as outside the context
    close_window(window)


# ------------------------------------------------------------------------------------------- start-up, screens


def test_the_last_used_model_loads_at_start_and_the_screens_say_what_is_true(qtbot, tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    settings = replace(fast_settings(), auto_load_last_model=True, last_model=str(tiny_model_dir))
    window = make_window(qtbot, home, settings=settings)
    # While it loads: no greeting, and the composer says what it waits for.
    if window.controller.model_info is None:
        assert window.composer.state == "loading"
        assert window.chat_view.empty.title.text().startswith("Loading")
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=60_000)
    assert window.composer.state == "ready" and window.chat_view.empty.title.text() == "What can I help with?"
    window.controller.unload_model()
    qtbot.waitUntil(lambda: window.controller.model_info is None, timeout=30_000)
    # No model, models installed (the folder is used in place): the chat screen, one "Choose a model".
    window._has_installed_models = lambda: True
    window.update_empty_state()
    assert window.stack.currentWidget() is window.chat_view
    texts = visible_texts(window)
    assert "What can I help with?" not in texts
    assert sum("Choose a model" in t for t in texts) == 1 and window.composer.choose_button.isVisibleTo(window)
    close_window(window)
    # Off: nothing loads at start.
    off = make_window(qtbot, tmp_path / "home2", settings=replace(settings, auto_load_last_model=False))
    qtbot.wait(300)
    assert off.controller.loading is None and off.controller.model_info is None
    # The welcome screen: the panel is the one "Choose a model".
    assert off.stack.currentWidget() is off.welcome
    texts = visible_texts(off)
    assert sum("Choose a model" in t for t in texts) == 1 and "What can I help with?" not in texts
    close_window(off)


def test_the_sidebar_collapses_below_900_px(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    assert window.sidebar.isVisible()
    window.resize(800, 700)
    qtbot.waitUntil(lambda: not window.sidebar.isVisible())
    qtbot.mouseClick(window.header.sidebar_button, Qt.MouseButton.LeftButton)  # the toolbar button shows it
    assert window.sidebar.isVisible()
    window.resize(1100, 700)
    qtbot.waitUntil(lambda: window.sidebar.isVisible())
    window.toggle_sidebar()  # hidden by choice at a wide width: stays hidden through narrow and back
    window.resize(800, 700)
    window.resize(1100, 700)
    qtbot.wait(50)
    assert not window.sidebar.isVisible()
    close_window(window)


def test_trash_rows_say_when_and_restore_with_their_button(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    conv = window.store.create_conversation(title="Sourdough")
    window.store.append_message(conv, None, "user", "Sourdough?")
    window.refresh_sidebar()
    window.delete_conversation(conv)
    sidebar = window.sidebar
    sidebar.show_trash(True)
    index = sidebar.model.index(0, 0)
    assert index.data(Qt.ItemDataRole.ToolTipRole).endswith("Deleted just now")
    rect = sidebar.list.visualRect(index)
    assert rect.height() == 52
    from desktop.sidebar_rows import restore_rect

    # "Empty Trash…" is a red button, not a link.
    button = sidebar.empty_trash_button
    assert button.objectName() == "emptyTrashButton" and button.isVisibleTo(window)
    image = button.grab().toImage()
    reds = sum(
        1
        for x in range(image.width())
        for y in range(image.height())
        if (c := image.pixelColor(x, y)).red() > c.green() + 60 and c.red() > c.blue() + 60
    )
    assert reds > 30
    qtbot.mouseClick(sidebar.list.viewport(), Qt.MouseButton.LeftButton, pos=restore_rect(rect).center())
    qtbot.waitUntil(lambda: window.store.trash_count() == 0)
    assert window.store.get_conversation(conv).deleted_at is None
    # A click elsewhere on a Trash row restores nothing.
    window.delete_conversation(conv)
    sidebar.show_trash(True)
    qtbot.mouseClick(sidebar.list.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(20, rect.center().y()))
    qtbot.wait(50)
    assert window.store.trash_count() == 1
    close_window(window)


def test_deleted_labels():
    import datetime as dt

    from desktop.sidebar import deleted_label

    now = dt.datetime(2025, 3, 20, 15, 30)
    at = lambda *a: dt.datetime(*a).timestamp()  # noqa: E731
    assert deleted_label(at(2025, 3, 20, 15, 29, 40), now) == "Deleted just now"
    assert deleted_label(at(2025, 3, 20, 9, 5), now) == "Deleted today at 09:05"
    assert deleted_label(at(2025, 3, 19, 23, 59), now) == "Deleted yesterday at 23:59"
    assert deleted_label(at(2025, 3, 16, 12, 0), now) == "Deleted 4 days ago"
    assert deleted_label(at(2025, 3, 4, 12, 0), now) == "Deleted on 4 Mar"
    assert deleted_label(at(2024, 12, 30, 12, 0), now) == "Deleted on 30 Dec 2024"


# ---------------------------------------------------------------------------------------------------- messages


def test_out_of_memory_and_offline_messages_say_what_to_do_once(qtbot, tmp_path):
    from desktop.chat import ChatView
    from olmo3.memory import OUT_OF_MEMORY

    view = ChatView()
    qtbot.addWidget(view)
    metal = "[METAL] Command buffer execution failed: Insufficient Memory (kIOGPUCommandBufferCallbackErrorOutOfMemory)"
    view.set_messages(
        [
            {"role": "user", "content": "Hi", "sid": "u"},
            {"role": "assistant", "content": "Here", "sid": "a", "error": metal},
        ]
    )
    reply = view.messages()[-1]
    assert reply.notice_label.text() == OUT_OF_MEMORY
    view.set_messages(
        [
            {"role": "user", "content": "Hi", "sid": "u"},
            {"role": "assistant", "content": "Here", "sid": "a", "error": "the device went away"},
        ]
    )
    assert view.messages()[-1].notice_label.text() == "Something went wrong: the device went away"
    # Offline: the picker's download fails with one "check your connection" and no nested parentheses.
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    errors = []
    window.models.download_failed.connect(lambda repo, message: errors.append(message))
    window.models.start_download("mlx-community/Olmo-3-7B-Instruct-4bit")
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    message = errors[0]
    assert message.lower().count("check your connection") == 1, message
    depth, deepest = 0, 0
    for ch in message:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    assert deepest <= 1, message
    close_window(window)


def test_settings_explain_which_system_prompt_applies(qtbot, tmp_path, tiny_model_dir):
    from desktop.settings import Settings
    from desktop.settings_dialog import SettingsDialog
    from olmo3.model.tiny import INSTRUCT_DEFAULT_SYSTEM

    dialog = SettingsDialog(Settings(), default_models_dir=tmp_path, model_dir=str(tiny_model_dir))
    qtbot.addWidget(dialog)
    hint = dialog.system_prompt_hint.text()
    assert "Empty, so new conversations use the model's own system prompt" in hint
    assert INSTRUCT_DEFAULT_SYSTEM.strip() in hint  # quoted from the model's own chat template
    dialog.system_prompt.setPlainText("Be brief.")
    assert dialog.system_prompt_hint.text() == "New conversations start with this prompt instead of the model's own."
    # The hint sits right under its field; Cancel and Save have room between them.
    dialog.show()
    qtbot.waitExposed(dialog)
    assert 0 <= dialog.system_prompt_hint.y() - (dialog.system_prompt.y() + dialog.system_prompt.height()) <= 12
    gap = dialog.save_button.x() - (dialog.cancel_button.x() + dialog.cancel_button.width())
    assert gap >= 8
    # The Model page: start-up and the context, stored only when it differs from the default.
    assert dialog.auto_load.isChecked()
    dialog.auto_load.setChecked(False)
    result = dialog.result_settings()
    assert result.auto_load_last_model is False and result.model_context == {}
    dialog.context.setValue(1024)
    assert dialog.result_settings().model_context == {str(tiny_model_dir): 1024}


def test_settings_file_keeps_contexts_and_drops_bad_ones(tmp_path):
    from desktop.settings import Settings, load_settings, save_settings

    path = tmp_path / "settings.json"
    save_settings(path, Settings(model_context={"/models/a": 8192}))
    assert load_settings(path).model_context == {"/models/a": 8192}
    bad = Settings.from_dict({"model_context": {"/a": "lots", "/b": -1, "/c": True, "/d": 4096}})
    assert bad.model_context == {"/d": 4096}
    assert Settings.from_dict({"model_context": [1, 2]}).model_context == {}
