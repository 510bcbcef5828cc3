"""Fixtures for the remote engine: ``olmo3 serve`` on a tiny model as a real subprocess, with an API key, and a
stand-in HTTP server for answers no Olmo server gives (garbage, a 503 with a reason)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_helpers import CONTEXT, KEY, Canned
from serve_server import ServeProcess


@pytest.fixture(scope="session")
def remote_model_dir(tmp_path_factory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("remote-models") / "tiny-remote-instruct",
        sliding_window=16,
        max_position_embeddings=CONTEXT,
    )


@pytest.fixture(scope="session")
def olmo_server(remote_model_dir, tmp_path_factory) -> Iterator[ServeProcess]:
    """One ``olmo3 serve --api-key`` for the tests that leave it running."""
    server = ServeProcess(remote_model_dir, tmp_path_factory.mktemp("remote-kv"), "--api-key", KEY)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()
