"""Helpers for the local-server tests: ``olmo3 serve`` as a real subprocess, and cache-less reference replies."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SERVING = re.compile(r"serving (\S+) at (http://\S+/v1)")


def olmo3_script() -> str:
    beside = Path(sys.executable).with_name("olmo3")
    found = str(beside) if beside.exists() else shutil.which("olmo3")
    assert found, "the olmo3 console script is not installed (pip install -e .)"
    return found


class ServeProcess:
    """``olmo3 serve --port 0 ...`` in a subprocess; its stderr is collected on a thread (never blocks).

    ``wrap``: turns the command into another (``mlx.launch … -- olmo3 serve …`` for a parallel group)."""

    def __init__(
        self,
        model: Path | str,
        cache_dir: Path,
        *args: str,
        startup_s: float = 120.0,
        env: dict[str, str] | None = None,
        wrap: Any = None,
    ) -> None:
        cmd = [olmo3_script(), "serve", "--model", str(model), "--port", "0", "--cache-dir", str(cache_dir), *args]
        if wrap is not None:
            cmd = wrap(cmd)
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url, self.model = "", ""
        deadline = time.monotonic() + startup_s
        with self._cv:
            while not self.url:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"olmo3 serve exited {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError(f"olmo3 serve did not start:\n{self.log()}")
                self._cv.wait(0.1)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cv:
                self.lines.append(line)
                m = SERVING.search(line)
                if m and not self.url:
                    self.model, self.url = m.group(1), m.group(2)
                self._cv.notify_all()

    def log(self) -> str:
        with self._cv:
            return "".join(self.lines)

    def wait_log(self, text: str, timeout: float = 30.0) -> bool:
        """Whether ``text`` shows in stderr within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while text not in "".join(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._cv.wait(min(left, 0.1))
            return True

    def client(self, api_key: str = "none", **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=120, **kw)

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def health(self) -> dict[str, Any]:
        import httpx2 as httpx

        return dict(httpx.get(f"{self.root}/health", timeout=30).json())

    def wait_health(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if predicate(h) or time.monotonic() > deadline:
                return h
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(10)
        return code


def word_bias(tok: Any, n: int = 8) -> dict[str, int]:
    """``logit_bias`` that confines a tiny random model to whole-word tokens (" the", " tokens", ...).

    Replies made of them tokenize back to the same ids, so a cache-less generation over the rendered text is
    the exact reference for a cached follow-up (with raw random bytes the verbatim ids and a fresh tokenization
    of the same text would differ, and both would be "right")."""
    words = []
    for i in range(len(tok.get_vocab())):
        text = tok.decode([i])
        if re.fullmatch(r" [A-Za-z]{3,}", text) and list(tok.encode(text, add_special_tokens=False)) == [i]:
            words.append(i)
    assert len(words) >= 3, words
    return {str(i): 100 for i in words[:n]}


def reference(model: Any, tok: Any, text: str, max_tokens: int, bias: dict[str, int]) -> str:
    """Greedy generation over ``text`` (already rendered) with a fresh cache: what a cached turn must equal."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    from olmo3.chat.serve_session import logit_bias_processor

    ids = list(tok.encode(text, add_special_tokens=False))
    processor = logit_bias_processor({int(k): float(v) for k, v in bias.items()})
    out = []
    greedy = lambda x: mx.argmax(x, axis=-1)  # noqa: E731
    for token, _ in generate_step(
        mx.array(ids), model, max_tokens=max_tokens, sampler=greedy, logits_processors=[processor]
    ):
        if int(token) in tok.eos_token_ids:
            break
        out.append(int(token))
    return str(tok.decode(out, skip_special_tokens=False))


def render(tok: Any, messages: list[dict[str, str]]) -> str:
    return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
