"""The model picker against a real local HTTP server that answers like the Hugging Face Hub (tests/hub_server.py).

Download with progress → pause → resume → installed → loaded automatically → delete with bytes freed; custom
repo ids with clear errors; downloads keep going while the picker is closed.
"""

from __future__ import annotations

import html
import json
import shutil

import pytest
from gui_helpers import (  # noqa: F401
    close_window,
    make_window,
    offline_model_store,
    threads_are_joined,
)
from hub_server import FakeHub, Hold
from PySide6.QtCore import Qt

REPO = "mlx-community/Olmo-3-7B-Instruct-4bit"  # a catalog entry; the fake hub serves the tiny model under its name


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def test_download_pause_resume_load_and_delete(qtbot, tmp_path, hub, tiny_model_dir):
    repo = hub.add_folder(REPO, tiny_model_dir)
    hold = repo.hold["model.safetensors"] = Hold(offset=16 * 1024 * 3)
    home = tmp_path / "home"
    window = make_window(qtbot, home, model_store=offline_model_store(home, endpoint=hub.url))
    assert window.stack.currentWidget() is window.welcome

    picker = window.open_model_picker()
    picker.confirm = lambda title, text: True
    card = picker.cards()[REPO]
    assert card.badge.property("verdict") in ("fits", "tight", "wont_fit")
    assert " of " in card.badge.text() and "weights" in card.badge.toolTip()  # numbers, and why
    qtbot.mouseClick(card.button("download"), Qt.MouseButton.LeftButton)
    assert hold.reached.wait(30)
    qtbot.waitUntil(
        lambda: (
            picker.cards()[REPO].progress.isVisibleTo(picker) and " of " in picker.cards()[REPO].progress_label.text()
        ),
        timeout=10_000,
    )
    card = picker.cards()[REPO]
    assert 0 < card.progress.value() < 1000 and set(card.button_keys()) == {"pause", "cancel"}
    assert window.header.ring.isVisibleTo(window)  # progress shows in the toolbar too, with its label
    chip = window.header.download_chip.label.text()
    assert chip.startswith("Downloading ") and chip.endswith("%")

    picker.close()  # closing the picker does not stop the download
    assert window.models.active_downloads()
    qtbot.mouseClick(window.open_model_picker().cards()[REPO].button("pause"), Qt.MouseButton.LeftButton)
    hold.release.set()
    qtbot.waitUntil(lambda: window.models.downloads[REPO].status == "paused", timeout=10_000)
    qtbot.waitUntil(lambda: "resume" in picker.cards()[REPO].button_keys())
    assert "Paused" in picker.cards()[REPO].progress_label.text() or "not finished" in picker.cards()[REPO].meta.text()

    qtbot.mouseClick(picker.cards()[REPO].button("resume"), Qt.MouseButton.LeftButton)
    # Completed: installed, and loaded right away because no model was loaded.
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=60_000)
    assert not window.header.ring.isVisibleTo(window)
    qtbot.waitUntil(lambda: picker.cards()[REPO].loaded_badge.isVisibleTo(picker))
    assert window.composer.state == "ready" and window.stack.currentWidget() is window.chat_view

    # delete (confirmed): unloads first, frees the bytes and says how many
    qtbot.mouseClick(picker.cards()[REPO].button("delete"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "freed" in picker.banner_text.text(), timeout=30_000)
    assert not (home / "models" / "mlx-community" / "Olmo-3-7B-Instruct-4bit").exists()
    qtbot.waitUntil(lambda: window.controller.model_info is None, timeout=30_000)
    assert window.composer.state == "no_model"
    assert "download" in picker.cards()[REPO].button_keys()
    close_window(window)


def test_custom_repo_ids_and_clear_errors(qtbot, tmp_path, hub, tiny_model_dir):
    llama = tmp_path / "llama"
    shutil.copytree(tiny_model_dir, llama)
    config = json.loads((llama / "config.json").read_text())
    config["model_type"] = "llama"
    (llama / "config.json").write_text(json.dumps(config))
    hub.add_folder("someone/not-olmo", llama)
    hub.add_folder("someone/Olmo-3-Custom", tiny_model_dir)
    home = tmp_path / "home"
    window = make_window(qtbot, home, model_store=offline_model_store(home, endpoint=hub.url), start_engine=False)
    picker = window.open_model_picker()

    def check(text):
        picker.banner.hide()
        picker.custom_field.setText(text)
        qtbot.mouseClick(picker.check_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: picker.check_button.isEnabled() and picker.check_button.text() == "Check", timeout=20_000
        )
        return html.unescape(picker.banner_text.text()) if picker.banner.isVisibleTo(picker) else ""

    assert "'..' is not allowed" in check("../../etc/passwd")  # refused before any request or path
    assert "not an Olmo-3 model" in check("someone/not-olmo")
    assert "isn't available on Hugging Face" in check("someone/missing")
    assert check("https://huggingface.co/someone/Olmo-3-Custom/tree/main") == ""
    card = picker.cards()["someone/Olmo-3-Custom"]
    assert "download" in card.button_keys() and card.badge.property("verdict") == "fits"
    close_window(window)


def test_add_model_folder_rejects_what_is_not_olmo3(qtbot, tmp_path):
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    (not_a_model / "cat.jpg").write_bytes(b"\xff\xd8")
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    picker = window.open_model_picker()
    picker.ask_folder = lambda: str(not_a_model)
    picker.ask_link = lambda folder: False
    qtbot.mouseClick(picker.add_folder_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: picker.banner.isVisibleTo(picker), timeout=20_000)
    text = html.unescape(picker.banner_text.text())
    assert "Couldn't add that folder" in text and "not a loadable Olmo-3 model" in text
    close_window(window)
