"""Generate tiny, complete Olmo-3 model folders: for tests, benchmarks and the app's ``--self-test``.

A folder made here is loaded by exactly the code that loads a real checkpoint: random weights in
``model.safetensors`` (or MLX-quantized), ``config.json`` in either config form, ``generation_config.json``,
and a real ``tokenizers`` byte-level BPE tokenizer carrying Olmo-3's special tokens with an Olmo-3-style
ChatML template (default system prompt when none is given; the last assistant message ends with
``eos_token``, earlier ones with ``<|im_end|>\\n``; the Think variant ends the generation prompt with
``<think>``). Token ids differ from the real 100,278-entry vocabulary; nothing in the app hard-codes them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map

# Olmo-3's added tokens (the Dolma 2 tokenizer's): control tokens, then the tool tags and PII placeholders, which
# are added but not "special". Hostile-input tests type every one of them into messages.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|pad|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
    *(f"<|extra_id_{i}|>" for i in range(7)),
]
ADDED_TOKENS = [
    "<functions>",
    "</functions>",
    "<function_calls>",
    "</function_calls>",
    "|||PHONE_NUMBER|||",
    "|||EMAIL_ADDRESS|||",
    "|||IP_ADDRESS|||",
]

INSTRUCT_DEFAULT_SYSTEM = (
    "You are a helpful function-calling AI assistant. You do not currently have access to any functions. "
    "<functions></functions>"
)
INSTRUCT_TOOLS_SYSTEM = (
    "You are a helpful function-calling AI assistant. You are provided with function signatures within "
    "<functions></functions> XML tags. You may call one or more functions to assist with the user query. Output any "
    "function calls within <function_calls></function_calls> XML tags. Do not make assumptions about what values to "
    "plug into functions."
)
THINK_DEFAULT_SYSTEM = "You are a helpful AI assistant."


def chat_template(*, think: bool = False) -> str:
    """An Olmo-3-style ChatML template with the quirks of the real ones (see the module docstring).

    Like Olmo-3.1 Instruct's, the Instruct variant lists ``tools`` as JSON in ``<functions>`` (in the default system
    turn, or after a given system prompt), writes an assistant's ``function_calls`` between ``<function_calls>``
    tags and tool results as ``environment`` turns. The Think variant, like the real Think templates, shows no tools.
    """
    default = THINK_DEFAULT_SYSTEM if think else INSTRUCT_DEFAULT_SYSTEM
    gen_prompt = "<|im_start|>assistant\n<think>" if think else "<|im_start|>assistant\n"
    has_tools = "tools is defined and tools is not none"
    if think:
        default_system = "{{- '<|im_start|>system\\n" + default + "<|im_end|>\\n' -}}"
        system_tools = ""
    else:
        default_system = (
            "{%- if not (" + has_tools + ") or (tools | length) == 0 -%}"
            "{{- '<|im_start|>system\\n" + default + "<|im_end|>\\n' -}}"
            "{%- else -%}{{- '<|im_start|>system\\n" + INSTRUCT_TOOLS_SYSTEM + "<functions>' -}}"
            "{{- tools | tojson -}}{{- '</functions><|im_end|>\\n' -}}{%- endif -%}"
        )
        system_tools = (
            "{%- if " + has_tools + " -%}{{- '<functions>' + (tools | tojson) + '</functions>' -}}{%- endif -%}"
        )
    return (
        "{%- set has_system = messages|selectattr('role', 'equalto', 'system')|list|length > 0 -%}"
        "{%- if not has_system -%}" + default_system + "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{{- '<|im_start|>system\\n' + message['content'] -}}"
        + system_tools
        + "{{- '<|im_end|>\\n' -}}"
        "{%- elif message['role'] == 'user' -%}{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}"
        "{%- if message.get('content', none) is not none -%}{{- message['content'] -}}{%- endif -%}"
        "{%- if message.get('function_calls', none) is not none -%}"
        "{{- '<function_calls>' + message['function_calls'] + '</function_calls>' -}}{%- endif -%}"
        "{%- if not loop.last -%}{{- '<|im_end|>\\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}"
        "{%- elif message['role'] == 'environment' -%}"
        "{{- '<|im_start|>environment\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- if loop.last and add_generation_prompt -%}{{- '" + gen_prompt.replace("\n", "\\n") + "' -}}{%- endif -%}"
        "{%- endfor -%}"
    )


_CORPUS = """
The quick brown fox jumps over the lazy dog. Olmo is a fully open language model built by Ai2.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```python
print("hello world")
```
The cache keeps keys and values of every token, so a follow-up question only needs the new tokens.
Sliding window attention looks at the last few thousand tokens; full attention looks at everything.
Let me think step by step. First, 2 + 2 = 4. Then 4 * 3 = 12. So the answer is 12.
<think>reasoning</think> The answer is: yes. Markdown has **bold**, *italic*, `code`, lists and tables.
Café, naïve, résumé, Zürich, 東京, emoji 🙂 and numbers 0123456789.
"""


def make_tokenizer_files(dest: Path, *, vocab_size: int = 384, think: bool = False, template: str | None = None) -> int:
    """Train a byte-level BPE on a small corpus; write ``tokenizer.json`` + config files. Returns vocab size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS) - len(ADDED_TOKENS),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    # Special tokens come last, as in Olmo-3 (whose specials sit above the BPE vocabulary).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    tok.save(str(dest / "tokenizer.json"))
    n = tok.get_vocab_size()

    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|pad|>",
                "unk_token": None,
                "clean_up_tokenization_spaces": False,
                "model_max_length": 65536,
            },
            indent=2,
        )
    )
    (dest / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}, indent=2)
    )
    (dest / "chat_template.jinja").write_text(template if template is not None else chat_template(think=think))
    return n


def tiny_config(
    vocab_size: int,
    *,
    config_format: str = "legacy",
    hidden_size: int = 64,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    sliding_window: int = 32,
    max_position_embeddings: int = 4096,
    yarn_factor: float = 8.0,
    eos_token_id: int = 0,
    pad_token_id: int = 3,
    tie_word_embeddings: bool = False,
    head_dim: int | None = None,
    layer_types: list[str] | None = None,
) -> dict[str, Any]:
    """A config.json for a tiny Olmo-3 in the legacy form or the transformers-5 form."""
    original = max(1, int(max_position_embeddings / yarn_factor))
    yarn = {
        "rope_type": "yarn",
        "factor": yarn_factor,
        "original_max_position_embeddings": original,
        "attention_factor": 0.1 * math.log(yarn_factor) + 1.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    if layer_types is None:
        layer_types = ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(num_hidden_layers)]
    config: dict[str, Any] = {
        "architectures": ["Olmo3ForCausalLM"],
        "model_type": "olmo3",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "sliding_window": sliding_window,
        "layer_types": layer_types,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": tie_word_embeddings,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "bos_token_id": None,
        "use_cache": False,
        "torch_dtype": "float32",
    }
    if head_dim is not None:
        config["head_dim"] = head_dim
    if config_format == "legacy":
        config["rope_theta"] = 500000.0
        config["rope_scaling"] = yarn
    elif config_format == "transformers5":
        config["rope_parameters"] = {
            "full_attention": {**yarn, "rope_theta": 500000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0},
        }
    else:
        raise ValueError(f"config_format={config_format!r}: expected 'legacy' or 'transformers5'")
    return config


def _token_id(tok: Any, token: str) -> int:
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the generated tokenizer has no {token}")
    return int(token_id)


def make_tiny_model(
    dest: str | Path,
    *,
    think: bool = False,
    quant_bits: int | None = None,
    config_format: str = "legacy",
    seed: int = 0,
    dtype: str = "float32",
    chat_template_text: str | None = None,
    weight_std: float = 0.35,
    **size: Any,
) -> Path:
    """Write a complete tiny Olmo-3 folder into ``dest`` and return its path.

    ``size`` overrides ``tiny_config`` arguments (hidden_size, num_hidden_layers, sliding_window, ...).
    ``quant_bits`` (4 or 8) writes an MLX-quantized folder like mlx-community's conversions.
    """
    from .model import Model, ModelArgs

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # A model can have more embedding rows than its tokenizer has entries (Olmo-3: 100,278); benchmarks
    # of real shapes use that, with this small tokenizer.
    embedding_rows = size.pop("embedding_rows", 0)
    vocab_size = make_tokenizer_files(
        dest, vocab_size=size.pop("vocab_size", 384), think=think, template=chat_template_text
    )
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(dest / "tokenizer.json"))
    eos, im_end, pad = (_token_id(tok, t) for t in ("<|endoftext|>", "<|im_end|>", "<|pad|>"))
    config = tiny_config(
        max(vocab_size, embedding_rows), config_format=config_format, eos_token_id=eos, pad_token_id=pad, **size
    )
    (dest / "generation_config.json").write_text(
        json.dumps(
            {"eos_token_id": [im_end, eos], "pad_token_id": pad, "do_sample": True, "temperature": 0.6, "top_p": 0.95},
            indent=2,
        )
    )

    model = Model(ModelArgs.from_config(config))
    mx.random.seed(seed)
    dt = getattr(mx, dtype)
    # Random weights large enough that the logits are not flat (std 0.02 would give near-uniform output).
    # MLX is lazy: the constructor's own initialisation is never materialised, only these arrays.
    params = tree_map(lambda p: mx.random.normal(p.shape, dtype=dt) * weight_std, model.parameters())
    model.update(params)
    # RMSNorm weights near 1 keep activations sane through the post-norm stack.
    norms = [
        (n, (1.0 + 0.1 * mx.random.normal(p.shape)).astype(dt))
        for n, p in cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
        if "norm" in n
    ]
    model.load_weights(norms, strict=False)

    if quant_bits is not None:
        from mlx_lm.utils import quantize_model

        _, config = quantize_model(model, config, group_size=64, bits=quant_bits)  # quantizes `model` in place
        config.pop("quantization_config", None)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest
