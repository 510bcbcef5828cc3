"""``olmo3 quantize``: convert a bf16/fp32 Olmo-3 folder to an MLX-quantized one (mlx-lm's quantizer).

The weights are read lazily and each decoder layer is quantized and evaluated in turn, so memory holds the
quantized model plus about one layer of the original, not the whole bf16 model (a 7B model is 14.6 GB in bf16,
4.1 GB at 4 bits). Between layers ``on_progress(done, total, what)`` reports and ``should_stop()`` is asked; when it
answers True, ``QuantizeCancelledError`` is raised and nothing is left behind.

Imports MLX: run it on the engine thread (the app: ``Engine.quantize``), or on the only thread of a process that
runs MLX nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .loader import load_model
from .modelinfo import ModelLoadError, read_config

__all__ = ["COPY_FILES", "QuantizeCancelledError", "QuantizeProgressFn", "quantize_folder"]

COPY_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

QuantizeProgressFn = Callable[[int, int, str], None]  # (steps done, steps in all, what is being done)


class QuantizeCancelledError(Exception):
    """``should_stop()`` answered True; the partial output was removed."""


def quantize_folder(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int = 4,
    group_size: int = 64,
    on_progress: QuantizeProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Write an MLX-quantized copy of ``src`` into ``dst`` (which must not exist or be empty)."""
    import mlx.core as mx
    from mlx_lm.utils import quantize_model, save_model

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if bits not in (4, 8):
        raise ValueError(f"--bits {bits}: use 4 or 8")
    if group_size not in (32, 64, 128):
        raise ValueError(f"--group-size {group_size}: use 32, 64 or 128")
    config, args = read_config(src)
    if config.get("quantization") or config.get("quantization_config"):
        raise ModelLoadError(f"{src / 'config.json'}: the model is already quantized")
    if args.hidden_size % group_size:
        raise ValueError(f"--group-size {group_size} must divide hidden_size {args.hidden_size}")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst}: exists and is not empty")

    layers = args.num_hidden_layers
    total = layers + 2  # each decoder layer, then the embeddings and head, then writing the files
    report = on_progress or (lambda done, total, what: None)
    stop = should_stop or (lambda: False)

    def check() -> None:
        if stop():
            raise QuantizeCancelledError(f"quantizing {src.name} was stopped")

    tmp = dst.with_name(dst.name + ".partial")
    try:
        report(0, total, "reading the weights")
        model, config = load_model(src, lazy=True)
        with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints the bits per weight; our caller reports
            _, config = quantize_model(model, config, group_size=group_size, bits=bits)  # lazy: nothing computed
        config.pop("quantization_config", None)
        for i, layer in enumerate(model.model.layers):
            check()
            mx.eval(layer.parameters())
            report(i + 1, total, f"layer {i + 1} of {layers}")
        check()
        mx.eval(model.parameters())  # the embeddings, the final norm and the head
        report(layers + 1, total, "writing the files")
        check()
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(tmp, model)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for name in COPY_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        check()
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
        report(total, total, "done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        mx.clear_cache()
    return dst
