"""``olmo3 generate|chat --parallel`` under a real ``mlx.launch`` (ring, loopback): output, refusals, lost ranks.

Only rank 0 prints. A split that cannot work is refused with one line, on rank 0. A rank that is killed, or that
stops answering, is reported by rank 0 within 10 seconds and nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import BACKEND, BIN, alive, launch, launch_cmd, rank_pids, run_env

pytestmark = pytest.mark.slow  # mlx.launch groups of real processes: minutes on 2 cores (.ci/run runs them)

PROMPT = "Hello there, how are you? Tell me about the quick brown fox."


def olmo3(*args: str) -> list[str]:
    return [str(BIN / "olmo3"), *args]


def gen_args(model: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", PROMPT, "--temp", "0", "--memory-limit", "4G", *extra]


def test_generate_tensor_parallel_prints_once_and_matches_one_machine(parallel_models):
    model = parallel_models["gqa"]
    single = subprocess.run(
        olmo3(*gen_args(model, "--max-tokens", "16", "--json")), capture_output=True, text=True, env=run_env()
    )
    assert single.returncode == 0, single.stderr
    r = launch(2, olmo3(*gen_args(model, "--max-tokens", "16", "--json", "--parallel", "tensor")))
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, r.stdout + r.stderr  # rank 0 alone prints
    ours, ref = json.loads(lines[0]), json.loads(single.stdout)
    assert ours["reply_tokens"] == ref["reply_tokens"] and ours["text"] == ref["text"]
    assert "Traceback" not in r.stderr and "WARN" not in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["tensor", "pipeline"])
def test_a_4_bit_model_runs_split_with_mlx_quantized_sharded_layers(parallel_models, mode):
    model = parallel_models["q4"]
    single = subprocess.run(
        olmo3(*gen_args(model, "--max-tokens", "12", "--json")), capture_output=True, text=True, env=run_env()
    )
    assert single.returncode == 0, single.stderr
    r = launch(2, olmo3(*gen_args(model, "--max-tokens", "12", "--json", "--parallel", mode)))
    assert r.stdout.strip(), r.stderr
    assert json.loads(r.stdout)["reply_tokens"] == json.loads(single.stdout)["reply_tokens"]


def test_chat_script_pipeline_parallel_matches_one_machine(parallel_models, tmp_path):
    model = parallel_models["mha"]
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [{"send": PROMPT}, {"send": "And the lazy dog?"}, {"regenerate": True}, {"edit": 0, "text": "Hi again."}]
        )
    )
    common = ["chat", "--model", str(model), "--script", str(script), "--json", "--temp", "0", "--max-tokens", "8"]
    single = subprocess.run(
        olmo3(*common, "--cache-dir", str(tmp_path / "one")), capture_output=True, text=True, env=run_env()
    )
    assert single.returncode == 0, single.stderr
    r = launch(2, olmo3(*common, "--cache-dir", str(tmp_path / "two"), "--parallel", "pipeline"))
    ours = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    ref = [json.loads(line) for line in single.stdout.splitlines() if line.strip()]
    assert len(ours) == len(ref) == 4, r.stdout + r.stderr
    for a, b in zip(ref, ours, strict=True):
        assert b["reply_tokens"] == a["reply_tokens"]
        assert (b["stats"]["cached_tokens"], b["stats"]["reconcile"]) == (
            a["stats"]["cached_tokens"],
            a["stats"]["reconcile"],
        )
    assert ours[1]["stats"]["cached_tokens"] > 0
    # The engine spilled the conversation at the end: each rank its own part, named by rank and layout.
    parts = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "two").glob("*.safetensors"))
    assert parts == ["pipeline2-r0.safetensors", "pipeline2-r1.safetensors"]


def test_parallel_without_mlx_launch_is_refused(parallel_models):
    r = subprocess.run(
        olmo3(*gen_args(parallel_models["gqa"], "--parallel", "tensor")), capture_output=True, text=True, env=run_env()
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "mlx.launch" in r.stderr and "2 ranks" in r.stderr


def test_a_split_that_cannot_work_is_refused_on_rank_0(parallel_models):
    r = launch(3, olmo3(*gen_args(parallel_models["gqa"], "--parallel", "tensor")))
    ours = [line for line in r.stderr.splitlines() if line.startswith("olmo3")]
    assert ours == [
        "olmo3: --parallel tensor: the model's 2 key/value heads cannot be split evenly across 3 ranks (each rank "
        "needs whole KV heads); use 2 ranks, or --parallel pipeline"
    ], r.stderr
    assert "Traceback" not in r.stderr and not r.stdout.strip()


# ---------------------------------------------------------------------------------------------------------------
# Lost ranks
# ---------------------------------------------------------------------------------------------------------------


class Group:
    """A long ``olmo3 generate --parallel`` whose output is read as it comes."""

    def __init__(self, model: Path, mode: str):
        cmd = launch_cmd(2, olmo3(*gen_args(model, "--max-tokens", "3000", "--parallel", mode)))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=run_env()
        )
        self.out, self.err = bytearray(), bytearray()
        self.threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, buf: bytearray) -> None:
        while chunk := stream.read1(4096):
            buf.extend(chunk)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def generating(self) -> dict[int, int]:
        """Wait until rank 0 streams reply text, then the ranks' pids."""
        assert self.wait_for(lambda: len(self.out) > 20, 120), bytes(self.err).decode()
        ranks = rank_pids(self.proc.pid)
        assert set(ranks) == {0, 1}, ranks
        return ranks

    def stderr(self) -> str:
        return bytes(self.err).decode(errors="replace")

    def cleanup(self, ranks: dict[int, int]) -> None:
        for pid in ranks.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.mark.parametrize("mode", ["tensor", "pipeline"])
def test_a_killed_rank_is_reported_within_10_seconds(parallel_models, mode):
    g = Group(parallel_models["gqa"], mode)
    ranks = g.generating()
    try:
        os.kill(ranks[1], signal.SIGKILL)
        t0 = time.monotonic()
        reported = g.wait_for(lambda: "olmo3: rank 1" in g.stderr(), 10)
        took = time.monotonic() - t0
        assert reported, g.stderr()
        assert f"rank 1 (pid {ranks[1]}) is gone" in g.stderr(), g.stderr()
        assert took < 10
        g.proc.wait(10)  # rank 0 stopped and the launcher with it: nothing hangs
        assert not alive(ranks[0])
        assert "Traceback" not in g.stderr()
    finally:
        g.cleanup(ranks)


def test_a_rank_that_stops_answering_is_reported_within_10_seconds(parallel_models):
    g = Group(parallel_models["gqa"], "tensor")
    ranks = g.generating()
    try:
        os.kill(ranks[1], signal.SIGSTOP)  # a host gone silent: no exit, no closed socket, no heartbeat
        reported = g.wait_for(lambda: "stopped answering" in g.stderr(), 10)
        assert reported, g.stderr()
        assert f"olmo3: rank 1 (pid {ranks[1]}) stopped answering" in g.stderr()
        assert g.wait_for(lambda: not alive(ranks[0]), 5)  # rank 0 does not wait in its collective
    finally:
        g.cleanup(ranks)


def test_killing_rank_0_stops_the_followers(parallel_models):
    g = Group(parallel_models["gqa"], "pipeline")
    ranks = g.generating()
    try:
        os.kill(ranks[0], signal.SIGKILL)
        assert g.wait_for(lambda: not alive(ranks[1]), 10), g.stderr()
        g.proc.wait(10)
    finally:
        g.cleanup(ranks)


def test_bench_parallel_runs_under_the_launcher_and_prints_once():
    r = launch(2, olmo3("bench", "parallel", "--tokens", "4", "--rounds", "1", "--prompt-tokens", "8"))
    assert r.stdout.startswith("olmo3 bench parallel · shape tiny"), r.stdout + r.stderr
    assert r.stdout.count("olmo3 bench parallel") == 1  # rank 0 alone prints
    result = json.loads(r.stdout[r.stdout.index("\n{") :])
    assert result["ranks"] == 2 and result["backend"] == BACKEND
    assert set(result["decode_tok_s"]) == {"one_device", "tensor", "pipeline"}
    assert all(v > 0 for v in result["decode_tok_s"].values())
    assert result["pipeline_handover"] == ("sendrecv" if BACKEND == "ring" else "collective")
    assert result["collectives_per_step"] == {"tensor": 2 * 8 + 1, "pipeline": 3}  # q/k-norm local: no collective
    assert set(result["host_ms_per_step"]) == {"one_device", "tensor", "pipeline"}
    assert all(v > 0 for v in result["host_ms_per_step"].values())
    assert result["device_ms_per_step"] == {} and result["all_sum_device_us"] is None  # only with --device-floor
    assert result["all_sum_us"]["one_token"] > 0
    assert set(result["ratios"]) == {"tensor_vs_one_device", "pipeline_vs_one_device"}
    assert "tensor_vs_one_device" in r.stdout and "Traceback" not in r.stderr


def test_bench_parallel_refuses_an_unknown_mode_in_one_line():
    r = launch(2, olmo3("bench", "parallel", "--modes", "tensor,data"))
    assert r.stderr.count("olmo3: --modes: unknown mode 'data'") == 1  # rank 0 says it, once
    assert "Traceback" not in r.stderr and not r.stdout


@pytest.mark.parametrize("mode", [pytest.param("tensor", marks=pytest.mark.slow), "pipeline"])  # tensor: ~30 s here
def test_four_ranks_on_one_machine(parallel_models, mode):
    """Four processes on this 2-core machine: 4 KV heads split four ways, or 4 layers one per rank."""
    model = parallel_models["mha"]
    single = subprocess.run(
        olmo3(*gen_args(model, "--max-tokens", "10", "--json")), capture_output=True, text=True, env=run_env()
    )
    r = launch(4, olmo3(*gen_args(model, "--max-tokens", "10", "--json", "--parallel", mode)))
    assert r.stdout.strip(), r.stderr
    assert json.loads(r.stdout)["reply_tokens"] == json.loads(single.stdout)["reply_tokens"]
