"""One conversation through the engine, on one machine (``--single``) or as a rank of an ``mlx.launch`` group.

Run by ``tests/parallel/test_parallel.py`` as a real subprocess: ``mlx.launch -n 2 --backend ring -- python
worker.py --mode tensor --out OUT --cache-dir DIR MODEL…``. For each model, rank 0 drives an ``Engine`` (as
``olmo3 chat`` does) through turns that use every cache operation: a long first message prefilled in chunks
smaller than the sliding window (so prefill runs past it), follow-ups that reuse the cache, regenerate (snapshot),
edit, spill to disk and restore, 8-bit KV for the full layers; then the first-token logits of a fresh prompt.
Rank 0 writes ``OUT`` (one JSON object per model); every rank writes ``OUT.rankN.json`` with what it loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

LONG = (
    "Hello there! The quick brown fox jumps over the lazy dog. Sliding window attention looks at the last few "
    "thousand tokens; full attention looks at everything. Let me think step by step about the cache. " * 2
)
FOLLOW_UPS = ("And what about the lazy dog?", "Thanks! Now explain the cache.")
SESSION = {"prefill_step_size": 8, "temperature": 0.0, "max_tokens": 10}


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, job: int) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.job_id == job]


def conversation(model: Path, cache_dir: Path, loader: Any = None) -> dict[str, Any]:
    import mlx.core as mx

    from olmo3.chat.engine import Engine
    from olmo3.chat.events import JobFailed, TurnFinished

    rec = Recorder()
    engine = Engine(rec, cache_dir=cache_dir, loader=loader, session_options=dict(SESSION))
    engine.start()
    turns: list[dict[str, Any]] = []
    spilled: list[str] = []
    deleted: list[str] = []

    def run(job: int, what: str) -> None:
        assert engine.wait(job, 300), f"{what}: timed out"
        events = rec.of(job)
        fails = [e for e in events if isinstance(e, JobFailed)]
        if fails:
            raise RuntimeError(f"{what}: {fails[0].message}")
        fin = [e for e in events if isinstance(e, TurnFinished)]
        if fin:
            s = fin[0].stats
            turns.append(
                {
                    "what": what,
                    "text": fin[0].reply.content,
                    "reply_tokens": list(fin[0].reply.tokens),
                    "tokens": list(fin[0].state.tokens),
                    "cached_tokens": s.cached_tokens,
                    "prompt_tokens": s.prompt_tokens,
                    "reconcile": s.reconcile,
                }
            )

    try:
        run(engine.load_model(model, context_tokens=2048), "load")
        run(engine.open_conversation("conv"), "open")
        run(engine.send("conv", LONG), "first")
        run(engine.send("conv", FOLLOW_UPS[0]), "follow-up")
        run(engine.regenerate("conv"), "regenerate")
        run(engine.edit("conv", 1, "Write fibonacci in python please."), "edit")
        run(engine.spill_all(), "spill")
        run(engine.send("conv", FOLLOW_UPS[1]), "after restore")
        run(engine.set_kv_bits(8), "kv bits")
        run(engine.send("conv", "One more question about foxes."), "8-bit kv")
        run(engine.send("conv", "And the last one."), "8-bit kv follow-up")
        logits: list[list[float]] = []

        def first_logits(e: Engine) -> None:
            ids = e.tokenizer.encode("The cache keeps keys and values of every token, so a follow-up question")
            out = e.model(mx.array(ids)[None], cache=e.model.make_cache())
            logits.append(out[0, -1].astype(mx.float32).tolist())

        run(engine.call(first_logits), "logits")
        run(engine.spill_all(), "spill again")
        spilled = sorted(f.name for f in cache_dir.glob("*.safetensors"))
        run(engine.close_conversation("conv", delete_cache=True), "delete")
        deleted = sorted(f.name for f in cache_dir.glob("*.safetensors"))
    finally:
        engine.shutdown(60)
    return {"turns": turns, "logits": logits[0] if logits else [], "spilled": spilled, "after_delete": deleted}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--mode", choices=("single", "tensor", "pipeline"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--rank1-models", nargs="*", help="what rank 1 loads instead (a host with other weights)")
    p.add_argument("--refusals", action="store_true", help="rank 0 only asks to load; OUT gets why it was refused")
    args = p.parse_args()
    out = Path(args.out)
    if args.mode == "single":
        results = [conversation(Path(m), Path(args.cache_dir) / f"m{i}") for i, m in enumerate(args.models)]
        out.write_text(json.dumps(results))
        return 0

    from olmo3.cli.parallel import launch_rank
    from olmo3.parallel.watchdog import take_sigterm

    rank = launch_rank()
    take_sigterm(rank)
    import mlx.core as mx

    from olmo3.parallel.cluster import ClusterLoader, init_cluster, run_follower
    from olmo3.parallel.layout import rank_weight_bytes

    results, loads = [], []
    for i, m in enumerate(args.models):
        cache_dir = Path(args.cache_dir) / f"m{i}"
        cluster = init_cluster(args.mode)
        mx.reset_peak_memory()

        def loaded(shard: Any, reader: Any, cluster: Any = cluster, at_load: bool = True) -> None:
            loads.append(
                {
                    "rank": cluster.rank,
                    "bytes_read": reader.bytes_read,
                    "expected": rank_weight_bytes(cluster.layout, reader.sizes(), cluster.rank),
                    "total": sum(reader.sizes().values()),
                    "parameters": shard.weight_bytes(),
                    "peak": mx.get_peak_memory() if at_load else None,  # rank 0 loads on the engine thread
                    "layout": cluster.layout.key(),
                    "handover": cluster.handover,
                }
            )

        if cluster.rank != 0:
            mine = Path(args.rank1_models[i]) if args.rank1_models and cluster.rank == 1 else Path(m)
            status = run_follower(cluster, mine, cache_dir=cache_dir, on_loaded=loaded)
            if status and not args.refusals:
                return status
            continue
        loader = ClusterLoader(cluster, cache_dir=cache_dir)
        if args.refusals:
            try:
                loader.plan(Path(m))
                loader.load(Path(m))
                results.append({"refused": None})
            except ValueError as e:
                results.append({"refused": str(e)})
            loader.close()
            continue
        results.append(conversation(Path(m), cache_dir, loader))
        assert loader.reader is not None and loader.model is not None
        loaded(loader.model.shard, loader.reader, at_load=False)
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(loads))
    if rank == 0:
        out.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
