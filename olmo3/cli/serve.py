"""``olmo3 serve --model PATH|NAME``: the OpenAI-compatible local server on one engine, until Ctrl-C.

``--model`` takes a folder or an installed model's name (``olmo3 models list``), with the options every command that
loads a model shares (``--memory-limit``, ``--context``, ``--load-anyway``). Exit codes: 0 after a clean stop
(SIGINT/SIGTERM; every conversation cache is spilled to disk first, so the next start reuses it); 1 when the address
cannot be bound; 2 for refused input (no such model, a model that won't fit or fails to load, a non-loopback host
without ``--api-key``, bad numbers), one line on stderr; 3 (``--parallel`` only) when the group lost a rank
(:mod:`olmo3.cli.serve_parallel`). When ready it prints ``olmo3 serve: serving MODEL at http://HOST:PORT/v1`` on
stderr (``--port 0`` picks a free port).

``--parallel tensor|pipeline`` under ``mlx.launch``: rank 0 serves, the other ranks hold their part of the model
(:mod:`olmo3.cli.serve_parallel`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..chat.events import Event, JobFailed, ModelLoaded, ModelWontFit
from ..units import parse_bytes
from .options import add_model_options, model_path
from .parallel import add_parallel_option

if TYPE_CHECKING:
    from ..chat.loaders import ModelLoader
    from ..serve.server import LocalServer


def _bytes(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_serve_parser(sub: Any) -> None:
    """Register ``serve`` on the ``olmo3`` subparsers."""
    s = sub.add_parser("serve", help="OpenAI-compatible local server (chat/completions, completions, models)")
    add_model_options(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--api-key", help="required as 'Authorization: Bearer KEY' (needed off loopback)")
    s.add_argument("--max-queue", type=int, default=32, help="requests that may wait for the engine (default 32)")
    s.add_argument("--kv-bits", type=int, choices=(8,), help="8-bit KV cache for the full-attention layers")
    s.add_argument("--cache-dir", help="where conversation caches are spilled (default: the app's)")
    s.add_argument(
        "--disk-limit", type=_bytes, metavar="BYTES", help="spilled server caches kept on disk (default 16G)"
    )
    s.add_argument("--cors-origin", action="append", default=[], help="allow browser requests from this origin")
    s.add_argument(
        "--max-body-bytes", type=_bytes, default=16 * 1024**2, metavar="BYTES", help="request body limit (default 16M)"
    )
    add_parallel_option(
        s,
        "serve one model from the processes mlx.launch started: tensor (every rank holds 1/N of each layer) or "
        "pipeline (each rank holds a range of layers); rank 0 serves HTTP",
    )
    s.add_argument(
        "--lost-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="--parallel: after the group lost a rank, answer 503 this long, then exit with status 3 for a "
        "supervisor to start the group again (default 10)",
    )
    s.set_defaults(fn=run_serve)


def run_serve(
    args: argparse.Namespace,
    *,
    loader: ModelLoader | None = None,
    on_serving: Callable[[LocalServer], None] | None = None,
) -> int:
    """Load the model, serve until stopped. ``loader``: rank 0's ``ClusterLoader`` under ``--parallel``;
    ``on_serving(server)`` runs once the address is bound, before the first request."""
    from ..chat.engine import Engine
    from ..serve.server import LocalServer, ServeConfig, check_config

    folder = model_path(args)
    assert folder is not None  # --model is required
    model_id = folder.name if Path(args.model).expanduser().is_dir() else str(args.model)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        cors_origins=tuple(args.cors_origin),
        model_id=model_id,
    )
    check_config(config)
    logging.getLogger("olmo3.serve").setLevel(logging.INFO)  # a line per request: ids and numbers, never contents

    events: list[Event] = []
    engine = Engine(
        events.append,
        cache_dir=args.cache_dir,
        memory_limit_bytes=args.memory_limit,
        kv_bits=args.kv_bits,
        loader=loader,
    )
    engine.serve_disk_limit = args.disk_limit
    engine.start()
    try:
        engine.wait(engine.load_model(folder, context_tokens=args.context, force=args.load_anyway))
        failed = next((e for e in events if isinstance(e, (JobFailed, ModelWontFit))), None)
        if failed is not None or not any(isinstance(e, ModelLoaded) for e in events):
            print(f"olmo3 serve: {failed.message if failed else f'cannot load {folder}'}", file=sys.stderr)
            return 2
        server = LocalServer(engine, config)
        try:
            server.bind()
        except OSError as e:
            print(f"olmo3 serve: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr)
            return 1
        if on_serving is not None:
            on_serving(server)
        print(f"olmo3 serve: serving {model_id} at {server.base_url}", file=sys.stderr, flush=True)
        server.run()
        return 0
    finally:
        engine.shutdown()
