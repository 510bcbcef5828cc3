"""Read one rank's slices of a checkpoint straight from its safetensors files, never the whole model.

A safetensors file is an 8-byte length, a JSON header naming each tensor's dtype, shape and byte range, then the
tensors back to back in row-major order (:mod:`olmo3.model.tensors` parses the header without MLX). So a rank
reads exactly its bytes:

* a split along axis 0 (whole rows: q/k/v, gate/up, the norms' per-head weights) is one contiguous range;
* a split along the last axis (whole columns: o and down) is one short range per row;
* a weight every rank holds is read whole.

``mx.load`` would map each file lazily but read a whole tensor when any part of it is used, so a rank would hold
(briefly) every full projection; here nothing outside the rank's slices is read. ``bytes_read`` counts what was
read, for the test that checks it.

Imports MLX: run it on the MLX thread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..model.tensors import DTYPE_BYTES, SafetensorsHeader, TensorEntry, read_safetensors_header

__all__ = ["SliceReader"]

_NUMPY = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # read as raw 16-bit words, then viewed as bfloat16 in MLX (numpy has no bfloat16)
    "U32": np.uint32,
    "I32": np.int32,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "I64": np.int64,
    "U64": np.uint64,
    "F64": np.float64,
}


class SliceReader:
    """Reads tensors, or one rank's slice of them, from a checkpoint's safetensors files."""

    def __init__(self, files: list[Path]):
        self._where: dict[str, tuple[SafetensorsHeader, TensorEntry]] = {}
        for f in files:
            header = read_safetensors_header(f)
            for name, entry in header.tensors.items():
                self._where[name] = (header, entry)
        self.bytes_read = 0

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name][1].shape

    def dtype(self, name: str) -> str:
        return self._where[name][1].dtype

    def sizes(self) -> dict[str, int]:
        """Bytes of every tensor, by name (what the pipeline balances and the fit counts)."""
        return {name: e.end - e.start for name, (_, e) in self._where.items()}

    def read(self, name: str, axis: int | None = None, part: int = 0, parts: int = 1) -> mx.array:
        """Tensor ``name``, or its ``part``-th of ``parts`` equal slices along ``axis`` (0 or -1)."""
        header, e = self._where[name]
        if e.dtype not in _NUMPY:
            raise ValueError(f"{header.path}: tensor {name!r} has dtype {e.dtype}, which cannot be sliced here")
        item = DTYPE_BYTES[e.dtype]
        base = 8 + header.header_bytes + e.start
        shape = list(e.shape)
        if axis is not None and parts > 1:
            axis = axis % len(shape)
            if shape[axis] % parts:
                raise ValueError(f"{name}: axis {axis} of {tuple(shape)} does not split into {parts} equal parts")
        else:
            axis, parts = None, 1
        with open(header.path, "rb") as f:
            fd = f.fileno()
            if axis is None:
                buf = self._pread(fd, base, e.end - e.start)
            elif axis == 0:
                rows = shape[0] // parts
                row_bytes = math.prod(shape[1:]) * item
                buf = self._pread(fd, base + part * rows * row_bytes, rows * row_bytes)
                shape[0] = rows
            else:
                # Columns of the last axis: per leading index, one contiguous run of ``cols`` values.
                cols = shape[axis] // parts
                leading = math.prod(shape[:axis])
                row_bytes, run = shape[axis] * item, cols * item
                out = bytearray(leading * run)
                view = memoryview(out)
                for r in range(leading):
                    view[r * run : (r + 1) * run] = self._pread(fd, base + r * row_bytes + part * run, run)
                buf = bytes(out)
                shape[axis] = cols
        array = np.frombuffer(buf, dtype=_NUMPY[e.dtype]).reshape(shape)
        x = mx.array(array)
        return x.view(mx.bfloat16) if e.dtype == "BF16" else x

    def _pread(self, fd: int, offset: int, n: int) -> bytes:
        chunks, done = [], 0
        while done < n:
            chunk = os.pread(fd, n - done, offset + done)
            if not chunk:
                raise ValueError(f"unexpected end of file at byte {offset + done}")
            chunks.append(chunk)
            done += len(chunk)
        self.bytes_read += n
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]
