"""``olmo3.model.tensors``: what a config implies must be exactly what ``Model`` creates, and the safetensors checks.

``expected_tensors`` is the MLX-free stand-in for building the model; the model store trusts it to verify every
download and import. These tests build the real MLX model (plain and quantized the way mlx_lm converts models)
for several configs and compare names, shapes and dtypes, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from olmo3.model.config import ModelArgs
from olmo3.model.tensors import (
    check_layout,
    check_tensors,
    expected_tensors,
    read_safetensors_header,
)
from olmo3.model.tiny import make_tiny_model, tiny_config

_MX_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "uint32": "U32", "uint8": "U8"}


def _model_tensors(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, safetensors dtype)} of the real MLX model for ``config`` (quantized as the config says)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.utils import quantize_model

    from olmo3.model.model import Model

    q = config.get("quantization")
    model = Model(ModelArgs.from_config({k: v for k, v in config.items() if k != "quantization"}))
    model.update(tree_map(lambda p: p.astype(mx.bfloat16), model.parameters()))
    if q is not None:
        model, _ = quantize_model(model, dict(config), group_size=q["group_size"], bits=q["bits"], mode=q["mode"])
    return {
        k: (tuple(v.shape), _MX_DTYPES[str(v.dtype).removeprefix("mlx.core.")])
        for k, v in tree_flatten(model.parameters())
    }


def _expected(config: dict) -> dict[str, tuple[tuple[int, ...], frozenset[str]]]:
    spec = expected_tensors(ModelArgs.from_config(config), config.get("quantization"))
    return {k: (s.shape, s.dtypes) for k, s in spec.items()}


CONFIGS = {
    "gqa": {},
    "mha": {"num_key_value_heads": 4},
    "mqa-explicit-head-dim": {"num_key_value_heads": 1, "head_dim": 32},
    "tied": {"tie_word_embeddings": True},
    "all-full-layers": {"num_hidden_layers": 2, "layer_types": ["full_attention"] * 2},
    "odd-intermediate": {"intermediate_size": 96},
}
QUANT = {
    "plain": None,
    "affine-4bit": {"group_size": 64, "bits": 4, "mode": "affine"},
    "affine-8bit": {"group_size": 64, "bits": 8, "mode": "affine"},
    "affine-3bit-g32": {"group_size": 32, "bits": 3, "mode": "affine"},
    "mxfp4": {"group_size": 32, "bits": 4, "mode": "mxfp4"},
}


@pytest.mark.parametrize("quant", list(QUANT), ids=list(QUANT))
@pytest.mark.parametrize("shape", list(CONFIGS), ids=list(CONFIGS))
def test_expected_tensors_are_the_models_parameters(shape, quant):
    config = tiny_config(384, **CONFIGS[shape])
    if QUANT[quant] is not None:
        config["quantization"] = dict(QUANT[quant])
    model = _model_tensors(config)
    expected = _expected(config)
    assert set(model) == set(expected)
    for name, (shape_, dtype) in model.items():
        assert shape_ == expected[name][0], name
        assert dtype in expected[name][1], (name, dtype, expected[name][1])
    q = QUANT[quant]
    if shape == "odd-intermediate" and q is not None and q["group_size"] == 64:  # 96 inputs: left unquantized
        assert "model.layers.0.mlp.down_proj.scales" not in expected
        assert expected["model.layers.0.mlp.down_proj.weight"][0] == (64, 96)


@pytest.mark.parametrize("bits", [4, 8])
def test_generated_quantized_folders_match_their_config(tmp_path, bits):
    """make_tiny_model(quant_bits=...) goes through mlx_lm's converter; its files must be what the config implies."""
    folder = make_tiny_model(tmp_path / f"q{bits}", quant_bits=bits, intermediate_size=96, tie_word_embeddings=True)
    config = json.loads((folder / "config.json").read_text())
    header = read_safetensors_header(folder / "model.safetensors")
    check_layout(header)
    check_tensors([header], ModelArgs.from_config(config), config["quantization"])
    embed = header.tensors["model.embed_tokens.weight"]
    assert embed.dtype == "U32" and embed.shape == (config["vocab_size"], 64 * bits // 32)
    assert header.tensors["model.layers.0.mlp.down_proj.weight"].dtype == "F32"  # 96 inputs: not quantized
    assert "lm_head.weight" not in header.tensors  # tied


def test_per_layer_quantization_entries_are_honoured():
    config = tiny_config(384)
    config["quantization"] = {
        "group_size": 64,
        "bits": 4,
        "mode": "affine",
        "lm_head": {"group_size": 32, "bits": 8},
        "model.layers.0.mlp.up_proj": False,
    }
    expected = _expected(config)
    assert expected["lm_head.weight"][0] == (384, 64 * 8 // 32) and expected["lm_head.scales"][0] == (384, 2)
    assert expected["model.layers.0.mlp.up_proj.weight"] == ((128, 64), frozenset({"F16", "BF16", "F32"}))
    assert "model.layers.0.mlp.up_proj.scales" not in expected
    with pytest.raises(ValueError, match="bits=9"):
        expected_tensors(ModelArgs.from_config(config), {"group_size": 64, "bits": 9})
    with pytest.raises(ValueError, match="unknown quantization mode"):
        expected_tensors(ModelArgs.from_config(config), {"bits": 4, "mode": "q4_k"})


# -- headers and layout ------------------------------------------------------------------------------------------


def _framed(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _write(path: Path, header: dict, data: bytes) -> Path:
    path.write_bytes(_framed(json.dumps(header).encode()) + data)
    return path


def test_layout_accepts_back_to_back_tensors(tmp_path):
    header = {
        "__metadata__": {"format": "mlx"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
    }
    h = read_safetensors_header(_write(tmp_path / "ok.safetensors", header, b"\0" * 22))
    check_layout(h)
    assert h.metadata == {"format": "mlx"} and h.tensors["b"].shape == (3,)


@pytest.mark.parametrize(
    "tensors, data, message",
    [
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 10, "truncated"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 20, "extra bytes at the end"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, 12, "needs 16 bytes"),
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            },
            16,
            "overlaps",
        ),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "leaves a gap"),
        ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}, 2, "unknown dtype 'Q4'"),
    ],
    ids=["truncated", "padded", "short-tensor", "overlap", "gap", "unknown-dtype"],
)
def test_layout_refuses_files_whose_bytes_do_not_add_up(tmp_path, tensors, data, message):
    path = _write(tmp_path / "bad.safetensors", tensors, b"\0" * data)
    with pytest.raises(ValueError, match=message) as info:
        check_layout(read_safetensors_header(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "does not fit"),
        (struct.pack("<Q", 10**12) + b"{}", "does not fit"),
        (struct.pack("<Q", 7) + b"[1,2,3]", "not a JSON object"),
        (struct.pack("<Q", 4) + b"{,,}", "not a valid safetensors file"),
        (struct.pack("<Q", 100_001) + b"[" * 100_000 + b"]", "nested 100000 levels deep"),
        (_framed(b'{"a": [1,2]}'), "has no dtype, shape"),
        (_framed(b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}'), "bad dtype or shape"),
        (_framed(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}'), "bad data_offsets"),
    ],
    ids=["empty", "huge-length", "array", "not-json", "deep", "not-an-entry", "negative-shape", "reversed-offsets"],
)
def test_bad_headers_are_refused_with_the_file_named(tmp_path, raw, message):
    path = tmp_path / "h.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as info:
        read_safetensors_header(path)
    assert str(path) in str(info.value)
