"""``olmo3 serve --model PATH|NAME``: the OpenAI-compatible local server on one engine, until Ctrl-C.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM; every conversation cache is spilled to disk first, so the next
start reuses it); 1 when the model cannot be loaded or the address cannot be bound; 2 for refused input (no such
model, a non-loopback host without ``--api-key``, bad numbers), one line on stderr. When ready it prints
``olmo3 serve: serving MODEL at http://HOST:PORT/v1`` on stderr (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..chat.events import Event, JobFailed, ModelLoaded


def add_serve_parser(sub: Any) -> None:
    """Register ``serve`` on the ``olmo3`` subparsers."""
    s = sub.add_parser("serve", help="OpenAI-compatible local server (chat/completions, completions, models)")
    s.add_argument("--model", required=True, help="a model folder, or an installed model's name (owner/name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--api-key", help="required as 'Authorization: Bearer KEY' (needed off loopback)")
    s.add_argument("--max-queue", type=int, default=32, help="requests that may wait for the engine (default 32)")
    s.add_argument("--memory-limit", type=int, help="bytes of KV cache kept in memory (default: from RAM)")
    s.add_argument("--kv-bits", type=int, choices=(8,), help="8-bit KV cache for the full-attention layers")
    s.add_argument("--cache-dir", help="where conversation caches are spilled (default: the app's)")
    s.add_argument("--disk-limit", type=int, help="bytes of spilled server caches kept on disk (default 16 GiB)")
    s.add_argument("--cors-origin", action="append", default=[], help="allow browser requests from this origin")
    s.add_argument("--max-body-bytes", type=int, default=16 * 1024**2, help="request body limit (default 16 MiB)")
    s.set_defaults(fn=run_serve)


def _resolve(model: str) -> tuple[Path, str]:
    """A folder, or a model of the store by name: (folder, the id /v1/models lists)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder, folder.name
    from ..hub import InvalidRepoIdError, ModelStore

    try:
        found = ModelStore(offline=True).find(model)
    except InvalidRepoIdError:
        found = None
    if found is None or not found.installed:
        raise ValueError(f"--model {model}: no such folder, and no installed model by that name (see: olmo3 models)")
    return Path(found.path), found.name


def run_serve(args: argparse.Namespace) -> int:
    from ..chat.engine import Engine
    from ..serve.server import LocalServer, ServeConfig, check_config

    folder, model_id = _resolve(args.model)
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
    for name in ("memory_limit", "disk_limit"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more")
    logging.getLogger("olmo3.serve").setLevel(logging.INFO)  # a line per request: ids and numbers, never contents

    events: list[Event] = []
    engine = Engine(
        events.append, cache_dir=args.cache_dir, memory_budget_bytes=args.memory_limit, kv_bits=args.kv_bits
    )
    engine.serve_disk_limit = args.disk_limit
    engine.start()
    try:
        engine.wait(engine.load_model(folder))
        failed = next((e for e in events if isinstance(e, JobFailed)), None)
        if failed is not None or not any(isinstance(e, ModelLoaded) for e in events):
            print(f"olmo3 serve: cannot load {folder}: {failed.message if failed else 'no model'}", file=sys.stderr)
            return 2 if failed is not None and failed.error == "ModelLoadError" else 1
        server = LocalServer(engine, config)
        try:
            server.bind()
        except OSError as e:
            print(f"olmo3 serve: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"olmo3 serve: serving {model_id} at {server.base_url}", file=sys.stderr, flush=True)
        server.run()
        return 0
    finally:
        engine.shutdown()
