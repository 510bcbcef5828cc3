"""What a model folder is, read without MLX and without loading the weights: config, weight files and their
safetensors headers, tokenizer and template presence, stop tokens, sizes and KV bytes per token.

The GUI names folders with it, the model store verifies downloads with it, and ``olmo3.model.loader`` runs it first
so that a broken folder fails cheaply. Every way a folder can be broken gives one ``ModelLoadError`` that says
what is wrong and where.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import read_json
from .config import FULL, SLIDING, ModelArgs
from .tensors import read_safetensors_header

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json",)
IM_END = "<|im_end|>"
TOKENIZER_JSON_MAX_BYTES = 256 * 1024**2  # Olmo-3's is 7 MB; other vocabularies reach tens of MB


def kv_cache_bytes(tokens: int, per_token_full: int, per_token_sliding: int, sliding_window: int) -> int:
    """Bytes of Olmo-3's hybrid KV cache after ``tokens`` tokens: full-attention layers keep every token,
    sliding-window layers at most ``sliding_window`` (``per_token_*``: all layers of that kind together)."""
    return per_token_full * tokens + per_token_sliding * min(tokens, sliding_window)


class ModelLoadError(Exception):
    """A folder that is not a loadable Olmo-3 model. The message names the file and the problem."""


@dataclass
class ModelInfo:
    """What the app shows about a model folder, read without loading the weights."""

    path: str
    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    sliding_window: int
    layer_types: list[str]
    max_position_embeddings: int
    vocab_size: int
    param_count: int
    weight_bytes: int
    quantization: dict[str, Any] | None
    is_think: bool
    kv_bytes_per_token_full: int  # all full-attention layers together, per token (bf16 or the weights' dtype)
    kv_bytes_per_token_sliding: int  # all sliding layers together, per token, up to the window
    eos_token_ids: list[int] = field(default_factory=list)
    fingerprint: str = ""
    revision: str | None = None  # the Hub commit the folder was downloaded at, when known
    repo_id: str | None = None  # the Hub repo it came from ("allenai/Olmo-3-7B-Think"), when known

    @property
    def num_full_layers(self) -> int:
        return self.layer_types.count(FULL)

    @property
    def num_sliding_layers(self) -> int:
        return self.layer_types.count(SLIDING)

    def kv_bytes(self, tokens: int) -> int:
        """Bytes of KV cache a conversation of ``tokens`` needs: full layers grow, sliding ones cap."""
        return kv_cache_bytes(
            tokens, self.kv_bytes_per_token_full, self.kv_bytes_per_token_sliding, self.sliding_window
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path, what: str, **limits: int) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"{path}: {what} is missing")
    try:
        return read_json(path, **limits)
    except (OSError, ValueError) as e:  # read_json's messages start with the path
        raise ModelLoadError(str(e)) from e


def read_config(path: str | Path) -> tuple[dict[str, Any], ModelArgs]:
    """Read and validate ``config.json`` (merging ``generation_config.json``'s stop tokens)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a folder")
    config = _read_json(folder / "config.json", "config.json")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / 'config.json'}: expected a JSON object")
    try:
        args = ModelArgs.from_config(config)
    except ValueError as e:
        raise ModelLoadError(f"{folder / 'config.json'}: {str(e).removeprefix('config.json: ')}") from e
    return config, args


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder, checking a sharded index for missing shards."""
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        index = _read_json(index_path, "the weight index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index_path}: has no weight_map")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if "/" in shard or "\\" in shard or shard.startswith("."):
                raise ModelLoadError(f"{index_path}: bad shard name {shard!r}")
            if not (folder / shard).is_file():
                raise ModelLoadError(f"{folder / shard}: weight shard listed in {index_path.name} is missing")
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            raise ModelLoadError(f"{folder}: only PyTorch pickle weights found; Olmo Desktop loads safetensors only")
        raise ModelLoadError(f"{folder}: no *.safetensors weight files")
    return files


def _quantization(config: dict[str, Any]) -> dict[str, Any] | None:
    q = config.get("quantization") or config.get("quantization_config")
    if not q:
        return None
    if not isinstance(q, dict) or "bits" not in q:
        return None
    return q


def _is_think(folder: Path) -> bool:
    template = chat_template_text(folder) or ""
    name = folder.name.lower()
    return "<think>" in template or "think" in name


def chat_template_text(folder: Path) -> str | None:
    """The chat template: ``chat_template.jinja`` wins over ``tokenizer_config.json``'s field."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            t = read_json(tc).get("chat_template")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(t, str):
            return t
    return None


def eos_token_ids(folder: Path, config: dict[str, Any], vocab: dict[str, int] | None = None) -> list[int]:
    """Stop tokens: ``generation_config.json`` wins over ``config.json``; ``<|im_end|>`` is always included.

    Olmo-3 turns end with ``<|im_end|>`` while ``config.eos_token_id`` is ``<|endoftext|>``; a folder whose
    stop list lacks ``<|im_end|>`` would generate past the end of the turn.
    """
    ids: list[int] = []
    gen_path = folder / "generation_config.json"
    source: Any = None
    if gen_path.is_file():
        gen = _read_json(gen_path, "generation_config.json")
        if isinstance(gen, dict):
            source = gen.get("eos_token_id")
    if source is None:
        source = config.get("eos_token_id")
    if isinstance(source, int):
        ids = [source]
    elif isinstance(source, list):
        ids = [i for i in source if isinstance(i, int)]
    if vocab is not None and IM_END in vocab and vocab[IM_END] not in ids:
        ids.append(vocab[IM_END])
    return ids


def _fingerprint(folder: Path, files: list[Path]) -> str:
    """Identifies the exact weights (config + file names and sizes): caches made with other weights mismatch."""
    h = hashlib.sha256()
    h.update((folder / "config.json").read_bytes())
    for f in files:
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def _origin(folder: Path) -> tuple[str | None, str | None]:
    """(repo id, revision) of a folder: from the model store's marker, or a Hugging Face cache snapshot's path."""
    marker = folder / ".olmo-desktop.json"
    if marker.is_file():
        try:
            data = read_json(marker)
            revision = data.get("commit") or data.get("revision")
            repo_id = data.get("repo_id")
        except (ValueError, OSError, AttributeError):
            return None, None
        return (repo_id if isinstance(repo_id, str) else None), (revision if isinstance(revision, str) else None)
    # A Hugging Face cache snapshot: models--owner--name/snapshots/<commit>.
    if folder.parent.name == "snapshots" and len(folder.name) == 40:
        repo = folder.parent.parent.name
        repo_id = repo.removeprefix("models--").replace("--", "/", 1) if repo.startswith("models--") else None
        return repo_id, folder.name
    return None, None


def inspect_model_dir(path: str | Path) -> ModelInfo:
    """Validate a folder and describe it without loading the weights (reads only JSON and headers)."""
    folder = Path(path).expanduser()
    config, args = read_config(folder)
    files = weight_files(folder)

    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise ModelLoadError(f"{folder}: no tokenizer (tokenizer.json is missing)")
    tok = _read_json(tok_path, "tokenizer.json", max_bytes=TOKENIZER_JSON_MAX_BYTES)
    vocab: dict[str, int] = {}
    if isinstance(tok, dict):
        for t in tok.get("added_tokens", []) or []:
            if isinstance(t, dict) and "content" in t and "id" in t:
                vocab[t["content"]] = t["id"]

    n_params = 0
    n_bytes = 0
    kv_dtype_bytes = 2
    for f in files:
        try:
            header = read_safetensors_header(f)
        except ValueError as e:
            raise ModelLoadError(str(e)) from e
        for name, t in header.tensors.items():
            count = math.prod(t.shape)
            n_bytes += t.end - t.start
            if name.endswith((".scales", ".biases")):
                continue
            if t.dtype == "U32":  # packed quantized weights: 32 / bits values per uint32
                q = _quantization(config) or {"bits": 4}
                count *= 32 // int(q.get("bits", 4))
            elif name.endswith("embed_tokens.weight") and t.dtype == "F32":
                kv_dtype_bytes = 4
            n_params += count

    per_layer = 2 * args.num_key_value_heads * args.head_dim * kv_dtype_bytes
    origin = _origin(folder)
    return ModelInfo(
        path=str(folder),
        name=folder.name,
        model_type="olmo3",
        num_layers=args.num_hidden_layers,
        hidden_size=args.hidden_size,
        num_heads=args.num_attention_heads,
        num_kv_heads=args.num_key_value_heads,
        head_dim=args.head_dim,
        sliding_window=args.sliding_window,
        layer_types=list(args.layer_types),
        max_position_embeddings=args.max_position_embeddings,
        vocab_size=args.vocab_size,
        param_count=n_params,
        weight_bytes=n_bytes,
        quantization=_quantization(config),
        is_think=_is_think(folder),
        kv_bytes_per_token_full=per_layer * args.layer_types.count(FULL),
        kv_bytes_per_token_sliding=per_layer * args.layer_types.count(SLIDING),
        eos_token_ids=eos_token_ids(folder, config, vocab),
        fingerprint=_fingerprint(folder, files),
        revision=origin[1],
        repo_id=origin[0],
    )
