"""``olmo3 models list | catalog | search | download REPO | delete NAME | import PATH``: models in a terminal.

A thin front end over ``olmo3.hub.ModelStore``; all behaviour (verification, resume, locking) lives there.
Exit codes: 0 success, 1 the operation failed (a download failed, the model is busy), 2 refused input (an
invalid repo id, no model of that name, a folder that is not a loadable model), 130 interrupted (a download
interrupted with Ctrl-C is paused and resumes when the same command runs again).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..appinfo import kv_cache_dir
from ..hub import (
    DEFAULT_CONTEXT_TOKENS,
    DownloadCancelled,
    DownloadCompleted,
    DownloadEvent,
    DownloadFailed,
    DownloadProgress,
    DownloadQuantizing,
    DownloadRetrying,
    DownloadStarted,
    DownloadVerifying,
    InvalidRepoIdError,
    LocalModel,
    ModelBusyError,
    ModelImportError,
    ModelNotFoundError,
    ModelStore,
    repo_id_from_text,
)
from ..memory import MemoryBudget, memory_budget
from ..units import format_bytes, format_duration

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models`` and its actions to an ``add_subparsers()`` object; ``run_models(args)`` runs them."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="where models are stored (default: the app's data folder)",
    )
    common.add_argument(
        "--offline",
        action="store_true",
        default=argparse.SUPPRESS,
        help="never use the network (also: HF_HUB_OFFLINE=1)",
    )

    p: argparse.ArgumentParser = subparsers.add_parser(
        "models",
        parents=[common],
        help="list, download, import and delete models",
        description="Manage Olmo-3 models: list | catalog | search | download | delete | import",
    )
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    s = actions.add_parser("list", parents=[common], help="installed and incomplete models")
    s.add_argument("--json", action="store_true", help="machine-readable output (each model with its folder)")
    s.add_argument("--no-hf-cache", action="store_true", help="ignore the Hugging Face cache")

    s = actions.add_parser("catalog", parents=[common], help="Olmo-3 models to download, with memory fit")
    s.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT_TOKENS,
        metavar="TOKENS",
        help=f"context length for the memory estimate (default {DEFAULT_CONTEXT_TOKENS})",
    )
    s.add_argument("--memory-gb", type=float, metavar="GB", help="memory budget to judge against (default: this Mac)")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = actions.add_parser(
        "search", parents=[common], help="search Hugging Face for Olmo-3 MLX models (cached for offline use)"
    )
    s.add_argument("query", nargs="?", default="", help="only repos whose name contains this text")
    s.add_argument("--limit", type=int, default=40, metavar="N", help="at most N repos (default 40)")
    s.add_argument("--cache", metavar="FILE", help="the results cache (default: in the user cache folder)")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = actions.add_parser("download", parents=[common], help="download (or resume) a model from Hugging Face")
    s.add_argument("repo", help="owner/name, e.g. mlx-community/Olmo-3-7B-Instruct-4bit, or its URL")
    s.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    s.add_argument("--token", help="Hugging Face access token for gated repos (default: your saved login)")
    s.add_argument(
        "--quantize",
        type=int,
        choices=(4, 8),
        metavar="BITS",
        help="download bf16 weights (e.g. Ai2's allenai/ repos) and quantize them to 4 or 8 bits on this machine; "
        "the bf16 copy is deleted afterwards",
    )

    s = actions.add_parser("delete", parents=[common], help="delete a model and its conversation caches")
    s.add_argument("name", help="the model's name as shown by `olmo3 models list`")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.add_argument("--cache-dir", metavar="DIR", help="conversation cache folder (default: the engine's)")

    s = actions.add_parser("import", parents=[common], help="add a local Olmo-3 folder (copy or link)")
    s.add_argument("path", help="a folder with config.json, *.safetensors and tokenizer.json")
    s.add_argument("--link", action="store_true", help="link the files instead of copying them")
    s.add_argument("--name", help="name in the store (default local/<folder name>)")
    return p


def run_models(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if not getattr(args, "verbose", False):
        # huggingface_hub logs a warning on every reconnect; our own progress line already says so.
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    models_dir = getattr(args, "models_dir", None)
    store = ModelStore(
        models_dir,
        offline=True if getattr(args, "offline", False) else None,
        include_hf_cache=not getattr(args, "no_hf_cache", False),
        token=getattr(args, "token", None),
    )
    action = args.models_command
    try:
        if action == "list":
            return _list(store, args, out)
        if action == "catalog":
            return _catalog(store, args, out)
        if action == "search":
            return _search(store, args, out, err)
        if action == "download":
            return _download(store, args, out, err)
        if action == "delete":
            return _delete(store, args, out, err)
        if action == "import":
            return _import(store, args, out, err)
    except (InvalidRepoIdError, ModelNotFoundError, ModelImportError) as e:  # refused input, like every command's
        print(f"olmo3 models: {e}", file=err)
        return EXIT_USAGE
    except ModelBusyError as e:
        print(f"olmo3 models: {e}", file=err)
        return EXIT_FAILED
    raise AssertionError(f"unknown models action {action!r}")  # argparse rejects unknown actions


# -- list / catalog ----------------------------------------------------------------------------------------------


def _params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _model_json(m: LocalModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "folder": str(m.path),
        "path": str(m.path),
        "status": m.status,
        "source": m.source,
        "repo_id": m.repo_id,
        "revision": m.revision,
        "size_bytes": m.size_bytes,
        "total_bytes": m.total_bytes,
        "param_count": m.param_count,
        "quantization": m.quantization,
        "variant": m.variant,
        "is_think": m.is_think,
        "downloaded_at": m.downloaded_at,
        "origin": m.origin,
        "problem": m.problem,
    }


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _list(store: ModelStore, args: argparse.Namespace, out: TextIO) -> int:
    models = store.list_models()
    if args.json:
        print(json.dumps([_model_json(m) for m in models], indent=2), file=out)
        return EXIT_OK
    print(f"Models in {store.models_dir}", file=out)
    if not models:
        print("No models yet. See `olmo3 models catalog`, then `olmo3 models download REPO`.", file=out)
        return EXIT_OK
    rows = [["NAME", "STATUS", "SIZE", "QUANT", "PARAMS", "VARIANT", "SOURCE"]]
    for m in models:
        size = format_bytes(m.size_bytes)
        if not m.installed:
            size += f"/{format_bytes(m.total_bytes)}"
        rows.append(
            [
                m.name,
                m.status,
                size,
                m.quant_label if m.installed else "-",
                _params(m.param_count) if m.installed else "-",
                m.variant if m.installed else "-",
                m.source,
            ]
        )
    _table(rows, out)
    for m in models:
        if not m.installed:
            print(f"  {m.name}: {m.problem}", file=out)
            if m.source != "hf_cache":
                print(f"    resume: olmo3 models download {m.repo_id or m.name}", file=out)
    return EXIT_OK


def _catalog(store: ModelStore, args: argparse.Namespace, out: TextIO) -> int:
    budget = MemoryBudget(int(args.memory_gb * 1e9), "given") if args.memory_gb else memory_budget()
    items = store.catalog(context_tokens=args.context, budget=budget)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "repo_id": i.entry.repo_id,
                        "title": i.entry.title,
                        "evidence": i.entry.evidence,
                        "note": i.entry.note,
                        "download_bytes": i.entry.download_bytes,
                        "installed_bytes": i.entry.installed_bytes,
                        "disk_bytes_needed": i.entry.disk_bytes_needed,
                        "quantize_bits": i.entry.quantize_bits,
                        "param_count": i.entry.param_count,
                        "variant": i.entry.variant,
                        "quant": i.entry.quant,
                        "fit": i.fit.verdict,
                        "needed_bytes": i.fit.needed_bytes,
                        "budget_bytes": i.fit.budget_bytes,
                        "message": i.fit.message,
                        "installed": i.installed,
                        "folder": str(i.local.path) if i.local is not None and i.installed else None,
                    }
                    for i in items
                ],
                indent=2,
            ),
            file=out,
        )
        return EXIT_OK
    print(f"Memory for models: {budget.describe()}; context {args.context:,} tokens", file=out)
    rows = [["REPO", "DOWNLOAD", "PARAMS", "VARIANT", "QUANT", "FIT", "NEEDS", ""]]
    for i in items:
        e = i.entry
        rows.append(
            [
                e.repo_id + (" *" if e.quantize_bits is not None else ""),
                format_bytes(e.download_bytes),
                _params(e.param_count),
                e.variant,
                e.quant_label,
                i.fit.label,
                format_bytes(i.fit.needed_bytes),
                "installed" if i.installed else "",
            ]
        )
    _table(rows, out)
    print(
        "* Ai2's bf16 weights, quantized on this machine: olmo3 models download REPO --quantize 4 "
        "(needs disk space for both copies while it runs)",
        file=out,
    )
    return EXIT_OK


def _search(store: ModelStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..hub.search import search_hub

    results = search_hub(store, query=args.query, limit=args.limit, cache_path=Path(args.cache) if args.cache else None)
    budget = memory_budget()
    if results.error:
        when = f"; showing the results from {results.fetched_at}" if results.fetched_at else ""
        print(f"olmo3 models: could not search Hugging Face ({results.error}){when}", file=err)
    if args.json:
        rows = []
        for r in results.results:
            fit = r.memory_fit(budget=budget)
            rows.append({**r.to_json(), "fit": fit.verdict if fit else None, "message": fit.message if fit else None})
        print(
            json.dumps(
                {
                    "fetched_at": results.fetched_at,
                    "from_cache": results.from_cache,
                    "error": results.error,
                    "results": rows,
                },
                indent=2,
            ),
            file=out,
        )
    else:
        table = [["REPO", "DOWNLOAD", "QUANT", "FIT", "DOWNLOADS"]]
        for r in results.results:
            fit = r.memory_fit(budget=budget)
            table.append(
                [
                    r.repo_id,
                    format_bytes(r.total_bytes) if r.total_bytes is not None else "-",
                    r.quant_label if r.usable else "-",
                    fit.label if fit else (r.problem or "?")[:60],
                    f"{r.downloads:,}",
                ]
            )
        if len(table) > 1:
            _table(table, out)
        print(f"{len(results.results)} repos; last updated {results.fetched_at or 'never'}", file=out)
    return EXIT_OK if results.fetched_at else EXIT_FAILED


# -- download ----------------------------------------------------------------------------------------------------


class _ProgressLine:
    """A one-line ``\\r`` progress bar; messages (retries) go on their own lines above it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last_len = 0
        self.last_draw = 0.0

    def draw(self, ev: DownloadProgress, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < 0.1 and ev.done_bytes < ev.total_bytes:
            return
        self.last_draw = now
        speed = f"{format_bytes(ev.speed_bps)}/s" if ev.speed_bps else "--/s"
        self.draw_text(
            ev.fraction,
            f"{format_bytes(ev.done_bytes)}/{format_bytes(ev.total_bytes)}  {speed}  "
            f"ETA {format_duration(ev.eta_s)}  {ev.file}",
        )

    def draw_text(self, fraction: float, detail: str) -> None:
        width = 24
        filled = int(width * fraction)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}%  {detail}"
        cols = shutil.get_terminal_size((100, 20)).columns
        text = text[: max(20, cols - 1)]
        self.stream.write("\r" + text + " " * max(0, self.last_len - len(text)))
        self.stream.flush()
        self.last_len = len(text)

    def message(self, text: str) -> None:
        if self.last_len:
            self.stream.write("\r" + " " * self.last_len + "\r")
            self.last_len = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.last_len:
            self.stream.write("\n")
            self.stream.flush()
            self.last_len = 0


def _download(store: ModelStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo_id = repo_id_from_text(args.repo)
    line = _ProgressLine(err)
    quantizing: list[bool] = []  # set once the second phase began

    def on_event(ev: DownloadEvent) -> None:
        if isinstance(ev, DownloadStarted):
            resumed = f", resuming at {format_bytes(ev.done_bytes)}" if ev.done_bytes else ""
            line.message(f"Downloading {repo_id} ({len(ev.files)} files, {format_bytes(ev.total_bytes)}{resumed})")
        elif isinstance(ev, DownloadProgress):
            line.draw(ev)
        elif isinstance(ev, DownloadRetrying):
            line.message(f"{ev.reason}; retrying in {ev.delay_s:.0f}s (attempt {ev.attempt})")
        elif isinstance(ev, DownloadVerifying) and ev.file is None:
            line.end()
            line.message(f"Verifying the {args.quantize}-bit copy..." if quantizing else "Verifying...")
        elif isinstance(ev, DownloadQuantizing):
            if not quantizing:
                quantizing.append(True)
                line.end()
                line.message(f"Quantizing to {ev.bits} bits on this machine...")
            if ev.done_steps:
                line.draw_text(ev.fraction, ev.what)

    engine = None
    quantizer = None
    if args.quantize is not None:
        # Quantizing runs MLX: on an engine thread of this process, the one thread here that runs it.
        from ..chat.engine import Engine

        engine = Engine()
        engine.start()
        quantizer = engine.run_quantize
    try:
        handle = store.start_download(
            repo_id, revision=args.revision, on_event=on_event, quantize_bits=args.quantize, quantizer=quantizer
        )
        try:
            while not handle.done:
                handle.wait(0.2)
        except KeyboardInterrupt:
            handle.pause()
            line.message("Pausing... (what is done is kept; Ctrl-C again quits at once)")
            handle.wait()
    finally:
        if engine is not None:
            engine.shutdown()
    line.end()
    final = handle.result
    if isinstance(final, DownloadCompleted):
        m = final.model
        what = "Already installed" if final.already_installed else "Installed"
        print(
            f"{what}: {m.name} ({format_bytes(m.size_bytes)}, {m.quant_label}, {_params(m.param_count)} "
            f"parameters) at {m.path}",
            file=out,
        )
        return EXIT_OK
    if isinstance(final, DownloadCancelled):
        quant_arg = f" --quantize {args.quantize}" if args.quantize else ""
        print(
            f"Paused at {format_bytes(final.done_bytes)} of {format_bytes(final.total_bytes)}; run "
            f"`olmo3 models download {repo_id}{quant_arg}` again to resume.",
            file=err,
        )
        return EXIT_INTERRUPTED
    assert isinstance(final, DownloadFailed)
    hint = "; check your connection, then run the same command to resume" if final.code == "unreachable" else ""
    print(f"olmo3 models: download failed ({final.code}): {final.message}{hint}", file=err)
    return EXIT_FAILED


# -- delete / import ---------------------------------------------------------------------------------------------


def _delete(store: ModelStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    model = store.find(args.name)
    if model is None:
        raise ModelNotFoundError(f"no model named {args.name!r}; see `olmo3 models list`")
    if not args.yes and sys.stdin.isatty():
        where = "from the Hugging Face cache " if model.source == "hf_cache" else ""
        answer = input(f"Delete {model.name} {where}({format_bytes(model.size_bytes)}) at {model.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.", file=err)
            return EXIT_FAILED
    cache_dir = Path(args.cache_dir) if args.cache_dir else kv_cache_dir()
    freed = store.delete_model(model.name, source=model.source, also_delete=store.conversation_cache_deleter(cache_dir))
    print(f"Deleted {model.name}: {format_bytes(freed)} freed.", file=out)
    return EXIT_OK


def _import(store: ModelStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    line = _ProgressLine(err)
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or done >= total:
            last[0] = now
            line.draw(
                DownloadProgress(
                    repo_id="",
                    file="copying",
                    file_done=done,
                    file_total=total,
                    done_bytes=done,
                    total_bytes=total,
                    speed_bps=None,
                    eta_s=None,
                )
            )

    m = store.import_model(args.path, link=args.link, name=args.name, on_progress=on_progress)
    line.end()
    how = "Linked" if args.link else "Copied"
    print(
        f"{how} {m.name} ({format_bytes(m.size_bytes)}, {m.quant_label}, {_params(m.param_count)} parameters) "
        f"into {m.path}",
        file=out,
    )
    return EXIT_OK


__all__ = ["add_models_parser", "run_models"]
