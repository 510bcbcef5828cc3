"""Load an Olmo-3 model folder: config, safetensors weights (plain or MLX-quantized), tokenizer, stop tokens.

``load(path) -> (model, tokenizer)`` mirrors ``mlx_lm.load`` for local folders, with three differences:
it reads both config forms (``olmo3.model.config.ModelArgs``), it never executes code from the folder (no
``trust_remote_code``, safetensors only), and every way a folder can be broken gives one ``ModelLoadError``
that says what is wrong and where (``olmo3.model.modelinfo`` checks the folder before any weight is read).

Imports MLX: run it on the engine thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .model import Model
from .modelinfo import (
    IM_END,
    ModelInfo,
    ModelLoadError,
    _quantization,
    chat_template_text,
    eos_token_ids,
    inspect_model_dir,
    read_config,
    weight_files,
)

__all__ = ["ModelInfo", "ModelLoadError", "inspect_model_dir", "load", "load_model", "load_tokenizer"]


def load_model(path: str | Path, *, lazy: bool = False) -> tuple[Model, dict[str, Any]]:
    """Build the model from ``config.json`` and load its safetensors weights (no tokenizer)."""
    folder = Path(path).expanduser()
    config, args = read_config(folder)
    files = weight_files(folder)
    model = Model(args)

    weights: dict[str, mx.array] = {}
    for f in files:
        try:
            loaded = mx.load(str(f))
            if not isinstance(loaded, dict):
                raise ValueError("not a safetensors file of named tensors")
            weights.update(loaded)
        except Exception as e:  # MLX raises RuntimeError/ValueError for truncated or foreign files
            raise ModelLoadError(f"{f}: cannot read weights ({e})") from e
    weights = model.sanitize(weights)

    quant = _quantization(config)
    if quant is not None:
        # MLX-quantized checkpoints (mlx-community 4/8-bit) store packed weights plus scales/biases for
        # every layer that has them; quantize exactly those modules before loading.
        def predicate(name: str, module: nn.Module) -> bool | dict[str, Any]:
            if name in quant and isinstance(quant[name], dict):
                return quant[name]
            return hasattr(module, "to_quantized") and f"{name}.scales" in weights

        try:
            nn.quantize(
                model,
                group_size=int(quant.get("group_size", 64)),
                bits=int(quant["bits"]),
                mode=quant.get("mode", "affine"),
                class_predicate=predicate,
            )
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"{folder / 'config.json'}: bad quantization block {quant!r} ({e})") from e

    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing:
        raise ModelLoadError(
            f"{folder}: weights missing from the safetensors files: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    if extra:
        raise ModelLoadError(
            f"{folder}: unexpected weights (not an Olmo-3 checkpoint of this shape?): {', '.join(extra[:5])}"
            + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        )
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            raise ModelLoadError(
                f"{folder}: weight {name} has shape {tuple(value.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
    model.load_weights(list(weights.items()), strict=True)
    if not lazy:
        mx.eval(model.parameters())
    model.eval()
    return model, config


def load_tokenizer(path: str | Path, config: dict[str, Any] | None = None) -> Any:
    """mlx-lm's ``TokenizerWrapper`` over the folder's fast tokenizer, with Olmo-3's stop tokens.

    The chat template is compiled into the bounded sandbox and rendered on test conversations before the model
    is used (``olmo3.model.template``): a template that hangs, fails or reaches for Python internals is refused
    here, with a ``ModelLoadError`` naming its file. The ``ChatTemplate`` is attached to the wrapper as
    ``tokenizer.safe_chat_template`` (``olmo3.model.template.for_tokenizer`` finds it).
    """
    from mlx_lm.tokenizer_utils import load as load_tokenizer_wrapper

    from .template import ATTRIBUTE, ChatTemplate, TemplateError

    folder = Path(path).expanduser()
    if not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{folder}: no tokenizer (tokenizer.json is missing)")
    if config is None:
        config, _ = read_config(folder)
    extra: dict[str, Any] = {"trust_remote_code": False}
    template = chat_template_text(folder)
    if template is not None:
        extra["chat_template"] = template
    try:
        tokenizer = load_tokenizer_wrapper(folder, extra, eos_token_ids=eos_token_ids(folder, config))
    except Exception as e:  # transformers raises many types for broken tokenizer files
        raise ModelLoadError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({e})") from e
    vocab = tokenizer.get_vocab()
    if IM_END in vocab:
        tokenizer.add_eos_token(IM_END)
    _keep_leading_space(tokenizer)
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{folder}: no chat template (chat_template.jinja or tokenizer_config.json)")
    source = folder / "chat_template.jinja"
    if not source.is_file():
        source = folder / "tokenizer_config.json"
    try:
        safe = ChatTemplate.from_tokenizer(tokenizer)
        safe.probe()
    except TemplateError as e:
        raise ModelLoadError(f"{source}: {e}") from None
    setattr(tokenizer, ATTRIBUTE, safe)
    return tokenizer


def _keep_leading_space(tokenizer: Any) -> None:
    """Streamed text must be the decoded reply, character for character.

    mlx-lm's BPE streaming detokenizer drops the leading space of a reply's first token (SentencePiece's
    convention); Olmo-3's byte-level BPE has no such prefix space, so ``decode(ids)`` keeps it. Without this a
    streamed reply (what a client of the local server sends back) differs from the cached tokens' text."""
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    class _ExactBPEStreamingDetokenizer(BPEStreamingDetokenizer):
        def _maybe_trim_space(self, current_text: str) -> str:
            return current_text

    detok = getattr(tokenizer, "_detokenizer", None)
    if type(detok) is BPEStreamingDetokenizer:
        detok.__class__ = _ExactBPEStreamingDetokenizer


def load(path: str | Path, *, lazy: bool = False) -> tuple[Model, Any]:
    """``model, tokenizer = olmo3.load(folder)`` for a local Olmo-3 folder."""
    folder = Path(path).expanduser()
    info = inspect_model_dir(folder)  # validates everything cheaply before reading gigabytes
    model, config = load_model(folder, lazy=lazy)
    tokenizer = load_tokenizer(folder, config)  # also compiles and probes the chat template
    model.info = info
    return model, tokenizer
