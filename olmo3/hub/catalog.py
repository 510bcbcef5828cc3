"""The curated catalog of Olmo-3 / 3.1 models, their sizes from the architecture, and memory verdicts.

The catalog offers only repos known to exist (``CatalogEntry.evidence``): MLX conversions, and Ai2's own bf16
repos through "download and quantize to 4-bit on this Mac" (``CatalogEntry.quantize_bits``). Sizes are computed
from the architecture and agree with the sizes on record to within 0.1 %.

``estimate_memory_fit`` says whether weights + KV cache at a context length (+ a runtime allowance) fit the
memory budget of this machine (``olmo3.memory.memory_budget``); the catalog, a download plan and an installed
model all answer through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ..memory import MemoryBudget, memory_budget
from ..model.modelinfo import kv_cache_bytes
from ..units import format_bytes

if TYPE_CHECKING:
    from .local import LocalModel

__all__ = [
    "CATALOG",
    "DEFAULT_CONTEXT_TOKENS",
    "OLMO3_7B",
    "OLMO3_32B",
    "Architecture",
    "CatalogEntry",
    "CatalogItem",
    "MemoryFit",
    "Quant",
    "Verdict",
    "catalog_entry",
    "estimate_memory_fit",
]

DEFAULT_CONTEXT_TOKENS: Final = 8192
RUNTIME_OVERHEAD_BYTES: Final = 512 * 1024**2  # MLX runtime, Python, tokenizer, prefill activations (rough)
TIGHT_FRACTION: Final = 0.85  # above this share of the budget a model "fits" only with other apps closed

Verdict = Literal["fits", "tight", "wont_fit"]


# ---------------------------------------------------------------------------------------------------------------
# Memory verdicts
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFit:
    verdict: Verdict
    weight_bytes: int
    kv_bytes: int
    overhead_bytes: int
    needed_bytes: int
    budget_bytes: int
    context_tokens: int
    message: str

    @property
    def label(self) -> str:
        return {"fits": "fits", "tight": "tight", "wont_fit": "won't fit"}[self.verdict]


def estimate_memory_fit(
    *,
    weight_bytes: int,
    kv_bytes_per_token_full: int,
    kv_bytes_per_token_sliding: int,
    sliding_window: int,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    budget: MemoryBudget | int | None = None,
) -> MemoryFit:
    """Weights + KV cache at ``context_tokens`` (+ a fixed runtime allowance) against the memory budget."""
    if budget is None:
        budget = memory_budget()
    elif isinstance(budget, int):
        budget = MemoryBudget(budget, "given")
    kv = kv_cache_bytes(context_tokens, kv_bytes_per_token_full, kv_bytes_per_token_sliding, sliding_window)
    overhead = RUNTIME_OVERHEAD_BYTES + weight_bytes // 20
    needed = weight_bytes + kv + overhead
    parts = (
        f"{format_bytes(weight_bytes)} weights + {format_bytes(kv)} conversation memory at "
        f"{context_tokens:,} tokens + {format_bytes(overhead)} runtime"
    )
    verdict: Verdict
    if needed <= TIGHT_FRACTION * budget.bytes:
        verdict = "fits"
        message = f"Fits: needs about {format_bytes(needed)} ({parts}) of {budget.describe()}."
    elif needed <= budget.bytes:
        verdict = "tight"
        message = (
            f"Tight: needs about {format_bytes(needed)} ({parts}) of {budget.describe()}; "
            "close other apps or use a shorter context."
        )
    else:
        verdict = "wont_fit"
        message = (
            f"Won't fit: needs about {format_bytes(needed)} ({parts}) but only {budget.describe()} is available; "
            "choose a smaller quantization or a shorter context."
        )
    return MemoryFit(verdict, weight_bytes, kv, overhead, needed, budget.bytes, context_tokens, message)


# ---------------------------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The shape of an Olmo-3 size, from its config.json (notes §2); sizes below are computed from it."""

    label: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int = 100278
    sliding_window: int = 4096
    full_every: int = 4  # layer_types: three sliding layers, then one full, repeating
    max_position_embeddings: int = 65536

    @property
    def matrix_params(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size
        return 2 * self.vocab_size * h + self.num_layers * per_layer  # untied embeddings + lm_head

    @property
    def norm_params(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return self.num_layers * (2 * h + q + kv) + h

    @property
    def param_count(self) -> int:
        return self.matrix_params + self.norm_params

    def weight_bytes(self, bits: int | None, group_size: int = 64) -> int:
        """bf16 when ``bits`` is None; else MLX affine quantization with bf16 scales and biases per group."""
        if bits is None:
            return 2 * self.param_count
        per_param = bits / 8 + 4 / group_size
        return int(self.matrix_params * per_param) + 2 * self.norm_params

    @property
    def full_layers(self) -> int:
        return self.num_layers // self.full_every

    @property
    def kv_bytes_per_token_full(self) -> int:
        return self.full_layers * 2 * self.num_kv_heads * self.head_dim * 2

    @property
    def kv_bytes_per_token_sliding(self) -> int:
        return (self.num_layers - self.full_layers) * 2 * self.num_kv_heads * self.head_dim * 2


OLMO3_7B: Final = Architecture("7B", 4096, 32, 32, 32, 128, 11008)
OLMO3_32B: Final = Architecture("32B", 5120, 64, 40, 8, 128, 27648)
TOKENIZER_AND_CONFIG_BYTES: Final = 7_300_000  # tokenizer.json is 7.14 MB; configs and template add a few kB


Quant = Literal["4bit", "6bit", "8bit", "bf16"]
_BITS: Final[dict[str, int | None]] = {"4bit": 4, "6bit": 6, "8bit": 8, "bf16": None}


@dataclass(frozen=True)
class CatalogEntry:
    """One model the catalog offers. Every repo name is one whose existence is on record (``evidence``).

    ``quant`` is what the repo holds. Ai2's own ``allenai/`` repos hold bf16 weights in transformers' format (our
    loader reads it); their entries set ``quantize_bits``: the route downloads them and converts them to an
    MLX-quantized copy on this Mac (``olmo3.model.quantize``), so what ends up installed, and what must fit in
    memory, is the quantized size.
    """

    repo_id: str
    family: str  # "Olmo 3" or "Olmo 3.1"
    arch: Architecture
    variant: str  # "Instruct", "Think", "RL-Zero Code", ...
    quant: Quant
    evidence: str  # why we know the repo exists (see ../shared/notes/olmo3-repos.md)
    note: str = ""
    quantize_bits: int | None = None  # download bf16, then quantize to this many bits here
    recommended: bool = False  # a quick pick on the welcome screen

    @property
    def size_label(self) -> str:
        return self.arch.label

    @property
    def bits(self) -> int | None:
        """Bits per weight of what gets installed (after quantizing, for the Ai2 route)."""
        return self.quantize_bits if self.quantize_bits is not None else _BITS[self.quant]

    @property
    def quant_label(self) -> str:
        return "bf16" if self.bits is None else f"{self.bits}-bit"

    @property
    def publisher(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def title(self) -> str:
        if self.quantize_bits is not None:
            return f"{self.family} {self.arch.label} {self.variant} · Ai2 bf16 → {self.quant_label}"
        return f"{self.family} {self.arch.label} {self.variant} · {self.quant_label}"

    @property
    def param_count(self) -> int:
        return self.arch.param_count

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights once installed (what must fit in memory)."""
        return self.arch.weight_bytes(self.bits)

    @property
    def download_bytes(self) -> int:
        """Bytes fetched from the Hub (Ai2's bf16 weights for the quantize route)."""
        return self.arch.weight_bytes(_BITS[self.quant]) + TOKENIZER_AND_CONFIG_BYTES

    @property
    def installed_bytes(self) -> int:
        return self.weight_bytes + TOKENIZER_AND_CONFIG_BYTES

    @property
    def disk_bytes_needed(self) -> int:
        """Free disk space the route needs at its peak: the download, plus the quantized copy written beside it."""
        return self.download_bytes + (self.installed_bytes if self.quantize_bits is not None else 0)

    @property
    def is_think(self) -> bool:
        return self.variant == "Think"

    def memory_fit(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> MemoryFit:
        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=self.arch.kv_bytes_per_token_full,
            kv_bytes_per_token_sliding=self.arch.kv_bytes_per_token_sliding,
            sliding_window=self.arch.sliding_window,
            context_tokens=context_tokens,
            budget=budget,
        )


# Only repos whose existence is on record (../shared/notes/olmo3-repos.md, checked 2026-11-30). Exact spelling:
# "Olmo", and mlx-community's 7B bf16 conversions are "-bf16" for Instruct but "-bfloat16" for Think and RL-Zero.
# Guessed names (a "Think-8bit" that would follow the pattern) are never offered: "Search Hugging Face" in the
# picker finds what really exists.
_HUB_PAGE = "a Hub page of the repo or one of its files was found"
_RL_ZERO = "research model: RL from the base model, no chat tuning"
CATALOG: Final[tuple[CatalogEntry, ...]] = (
    CatalogEntry(
        "mlx-community/Olmo-3-7B-Instruct-4bit", "Olmo 3", OLMO3_7B, "Instruct", "4bit", _HUB_PAGE, recommended=True
    ),
    CatalogEntry(
        "mlx-community/Olmo-3-7B-Think-4bit",
        "Olmo 3",
        OLMO3_7B,
        "Think",
        "4bit",
        # Not a Hub page, but a pinned commit and the exact byte count can only come from the Hub; the count is
        # within 0.07 % of the size computed from the architecture (4,113,190,816 + tokenizer).
        "pinned revision 65294083d66d52f7bee42c5da768e3ad456332c4 and its exact size, 4,115,716,535 bytes",
        recommended=True,
    ),
    CatalogEntry("mlx-community/Olmo-3-7B-Instruct-bf16", "Olmo 3", OLMO3_7B, "Instruct", "bf16", _HUB_PAGE),
    CatalogEntry("mlx-community/Olmo-3-7B-Think-bfloat16", "Olmo 3", OLMO3_7B, "Think", "bf16", _HUB_PAGE),
    CatalogEntry(
        "mlx-community/Olmo-3-7B-RLZero-Code-4bit", "Olmo 3", OLMO3_7B, "RL-Zero Code", "4bit", _HUB_PAGE, _RL_ZERO
    ),
    CatalogEntry(
        "mlx-community/Olmo-3-7B-RLZero-Code-bfloat16", "Olmo 3", OLMO3_7B, "RL-Zero Code", "bf16", _HUB_PAGE, _RL_ZERO
    ),
    CatalogEntry(
        "lmstudio-community/Olmo-3-32B-Think-MLX-4bit",
        "Olmo 3",
        OLMO3_32B,
        "Think",
        "4bit",
        "listed at 18.13 GB, with a Hub link, in LM Studio's model catalog (computed: 18.14 GB)",
    ),
    CatalogEntry(
        "lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit",
        "Olmo 3.1",
        OLMO3_32B,
        "Instruct",
        "8bit",
        "the Olmo-3.1 Instruct chat template in our test fixtures was fetched from this repo",
    ),
    # Ai2's own repos (bf16, transformers format): this route always exists.
    *(
        CatalogEntry(
            f"allenai/{name}",
            family,
            arch,
            variant,
            "bf16",
            "Ai2's own release",
            "Ai2's original bf16 weights, converted to 4-bit on this Mac after the download",
            quantize_bits=4,
        )
        for name, family, arch, variant in (
            ("Olmo-3-7B-Instruct", "Olmo 3", OLMO3_7B, "Instruct"),
            ("Olmo-3-7B-Think", "Olmo 3", OLMO3_7B, "Think"),
            ("Olmo-3-32B-Think", "Olmo 3", OLMO3_32B, "Think"),
            ("Olmo-3.1-32B-Instruct", "Olmo 3.1", OLMO3_32B, "Instruct"),
            ("Olmo-3.1-32B-Think", "Olmo 3.1", OLMO3_32B, "Think"),
        )
    ),
)


def catalog_entry(repo_id: str) -> CatalogEntry | None:
    """The catalog's entry for ``repo_id`` (exact spelling), or None."""
    return next((e for e in CATALOG if e.repo_id == repo_id), None)


@dataclass(frozen=True)
class CatalogItem:
    """A catalog entry as shown on this machine: its memory verdict and the local copy, if any."""

    entry: CatalogEntry
    fit: MemoryFit
    local: LocalModel | None

    @property
    def installed(self) -> bool:
        return self.local is not None and self.local.installed
