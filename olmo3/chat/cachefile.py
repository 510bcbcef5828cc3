"""Checking a spilled conversation cache file before mlx-lm reads it (no MLX here).

The engine writes these files itself, but they live in a folder anyone can write to, and mlx-lm's
``load_prompt_cache`` trusts them completely: it rebuilds lists from the keys' numbers (a key such as
``2.999999999.0`` makes it build a list of a billion items), looks classes up by the names in the metadata, and
reads what the header says. :func:`check_cache_file` accepts only what ``save_prompt_cache`` writes for our
caches: a safetensors file whose tensors fill it exactly (:func:`olmo3.model.tensors.check_layout`), one entry
per layer of the model in order, our class names, and keys whose numbers stay within the file's own counts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from ..model.tensors import check_layout, read_safetensors_header

__all__ = ["CACHE_CLASSES", "check_cache_file"]

CACHE_CLASSES: Final = frozenset({"KVCache", "RotatingKVCache", "QuantizedKVCache"})
MAX_STATE_ARRAYS: Final = 16  # arrays per layer's state (a quantized cache has 6: keys, values and their scales/biases)
_SCALAR_KINDS: Final = frozenset({"scalar", "string", "none"})
_TENSOR_KEY = re.compile(r"(\d{1,6})\.(\d{1,2})")
_META_KEY = re.compile(r"0\.[A-Za-z_][A-Za-z0-9_]{0,63}")
_CLASS_KEY = re.compile(r"1\.(\d{1,6})")
_SCALAR_KEY = re.compile(r"2\.(\d{1,7})\.([01])")


def check_cache_file(path: Path, layers: int) -> None:
    """Raise ``ValueError`` (naming the file) unless ``path`` is a cache file of a ``layers``-layer model as the
    engine writes them. Reads the header only."""
    header = read_safetensors_header(path)
    check_layout(header)
    tensors = header.tensors
    for name in tensors:
        m = _TENSOR_KEY.fullmatch(name)
        if m is None or int(m.group(1)) >= layers or int(m.group(2)) >= MAX_STATE_ARRAYS:
            raise ValueError(f"{path}: unexpected tensor {name[:80]!r} for a {layers}-layer cache")
    classes: dict[int, str] = {}
    scalars: dict[int, dict[str, str]] = {}
    for key, value in header.metadata.items():
        if not isinstance(value, str) or len(value) > 256:
            raise ValueError(f"{path}: metadata {key[:80]!r} is not a short string")
        if key == "2.0" or _META_KEY.fullmatch(key):
            continue
        if m := _CLASS_KEY.fullmatch(key):
            if value not in CACHE_CLASSES:
                raise ValueError(f"{path}: unknown cache class {value[:80]!r}")
            classes[int(m.group(1))] = value
        elif m := _SCALAR_KEY.fullmatch(key):
            scalars.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            raise ValueError(f"{path}: unexpected metadata key {key[:80]!r}")
    if sorted(classes) != list(range(layers)):
        raise ValueError(f"{path}: {len(classes)} cache classes for a {layers}-layer model")
    if sorted(scalars) != list(range(1, len(scalars) + 1)):
        raise ValueError(f"{path}: the scalar entries are not numbered 1 to {len(scalars)}")
    for entry in scalars.values():
        if entry.get("0") not in tensors or entry.get("1") not in _SCALAR_KINDS:
            raise ValueError(f"{path}: a scalar entry names no tensor of the file")
