"""Fixtures for the local server: tiny models with the real Olmo-3 templates, and ``olmo3 serve`` subprocesses."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import real_template
from serve_server import ServeProcess, word_bias

WINDOW = 32  # the sliding window of the test models: conversations run past it within a few turns
CONTEXT = 2048
MAX_BODY = 256 * 1024


def _model(tmp_path_factory, name: str, template: str) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("serve-models") / name,
        chat_template_text=real_template(template),
        sliding_window=WINDOW,
        max_position_embeddings=CONTEXT,
    )


@pytest.fixture(scope="session")
def instruct_dir(tmp_path_factory) -> Path:
    return _model(tmp_path_factory, "tiny-olmo31-instruct", "olmo31_instruct_lmstudio_community.jinja")


@pytest.fixture(scope="session")
def think_dir(tmp_path_factory) -> Path:
    return _model(tmp_path_factory, "tiny-olmo3-think", "openinstruct_olmo_thinker.jinja")


@pytest.fixture(scope="session")
def instruct(instruct_dir):
    """The same model loaded here, for cache-less reference generations: (model, tokenizer, logit_bias)."""
    import olmo3

    model, tok = olmo3.load(instruct_dir)
    return model, tok, word_bias(tok)


@pytest.fixture(scope="session")
def think(think_dir):
    import olmo3

    model, tok = olmo3.load(think_dir)
    return model, tok, word_bias(tok)


@pytest.fixture(scope="session")
def instruct_server(instruct_dir, tmp_path_factory):
    server = ServeProcess(
        instruct_dir, tmp_path_factory.mktemp("serve-kv"), "--max-queue", "1", "--max-body-bytes", str(MAX_BODY)
    )
    yield server
    assert server.stop() == 0, server.log()
