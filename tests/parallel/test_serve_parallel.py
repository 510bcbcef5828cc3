"""``mlx.launch -n 2 --backend ring -- olmo3 serve --parallel tensor|pipeline`` as real subprocesses on loopback.

Rank 0 serves the OpenAI API; the official ``openai`` client gets the same greedy replies (and the same cache
reuse) as from a single-process ``olmo3 serve``. The group is checked against the ranks' memory budgets added up.
A rank that is killed or stops answering: rank 0 says so within 10 seconds, ends the requests in flight with an
error, answers 503 (``Retry-After``) from then on and ``/health`` says the group is down; after ``--lost-grace``
rank 0 exits with status 3 (for a supervisor to restart the group) and no process is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from serve_server import ServeProcess, olmo3_script

from .conftest import alive, launch_cmd, rank_pids, run_env

pytestmark = pytest.mark.slow  # mlx.launch groups serving over HTTP: about a minute (.ci/run runs them)

EXIT_GROUP_LOST = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from conftest import real_template

    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("serve-parallel") / "tiny-gqa",
        chat_template_text=real_template("olmo31_instruct_lmstudio_community.jinja"),
        sliding_window=16,
        max_position_embeddings=2048,
    )


def group(model: Path, cache_dir: Path, mode: str, *args: str) -> ServeProcess:
    return ServeProcess(
        model,
        cache_dir,
        "--parallel",
        mode,
        "--memory-limit",
        "4G",
        *args,
        env=run_env(),
        wrap=lambda cmd: launch_cmd(2, cmd),
    )


def ranks_of(server: ServeProcess) -> dict[int, int]:
    ranks = rank_pids(server.proc.pid)
    assert set(ranks) == {0, 1}, ranks
    return ranks


def stop_group(server: ServeProcess, ranks: dict[int, int]) -> None:
    """SIGTERM to rank 0, as a service manager stops the server: it spills, stops the followers, exits 0."""
    os.kill(ranks[0], signal.SIGTERM)
    server.proc.wait(60)
    server._reader.join(10)


def cleanup(server: ServeProcess, ranks: dict[int, int]) -> None:
    for pid in ranks.values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait(10)


def conversation(server: ServeProcess) -> list[tuple[str, int, int]]:
    """Three turns, the second streamed: (reply, prompt tokens, cached tokens) of each."""
    client = server.client()
    messages = [{"role": "user", "content": "Hello there, tell me about the quick brown fox."}]
    out = []
    for i in range(3):
        if i == 1:
            text, usage = "", None
            for chunk in client.chat.completions.create(
                model=server.model,
                messages=messages,
                temperature=0,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                usage = chunk.usage or usage
        else:
            r = client.chat.completions.create(model=server.model, messages=messages, temperature=0, max_tokens=12)
            text, usage = r.choices[0].message.content, r.usage
        assert usage is not None
        out.append((text, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens))
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"And then, part {i}?"}]
    return out


@pytest.fixture(scope="module")
def single(model, tmp_path_factory) -> list[tuple[str, int, int]]:
    """The reference: the same conversation with a single-process ``olmo3 serve``."""
    server = ServeProcess(model, tmp_path_factory.mktemp("single-kv"), "--memory-limit", "4G", env=run_env())
    try:
        return conversation(server)
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("mode", ["tensor", "pipeline"])
def test_rank_0_serves_the_openai_api_with_the_same_replies_and_cache_reuse_as_one_process(
    model, single, tmp_path, mode
):
    server = group(model, tmp_path / "kv", mode)
    ranks = ranks_of(server)
    try:
        assert conversation(server) == single
        assert all(cached > 0 for _, _, cached in single[1:])  # follow-ups reuse the conversation's cache
        health = server.health()
        assert health["status"] == "ok" and health["group"]["mode"] == mode and health["group"]["status"] == "ok"
        assert [h["rank"] for h in health["group"]["hosts"]] == [0, 1]
        info = httpx.get(f"{server.url}/olmo/info", timeout=30).json()
        assert info["group"]["ranks"] == 2 and info["info"]["name"] == model.name and info["info"]["path"] == ""
        stop_group(server, ranks)
        assert "exited with code" not in server.log(), server.log()  # both ranks ended with status 0
        parts = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "kv" / "serve").glob("*.safetensors"))
        assert parts == [f"{mode}2-r0.safetensors", f"{mode}2-r1.safetensors"]  # each rank spilled its part
        assert "Traceback" not in server.log()
    finally:
        cleanup(server, ranks)


def test_the_fit_verdict_adds_up_the_ranks_budgets(model, tmp_path):
    """A limit one process cannot hold the model in, but two ranks with that limit each can."""
    from olmo3.fit import ModelShape
    from olmo3.memory import MemoryBudget
    from olmo3.model.modelinfo import inspect_model_dir

    shape = ModelShape.of(inspect_model_dir(model))
    needed = shape.fit(2048, MemoryBudget(1 << 40, "given")).needed_bytes
    limit = ((needed - 1) >> 20) << 20  # a little short for one machine (whole MiB, as ranks report their budgets)
    refused = subprocess.run(
        [olmo3_script(), "serve", "--model", str(model), "--context", "2048", "--memory-limit", str(limit)],
        capture_output=True,
        text=True,
        env=run_env(),
        timeout=120,
    )
    assert refused.returncode == 2 and "Won't fit" in refused.stderr, refused.stderr

    server = ServeProcess(
        model,
        tmp_path / "kv",
        "--parallel",
        "pipeline",
        "--context",
        "2048",
        "--memory-limit",
        str(limit),
        env=run_env(),
        wrap=lambda cmd: launch_cmd(2, cmd),
    )
    ranks = ranks_of(server)
    try:
        group_info = server.health()["group"]
        assert group_info["budget_bytes"] == 2 * limit
        assert [h["budget_bytes"] for h in group_info["hosts"]] == [limit, limit]
        reply = server.client().chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
        )
        assert reply.usage.completion_tokens >= 1
        stop_group(server, ranks)
    finally:
        cleanup(server, ranks)


class InFlight:
    """A long streamed reply and a request queued behind it, each on a thread; how each ended and when."""

    def __init__(self, server: ServeProcess):
        self.server = server
        self.errors: dict[str, tuple[BaseException, float]] = {}
        self.streaming = threading.Event()
        self.threads = [
            threading.Thread(target=self._stream, daemon=True),
            threading.Thread(target=self._queued, daemon=True),
        ]
        self.threads[0].start()
        assert self.streaming.wait(60), (self.errors, server.log())
        self.threads[1].start()
        time.sleep(0.3)  # the second request reaches the server and waits for the engine

    def _messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def _stream(self) -> None:
        client = self.server.client()
        try:
            for chunk in client.chat.completions.create(
                model=self.server.model, messages=self._messages("Talk for a long time."), max_tokens=1500, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    self.streaming.set()
        except Exception as e:
            self.errors["stream"] = (e, time.monotonic())

    def _queued(self) -> None:
        try:
            self.server.client().chat.completions.create(
                model=self.server.model, messages=self._messages("Me next."), max_tokens=4
            )
        except Exception as e:
            self.errors["queued"] = (e, time.monotonic())

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)


def assert_group_down(server: ServeProcess, lost: float, since: float) -> None:
    """The requests in flight ended with errors, a new one gets a 503 with Retry-After, /health says so."""
    assert since - lost < 10
    r = httpx.post(
        f"{server.url}/chat/completions",
        json={"model": server.model, "messages": [{"role": "user", "content": "Anyone there?"}]},
        timeout=30,
    )
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "group_down" and "rank 1" in error["message"]
    with pytest.raises(openai.InternalServerError, match="lost a rank"):
        server.client().chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    health = httpx.get(f"{server.root}/health", timeout=30)
    body = health.json()
    assert health.status_code == 503 and body["status"] == "group_down" and body["group"]["status"] == "down"
    assert "rank 1" in body["error"]
    assert time.monotonic() - lost < 10


def test_a_killed_follower_gets_503s_within_10_seconds_then_rank_0_exits_for_a_restart(model, tmp_path):
    server = group(model, tmp_path / "kv", "tensor", "--lost-grace", "8")
    ranks = ranks_of(server)
    try:
        flight = InFlight(server)
        os.kill(ranks[1], signal.SIGKILL)
        lost = time.monotonic()
        flight.join(10)
        assert set(flight.errors) == {"stream", "queued"}, (flight.errors, server.log())
        stream_error, ended = flight.errors["stream"]
        assert isinstance(stream_error, openai.APIError) and "lost a rank" in str(stream_error)
        queued_error, _ = flight.errors["queued"]
        assert isinstance(queued_error, openai.InternalServerError) and queued_error.status_code == 503
        assert server.wait_log(f"olmo3 serve: rank 1 (pid {ranks[1]}) is gone", 10), server.log()
        assert_group_down(server, lost, ended)
        assert server.proc.wait(60) == 0  # mlx.launch's own status; it logs rank 0's:
        server._reader.join(10)
        assert f"Node with rank 0 exited with code {EXIT_GROUP_LOST}" in server.log()
        assert not alive(ranks[0]) and not alive(ranks[1])
        assert "Traceback" not in server.log()
    finally:
        cleanup(server, ranks)


def test_a_follower_that_stops_answering_gets_503s_within_10_seconds(model, tmp_path):
    server = group(model, tmp_path / "kv", "pipeline", "--lost-grace", "8")
    ranks = ranks_of(server)
    try:
        flight = InFlight(server)
        os.kill(ranks[1], signal.SIGSTOP)  # a host gone silent: no exit, no closed socket, no heartbeat
        lost = time.monotonic()
        flight.join(10)
        assert set(flight.errors) == {"stream", "queued"}, (flight.errors, server.log())
        assert server.wait_log(f"olmo3 serve: rank 1 (pid {ranks[1]}) stopped answering", 10), server.log()
        assert_group_down(server, lost, flight.errors["stream"][1])
        deadline = time.monotonic() + 30
        while alive(ranks[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(ranks[0])  # rank 0 exits after the grace period; the silent host is mlx.launch's to end
    finally:
        cleanup(server, ranks)
