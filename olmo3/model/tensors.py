"""Which tensors an Olmo-3 checkpoint holds, and whether its safetensors files hold exactly those: without MLX.

The model store verifies every download and import with this before it calls the model installed, and it
must not run MLX there (MLX runs only on the engine thread) nor read gigabytes of weights. Three steps:

1. :func:`read_safetensors_header` parses a file's header (an 8-byte length, then JSON naming each tensor's
   dtype, shape and byte range) and :func:`check_layout` checks that the byte ranges follow each other from the
   start of the data, each as long as its dtype × shape needs, and that the file ends exactly where the last
   one does: a truncated, padded or overlapping file is refused without reading the weights.
2. :func:`expected_tensors` says what ``config.json`` implies: the name, shape and allowed dtypes of every
   parameter ``olmo3.model.model.Model`` has for those hyper-parameters, after MLX quantization where the
   config asks for it. ``tests/hub/test_tensors.py`` compares it with ``tree_flatten(Model(args).parameters())``
   for several configs, so the two cannot drift apart.
3. :func:`check_tensors` compares the two, naming the file and the tensor that differ.

MLX quantizes ``Linear`` and ``Embedding`` layers (as ``mlx_lm`` converts models: every such layer whose input
width the group size divides, unless the config's ``quantization`` block has an entry for the layer's path).
A quantized layer holds ``weight`` packed into uint32 (``[out, in * bits / 32]``), ``scales`` (and, in the
``affine`` mode, ``biases``) with one value per group (``[out, in / group_size]``), and its ``bias`` if any.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeGuard

from ..fileio import loads_json
from .config import ModelArgs

__all__ = [
    "DTYPE_BYTES",
    "FLOAT_DTYPES",
    "SafetensorsHeader",
    "TensorEntry",
    "TensorSpec",
    "check_layout",
    "check_tensors",
    "dropped_on_load",
    "expected_tensors",
    "read_safetensors_header",
]

MAX_HEADER_BYTES: Final = 100_000_000  # the safetensors library's own limit
FLOAT_DTYPES: Final = frozenset({"F16", "BF16", "F32"})
PACKED_DTYPE: Final = "U32"
DTYPE_BYTES: Final[Mapping[str, int]] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "C64": 8,
}
# mlx_lm's defaults per quantization mode: (group_size, bits).
MODE_DEFAULTS: Final[Mapping[str, tuple[int, int]]] = {
    "affine": (64, 4),
    "mxfp4": (32, 4),
    "nvfp4": (16, 4),
    "mxfp8": (32, 8),
}
_TENSORS_PER_LAYER: Final = 11  # q, k, v, o, q_norm, k_norm, gate, up, down and two norms (more if quantized)


# ---------------------------------------------------------------------------------------------------------------
# What the config implies
# ---------------------------------------------------------------------------------------------------------------


class TensorSpec(NamedTuple):
    """One expected tensor: its shape and the dtypes it may be stored in."""

    shape: tuple[int, ...]
    dtypes: frozenset[str]


@dataclass(frozen=True)
class _Quant:
    group_size: int
    bits: int
    mode: str


def _quant_params(block: Mapping[str, Any], where: str) -> _Quant:
    mode = block.get("mode") or "affine"
    if mode not in MODE_DEFAULTS:
        raise ValueError(f"{where}: unknown quantization mode {mode!r} (expected one of {', '.join(MODE_DEFAULTS)})")
    default_group, default_bits = MODE_DEFAULTS[mode]
    group_size, bits = block.get("group_size") or default_group, block.get("bits") or default_bits
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size <= 0:
        raise ValueError(f"{where}: group_size={group_size!r} must be a positive integer")
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"{where}: bits={bits!r} must be an integer from 1 to 8")
    return _Quant(group_size, bits, str(mode))


def _layer_quant(path: str, in_dim: int, quantization: Mapping[str, Any] | None) -> _Quant | None:
    """How the layer at ``path`` is quantized (None: kept in floating point), as mlx_lm decides it."""
    if not quantization:
        return None
    override = quantization.get(path)
    if override is False:
        return None
    if isinstance(override, Mapping):
        return _quant_params(override, f"config.json quantization[{path!r}]")
    q = _quant_params(quantization, "config.json quantization")
    return q if in_dim % q.group_size == 0 else None


def _matrix(
    out: dict[str, TensorSpec], path: str, rows: int, cols: int, quantization: Mapping[str, Any] | None
) -> None:
    """A ``Linear`` (``rows`` = output width, ``cols`` = input width) or ``Embedding`` (rows = vocabulary)."""
    q = _layer_quant(path, cols, quantization)
    if q is None:
        out[f"{path}.weight"] = TensorSpec((rows, cols), FLOAT_DTYPES)
        return
    if cols % q.group_size or (cols * q.bits) % 32:
        raise ValueError(
            f"config.json: {path} (input width {cols}) cannot be quantized with group_size={q.group_size}, "
            f"bits={q.bits}"
        )
    out[f"{path}.weight"] = TensorSpec((rows, cols * q.bits // 32), frozenset({PACKED_DTYPE}))
    groups = (rows, cols // q.group_size)
    if q.mode == "affine":
        out[f"{path}.scales"] = TensorSpec(groups, FLOAT_DTYPES)
        out[f"{path}.biases"] = TensorSpec(groups, FLOAT_DTYPES)
    else:  # the microscaling formats store one 8-bit exponent per group and no biases
        out[f"{path}.scales"] = TensorSpec(groups, frozenset({"U8"}))


def expected_tensors(args: ModelArgs, quantization: Mapping[str, Any] | None = None) -> dict[str, TensorSpec]:
    """Every parameter of ``Model(args)`` (after quantization per ``quantization``), by checkpoint name.

    ``quantization`` is ``config.json``'s ``quantization`` block (``{"group_size": 64, "bits": 4, "mode":
    "affine", <layer path>: {...} | false}``) or None. Raises ValueError for a block MLX could not apply.
    """
    e, v = args.hidden_size, args.vocab_size
    q_width = args.num_attention_heads * args.head_dim
    kv_width = args.num_key_value_heads * args.head_dim
    norm = FLOAT_DTYPES
    out: dict[str, TensorSpec] = {}
    _matrix(out, "model.embed_tokens", v, e, quantization)
    for i in range(args.num_hidden_layers):
        layer = f"model.layers.{i}"
        for proj, rows, cols in (
            ("q_proj", q_width, e),
            ("k_proj", kv_width, e),
            ("v_proj", kv_width, e),
            ("o_proj", e, q_width),
        ):
            _matrix(out, f"{layer}.self_attn.{proj}", rows, cols, quantization)
            if args.attention_bias:
                out[f"{layer}.self_attn.{proj}.bias"] = TensorSpec((rows,), norm)
        out[f"{layer}.self_attn.q_norm.weight"] = TensorSpec((q_width,), norm)
        out[f"{layer}.self_attn.k_norm.weight"] = TensorSpec((kv_width,), norm)
        _matrix(out, f"{layer}.mlp.gate_proj", args.intermediate_size, e, quantization)
        _matrix(out, f"{layer}.mlp.up_proj", args.intermediate_size, e, quantization)
        _matrix(out, f"{layer}.mlp.down_proj", e, args.intermediate_size, quantization)
        out[f"{layer}.post_attention_layernorm.weight"] = TensorSpec((e,), norm)
        out[f"{layer}.post_feedforward_layernorm.weight"] = TensorSpec((e,), norm)
    out["model.norm.weight"] = TensorSpec((e,), norm)
    if not args.tie_word_embeddings:
        _matrix(out, "lm_head", v, e, quantization)
    return out


def dropped_on_load(name: str, args: ModelArgs) -> bool:
    """Checkpoint entries the model does not use and the loader drops (``Model.sanitize``): RoPE tables, and
    the head of a model with tied embeddings."""
    return "rotary_emb.inv_freq" in name or (args.tie_word_embeddings and name == "lm_head.weight")


# ---------------------------------------------------------------------------------------------------------------
# What the files hold
# ---------------------------------------------------------------------------------------------------------------


class TensorEntry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets into the data section (after the 8-byte length and the header)
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    file_size: int
    header_bytes: int  # the JSON header's length; the data starts at 8 + header_bytes
    tensors: dict[str, TensorEntry]
    metadata: dict[str, Any]


def _nonneg_ints(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Parse a safetensors file's header (not its data). Raises ValueError naming the file and the problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = loads_json(f.read(n), max_depth=8, what="the header")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a valid safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None)
    tensors: dict[str, TensorEntry] = {}
    for name, meta in header.items():
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: tensor {name!r} has no dtype, shape and data_offsets")
        dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
        if not isinstance(dtype, str) or not _nonneg_ints(shape):
            raise ValueError(f"{path}: tensor {name!r} has a bad dtype or shape ({dtype!r}, {shape!r})")
        if not _nonneg_ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise ValueError(f"{path}: tensor {name!r} has bad data_offsets {offsets!r}")
        tensors[name] = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    return SafetensorsHeader(path, size, n, tensors, metadata if isinstance(metadata, dict) else {})


def check_layout(header: SafetensorsHeader) -> None:
    """Every tensor's bytes lie inside the file, back to back from the start of the data, each exactly as long
    as its dtype and shape need, and the file ends where the last tensor ends. Raises ValueError."""
    path = header.path
    position = 0
    for name, t in sorted(header.tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if t.dtype not in DTYPE_BYTES:
            raise ValueError(f"{path}: tensor {name!r} has an unknown dtype {t.dtype!r}")
        if t.start != position:
            what = "overlaps the tensor before it" if t.start < position else "leaves a gap before it"
            raise ValueError(f"{path}: tensor {name!r} starts at byte {t.start} and {what} (which ends at {position})")
        needed = math.prod(t.shape) * DTYPE_BYTES[t.dtype]
        if t.end - t.start != needed:
            raise ValueError(
                f"{path}: tensor {name!r} ({t.dtype} {list(t.shape)}) needs {needed:,} bytes "
                f"but its data_offsets span {t.end - t.start:,}"
            )
        position = t.end
    expected_size = 8 + header.header_bytes + position
    if expected_size != header.file_size:
        raise ValueError(
            f"{path}: the tensors end at byte {expected_size:,} but the file has {header.file_size:,} bytes"
            + (" (truncated?)" if header.file_size < expected_size else " (extra bytes at the end)")
        )


def _list(names: Iterable[str], limit: int = 5) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


def check_tensors(
    headers: Iterable[SafetensorsHeader], args: ModelArgs, quantization: Mapping[str, Any] | None
) -> None:
    """Compare the tensors of a checkpoint's files with what its config implies (:func:`expected_tensors`).

    Raises ValueError naming the file and tensor: a tensor twice, a missing or unexpected tensor, or one whose
    shape or dtype is not what the config says.
    """
    found: dict[str, tuple[SafetensorsHeader, TensorEntry]] = {}
    for h in headers:
        for name, t in h.tensors.items():
            if name in found:
                raise ValueError(f"tensor {name!r} is in both {found[name][0].path.name} and {h.path.name}")
            found[name] = (h, t)
    # Every layer has at least this many tensors: a config claiming more layers than the files could hold is
    # refused before a table of its (possibly billions of) tensors is built.
    if args.num_hidden_layers * _TENSORS_PER_LAYER > len(found):
        first = next(i for i in range(args.num_hidden_layers) if f"model.layers.{i}.mlp.down_proj.weight" not in found)
        raise ValueError(
            f"config.json has {args.num_hidden_layers:,} layers but the weight files hold only {len(found):,} "
            f"tensors; missing from model.layers.{first} on"
        )
    expected = expected_tensors(args, quantization)
    unexpected: dict[Path, list[str]] = {}
    for name, (h, t) in found.items():
        if dropped_on_load(name, args):
            continue
        spec = expected.get(name)
        if spec is None:
            unexpected.setdefault(h.path, []).append(name)
        elif t.shape != spec.shape:
            raise ValueError(
                f"{h.path}: tensor {name!r} has shape {list(t.shape)}, config.json implies {list(spec.shape)}"
            )
        elif t.dtype not in spec.dtypes:
            raise ValueError(
                f"{h.path}: tensor {name!r} is {t.dtype}, config.json implies {' or '.join(sorted(spec.dtypes))}"
            )
    for path, names in unexpected.items():
        raise ValueError(f"{path}: tensors config.json does not imply: {_list(names)}")
    missing = set(expected) - set(found)
    if missing:
        raise ValueError(f"tensors missing from the weight files: {_list(missing)}")
