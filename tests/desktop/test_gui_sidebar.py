"""Sidebar, search, trash and settings through the real window and conversation store (no model needed)."""

from __future__ import annotations

import datetime as dt
import json

from gui_helpers import close_window, fast_settings, make_window, threads_are_joined  # noqa: F401
from PySide6.QtCore import Qt

from desktop.settings import (
    THINK_PRESET,
    Sampling,
    Settings,
    instruct_preset,
    load_settings,
    save_settings,
)
from desktop.sidebar import recency_group


def _seed(store):
    ids = {}
    for title, text in (
        ("Lisbon trip", "Plan three days in Lisbon."),
        ("KV caches", "Explain the KV cache."),
        ("Sourdough", "How do I feed a starter?"),
    ):
        conv = store.create_conversation(title=title)
        user = store.append_message(conv, None, "user", text)
        store.append_message(conv, user, "assistant", f"An answer about {title.lower()} with a needle word.")
        ids[title] = conv
    return ids


def test_groups_pins_search_rename_trash_and_restore(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    ids = _seed(window.store)
    window.refresh_sidebar()
    sidebar = window.sidebar
    assert sidebar.visible_headers() == ["Today"]
    assert sidebar.visible_ids() == [ids["Sourdough"], ids["KV caches"], ids["Lisbon trip"]]  # most recent first

    # pin: a "Pinned" section on top
    menu = sidebar.build_context_menu(ids["Lisbon trip"], trashed=False, pinned=False)
    next(a for a in menu.actions() if a.text() == "Pin").trigger()
    assert sidebar.visible_headers() == ["Pinned", "Today"] and sidebar.visible_ids()[0] == ids["Lisbon trip"]

    # search filters as you type (debounced), with highlighted snippets
    qtbot.keyClicks(sidebar.search, "starte")
    qtbot.waitUntil(lambda: sidebar.visible_ids() == [ids["Sourdough"]])
    item = sidebar.model.item(1)
    assert "<b>starte" in item.data(Qt.ItemDataRole.UserRole + 3).lower()
    sidebar.search.clear()
    qtbot.waitUntil(lambda: len(sidebar.visible_ids()) == 3)

    # inline rename
    sidebar.begin_rename(ids["KV caches"])
    editor = sidebar.list.findChild(type(sidebar.search), "titleEdit")
    assert editor is not None
    editor.setText("KV caches, explained")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.store.get_conversation(ids["KV caches"]).title == "KV caches, explained")

    # open, then delete with the keyboard → Trash, with an Undo toast
    window.open_conversation(ids["Sourdough"])
    assert window.header.title.text() == "Sourdough"
    window.sidebar.list.setFocus()
    window.menus.delete.trigger()
    assert ids["Sourdough"] not in sidebar.visible_ids()
    assert window.controller.current is None and window.toast.isVisible()
    assert sidebar.trash_button.text().endswith("1")

    # the Trash view lists it; Restore brings it back
    sidebar.show_trash(True)
    assert sidebar.visible_ids() == [ids["Sourdough"]]
    menu = sidebar.build_context_menu(ids["Sourdough"], trashed=True, pinned=False)
    next(a for a in menu.actions() if a.text() == "Restore").trigger()
    assert sidebar.visible_ids() == [] and window.store.trash_count() == 0
    sidebar.show_trash(False)
    assert ids["Sourdough"] in sidebar.visible_ids()

    # delete forever from the Trash
    window.delete_conversation(ids["KV caches"])
    sidebar.show_trash(True)
    window.delete_forever(ids["KV caches"])
    assert window.store.trash_count() == 0 and sidebar.visible_ids() == []
    close_window(window)


def test_duplicate_and_header_rename(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    ids = _seed(window.store)
    window.refresh_sidebar()
    window.duplicate_conversation(ids["Lisbon trip"])
    copy = window.controller.current
    assert copy not in ids.values() and window.header.title.text() == "Lisbon trip (copy)"
    assert [m.content for m in window.store.active_path(copy)] == [
        m.content for m in window.store.active_path(ids["Lisbon trip"])
    ]
    window.header.begin_rename()
    window.header.title_edit.setText("Porto instead")
    qtbot.keyClick(window.header.title_edit, Qt.Key.Key_Return)
    assert window.store.get_conversation(copy).title == "Porto instead"
    close_window(window)


def test_window_state_and_last_conversation_are_restored(qtbot, tmp_path):
    home = tmp_path / "home"
    window = make_window(qtbot, home, start_engine=False)
    ids = _seed(window.store)
    window.refresh_sidebar()
    window.open_conversation(ids["KV caches"])
    window.resize(900, 650)
    window.splitter.setSizes([300, 600])
    sizes = window.splitter.sizes()
    close_window(window)
    window = make_window(qtbot, home, start_engine=False)
    assert window.controller.current == ids["KV caches"]
    assert window.splitter.sizes()[0] == sizes[0]
    assert (home / "config" / "window.ini").exists()
    close_window(window)


def test_recency_groups():
    now = dt.datetime(2025, 3, 15, 12, 0)
    ts = lambda **kw: (now - dt.timedelta(**kw)).timestamp()  # noqa: E731
    assert recency_group(ts(hours=1), now) == "Today"
    assert recency_group(ts(days=1), now) == "Yesterday"
    assert recency_group(ts(days=5), now) == "Previous 7 days"
    assert recency_group(ts(days=20), now) == "Previous 30 days"
    assert recency_group(ts(days=90), now) == "Older"


def test_settings_file_round_trip_and_bad_values(tmp_path):
    path = tmp_path / "settings.json"
    settings = Settings(
        system_prompt="Be brief.", sampling=Sampling(temperature=0.2, seed=42), theme="dark", memory_budget_gb=2.5
    )
    save_settings(path, settings)
    assert load_settings(path) == settings
    data = json.loads(path.read_text())
    data["theme"] = "purple"
    data["sampling"]["top_k"] = "lots"
    data["memory_budget_gb"] = "x"
    path.write_text(json.dumps(data))
    loaded = load_settings(path)
    assert loaded.theme == "system" and loaded.sampling.top_k == Sampling().top_k
    assert loaded.sampling.temperature == 0.2 and loaded.system_prompt == "Be brief."  # the rest survives
    path.write_text("{not json")
    assert load_settings(path) == Settings()
    assert (tmp_path / "settings.json.bad").read_text() == "{not json"  # kept aside, never silently lost


def test_presets_follow_the_model(tmp_path):
    assert (THINK_PRESET.temperature, THINK_PRESET.top_p, THINK_PRESET.top_k) == (0.6, 0.95, 50)
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_p": 0.9}))
    preset = instruct_preset(tmp_path)
    assert (preset.temperature, preset.top_p) == (0.3, 0.9)


def test_settings_dialog_saves_sampling_theme_and_conversation_prompt(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False, settings=fast_settings())
    ids = _seed(window.store)
    window.open_conversation(ids["Lisbon trip"])
    from desktop.settings_dialog import SettingsDialog

    dialog = SettingsDialog(
        window.settings,
        default_models_dir=window.paths.models_dir,
        conversation_prompt=None,
        conversation_title="Lisbon trip",
        parent=window,
    )
    qtbot.addWidget(dialog)
    dialog.preset.setCurrentText("Olmo 3 Think")
    assert dialog.temperature.value() == 0.6 and dialog.top_k.value() == 50
    dialog.temperature.setValue(0.9)
    assert dialog.preset.currentText() == "Custom"
    dialog.seed.setText("abc")
    dialog.accept()
    assert dialog.result() == 0 and "whole number" in dialog.seed_error.text()  # refused, with a reason
    dialog.seed.setText("7")
    next(b for b in dialog.theme_group.buttons() if b.property("value") == "dark").setChecked(True)
    dialog.conv_prompt.setPlainText("Answer in Portuguese.")
    dialog.accept()
    assert dialog.result() == 1
    window.apply_settings(dialog.result_settings())
    window.controller.set_conversation_prompt(ids["Lisbon trip"], dialog.conversation_prompt())
    assert window.settings.sampling.temperature == 0.9 and window.settings.sampling.seed == 7
    assert window.theme.resolve_dark() and load_settings(window.paths.settings_file).theme == "dark"
    assert window.store.get_conversation(ids["Lisbon trip"]).system_prompt == "Answer in Portuguese."
    window.set_theme("light")
    close_window(window)
