"""Shared fixtures: tiny real Olmo-3 model folders (random weights, real tokenizer) and loaded models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEMPLATES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "chat-templates"


def real_template(name: str) -> str:
    """A real Olmo-3 chat template from ../shared/fixtures (the test is skipped where it is absent)."""
    path = TEMPLATES / name
    if not path.is_file():
        pytest.skip(f"chat-template fixture {path} not present")
    return path.read_text()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-instruct", sliding_window=16)


@pytest.fixture(scope="session")
def tiny_think_dir(tmp_path_factory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-think", think=True, sliding_window=16, config_format="transformers5"
    )


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    import olmo3

    return olmo3.load(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_think(tiny_think_dir):
    import olmo3

    return olmo3.load(tiny_think_dir)


def pytest_sessionfinish(session, exitstatus):
    """Leave no Python-made QMimeData on Qt's clipboard: Qt deletes it at process exit, after Python has gone, and
    its wrapper's destructor then crashes the exit (SIGSEGV, exit 139, with every test passed)."""
    qt = sys.modules.get("PySide6.QtGui")
    if qt is not None and qt.QGuiApplication.instance() is not None:
        qt.QGuiApplication.clipboard().clear()
