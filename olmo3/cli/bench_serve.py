"""``olmo3 bench serve``: our server against ``mlx_lm.server``, side by side, one generated model, one client.

Both servers run as subprocesses on the same weights (mlx-lm reads the legacy config form: ``_mlx_lm_folder``)
and get the same requests from the same minimal HTTP client (standard library, streaming; time to first token is
measured from sending the request to the first text chunk). ``logit_bias`` makes every reply one token repeated,
so both servers write the same replies, every token arrives as one chunk, and no stop token ends a reply early.
Each number is a median over ``rounds``; each target is a ratio of two numbers measured in the same run:

* follow-up TTFT as one conversation grows past 1×, 2× and 4× the sliding window ÷ TTFT of an empty-history turn,
  a new conversation nothing is cached for (its own system prompt) (target ≤ 1.3 for us; mlx_lm.server's printed
  beside). ``new_conversation_shared_system`` is shown too: a new conversation with the template's default system
  prompt, which our server forks from the checkpoint other conversations left (mlx_lm.server re-reads it);
* after the window wrapped, editing an earlier turn (two turns back) ÷ a fresh follow-up (≤ 1.3);
* the first follow-up after a server restart (the disk tier) ÷ a full re-prefill of a history as long (≤ 0.25);
* decode tokens/s ÷ mlx_lm.server's (≥ 0.95).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .bench import BENCH_SIZE, _mlx_lm_folder, _passes

FILLER = "Please explain, in detail, how a sliding window cache keeps memory bounded. "
QUESTION = "What is the next step?"
SYSTEM = "You are a helpful function-calling AI assistant. You do not currently have access to any functions."
EDITS = ("What is the last step?", "What was the next step?", "What is the first step?", "Which is the next step?")
TTFT_TOKENS = 2
DECODE_TOKENS = 128
STARTUP_S = 300.0

Messages = list[dict[str, str]]


class _Server:
    """A server subprocess and a tiny streaming client for it."""

    def __init__(self, name: str, cmd: list[str], url: str | None = None):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = url or ""
        deadline = time.monotonic() + STARTUP_S
        if not self.url:  # ours prints its address
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                m = re.search(r"at (http://\S+)/v1", line)
                if m:
                    self.url = m.group(1)
                    break
            if not self.url:
                raise RuntimeError(f"{name} did not start (exit {self.proc.wait()})")
        # Drain stderr from now on so the pipe never fills.
        import threading

        threading.Thread(target=lambda: [None for _ in self.proc.stderr or []], daemon=True).start()
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (exit {self.proc.poll()})")
            time.sleep(0.1)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def _ready(self) -> bool:
        try:
            parts = urlsplit(self.url)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
            conn.request("GET", "/v1/models")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stream(self, body: dict[str, Any]) -> tuple[float, list[float], str]:
        """POST a streaming chat request: (time to first text, arrival time of each text chunk, the text)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        payload = json.dumps({**body, "stream": True}).encode()
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {resp.status}: {resp.read()[:300]!r}")
        times: list[float] = []
        text: list[str] = []
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                delta = choice.get("delta") or {}
                piece = (delta.get("content") or "") + (delta.get("reasoning_content") or delta.get("reasoning") or "")
                if piece:
                    times.append(time.perf_counter())
                    text.append(piece)
        conn.close()
        if not times:
            raise RuntimeError(f"{self.name}: no text came back")
        return times[0] - t0, times, "".join(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(folder: Path, cache_dir: Path) -> _Server:
    script = Path(sys.executable).with_name("olmo3")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "olmo3.cli"]
    return _Server("olmo3", [*cmd, "serve", "--model", str(folder), "--port", "0", "--cache-dir", str(cache_dir)])


def _theirs(folder: Path) -> _Server:
    port = _free_port()
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", str(folder), "--port", str(port), "--log-level", "ERROR"]
    return _Server("mlx_lm.server", cmd, f"http://127.0.0.1:{port}")


class _Chat:
    """One client conversation on one server: history as it grows, and timed turns."""

    def __init__(self, server: _Server, model: str, ban: dict[str, int], first: str):
        self.server, self.model, self.ban = server, model, ban
        self.messages: Messages = [{"role": "user", "content": first}]

    def _body(self, messages: Messages, max_tokens: int) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
                "logit_bias": self.ban}  # fmt: skip

    def turn(self, text: str | None = None, max_tokens: int = TTFT_TOKENS) -> float:
        """Send the pending user message (or ``text`` appended as one); keep the reply. Returns the TTFT."""
        if text is not None:
            self.messages.append({"role": "user", "content": text})
        ttft, _, reply = self.server.stream(self._body(self.messages, max_tokens))
        self.messages += [{"role": "assistant", "content": reply}]
        return ttft

    def edit(self, back: int, text: str) -> float:
        """Replace the user message ``back`` turns before the last one; the main history is kept."""
        users = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        branch = [*self.messages[: users[-1 - back]], {"role": "user", "content": text}]
        return self.server.stream(self._body(branch, TTFT_TOKENS))[0]

    def decode_tps(self, tokens: int) -> float:
        _, times, _ = self.server.stream(self._body([*self.messages, {"role": "user", "content": QUESTION}], tokens))
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def _reply_bias(folder: Path) -> dict[str, int]:
    """``logit_bias`` that makes every reply one token repeated (``~~~~``): no stop token, the same reply on both
    servers, one text chunk per token, and a reply that tokenizes back to the same ids and starts without a space
    (mlx-lm's streaming detokenizer drops a reply's leading space, which would cost mlx_lm.server its cache hits).
    Falls back to a few whole-word tokens for a tokenizer that merges every repeated character."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab()
    for c in "~#=@^$%&*+":
        i = vocab.get(c)
        if i is not None and tok.encode(c * 64, add_special_tokens=False).ids == [i] * 64:
            return {str(i): 100}
    words: list[int] = []
    for i in range(tok.get_vocab_size()):
        text = tok.decode([i])
        if re.fullmatch(r" [A-Za-z]{3,}", text) and tok.encode(text, add_special_tokens=False).ids == [i]:
            words.append(i)
            if len(words) == 8:
                break
    if not words:
        raise ValueError(f"{folder}: no token found to steer the benchmark's replies with logit_bias")
    return {str(i): 100 for i in words}


def _edited_question(folder: Path) -> str:
    """Another question as many tokens long as :data:`QUESTION`: an edit then feeds as much as a fresh turn."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    n = len(tok.encode(QUESTION, add_special_tokens=False).ids)
    return next((q for q in EDITS if len(tok.encode(q, add_special_tokens=False).ids) == n), EDITS[0])


def _grow(chat: _Chat, tokens_per_turn: int, turns: int) -> None:
    for _ in range(turns):
        chat.turn(FILLER * tokens_per_turn)


def bench_serve(model_path: str | None = None, *, rounds: int = 3) -> dict[str, Any]:
    """Run the comparison (see the module docstring) and return the result for ``format_serve_table``."""
    from ..model.tiny import make_tiny_model

    med = statistics.median
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = Path(model_path) if model_path else make_tiny_model(tmp / "bench-model", weight_std=0.05, **BENCH_SIZE)
        config = json.loads((folder / "config.json").read_text())
        window = int(config["sliding_window"])
        ban = _reply_bias(folder)
        edited = _edited_question(folder)
        # A user turn of about a quarter window (FILLER is ~16 tokens of the generated tokenizer, ~14 of Olmo's).
        per_turn = max(1, window // 64)
        levels = (1, 2, 4)
        turns_per_window = 4

        servers = {"olmo3": _ours(folder, tmp / "kv"), "mlx_lm": _theirs(_mlx_lm_folder(folder, tmp))}
        try:
            model = {"olmo3": _served_model(servers["olmo3"]), "mlx_lm": "default_model"}
            results: dict[str, dict[str, Any]] = {}
            for name, server in servers.items():
                # Warm-up: first prefills of each shape compile kernels; keep that out of the numbers.
                warm = _Chat(server, model[name], ban, "Warm up.")
                _grow(warm, per_turn, 2 * turns_per_window)
                warm.turn(QUESTION)
                warm.edit(1, "Warm edit.")
                r: dict[str, Any] = {}
                # Empty history: a conversation nothing is cached for (its own system prompt, as long as the
                # template's default). And, for information, one with the default system prompt, which a
                # server may already hold from other conversations (ours forks from its checkpoint).
                fresh_start = []
                for i in range(rounds):
                    alone = _Chat(server, model[name], ban, QUESTION)
                    alone.messages.insert(0, {"role": "system", "content": f"{SYSTEM} (session {name}-{i})"})
                    fresh_start.append(alone.turn())
                r["new_conversation"] = med(fresh_start)
                r["new_conversation_shared_system"] = med(
                    _Chat(server, model[name], ban, f"{QUESTION} ({name} {i})").turn() for i in range(rounds)
                )
                chat = _Chat(server, model[name], ban, "Let us talk about caches.")
                chat.turn()
                done_turns = 0
                for h in levels:
                    _grow(chat, per_turn, h * turns_per_window - done_turns)
                    done_turns = h * turns_per_window
                    r[f"follow_up_{h}x"] = med(chat.turn(QUESTION) for _ in range(rounds))
                fresh, edit = [], []
                for _ in range(rounds):
                    fresh.append(chat.turn(QUESTION))
                    edit.append(chat.edit(2, edited))  # as long as the fresh turn's question
                r["fresh_turn"], r["edit_earlier_turn"] = med(fresh), med(edit)
                r["chat"] = chat
                results[name] = r
            # Decode speed, the two servers alternating (who goes first alternates too), so load on the machine
            # favours neither.
            speeds: dict[str, list[float]] = {"olmo3": [], "mlx_lm": []}
            for i in range(2 * rounds):
                for name in ("olmo3", "mlx_lm") if i % 2 == 0 else ("mlx_lm", "olmo3"):
                    speeds[name].append(results[name]["chat"].decode_tps(DECODE_TOKENS))
            for name, values in speeds.items():
                results[name]["decode_tok_s"] = med(values)
            history_messages = results["olmo3"].pop("chat").messages
            results["mlx_lm"].pop("chat")
        finally:
            for s in servers.values():
                s.stop()

        # Restart: the follow-up that finds its cache on disk, against a full re-prefill of as long a history (the
        # same messages with another first message: a conversation the restarted server has never seen).
        restored, reprefill = [], []
        for i in range(rounds):
            server = _ours(folder, tmp / "kv")
            try:
                name = model["olmo3"]
                _Chat(server, name, ban, f"Warm up after restart {i}.").turn()
                question = {"role": "user", "content": f"{QUESTION} ({i})"}
                chat = _Chat(server, name, ban, "")
                chat.messages = [*history_messages, question]
                restored.append(chat.turn())
                other = _Chat(server, name, ban, "")
                unseen = {"role": "user", "content": f"A first message never seen ({i})."}
                other.messages = [unseen, *history_messages[1:], question]
                reprefill.append(other.turn())
                history_messages = chat.messages
            finally:
                server.stop()

    ours, theirs = results["olmo3"], results["mlx_lm"]

    def ratios(r: dict[str, Any]) -> dict[str, float]:
        out = {f"follow_up_ttft_{h}x_window": r[f"follow_up_{h}x"] / r["new_conversation"] for h in levels}
        out["edit_earlier_turn_after_wrap_vs_fresh_turn"] = r["edit_earlier_turn"] / r["fresh_turn"]
        return {k: round(v, 3) for k, v in out.items()}

    targets = {k: {"value": v, "target": "<= 1.3"} for k, v in ratios(ours).items()}
    targets["restart_follow_up_vs_full_reprefill"] = {
        "value": round(med(restored) / med(reprefill), 3),
        "target": "<= 0.25",
    }
    targets["decode_vs_mlx_lm_server"] = {
        "value": round(ours["decode_tok_s"] / theirs["decode_tok_s"], 3),
        "target": ">= 0.95",
    }

    def seconds(r: dict[str, Any]) -> dict[str, float]:
        return {k: round(v, 4) for k, v in r.items() if k != "decode_tok_s"}

    return {
        "benchmark": "serve",
        "model": str(model_path or "generated"),
        "device": "cpu" if sys.platform != "darwin" else "gpu",
        "sliding_window": window,
        "rounds": rounds,
        "ttft_s": {"olmo3": seconds(ours), "mlx_lm_server": seconds(theirs)},
        "restart_ttft_s": {"restored_from_disk": round(med(restored), 4), "full_reprefill": round(med(reprefill), 4)},
        "decode_tok_s": {"olmo3": round(ours["decode_tok_s"], 1), "mlx_lm_server": round(theirs["decode_tok_s"], 1)},
        "ratios": targets,
        "mlx_lm_server_ratios": ratios(theirs),
    }


def _served_model(server: _Server) -> str:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", "/v1/models")
    data = json.loads(conn.getresponse().read())
    conn.close()
    return str(data["data"][0]["id"]) if data.get("data") else "default"


def format_serve_table(result: dict[str, Any]) -> str:
    lines = [
        f"olmo3 bench serve · model {result['model']} · device {result['device']} · window {result['sliding_window']}"
        f" · {result['rounds']} rounds",
        "  ttft_s olmo3:         " + ", ".join(f"{k} {v}" for k, v in result["ttft_s"]["olmo3"].items()),
        "  ttft_s mlx_lm.server: " + ", ".join(f"{k} {v}" for k, v in result["ttft_s"]["mlx_lm_server"].items()),
        "  restart ttft_s:       " + ", ".join(f"{k} {v}" for k, v in result["restart_ttft_s"].items()),
        "  decode tok/s:         " + ", ".join(f"{k} {v}" for k, v in result["decode_tok_s"].items()),
        f"  {'ratio':<44} {'olmo3':>8} {'mlx_lm.server':>14}  {'target':<8}  ok",
    ]
    theirs = result["mlx_lm_server_ratios"]
    for name, r in result["ratios"].items():
        ok = "yes" if _passes(r["value"], r["target"]) else "NO"
        other = theirs.get(name, "-")
        lines.append(f"  {name:<44} {r['value']:>8} {other!s:>14}  {r['target']:<8}  {ok}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - python -m olmo3.cli.bench_serve
    out = bench_serve(os.environ.get("OLMO3_BENCH_MODEL"))
    print(format_serve_table(out))
    print(json.dumps(out, indent=2))
