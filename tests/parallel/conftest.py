"""Real ``mlx.launch`` groups on loopback (the ring backend): helpers and the generated models they share."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WORKER = HERE / "worker.py"


def free_ports(n: int) -> int:
    """A first port of ``n`` consecutive free ones (the ring backend listens on port + rank)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535:
            continue
        ok = True
        for p in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no free ports")


# The ring backend on loopback here; OLMO3_TEST_BACKEND=nccl runs the same tests on a machine with 2+ CUDA GPUs.
BACKEND = os.environ.get("OLMO3_TEST_BACKEND", "ring")


def launch_cmd(n: int, command: list[str], env: list[str] = ()) -> list[str]:
    extra = [f"--env={e}" for e in env]
    port = str(free_ports(n))
    where = ["-p", port] if BACKEND == "ring" else ["--nccl-port", port]
    return [str(BIN / "mlx.launch"), "-n", str(n), "--backend", BACKEND, *where, *extra, "--", *command]


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    openblas = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"  # MLX's Linux CPU wheel: much faster matmuls
    if Path(openblas).exists():
        env.setdefault("LD_PRELOAD", openblas)
    return env


def launch(n: int, command: list[str], *, timeout: float = 240, env: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        launch_cmd(n, command, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=run_env(),
        stdin=subprocess.DEVNULL,
    )


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def rank_pids(launcher: int) -> dict[int, int]:
    """The ranks ``mlx.launch`` started (its children, by their MLX_RANK)."""
    ranks = {}
    for pid in _children(launcher):
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"MLX_RANK="):
                ranks[int(item.split(b"=", 1)[1])] = pid
    return ranks


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def worker(mode: str, out: Path, cache_dir: Path, models: list[Path]) -> list[str]:
    return [sys.executable, str(WORKER), "--mode", mode, "--out", str(out), "--cache-dir", str(cache_dir)] + [
        str(m) for m in models
    ]


@pytest.fixture(scope="session")
def parallel_models(tmp_path_factory) -> dict[str, Path]:
    """A GQA model (4 query heads, 2 KV heads) and an MHA one (4 and 4), sliding window 16, fp32; and a 4-bit one
    wide enough that each of 2 ranks gets whole 64-wide quantization groups of o_proj and down_proj."""
    from olmo3.model.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("parallel-models")
    return {
        "gqa": make_tiny_model(root / "gqa", sliding_window=16),
        "mha": make_tiny_model(root / "mha", sliding_window=16, num_key_value_heads=4, seed=1),
        "q4": make_tiny_model(root / "q4", sliding_window=16, quant_bits=4, hidden_size=128, intermediate_size=256),
    }


@pytest.fixture(scope="session")
def single_run(parallel_models, tmp_path_factory) -> list[dict]:
    """The reference: the same conversations on one machine (the worker alone, no group)."""
    d = tmp_path_factory.mktemp("single")
    out = d / "single.json"
    cmd = worker("single", out, d / "kv", [parallel_models["gqa"], parallel_models["mha"]])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=run_env())
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())
