"""Olmo-3 hyper-parameters, normalised from ``config.json`` (both config forms), with clear errors.

MLX-free: the GUI, the model store and the verifier read configs through this module without importing MLX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FULL = "full_attention"
SLIDING = "sliding_attention"

_REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "vocab_size",
)


def _bad(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"config.json: {key}={value!r}: {why}")


@dataclass
class ModelArgs:
    """The hyper-parameters of an Olmo-3 checkpoint, normalised from ``config.json``.

    Two config shapes exist in the wild and both load:

    * legacy (transformers 4.x, mlx-community conversions): top-level ``rope_theta`` and ``rope_scaling``
      (the scaling applies to full-attention layers only);
    * transformers 5: ``rope_parameters`` keyed by layer type, e.g.
      ``{"full_attention": {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8, ...},
      "sliding_attention": {"rope_type": "default", "rope_theta": 5e5}}`` (a flat dict is also accepted).

    ``from_config`` validates everything and raises ``ValueError`` naming the key and the value.
    """

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 65536
    sliding_window: int = 4096
    layer_types: list[str] = field(default_factory=list)
    # RoPE per layer type: {"full_attention": {...}, "sliding_attention": {...}}, each with rope_theta and
    # rope_type ("default" or "yarn" plus its parameters).
    rope: dict[str, dict[str, Any]] = field(default_factory=dict)
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    model_type: str = "olmo3"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelArgs:
        if not isinstance(config, dict):
            raise ValueError("config.json: expected a JSON object")
        model_type = config.get("model_type")
        if model_type != "olmo3":
            raise _bad("model_type", model_type, "not an Olmo-3 model (expected 'olmo3')")
        for key in _REQUIRED:
            if key not in config:
                raise ValueError(f"config.json: missing required key {key!r}")
            value = config[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _bad(key, value, "must be a positive integer")

        n_layers = config["num_hidden_layers"]
        n_heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        n_kv = config.get("num_key_value_heads") or n_heads
        if not isinstance(n_kv, int) or n_kv <= 0:
            raise _bad("num_key_value_heads", n_kv, "must be a positive integer")
        if n_heads % n_kv != 0:
            raise _bad(
                "num_key_value_heads",
                n_kv,
                f"must divide num_attention_heads={n_heads} (grouped-query attention)",
            )
        head_dim = config.get("head_dim")
        if head_dim is None:
            if hidden % n_heads != 0:
                raise _bad(
                    "num_attention_heads",
                    n_heads,
                    f"must divide hidden_size={hidden} when head_dim is not given",
                )
            head_dim = hidden // n_heads
        if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
            raise _bad("head_dim", head_dim, "must be a positive even integer (RoPE rotates pairs)")

        window = config.get("sliding_window", 4096)
        if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
            raise _bad("sliding_window", window, "must be a positive integer")

        layer_types = config.get("layer_types")
        if layer_types is None:
            # The Olmo-3 pattern: three sliding layers, then one full layer, repeating.
            layer_types = [FULL if (i + 1) % 4 == 0 else SLIDING for i in range(n_layers)]
        if not isinstance(layer_types, list) or len(layer_types) != n_layers:
            count = len(layer_types) if isinstance(layer_types, list) else layer_types
            raise _bad("layer_types", count, f"needs one entry per layer (num_hidden_layers={n_layers})")
        for i, lt in enumerate(layer_types):
            if lt not in (FULL, SLIDING):
                raise _bad(f"layer_types[{i}]", lt, f"unknown layer type (expected {FULL!r} or {SLIDING!r})")

        max_pos = config.get("max_position_embeddings", 65536)
        if not isinstance(max_pos, int) or max_pos <= 0:
            raise _bad("max_position_embeddings", max_pos, "must be a positive integer")
        eps = config.get("rms_norm_eps", 1e-6)
        if not isinstance(eps, (int, float)) or eps <= 0:
            raise _bad("rms_norm_eps", eps, "must be a positive number")

        return cls(
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            intermediate_size=config["intermediate_size"],
            num_attention_heads=n_heads,
            vocab_size=config["vocab_size"],
            num_key_value_heads=n_kv,
            head_dim=head_dim,
            rms_norm_eps=float(eps),
            max_position_embeddings=max_pos,
            sliding_window=window,
            layer_types=list(layer_types),
            rope=_rope_per_layer_type(config),
            attention_bias=bool(config.get("attention_bias", False)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


def _rope_per_layer_type(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalise both RoPE config forms to ``{layer_type: {"rope_type", "rope_theta", ...}}``."""
    params = config.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise _bad("rope_parameters", params, "must be an object")
        if FULL in params or SLIDING in params:  # transformers 5: keyed by layer type
            per_type = {lt: dict(params.get(lt) or {}) for lt in (FULL, SLIDING)}
        else:  # a flat dict applies to both (it only ever carries scaling for full layers in practice)
            per_type = {FULL: dict(params), SLIDING: {"rope_theta": params.get("rope_theta")}}
    else:
        scaling = config.get("rope_scaling")
        if scaling is not None and not isinstance(scaling, dict):
            raise _bad("rope_scaling", scaling, "must be an object or null")
        per_type = {FULL: dict(scaling or {}), SLIDING: {}}
        for lt in per_type:
            per_type[lt]["rope_theta"] = config.get("rope_theta", 500000.0)
    for lt, p in per_type.items():
        p.setdefault("rope_theta", config.get("rope_theta", 500000.0))
        if p["rope_theta"] is None:
            p["rope_theta"] = config.get("rope_theta", 500000.0)
        rope_type = p.get("rope_type") or p.get("type") or "default"
        p["rope_type"] = rope_type
        if not isinstance(p["rope_theta"], (int, float)) or p["rope_theta"] <= 0:
            raise _bad(f"rope theta ({lt})", p["rope_theta"], "must be a positive number")
        if rope_type not in ("default", "yarn"):
            raise _bad(f"rope_type ({lt})", rope_type, "unsupported (Olmo-3 uses 'default' or 'yarn')")
        if rope_type == "yarn":
            for key in ("factor", "original_max_position_embeddings"):
                if not isinstance(p.get(key), (int, float)) or p[key] <= 0:
                    raise _bad(f"rope scaling {key} ({lt})", p.get(key), "YaRN needs a positive number")
    return per_type
