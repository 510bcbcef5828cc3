"""Shared pieces of the tool-turn tests: the real MCP test server's config, and a script of forced replies."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parent / "tools" / "mcp_test_server.py"


def mcp_config(root: Path, name: str = "calc", *extra: str) -> dict[str, Any]:
    """An ``mcp.json`` document with the SDK test server over stdio (add, echo, read_file, big, slow)."""
    root.mkdir(parents=True, exist_ok=True)
    args = [str(SERVER), "--name", name, *extra]
    spec = {"command": sys.executable, "args": args, "env": {"OLMO_TEST_ROOT": str(root)}}
    return {"mcpServers": {name: spec}}


def wait_for(predicate, what: str, limit: float = 60.0) -> None:
    """Poll for something another thread or process does; the limit only keeps a broken test from hanging."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


class Script:
    """A logits processor that makes each generation, in turn, write the next text and stop (a real hook in
    mlx-lm's decoding loop, not a mock): the text is tokenized with the model's plain-text encoder, so what the
    model "writes" is ordinary tokens, then ``<|im_end|>``. A generation with no text left samples freely.

    mlx-lm gives a processor the tokens of this generation so far, starting with the last prompt token; a call
    with one token is the first step of a new generation.
    """

    def __init__(self, tokenizer: Any, *texts: str) -> None:
        from olmo3.model.template import for_tokenizer

        template = for_tokenizer(tokenizer)
        im_end = template.tokens.ids["<|im_end|>"] if template.tokens else None
        self.sequences = [[*template.encode_text(t), im_end] for t in texts]
        self.generations = 0
        self._current: list[int] | None = None

    def add(self, tokenizer: Any, *texts: str) -> None:
        self.sequences += Script(tokenizer, *texts).sequences

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        step = tokens.shape[0] - 1
        if step == 0:
            self._current = self.sequences.pop(0) if self.sequences else None
            self.generations += 1
        if self._current is None or step >= len(self._current):
            return logits
        want = self._current[step]
        return mx.where(mx.arange(logits.shape[-1]) == want, 0.0, -1e9)[None].astype(logits.dtype)
