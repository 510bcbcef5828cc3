"""The model picker survives failure: offline, a download fails on its card (wrapped, with Resume and Cancel, inside
the list at 800 and 1,270 px) and resumes once the Hub answers; a folder added afterwards loads at once; folders are
checked before the copy-or-link question; "Won't fit" models get a plain button and the reason; Search Hugging
Face lists what the (local) Hub has and keeps the list offline; Ai2's bf16 repos download and quantize on the
engine thread; the welcome screen's quick picks show their download size."""

from __future__ import annotations

import html

import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    close_window,
    make_window,
    offline_model_store,
    threads_are_joined,
)
from hub_server import FakeHub
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication, QWidget

from desktop.models import describe_download
from olmo3.memory import set_working_set

REPO = "mlx-community/Olmo-3-7B-Instruct-4bit"  # a catalog entry; the local hub serves the tiny model under its name
AI2 = "allenai/Olmo-3-7B-Instruct"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there: "offline"


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def budget_16gb():
    """This Mac has 16 GB for models (the engine hands Metal's working set in the same way)."""
    set_working_set(16 * 10**9)
    yield
    set_working_set(None)


def settle(picker, width: int) -> None:
    picker.resize(width, 700)
    for _ in range(5):
        QApplication.processEvents()


def assert_inside_viewport(picker) -> None:
    """Every visible widget of every card lies within the list's visible width (nothing off the right edge)."""
    viewport = picker.scroll_area.viewport()
    assert picker.body.width() <= viewport.width()
    for key, card in picker.cards().items():
        for widget in [card, *card.findChildren(QWidget)]:
            if not widget.isVisibleTo(picker) or widget.width() == 0:
                continue
            rect = QRect(widget.mapTo(viewport, QPoint(0, 0)), widget.size())
            assert rect.left() >= 0 and rect.right() <= viewport.width(), (key, widget.objectName(), rect)


def test_offline_download_fails_on_its_card_then_resumes_from_the_hub(qtbot, tmp_path, hub, tiny_model_dir):
    hub.add_folder(REPO, tiny_model_dir)
    home = tmp_path / "home"
    store = offline_model_store(home, endpoint=UNREACHABLE)
    window = make_window(qtbot, home, model_store=store)
    picker = window.open_model_picker()
    picker.confirm = lambda title, text: True
    qtbot.mouseClick(picker.cards()[REPO].button("download"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.models.downloads[REPO].status == "failed", timeout=30_000)
    qtbot.waitUntil(lambda: "resume" in picker.cards()[REPO].button_keys())

    card = picker.cards()[REPO]
    assert picker.isVisible() and set(card.button_keys()) == {"resume", "cancel"}
    assert card.note.isVisibleTo(picker) and card.note.wordWrap() and card.note.property("error") == "true"
    assert "Check your connection" in card.note.text() and "127.0.0.1" in card.note.toolTip()
    assert card.note.text().count("connection") == 1  # said once
    assert not picker.banner.isVisibleTo(picker)  # the card says it; no second copy in the banner
    for width in (800, 1270):
        settle(picker, width)
        assert_inside_viewport(picker)

    # Cancel forgets a failure that left nothing on disk; Download comes back.
    qtbot.mouseClick(card.button("cancel"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "download" in picker.cards()[REPO].button_keys())
    qtbot.mouseClick(picker.cards()[REPO].button("download"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "resume" in picker.cards()[REPO].button_keys(), timeout=30_000)

    store.endpoint = hub.url  # the connection is back
    qtbot.mouseClick(picker.cards()[REPO].button("resume"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=60_000)  # installed, then loaded
    qtbot.waitUntil(lambda: picker.cards()[REPO].loaded_badge.isVisibleTo(picker))
    assert "ready" in html.unescape(picker.banner_text.text()) and not picker._banner_is_error
    assert not picker.cards()[REPO].note.isVisibleTo(picker)
    close_window(window)


def test_a_long_error_wraps_inside_its_card(qtbot, tmp_path, hub, tiny_model_dir):
    hub.add_folder(REPO, tiny_model_dir)
    home = tmp_path / "home" / ("a-long-folder-name-" * 4)  # the disk-full message names the folder
    store = offline_model_store(home, endpoint=hub.url, free_space_fn=lambda _path: 1000)
    window = make_window(qtbot, home, model_store=store, start_engine=False)
    picker = window.open_model_picker()
    qtbot.mouseClick(picker.cards()[REPO].button("download"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "resume" in picker.cards()[REPO].button_keys(), timeout=30_000)
    card = picker.cards()[REPO]
    assert "Not enough disk space" in card.note.text() and "1,000 bytes" in card.note.text()
    for width in (800, 1270):
        settle(picker, width)
        assert_inside_viewport(picker)
        lines = card.note.height() / card.note.fontMetrics().lineSpacing()
        assert lines >= 2, (width, card.note.height())  # wrapped, not cut
    close_window(window)


def test_add_a_folder_after_a_failure_then_load_without_restart(qtbot, tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    window = make_window(qtbot, home, model_store=offline_model_store(home, endpoint=UNREACHABLE))
    picker = window.open_model_picker()
    qtbot.mouseClick(picker.cards()[REPO].button("download"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "resume" in picker.cards()[REPO].button_keys(), timeout=30_000)

    # A folder that is not a model is refused before the copy-or-link question.
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    asked: list[str] = []
    picker.ask_folder = lambda: str(not_a_model)
    picker.ask_link = lambda folder: asked.append(folder) or True
    qtbot.mouseClick(picker.add_folder_button, Qt.MouseButton.LeftButton)
    assert picker.banner.isVisibleTo(picker) and asked == []
    assert "not a loadable Olmo-3 model" in html.unescape(picker.banner_text.text())

    picker.ask_folder = lambda: str(tiny_model_dir)
    qtbot.mouseClick(picker.add_folder_button, Qt.MouseButton.LeftButton)
    assert asked == [str(tiny_model_dir)]
    qtbot.waitUntil(lambda: any(k.startswith("local/") for k in picker.cards()), timeout=30_000)
    name = next(k for k in picker.cards() if k.startswith("local/"))
    assert not picker._banner_is_error and "Added" in picker.banner_text.text()  # the stale error is gone
    load = picker.cards()[name].button("load")
    assert load is not None and load.isVisibleTo(picker)
    qtbot.mouseClick(load, Qt.MouseButton.LeftButton)
    assert not picker.isVisible()  # Load returns to the chat
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=60_000)
    assert window.stack.currentWidget() is window.chat_view and window.composer.state == "ready"
    close_window(window)


def test_wont_fit_models_get_a_plain_button_and_the_reason(qtbot, tmp_path, budget_16gb):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    picker = window.open_model_picker()
    big = picker.cards()["lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit"]
    small = picker.cards()[REPO]
    assert big.badge.property("verdict") == "wont_fit" and small.badge.property("verdict") == "fits"
    assert big.button("download").objectName() == "secondaryButton"
    assert small.button("download").objectName() == "primaryButton"
    assert big.note.isVisibleTo(picker) and "Needs about" in big.note.text() and "16.0 GB" in big.note.text()
    assert not small.note.isVisibleTo(picker)
    # Only repos on record, and no "unverified" label anywhere.
    assert "mlx-community/Olmo-3-7B-Think-8bit" not in picker.cards()
    assert not any("unverified" in c.meta.text() for c in picker.cards().values())
    for width in (800, 1270):
        settle(picker, width)
        assert_inside_viewport(picker)
    close_window(window)


def test_search_hugging_face_lists_results_and_keeps_them_offline(qtbot, tmp_path, hub, tiny_model_dir, budget_16gb):
    from olmo3.model.tiny import make_tiny_model

    q4 = make_tiny_model(tmp_path / "q4", quant_bits=4)
    hub.add_folder("someone/Olmo-3-Tiny-MLX-4bit", q4, downloads=42)
    hub.add_folder(REPO, tiny_model_dir, downloads=9)  # in the catalog already: not listed twice
    hub.add_folder("allenai/Olmo-3-Tiny", tiny_model_dir, tags=["transformers", "safetensors", "olmo3"])
    home = tmp_path / "home"
    store = offline_model_store(home, endpoint=hub.url)
    window = make_window(qtbot, home, model_store=store, start_engine=False)
    picker = window.open_model_picker()
    assert "someone/Olmo-3-Tiny-MLX-4bit" not in picker.cards()
    qtbot.mouseClick(picker.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "someone/Olmo-3-Tiny-MLX-4bit" in picker.cards(), timeout=30_000)
    card = picker.cards()["someone/Olmo-3-Tiny-MLX-4bit"]
    size = sum(p.stat().st_size for p in q4.iterdir() if p.is_file())
    from olmo3.units import format_bytes

    assert f"{format_bytes(size)} download" in card.meta.text().replace("\u200b", "")
    assert card.badge.property("verdict") == "fits" and card.button("download").objectName() == "primaryButton"
    assert "42 downloads" in card.description.text() and "allenai/Olmo-3-Tiny" not in picker.cards()
    assert picker.search_status.text().startswith("Last updated")
    assert (home / "cache" / "hub-search.json").is_file()

    # Offline: a new picker (a new window) shows the saved list at once, and a search says it could not refresh.
    close_window(window)
    store = offline_model_store(home, endpoint=hub.url)
    hub.stop()
    window = make_window(qtbot, home, model_store=store, start_engine=False)
    picker = window.open_model_picker()
    assert "someone/Olmo-3-Tiny-MLX-4bit" in picker.cards()
    qtbot.mouseClick(picker.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: picker.search_button.isEnabled(), timeout=30_000)
    assert "Couldn't reach Hugging Face" in picker.search_status.text()
    assert "someone/Olmo-3-Tiny-MLX-4bit" in picker.cards()
    close_window(window)


def test_ai2_download_and_quantize_on_the_engine_thread(qtbot, tmp_path, hub, tiny_model_dir, budget_16gb):
    hub.add_folder(AI2, tiny_model_dir, tags=["transformers", "safetensors", "olmo3"])
    home = tmp_path / "home"
    window = make_window(qtbot, home, model_store=offline_model_store(home, endpoint=hub.url))
    picker = window.open_model_picker()
    button = picker.cards()[AI2].button("download")
    assert button.text() == "Download and quantize to 4-bit" and button.objectName() == "primaryButton"
    seen: list[str] = []
    labels: list[str] = []

    def record(_event):
        # Events reach the GUI thread after the download thread moved on (the card may already have moved to "On
        # this Mac"), so what each state reads as is recorded, and the header chip's text, which always shows.
        state = window.models.downloads.get(AI2)
        if state is not None:
            seen.append(state.status)
            labels.append(describe_download(state))
            if window.header.download_chip.isVisibleTo(window):
                labels.append(window.header.download_chip.label.text())

    window.models.download_event.connect(record)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=120_000)  # quantized, installed, loaded
    assert "running" in seen and "quantizing" in seen and seen.index("running") < seen.index("quantizing")
    assert any(t.startswith("Step 1 of 2: downloading") for t in labels)
    assert any(t.startswith("Step 2 of 2: quantizing to 4-bit on this Mac · layer") for t in labels)
    assert any(t.startswith("Downloading") for t in labels) and any(t.startswith("Quantizing") for t in labels)
    installed = [m for m in window.models.store.installed_models()]
    assert [m.name for m in installed] == [AI2 + "-4bit"] and installed[0].quantization["bits"] == 4
    assert window.controller.model_info.quantization["bits"] == 4
    qtbot.waitUntil(lambda: AI2 + "-4bit" in picker.cards())
    assert AI2 not in picker.cards()  # the catalog entry is installed: it moved to "On this Mac"
    close_window(window)


def test_welcome_quick_picks_are_catalog_repos_with_their_download_size(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    assert window.stack.currentWidget() is window.welcome
    sizes = {repo: label.text() for repo, label in window.welcome.pick_sizes.items()}
    assert sizes == {
        "mlx-community/Olmo-3-7B-Instruct-4bit": "4.11 GB download",
        "mlx-community/Olmo-3-7B-Think-4bit": "4.11 GB download",
    }
    close_window(window)
