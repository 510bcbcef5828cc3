"""Config forms, bad configs, bad folders, quantized folders, the tokenizer and stop tokens."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import pytest

import olmo3
from olmo3.model import model as olmo3_model
from olmo3.model.loader import ModelLoadError, inspect_model_dir, load_model
from olmo3.model.model import ModelArgs, YarnRoPE
from olmo3.model.tiny import make_tiny_model, tiny_config


def base_config(**kw):
    return tiny_config(384, **kw)


def test_both_config_forms_give_the_same_model_args():
    legacy = ModelArgs.from_config(base_config(config_format="legacy"))
    tf5 = ModelArgs.from_config(base_config(config_format="transformers5"))
    assert legacy.rope == tf5.rope
    assert legacy.rope["full_attention"]["rope_type"] == "yarn"
    assert legacy.rope["sliding_attention"]["rope_type"] == "default"


def test_defaults_explicit_head_dim_gqa_tied_and_bias():
    cfg = base_config(head_dim=32, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)
    del cfg["layer_types"]
    cfg["attention_bias"] = True
    a = ModelArgs.from_config(cfg)
    assert a.head_dim == 32 and a.num_key_value_heads == 1
    assert a.layer_types == ["sliding_attention"] * 3 + ["full_attention"]
    model = olmo3_model.Model(a)
    assert model.layers[0].self_attn.q_proj.weight.shape == (128, 64)
    assert "bias" in model.layers[0].self_attn.q_proj
    assert not hasattr(model, "lm_head")
    out = model(mx.array([[1, 2, 3]]))
    assert out.shape == (1, 3, 384)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c.pop("hidden_size"), "missing required key 'hidden_size'"),
        (lambda c: c.update(model_type="llama"), "model_type='llama'"),
        (lambda c: c.update(layer_types=["full_attention"] * 3), "layer_types=3"),
        (lambda c: c.update(layer_types=["sliding_attention"] * 3 + ["local"]), "layer_types[3]='local'"),
        (lambda c: c.update(sliding_window=0), "sliding_window=0"),
        (lambda c: c.update(sliding_window=-5), "sliding_window=-5"),
        (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads=3"),
        (lambda c: c.update(num_attention_heads=5), "num_attention_heads=5"),
        (lambda c: c.update(hidden_size="64"), "hidden_size='64'"),
        (lambda c: c["rope_scaling"].update(rope_type="longrope"), "longrope"),
        (lambda c: c["rope_scaling"].pop("factor"), "factor"),
    ],
)
def test_bad_configs_name_the_key_and_value(change, message):
    cfg = base_config()
    change(cfg)
    with pytest.raises(ValueError) as e:
        ModelArgs.from_config(cfg)
    assert message in str(e.value)


def test_yarn_matches_plain_rope_when_factor_is_one():
    x = mx.random.normal((1, 2, 5, 16))
    p = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 1.0, "original_max_position_embeddings": 64}
    plain = olmo3_model.nn.RoPE(16, base=10000.0)
    assert mx.allclose(YarnRoPE(16, p)(x, offset=3), plain(x, offset=3), atol=1e-5)


@pytest.fixture
def folder(tmp_path, tiny_model_dir):
    dest = tmp_path / "m"
    shutil.copytree(tiny_model_dir, dest)
    return dest


def _expect(folder, message):
    with pytest.raises(ModelLoadError) as e:
        olmo3.load(folder)
    assert message in str(e.value)
    return str(e.value)


def test_bad_folders_give_one_clear_error(folder, tmp_path):
    _expect(tmp_path / "nowhere", "not a folder")
    (folder / "config.json").write_text("{not json")
    msg = _expect(folder, "not valid JSON")
    assert str(folder / "config.json") in msg


def test_wrong_model_type(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    _expect(folder, "not an Olmo-3 model")


def test_missing_weights_and_pickles_refused(folder):
    (folder / "model.safetensors").unlink()
    _expect(folder, "no *.safetensors weight files")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    _expect(folder, "safetensors only")


def test_missing_shard(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _expect(folder, "model-00002-of-00002.safetensors: weight shard listed")


def test_shape_mismatch(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    _expect(folder, "has shape")


def test_missing_tokenizer(folder):
    (folder / "tokenizer.json").unlink()
    _expect(folder, "no tokenizer")


def test_truncated_weights(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    _expect(folder, "model.safetensors")


def test_missing_template(folder):
    (folder / "chat_template.jinja").unlink()
    _expect(folder, "no chat template")


def test_stop_tokens_always_include_im_end(folder):
    (folder / "generation_config.json").unlink()  # config.json has only <|endoftext|>
    _model, tok = olmo3.load(folder)
    assert tok.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids
    assert tok.convert_tokens_to_ids("<|endoftext|>") in tok.eos_token_ids


def test_sharded_and_quantized_folders_load(tmp_path, tiny_model_dir):
    from olmo3.model.quantize import quantize_folder

    q = quantize_folder(tiny_model_dir, tmp_path / "q8", bits=8)
    assert (q / "model.safetensors.index.json").exists()
    info = inspect_model_dir(q)
    assert info.quantization["bits"] == 8 and info.weight_bytes < inspect_model_dir(tiny_model_dir).weight_bytes
    ref, _ = load_model(tiny_model_dir)
    model, _tok = olmo3.load(q)
    ids = mx.array([[5, 6, 7, 8, 9, 10]])
    diff = mx.abs(model(ids) - ref(ids)).max().item()
    assert 0 < diff < 0.5  # quantized, and close to the original
    with pytest.raises(ModelLoadError, match="already quantized"):
        quantize_folder(q, tmp_path / "again", bits=4)
    with pytest.raises(FileExistsError):
        quantize_folder(tiny_model_dir, q, bits=4)


def test_mlx_community_style_4bit_and_transformers5_think(tmp_path):
    folder = make_tiny_model(tmp_path / "t4", quant_bits=4, think=True, config_format="transformers5")
    model, tok = olmo3.load(folder)
    assert model.info.is_think and model.info.quantization["bits"] == 4
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n<think>")
    assert model(mx.array([[1, 2, 3]])).shape == (1, 3, model.args.vocab_size)


def test_info_numbers(tiny_model_dir):
    info = inspect_model_dir(tiny_model_dir)
    assert info.num_layers == 4 and info.num_full_layers == 1 and info.num_sliding_layers == 3
    # fp32 weights: 2 (k and v) * 2 kv heads * 16 dims * 4 bytes per layer per token
    assert info.kv_bytes_per_token_full == 256 and info.kv_bytes_per_token_sliding == 768
    assert info.kv_bytes(1000) == 256 * 1000 + 768 * 16
    assert info.param_count > 0 and info.weight_bytes == info.param_count * 4


def test_template_renders_olmo3_quirks(tiny):
    _, tok = tiny
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful function-calling AI assistant.")
    assert "<|im_start|>assistant\nb<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\nd<|endoftext|>")
