"""``olmo3``: the headless command line (info, generate, chat, quantize, bench, models, tiny)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..units import format_bytes
from .options import add_model_options, check_fits, model_path
from .parallel import add_parallel_option


def cmd_info(args: argparse.Namespace) -> int:
    from ..hub.verify import verify_model_folder

    # Headers only, no weights read: a truncated or padded file, or tensors unlike config.json's, exit 2.
    info = verify_model_folder(model_path(args) or Path(""))
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
        (
            "full-attention layers",
            ", ".join(str(i) for i, t in enumerate(info.layer_types) if t == "full_attention") + " (counted from 0)",
        ),
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
        ("thinking_budget", "thinking_budget"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    from ..chat.sampling import Sampling

    Sampling().merged(out).validate()  # a bad value is refused here (exit 2), before a model loads
    return out


def _model_folder(path: str | Path) -> None:
    """Refuse a folder that is no Olmo-3 model before anything imports MLX (JSON and headers only)."""
    from ..model.modelinfo import inspect_model_dir

    inspect_model_dir(path)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-tokens", type=int, help="most tokens per reply (a cap: a reply also stops when the context is full)"
    )
    p.add_argument("--temp", type=float, help="temperature (0 = greedy; default: the model's recommendation)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: keep the most likely tokens up to this probability")
    p.add_argument("--top-k", type=int, help="keep only the K most likely tokens (0 = off)")
    p.add_argument("--min-p", type=float, help="drop tokens less likely than this fraction of the most likely one")
    p.add_argument("--repetition-penalty", type=float, help="above 1.0 discourages repeating earlier tokens")
    p.add_argument("--seed", type=int, help="random seed, for a reply you can reproduce")
    p.add_argument("--thinking-budget", type=_budget, help="Think models: most reasoning tokens (e.g. 4096, 4K; off)")
    p.add_argument("--kv-bits", type=int, choices=(4, 8), help="quantize the full-attention layers' KV cache")


def _budget(text: str) -> int | None:
    from ..chat.sampling import parse_thinking_budget

    try:
        return parse_thinking_budget(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_generate(args: argparse.Namespace, loader: Any = None) -> int:
    """One reply. ``loader``: rank 0's ``ClusterLoader`` under ``--parallel`` (else this machine's folder)."""
    sampling = _sampling_args(args)  # refused before the model loads
    folder = model_path(args)
    assert folder is not None
    _model_folder(folder)  # before MLX is imported
    from ..chat.engine import record_working_set
    from ..chat.events import TextDelta, TurnFinished
    from ..chat.session import ChatSession
    from ..model.loader import load

    record_working_set()  # this thread runs MLX: the GPU working set is the budget
    if loader is None:
        plan = check_fits(args, folder)
        model, tokenizer = load(folder)
    else:
        plan = loader.plan(folder, context_tokens=args.context, force=args.load_anyway)
        model, tokenizer = loader.load(folder)
    session = ChatSession(
        model,
        tokenizer,
        system_prompt=args.system,
        context_limit=plan.context_tokens,
        kv_bits=args.kv_bits,
        **sampling,
    )
    in_reasoning = False
    stats = None
    for event in session.send(args.prompt):
        if isinstance(event, TurnFinished) and args.json:
            print(json.dumps(turn_json(event)), flush=True)
            return 0
        if isinstance(event, TextDelta) and not args.json:
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


def turn_json(fin: Any) -> dict[str, Any]:
    """One finished turn as JSON: the reply's text and reasoning, its stats and provenance (``generate --json``
    and each line of ``chat --json``)."""
    reply = fin.reply
    return {
        "text": reply.content if reply else "",
        "reasoning": reply.reasoning if reply else None,
        "finish_reason": fin.stats.finish_reason,
        "stats": fin.stats.to_dict(),
        "provenance": fin.provenance.to_dict() if fin.provenance else None,
        "reply_tokens": list(reply.tokens) if reply else [],
    }


def cmd_quantize(args: argparse.Namespace) -> int:
    if args.group_size not in (32, 64, 128):
        raise ValueError(f"--group-size {args.group_size}: use 32, 64 or 128")
    _model_folder(args.src)  # before MLX is imported
    from ..model.quantize import quantize_folder

    out = quantize_folder(args.src, args.dst, bits=args.bits, group_size=args.group_size)
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "docs":  # before `bench`, which imports MLX
        from .bench_docs import run

        return run(args)
    if args.what == "parallel":  # every rank of an mlx.launch group runs this
        from .bench_parallel import run as run_parallel_bench

        return run_parallel_bench(args)
    if args.rounds < 1 or args.tokens < 1:
        raise ValueError(f"--rounds and --tokens must be at least 1 (got {args.rounds} and {args.tokens})")
    folder = model_path(args)
    if folder is not None:
        _model_folder(folder)  # before MLX is imported
    from . import bench

    check = lambda path: check_fits(args, path)  # noqa: E731 - the memory check, before each load
    if args.what == "serve":
        from .bench_serve import bench_serve, format_serve_table

        result = bench_serve(str(folder) if folder else None, rounds=args.rounds)
        print(format_serve_table(result))
        print(json.dumps(result, indent=2))
        return 0
    if args.what == "decode":
        result = bench.bench_decode(folder, tokens=args.tokens, rounds=args.rounds, check=check)
    else:
        result = bench.bench_chat(folder, rounds=args.rounds, check=check, kv_bits=args.kv_bits)
    print(bench.format_table(result))
    print(json.dumps(result, indent=2))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import run_chat

    return run_chat(args, _sampling_args(args))


def cmd_tiny(args: argparse.Namespace) -> int:
    from ..model.tiny import make_tiny_model

    dest = Path(args.dest).expanduser()
    if args.context < 1:  # refused before the folder is made
        raise ValueError(f"--context {args.context}: must be at least 1 token")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not an empty folder")
    make_tiny_model(dest, think=args.think, max_position_embeddings=args.context)
    kind = "Think" if args.think else "Instruct"
    print(
        f"wrote {dest}: a tiny {kind} model with random weights ({args.context:,}-token context); it answers gibberish"
    )
    return 0


class _NoTraceback(logging.Formatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return ""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other refusal (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .chat_tools import add_tool_options

    p = _Parser(prog="olmo3", description="Olmo-3 on MLX, headless.")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe a model: layers, window, parameters, KV bytes per token")
    add_model_options(s, loads=False)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("generate", help="one reply to one prompt, streamed")
    add_model_options(s)
    s.add_argument("--prompt", required=True, help="the user message")
    s.add_argument("--system", help="system prompt (default: the model's own)")
    s.add_argument("--json", action="store_true", help="one JSON line: text, reasoning, stats, provenance")
    _add_sampling(s)
    add_parallel_option(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("chat", help="interactive chat (/regen, /reproduce, /edit N, /stats, /save), or --script")
    add_model_options(s)
    s.add_argument("--system", help="system prompt (default: the model's own)")
    s.add_argument(
        "--script",
        help="JSON list of actions: {send: text} | {regenerate: true} | {reproduce: true} | {edit: N, text}",
    )
    s.add_argument("--json", action="store_true", help="one JSON line per turn")
    s.add_argument("--cache-dir", help="where conversation caches are spilled (default: the app's cache folder)")
    s.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="a document to chat about (text, Markdown, code, HTML, PDF, DOCX); repeat for more",
    )
    add_tool_options(s)
    _add_sampling(s)
    add_parallel_option(s)
    s.set_defaults(fn=cmd_chat)

    s = sub.add_parser("quantize", help="convert a bf16/fp32 folder to an MLX-quantized one")
    s.add_argument("src", help="the folder to convert")
    s.add_argument("dst", help="the new folder")
    s.add_argument("--bits", type=int, choices=(4, 8), default=4, help="bits per weight (default 4)")
    s.add_argument("--group-size", type=int, default=64, help="weights per quantization group (default 64)")
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser("bench", help="benchmarks: decode | chat | docs | serve | parallel")
    s.add_argument(
        "what",
        choices=("decode", "chat", "docs", "serve", "parallel"),
        help="decode: tok/s against mlx_lm; chat: follow-up TTFT; docs: extract, index and retrieve; "
        "serve: our server against mlx_lm.server; parallel: tensor/pipeline decode across mlx.launch's ranks "
        "against one device (run under mlx.launch)",
    )
    add_model_options(s, required=False)
    s.add_argument("--tokens", type=int, default=128, help="decode: tokens per run (default 128)")
    s.add_argument("--rounds", type=int, default=5, help="interleaved rounds per measurement (default 5)")
    s.add_argument("--pages", type=int, default=300, help="docs: pages of the generated PDF (default 300)")
    s.add_argument("--passages", type=int, default=10_000, help="docs: passages to search (default 10,000)")
    s.add_argument("--kv-bits", type=int, choices=(4, 8), help="chat: also measure quantized full-layer KV")
    from .bench_parallel import add_arguments as add_parallel_bench_arguments

    add_parallel_bench_arguments(s)
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("tiny", help="make a tiny random Olmo-3 model folder, to try the app without a download")
    s.add_argument("dest", metavar="DEST", help="the new folder")
    s.add_argument("--think", action="store_true", help="a Think model (its replies start with reasoning)")
    s.add_argument("--context", type=int, default=4096, metavar="N", help="context length in tokens (default 4096)")
    s.set_defaults(fn=cmd_tiny)

    try:
        from .models import add_models_parser

        add_models_parser(sub)
    except ImportError:  # pragma: no cover - the models subcommand ships with the model manager
        pass
    from .serve import add_serve_parser
    from .tools import add_tools_parser

    add_serve_parser(sub)
    add_tools_parser(sub)
    from .store import add_store_parser

    add_store_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.debug:  # a failed job logs one line here; its traceback only with --debug
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_NoTraceback("%(levelname)s %(name)s: %(message)s"))
    try:
        if getattr(args, "fn", None) is None:  # subcommands that dispatch themselves (models)
            from .models import run_models

            return run_models(args)
        if getattr(args, "parallel", None):  # every rank of an mlx.launch group runs this
            from .parallel import run_parallel

            return run_parallel(args, _sampling_args(args))
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        return _report(e)


def _report(e: Exception) -> int:
    """One line on stderr: exit 2 for refused input (a bad folder, file, template or value), 1 for anything else;
    ``olmo3 --debug ...`` shows the traceback instead."""
    # Imported here, not at the top: `olmo3 models list` must not pay for importing MLX.
    from ..model.modelinfo import ModelLoadError
    from ..store.records import StoreError

    message = " ".join(str(e).split()) or type(e).__name__
    refused = (ModelLoadError, StoreError, ValueError, OSError)
    if isinstance(e, refused) or type(e).__module__.startswith("jinja2"):  # a broken chat template is refused input
        print(f"olmo3: {message}", file=sys.stderr)
        return 2
    print(f"olmo3: unexpected error: {type(e).__name__}: {message} (olmo3 --debug ... shows where)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
