"""``olmo3 quantize``: convert a bf16/fp32 Olmo-3 folder to an MLX-quantized one (mlx-lm's quantizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .loader import load_model
from .modelinfo import ModelLoadError, read_config

COPY_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def quantize_folder(src: str | Path, dst: str | Path, *, bits: int = 4, group_size: int = 64) -> Path:
    """Write an MLX-quantized copy of ``src`` into ``dst`` (which must not exist or be empty)."""
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
    model, config = load_model(src)
    _, config = quantize_model(model, config, group_size=group_size, bits=bits)  # quantizes `model` in place
    config.pop("quantization_config", None)

    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp, model)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for name in COPY_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    return dst
