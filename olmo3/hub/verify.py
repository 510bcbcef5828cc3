"""Checking model files before a model is called installed: hashes, safetensors structure, tensors vs config.

No MLX and no weights in memory: the download and import threads run this (MLX runs only on the engine
thread). :func:`verify_model_folder` is the one check every way in goes through (download, import, a model
found in the Hugging Face cache):

1. ``olmo3.model.modelinfo.inspect_model_dir``: config.json is a valid Olmo-3 config, the weight files and
   tokenizer exist (the loader runs the same check first);
2. every ``*.safetensors`` file's header parses and its tensors' bytes fill the file exactly
   (``olmo3.model.tensors.check_layout``): truncated and padded files are refused;
3. every tensor's name, shape and dtype (packed uint32 weights, scales and biases where the config says the
   model is quantized) is what config.json implies (``olmo3.model.tensors.check_tensors``), none missing, none
   extra.

Each failure raises ``ModelLoadError`` naming the file and the tensor.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ..model.modelinfo import ModelInfo, ModelLoadError, _quantization, inspect_model_dir, read_config, weight_files
from ..model.tensors import SafetensorsHeader, check_layout, check_tensors, read_safetensors_header
from .events import StopRequestedError

__all__ = ["check_safetensors_file", "hash_file", "safetensors_metadata", "verify_model_folder"]

HASH_CHUNK_BYTES = 8 * 1024 * 1024


def hash_file(path: Path, algo: str, *, git_blob: bool = False, stop: threading.Event | None = None) -> str:
    """Hex digest of a file (``git_blob``: git's blob sha1, ``blob <size>\\0`` + content); stops when ``stop`` is
    set (raises StopRequestedError)."""
    h = hashlib.new(algo)
    if git_blob:
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            if stop is not None and stop.is_set():
                raise StopRequestedError()
            h.update(chunk)
    return h.hexdigest()


def check_safetensors_file(path: Path) -> SafetensorsHeader:
    """Structural check without reading the weights: the header parses and the tensors' bytes fill the file
    exactly (truncated and padded files fail). Returns the header; raises ValueError naming the file."""
    header = read_safetensors_header(path)
    check_layout(header)
    return header


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only); empty if unreadable."""
    try:
        meta = read_safetensors_header(path).metadata
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in meta.items()}


def verify_model_folder(folder: Path) -> ModelInfo:
    """All three checks of the module docstring; returns the folder's ModelInfo or raises ModelLoadError."""
    info = inspect_model_dir(folder)
    config, args = read_config(folder)
    shards = weight_files(folder)  # the index's shards, or every *.safetensors file
    headers: dict[Path, SafetensorsHeader] = {}
    try:
        for p in sorted({*folder.glob("*.safetensors"), *shards}):
            headers[p] = check_safetensors_file(p)
        check_tensors([headers[p] for p in shards], args, _quantization(config))
    except ValueError as e:
        raise ModelLoadError(str(e) if str(e).startswith(str(folder)) else f"{folder}: {e}") from e
    return info
