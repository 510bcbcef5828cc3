"""Shared pieces of the GUI tests: an offscreen app, windows on temporary homes, waiting, thread hygiene."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Greedy, short replies keep the tiny model fast and the tests deterministic.
FAST_SAMPLING = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "max_tokens": 16,
    "seed": 0,
}

THREAD_PREFIXES = ("olmo3-engine", "olmo3-serve", "olmo3-remote", "download ")
_windows: list[Any] = []


@pytest.fixture(autouse=True)
def threads_are_joined():
    """After every GUI test (and after pytest-qt closed its widgets): no window, engine, chores or download thread
    may still run. Test modules import this fixture, which makes it autouse there."""
    yield
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.processEvents()
    leftovers = list(_windows)
    _windows.clear()
    for window in leftovers:
        if not window._closed:
            window.shutdown()
        assert not window.bridge.running, "an engine thread outlived its test"
        assert not window.chores.is_running(), "a chores thread outlived its test"
    assert_no_threads()


def fast_settings(**sampling: Any):
    from desktop.settings import Sampling, Settings

    return Settings(
        sampling=Sampling(**{**FAST_SAMPLING, **sampling}),
        sampling_follows_model=False,
        auto_load_last_model=False,
        theme="light",
    )


def offline_model_store(home: Path, endpoint: str = "http://127.0.0.1:9", **kw: Any):
    """A real ModelStore under ``home`` that never sees the machine's Hugging Face cache or token."""
    from olmo3.hub import ModelStore, RetryPolicy

    kw.setdefault("chunk_size", 16 * 1024)
    kw.setdefault("retry", RetryPolicy(max_attempts=3, base_delay_s=0.0, planning_attempts=1))
    kw.setdefault("progress_interval_s", 0.0)
    return ModelStore(home / "models", include_hf_cache=False, endpoint=endpoint, token=False, **kw)


def make_window(
    qtbot: Any,
    home: Path,
    *,
    settings: Any = None,
    model_store: Any = None,
    start_engine: bool = True,
    engine_options: dict[str, Any] | None = None,
    memory_limit_bytes: int | None = None,
):
    """A MainWindow whose every file lives under ``home``; closed (and checked) by :func:`close_window`."""
    from desktop.app import MainWindow, create_application
    from desktop.paths import AppPaths

    create_application([])
    window = MainWindow(
        paths=AppPaths.under(home),
        settings=settings or fast_settings(),
        model_store=model_store or offline_model_store(home),
        start_engine=start_engine,
        engine_options=engine_options,
        memory_limit_bytes=memory_limit_bytes,
    )
    window.confirm = lambda title, text: True
    window.controller.ask_overflow = lambda event: "cancel"
    window.ask_load_anyway = lambda event, name: False
    window.resize(1100, 720)
    window.show()
    qtbot.addWidget(window)
    _windows.append(window)
    return window


def close_window(window: Any) -> None:
    """Close like the user would and assert every thread the window started has stopped."""
    window.close()
    assert window._shutdown_ok is True
    assert not window.bridge.running, "the engine thread is still running"
    assert not window.chores.is_running(), "the chores thread is still running"
    assert_no_threads()


def assert_no_threads() -> None:
    alive = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIXES) and t.is_alive()]
    assert not alive, f"threads left running: {alive}"


def load_model(qtbot: Any, window: Any, path: Path, timeout: int = 60_000) -> None:
    window.load_model(str(path))
    qtbot.waitUntil(lambda: window.controller.model_info is not None, timeout=timeout)


def wait_idle(qtbot: Any, window: Any, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not window.controller.is_busy(), timeout=timeout)


def send(qtbot: Any, window: Any, text: str, timeout: int = 60_000) -> None:
    window.composer.set_text(text)
    qtbot.keyClick(window.composer.edit, "\r")  # Enter sends
    qtbot.waitUntil(lambda: window.controller.is_busy() or window.controller.last_finished is not None, timeout=5000)
    wait_idle(qtbot, window, timeout)


def shown(window: Any) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in window.chat_view.message_dicts()]
