"""Options every command that loads a model shares: ``--model`` (a folder or an installed model's name),
``--memory-limit``, ``--context`` and ``--load-anyway``, and the memory check they drive.

``--model`` takes a folder, or any name ``olmo3 models list`` prints (resolved through :class:`olmo3.hub.ModelStore`:
our models folder, then the Hugging Face cache). Before a command reads any weights, weights + KV cache at the
context + runtime are checked against the memory budget (:mod:`olmo3.fit`); a model that won't fit stops the command
with one line on stderr and exit 2 (``--load-anyway`` loads it all the same).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..units import parse_bytes

if TYPE_CHECKING:
    from ..fit import LoadPlan

__all__ = ["add_model_options", "check_fits", "memory_limit", "model_path", "resolve_model"]

MODEL_HELP = "a model folder, or a name `olmo3 models list` prints (e.g. mlx-community/Olmo-3-7B-Instruct-4bit)"


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tokens(text: str) -> int:
    try:
        n = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the context must be at least 1 token")
    return n


def add_model_options(p: argparse.ArgumentParser, *, required: bool = True, loads: bool = True) -> None:
    """``--model``; with ``loads``, also ``--memory-limit``, ``--context`` and ``--load-anyway``."""
    p.add_argument("--model", required=required, metavar="MODEL", help=MODEL_HELP)
    if not loads:
        return
    p.add_argument(
        "--memory-limit",
        type=_size,
        metavar="BYTES",
        help="use at most this much memory for the model and its conversations, e.g. 8G or 512M "
        "(K/M/G are powers of 1024; default: 75%% of RAM, or the GPU working set macOS recommends)",
    )
    p.add_argument(
        "--context",
        type=_tokens,
        metavar="TOKENS",
        help="context length (default: the model's maximum or what fits in memory, whichever is smaller)",
    )
    p.add_argument("--load-anyway", action="store_true", help="load the model even if it won't fit in memory")


def resolve_model(text: str, models_dir: str | Path | None = None) -> Path:
    """A folder as given, else the installed model of that name (in ``models_dir``, default the app's, or the
    Hugging Face cache); ``ValueError`` (one line) if neither."""
    folder = Path(text).expanduser()
    if folder.is_dir():
        return folder
    from ..hub import ModelStore

    try:
        model = ModelStore(models_dir).find(text)
    except ValueError:  # not even a valid name
        model = None
    if model is not None and model.installed:
        return Path(model.path)
    if model is not None:
        raise ValueError(f"{model.name} is not completely downloaded; run `olmo3 models download {model.name}`")
    raise ValueError(f"{text}: no such folder or installed model; see `olmo3 models list`")


def model_path(args: argparse.Namespace) -> Path | None:
    return resolve_model(args.model) if getattr(args, "model", None) else None


def memory_limit(args: argparse.Namespace) -> int | None:
    return getattr(args, "memory_limit", None)


def check_fits(args: argparse.Namespace, folder: Path) -> LoadPlan:
    """The memory check before loading ``folder`` (raises ``olmo3.fit.ModelWontFitError``, a ``ValueError``)."""
    from ..fit import plan_load
    from ..memory import memory_budget
    from ..model.modelinfo import inspect_model_dir

    return plan_load(
        inspect_model_dir(folder),
        context_tokens=getattr(args, "context", None),
        budget=memory_budget(memory_limit(args)),
        force=bool(getattr(args, "load_anyway", False)),
    )
