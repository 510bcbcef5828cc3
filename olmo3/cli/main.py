"""``olmo3``: the headless command line (info, generate, chat, quantize, bench, models)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..units import format_bytes


def cmd_info(args: argparse.Namespace) -> int:
    from ..model.modelinfo import inspect_model_dir

    info = inspect_model_dir(args.model)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    kinds = "".join("F" if t == "full_attention" else "s" for t in info.layer_types)
    quant = (
        f"{info.quantization['bits']}-bit (group {info.quantization.get('group_size', 64)})"
        if info.quantization
        else "none"
    )
    rows = [
        ("model", f"{info.name} ({'Think' if info.is_think else 'Instruct'})"),
        ("layers", f"{info.num_layers}: {info.num_full_layers} full, {info.num_sliding_layers} sliding"),
        ("layer pattern", f"{kinds}  (F = full attention, s = sliding window)"),
        ("full layers", ", ".join(str(i) for i, t in enumerate(info.layer_types) if t == "full_attention")),
        ("sliding window", f"{info.sliding_window} tokens"),
        ("context", f"{info.max_position_embeddings} tokens"),
        ("heads", f"{info.num_heads} query, {info.num_kv_heads} key/value, head_dim {info.head_dim}"),
        ("hidden / vocab", f"{info.hidden_size} / {info.vocab_size}"),
        ("parameters", f"{info.param_count:,}"),
        ("weights", f"{format_bytes(info.weight_bytes)} ({info.weight_bytes:,} bytes), quantization {quant}"),
        ("KV per token, full layers", f"{format_bytes(info.kv_bytes_per_token_full)} (grows with the conversation)"),
        (
            "KV per token, sliding layers",
            f"{format_bytes(info.kv_bytes_per_token_sliding)} (up to {info.sliding_window} tokens)",
        ),
        ("KV at 4K / 32K tokens", f"{format_bytes(info.kv_bytes(4096))} / {format_bytes(info.kv_bytes(32768))}"),
        ("stop tokens", ", ".join(map(str, info.eos_token_ids))),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _sampling_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, attr in (
        ("temperature", "temp"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("repetition_penalty", "repetition_penalty"),
        ("max_tokens", "max_tokens"),
        ("seed", "seed"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    return out


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, help="most tokens per reply")
    p.add_argument("--temp", type=float, help="temperature (0 = greedy)")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..chat.events import TextDelta, TurnFinished
    from ..chat.session import ChatSession
    from ..model.loader import load

    model, tokenizer = load(args.model)
    session = ChatSession(model, tokenizer, system_prompt=args.system, **_sampling_args(args))
    in_reasoning = False
    stats = None
    for event in session.send(args.prompt):
        if isinstance(event, TextDelta):
            if event.channel == "reasoning" and not in_reasoning:
                sys.stdout.write("[thinking] ")
                in_reasoning = True
            elif event.channel == "answer" and in_reasoning:
                sys.stdout.write("\n[answer] ")
                in_reasoning = False
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, TurnFinished):
            stats = event.stats
    print()
    if stats is not None:
        print(
            f"-- TTFT {stats.ttft_s:.3f} s · {stats.tokens_per_s:.1f} tok/s · {stats.prompt_tokens} prompt tokens "
            f"· {stats.generated_tokens} generated · {stats.finish_reason}",
            file=sys.stderr,
        )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..model.quantize import quantize_folder

    out = quantize_folder(args.src, args.dst, bits=args.bits, group_size=args.group_size)
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.what == "serve":
        from .bench_serve import bench_serve, format_serve_table

        result = bench_serve(args.model, rounds=args.rounds)
        print(format_serve_table(result))
        print(json.dumps(result, indent=2))
        return 0
    if args.what == "decode":
        result = bench.bench_decode(args.model, tokens=args.tokens, rounds=args.rounds)
    else:
        result = bench.bench_chat(args.model, rounds=args.rounds)
    print(bench.format_table(result))
    print(json.dumps(result, indent=2))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import run_chat

    return run_chat(args, _sampling_args(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="olmo3", description="Olmo-3 on MLX, headless.")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe a model folder")
    s.add_argument("--model", required=True, help="model folder")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("generate", help="one reply to one prompt, streamed")
    s.add_argument("--model", required=True)
    s.add_argument("--prompt", required=True)
    s.add_argument("--system", help="system prompt (default: the model's own)")
    _add_sampling(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("chat", help="interactive chat (/regen, /edit N, /stats, /save), or --script")
    s.add_argument("--model", required=True)
    s.add_argument("--system")
    s.add_argument("--script", help="JSON list of actions: {send: text} | {regenerate: true} | {edit: N, text}")
    s.add_argument("--json", action="store_true", help="one JSON line per turn")
    s.add_argument("--cache-dir", help="where conversation caches are spilled")
    _add_sampling(s)
    s.set_defaults(fn=cmd_chat)

    s = sub.add_parser("quantize", help="convert a bf16/fp32 folder to an MLX-quantized one")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--bits", type=int, choices=(4, 8), default=4)
    s.add_argument("--group-size", type=int, default=64)
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser("bench", help="benchmarks: decode | chat | serve (our server vs mlx_lm.server)")
    s.add_argument("what", choices=("decode", "chat", "serve"))
    s.add_argument("--model", help="model folder (default: a generated small model)")
    s.add_argument("--tokens", type=int, default=128, help="decode: tokens per run")
    s.add_argument("--rounds", type=int, default=5)
    s.set_defaults(fn=cmd_bench)

    try:
        from .models import add_models_parser

        add_models_parser(sub)
    except ImportError:  # pragma: no cover - the models subcommand ships with the model manager
        pass
    from .serve import add_serve_parser
    from .tools import add_tools_parser

    add_serve_parser(sub)
    add_tools_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if getattr(args, "fn", None) is None:  # subcommands that dispatch themselves (models)
            from .models import run_models

            return run_models(args)
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # Imported here, not at the top: `olmo3 models list` must not pay for importing MLX.
        from ..model.modelinfo import ModelLoadError

        if isinstance(e, (ModelLoadError, ValueError, FileNotFoundError, FileExistsError)):
            print(f"olmo3: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
