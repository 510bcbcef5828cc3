"""``olmo3 bench parallel``: decode speed split across the ranks of ``mlx.launch``, against one device.

Run it under the launcher, every rank the same command::

    mlx.launch -n 2 --backend ring -- olmo3 bench parallel                 # two processes on this machine
    mlx.launch --backend nccl -n 2 -- olmo3 bench parallel --shape 32b    # two GPUs of one host

Each rank makes random weights for its own part in memory (``--shape 32b``: 64 layers, hidden 5120, 40 query and
8 KV heads, 4-bit, bf16; nothing is written to disk), so no checkpoint is needed. Measured in one run:

1. **one device**: rank 0 decodes with the whole model while the others wait;
2. **tensor**: every rank holds 1/N of each layer (:mod:`olmo3.parallel.shard`), driven exactly as a chat is
   (rank 0's :class:`~olmo3.parallel.replicate.LeaderModel`, the others :func:`~olmo3.parallel.replicate.follow`);
   q/k-norm local (whole q/k projections on every rank, the default); ``tensor_qk_collective`` (not run unless
   ``--modes`` names it): q/k-norm by ``all_sum``, the memory-lean way;
3. **pipeline**: contiguous layer ranges, the hand-over (send/recv, or ``all_sum`` where send/recv are missing) found
   by trying;
4. **communication**: one ``all_sum`` of one token's activation (and of 512 tokens), timed in a chain inside one
   graph; the per-step cost is that times the collectives a step runs (tensor: 2 per layer, 3 with q/k-norm by
   ``all_sum``, + the command frame).

Decode runs one step ahead, as ``generate_step`` does. Reported: tok/s, their ratios to one device (targets: tensor
≥ 1.25, pipeline ≥ 0.9: a pipeline splits memory, not time), milliseconds per step, the communication estimate, and
the **host time per step** on rank 0 (building the step's graph and queueing its kernels: when it is close to the
step time, the host, not the device, sets the pace); as a table and as JSON (rank 0 prints; the others print nothing).

``--device-floor`` also measures the **device time per step**: every rank queues a long stall of matrix products,
then ``k`` decode steps (each rank its own part, in lockstep, no command frames) while the device is still busy, so
the steps then run back to back with nothing waiting on the host: (total − stall) / k. Set
``MLX_MAX_OPS_PER_BUFFER`` and ``MLX_MAX_MB_PER_BUFFER`` very high for it (``mlx.launch --env``), or MLX-CUDA stops
queueing after ten command buffers; a result is dropped (``null``) when queueing outlasted the stall.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .parallel import launch_rank

SHAPES: dict[str, dict[str, Any]] = {
    # Small enough for two CPU processes on one machine (the tests run it), large enough to be mostly compute.
    "tiny": {
        "vocab": 1024,
        "config": dict(
            hidden_size=384,
            num_hidden_layers=8,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=1024,
            head_dim=64,
            sliding_window=128,
            max_position_embeddings=8192,
        ),
        "quant": None,
        "dtype": "float32",
    },
    # Olmo-3 32B (config.json of allenai/Olmo-3-32B-Think), 4-bit as mlx-community converts it.
    "32b": {
        "vocab": 100278,
        "config": dict(
            hidden_size=5120,
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
            intermediate_size=27648,
            head_dim=128,
            sliding_window=4096,
            max_position_embeddings=65536,
        ),
        "quant": {"group_size": 64, "bits": 4, "mode": "affine"},
        "dtype": "bfloat16",
    },
}
TARGETS = {"tensor": ">= 1.25", "tensor_qk_collective": ">= 1.25", "pipeline": ">= 0.9"}
MODE_NAMES = tuple(TARGETS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=tuple(SHAPES), default="tiny", help="parallel: the model shape (default tiny)")
    p.add_argument("--modes", default="tensor,pipeline", help="parallel: tensor, pipeline or both (default both)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="parallel: prompt length before decoding (64)")
    p.add_argument(
        "--device-floor", action="store_true", help="parallel: also the device time per step (see bench_parallel.py)"
    )


def opts_modes(opts: argparse.Namespace) -> list[str]:
    return [m.strip() for m in str(opts.modes).split(",") if m.strip()]


def _backend() -> str:
    if os.environ.get("NCCL_HOST_IP"):
        return "nccl"
    if os.environ.get("MLX_JACCL_COORDINATOR"):
        return "jaccl"
    if os.environ.get("MLX_HOSTFILE"):
        return "ring"
    if os.environ.get("OMPI_COMM_WORLD_RANK"):
        return "mpi"
    return "?"


def run(args: argparse.Namespace) -> int:
    from ..parallel.watchdog import take_sigterm

    rank = launch_rank()
    unknown = [m for m in opts_modes(args) if m not in MODE_NAMES]
    if unknown:  # every rank stops; rank 0 says why
        if rank == 0:
            print(f"olmo3: --modes: unknown mode {unknown[0]!r} (use {', '.join(MODE_NAMES)})", file=sys.stderr)
        return 2
    holder: list[Any] = []
    take_sigterm(rank, lambda: holder[0].watchdog if holder else None)
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - only rank 0 prints
    from ..parallel.cluster import OK, _verdict, handshake, init_cluster

    cluster = init_cluster("tensor")
    holder.append(cluster)
    handshake(cluster, OK, f"bench-{args.shape}", 0)
    missing = cluster.watchdog.wait_for_followers() if cluster.rank == 0 else []
    if not _verdict(cluster, not missing):
        if cluster.rank == 0:
            print(f"olmo3: rank(s) {missing} did not reach rank 0's watchdog", file=sys.stderr)
        return 2
    try:
        result = _bench(cluster, args)
    finally:
        cluster.watchdog.close()
    if cluster.rank == 0:
        print(format_table(result))
        print(json.dumps(result, indent=2))
    return 0


def _model_args(shape: dict[str, Any]) -> Any:
    from ..model.config import ModelArgs
    from ..model.tiny import tiny_config

    return ModelArgs.from_config(tiny_config(shape["vocab"], **shape["config"]))


def _sizes(args: Any, quant: dict[str, Any] | None, float_bytes: int) -> dict[str, int]:
    """Bytes per tensor of this shape (what the pipeline balances), from what ``config.json`` would imply."""
    from ..model.tensors import expected_tensors

    return {
        name: math.prod(spec.shape) * (4 if "U32" in spec.dtypes else float_bytes)
        for name, spec in expected_tensors(args, quant).items()
    }


def _barrier(cluster: Any) -> None:
    import mlx.core as mx

    mx.eval(mx.distributed.all_sum(mx.ones((1,)), group=cluster.group))


def _decode(model: Any, prompt: list[int], tokens: int) -> tuple[float, float]:
    """Greedy decode tok/s, one step ahead (the next step is queued before the last token is read), and the host's
    milliseconds per step (building the step and queueing it)."""
    import mlx.core as mx

    cache = model.make_cache()
    y = mx.argmax(model(mx.array(prompt)[None], cache=cache)[:, -1, :], axis=-1)
    mx.async_eval(y)
    times, host = [], 0.0
    for _ in range(tokens):
        t0 = time.perf_counter()
        nxt = mx.argmax(model(y[None], cache=cache)[:, -1, :], axis=-1)
        mx.async_eval(nxt)
        host += time.perf_counter() - t0
        y.item()
        times.append(time.perf_counter())
        y = nxt
    y.item()
    tok_s = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    return tok_s, host / max(1, tokens) * 1000


def _measure(model: Any, prompt: list[int], tokens: int, rounds: int) -> tuple[list[float], float]:
    _decode(model, prompt, min(8, tokens))  # warm-up: kernels for these shapes
    runs = [_decode(model, prompt, tokens) for _ in range(rounds)]
    return [r[0] for r in runs], statistics.median(r[1] for r in runs)


def _device_ms(step: Any, prompt: Any, k: int = 4) -> float | None:
    """Device milliseconds per decode step (module docstring): ``prompt()`` prefills and returns the first token;
    ``step(y)`` returns the next token (lazy). Every rank runs it at once; None if queueing outlasted the stall."""
    import mlx.core as mx

    gpu = mx.default_device() == mx.gpu
    m, dtype = (16384, mx.bfloat16) if gpu else (256, mx.float32)
    w = (mx.random.normal((m, m)) / math.sqrt(m)).astype(dtype)
    x = mx.random.normal((m, m)).astype(dtype)
    mx.eval(w, x)

    def stall(n: int) -> mx.array:
        y = x
        for _ in range(n):
            y = y @ w
        return y

    y = prompt()
    mx.eval(y)  # each pass its own evaluation: two passes' collectives in one graph could run in any order
    y = step(y)
    mx.eval(y)  # warm-up
    t0 = time.perf_counter()
    mx.eval(stall(4))
    n = max(1, int(0.5 / max(1e-6, (time.perf_counter() - t0) / 4)))  # half a second of stall
    t0 = time.perf_counter()
    mx.eval(stall(n))
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    mx.async_eval(stall(n))
    for _ in range(k):
        y = step(y)
        mx.async_eval(y)
    queued = time.perf_counter() - t0
    mx.eval(y)
    total = time.perf_counter() - t0
    return (total - alone) / k * 1000 if queued < 0.8 * alone else None


def _random_model(args: Any, quant: dict[str, Any] | None, dtype: Any) -> Any:
    """The whole model with random weights, made one layer at a time."""
    import mlx.core as mx

    from ..model.model import Model
    from ..parallel.shard import _quantize

    model = Model(args)
    _quantize(model, quant, lambda path: True)
    model.set_dtype(dtype)
    for layer in model.model.layers:
        mx.eval(layer.parameters())
    mx.eval(model.parameters())
    model.eval()
    return model


def _all_sum_us(group: Any, shape: tuple[int, ...], dtype: Any, k: int) -> float:
    import mlx.core as mx

    x = mx.ones(shape, dtype)
    mx.eval(mx.distributed.all_sum(x, group=group))
    t0 = time.perf_counter()
    y = x
    for _ in range(k):  # a chain: each waits for the one before, as a forward pass's collectives do
        y = mx.distributed.all_sum(y, group=group) * (1.0 / group.size())
    mx.eval(y)
    return (time.perf_counter() - t0) / k * 1e6


def _bench(cluster: Any, opts: argparse.Namespace) -> dict[str, Any]:
    import mlx.core as mx

    from ..parallel.cluster import probe_handover
    from ..parallel.layout import Layout, ParallelError, check_tensor_split, make_layout
    from ..parallel.replicate import CacheFiles, LeaderModel, follow
    from ..parallel.shard import load_shard

    shape = SHAPES[opts.shape]
    args, quant = _model_args(shape), shape["quant"]
    dtype = getattr(mx, shape["dtype"])
    rank, world, group = cluster.rank, cluster.world, cluster.group
    prompt = [(7 * i + 3) % args.vocab_size for i in range(opts.prompt_tokens)]
    tokens, rounds = opts.tokens, opts.rounds
    modes = opts_modes(opts)
    runs: dict[str, list[float]] = {}
    host: dict[str, float] = {}
    device: dict[str, float | None] = {}
    notes: list[str] = []
    handover = ""
    one = mx.array([[1]])

    # 1. One device: rank 0 alone, with the whole model.
    if rank == 0:
        model = _random_model(args, quant, dtype)
        runs["one_device"], host["one_device"] = _measure(model, prompt, tokens, rounds)
        if opts.device_floor:
            cache = model.make_cache()
            device["one_device"] = _device_ms(
                lambda _: mx.argmax(model(one, cache=cache)[:, -1, :], axis=-1),
                lambda: mx.argmax(model(mx.array(prompt)[None], cache=cache)[:, -1, :], axis=-1),
            )
            del cache
        del model
        mx.clear_cache()
    _barrier(cluster)

    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            if mode.startswith("tensor"):
                try:
                    check_tensor_split(args, quant, world)
                except ParallelError as e:
                    notes.append(str(e))
                    continue
                qk = "collective" if mode == "tensor_qk_collective" else "local"
                layout = Layout("tensor", world, tuple((0, args.num_hidden_layers) for _ in range(world)), qk)
            else:
                layout = make_layout("pipeline", world, args, _sizes(args, quant, dtype.size))
                handover = probe_handover(cluster)
            shard = load_shard(args, quant, None, group, layout, rank, handover=handover or "sendrecv", dtype=dtype)
            files = CacheFiles(Path(tmp), rank, layout.key(), layout.tag(rank), len(layout.layers_of(rank)))
            if rank == 0:
                leader = LeaderModel(shard, files)
                runs[mode], host[mode] = _measure(leader, prompt, tokens, rounds)
                leader.close()
                del leader
            else:
                follow(shard, files)
            if opts.device_floor:  # every rank its part, in lockstep: no frames, the same token each step
                cache = shard.make_cache()
                device[mode] = _device_ms(
                    lambda _, s=shard, c=cache: s.forward(one, 1, c),
                    lambda s=shard, c=cache: s.forward(mx.array(prompt)[None], len(prompt), c),
                )
                del cache
            del shard
            mx.clear_cache()
            _barrier(cluster)

    width = args.hidden_size
    one_token = _all_sum_us(group, (1, 1, width), dtype, 50)
    prefill = _all_sum_us(group, (1, 512, width), dtype, 10)
    device_all_sum = None
    if opts.device_floor:
        x = mx.ones((1, 1, width), dtype)
        ms = _device_ms(lambda y: mx.distributed.all_sum(y, group=group) * (1.0 / world), lambda: x, k=50)
        device_all_sum = round(ms * 1000, 1) if ms is not None else None
    layers = args.num_hidden_layers
    per_step = {
        "tensor": 2 * layers + 1,  # o, down per layer; the command frame
        "tensor_qk_collective": 3 * layers + 1,  # q/k-norm, o, down per layer; the command frame
        "pipeline": (world - 1) + 1 + 1 if handover == "sendrecv" else world + 1,  # hops, the way back, the frame
    }
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med.get("one_device", 0.0)
    ratios = {
        f"{m}_vs_one_device": {"value": round(med[m] / base, 3) if base else 0.0, "target": TARGETS[m]}
        for m in modes
        if m in med
    }
    return {
        "benchmark": "parallel",
        "model": f"random weights, shape {opts.shape}",
        "shape": opts.shape,
        "layers": args.num_hidden_layers,
        "hidden": width,
        "heads": [args.num_attention_heads, args.num_key_value_heads],
        "quantization": quant,
        "dtype": shape["dtype"],
        "ranks": world,
        "backend": _backend(),
        "device": str(mx.default_device()),
        "tokens_per_run": tokens,
        "rounds": rounds,
        "prompt_tokens": len(prompt),
        "decode_tok_s": {k: round(v, 2) for k, v in med.items()},
        "step_ms": {k: round(1000 / v, 3) for k, v in med.items() if v},
        "runs_tok_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "pipeline_handover": handover or None,
        "host_ms_per_step": {k: round(v, 3) for k, v in host.items()},
        "device_ms_per_step": {k: round(v, 3) if v is not None else None for k, v in device.items()},
        "all_sum_us": {"one_token": round(one_token, 1), "512_tokens": round(prefill, 1)},
        "all_sum_device_us": device_all_sum,
        "collectives_per_step": {m: per_step[m] for m in modes if m in per_step},
        "comm_ms_per_step_estimate": {m: round(per_step[m] * one_token / 1000, 3) for m in modes if m in per_step},
        "notes": notes,
        "ratios": ratios,
    }


def format_table(result: dict[str, Any]) -> str:
    from .bench import _passes

    q = result["quantization"]
    lines = [
        f"olmo3 bench parallel · shape {result['shape']} ({result['layers']} layers, hidden {result['hidden']}, "
        f"{result['heads'][0]}/{result['heads'][1]} heads, {f'{q["bits"]}-bit' if q else result['dtype']}) · "
        f"{result['ranks']} ranks · backend {result['backend']} · device {result['device']}",
        "  decode tok/s: " + " · ".join(f"{k} {v}" for k, v in result["decode_tok_s"].items()),
        "  ms per step:  " + " · ".join(f"{k} {v}" for k, v in result["step_ms"].items()),
        "  host ms/step: " + " · ".join(f"{k} {v}" for k, v in result["host_ms_per_step"].items()),
    ]
    device = result["device_ms_per_step"]
    if device and any(v is not None for v in device.values()):
        lines.append("  device ms/step: " + " · ".join(f"{k} {v}" for k, v in device.items()))
    elif device:  # asked for, but the device ran each step as it was queued: no floor to read
        lines.append("  device ms/step: not measurable here (the steps did not queue behind the stall)")
    lines += [
        f"  all_sum of one token's activation: {result['all_sum_us']['one_token']} µs "
        f"(512 tokens: {result['all_sum_us']['512_tokens']} µs)"
        + (f"; on the device: {result['all_sum_device_us']} µs" if result["all_sum_device_us"] is not None else ""),
        "  communication per step (estimate): "
        + " · ".join(
            f"{m} {ms} ms ({result['collectives_per_step'][m]} collectives)"
            for m, ms in result["comm_ms_per_step_estimate"].items()
        ),
    ]
    if result["pipeline_handover"]:
        lines.append(f"  pipeline hand-over: {result['pipeline_handover']}")
    lines += [f"  note: {n}" for n in result["notes"]]
    lines.append(f"  {'ratio':<40} {'value':>8}  {'target':<8}  ok")
    for name, r in result["ratios"].items():
        ok = "yes" if _passes(r["value"], r["target"]) else "NO"
        lines.append(f"  {name:<40} {r['value']:>8}  {r['target']:<8}  {ok}")
    return "\n".join(lines)
