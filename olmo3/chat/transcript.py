"""The typed transcript: what a conversation holds, in the form that crosses from the engine to the GUI and the CLI.

MLX-free and Qt-free. Three kinds of value, all frozen:

* :class:`TurnStats`: what one turn cost and how the cache was reconciled;
* :class:`Provenance`: everything a reply was made with (settings, seed, model, template, engine), enough to
  reproduce it;
* :class:`TranscriptMessage`: one message of the active path as a reader sees it (with its branch position);
* :class:`TranscriptState`: everything but the KV cache: the message tree (:class:`NodeState`), the exact token
  ids the cache holds, and the fingerprints that say whether those ids still mean anything. It is what the store
  keeps in ``conversations.engine_state`` (``to_json``/``from_json``), and what ``ChatSession.load_state`` takes.

**Ids are the store's.** The GUI writes a message to the store and hands its id to the engine (``message_id`` and
``reply_id`` on send/edit/regenerate), so a node id in the engine is the row id in the store: nothing is ever
matched by content.

``state_from_messages`` rebuilds a state without tokens from a message tree (an imported conversation): the first
turn after loading it re-reads the whole history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, cast, get_args

from .sampling import Sampling

# "environment": a tool's result, the turn Olmo-3's template writes after an assistant message with calls.
Role = Literal["user", "assistant", "environment"]
FinishReason = Literal["stop", "length", "context", "cancelled"]  # context: the reply filled the context
Reconcile = Literal["fresh", "append", "append_turn_end", "trim", "snapshot", "restored", "reprefill"]
CacheStateKind = Literal["warm", "disk", "cold"]
OverflowReason = Literal["context", "memory"]
OverflowPolicy = Literal["error", "drop_oldest"]
BranchKind = Literal["reply", "user"]

STATE_VERSION = 1
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

ROLES: tuple[Role, ...] = get_args(Role)
FINISH_REASONS: tuple[FinishReason, ...] = get_args(FinishReason)


class TranscriptError(ValueError):
    """A stored or imported transcript that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class TurnStats:
    """What one turn cost. ``prompt_tokens`` were fed this turn; ``cached_tokens`` were reused from a cache."""

    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    ttft_s: float
    tokens_per_s: float
    prefill_s: float
    total_s: float
    finish_reason: FinishReason
    peak_memory_bytes: int
    # How the cache was brought in line with the template's rendering of the history:
    # "append" (pure follow-up), "append_turn_end" (a reply cut by max_tokens got its <|im_end|>),
    # "fresh" (first turn), "trim" (rewound a few tokens), "snapshot" (restored a turn-boundary snapshot),
    # "reprefill" (no usable cache: everything fed again), "restored" (the cache came back from disk).
    reconcile: Reconcile
    context_used: int
    context_limit: int
    seed: int | None = None
    dropped_turns: int = 0
    # Generated tokens split at the end of a Think reply's reasoning: its closing tag counts as reasoning, the
    # answer has the rest (stop token included); a reply without reasoning is all answer.
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    thinking_budget: int | None = None
    reasoning_stopped: bool = False  # the budget ran out and the engine closed the reasoning
    reasoning_dropped_tokens: int = 0  # earlier replies' reasoning left out of this turn's prompt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurnStats:
        """Stats read back from JSON (the store keeps them per reply); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise TranscriptError(f"bad turn stats: {e}") from e


@dataclass(frozen=True)
class Provenance:
    """What one reply was made with: enough to regenerate it token for token on the same model.

    ``sampling`` holds every setting actually used, its ``seed`` the seed actually drawn (``seed_was_random`` says
    the user asked for a random one). ``keep_reasoning`` is the effective choice (the template's when not set).
    """

    sampling: Sampling
    seed: int
    seed_was_random: bool
    model_name: str
    model_repo_id: str | None
    model_revision: str | None
    model_fingerprint: str
    quantization: dict[str, Any] | None
    template_hash: str
    thinking_budget: int | None
    keep_reasoning: bool
    kv_bits: int | None
    context_limit: int
    engine_version: str
    reconcile: Reconcile

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sampling"] = self.sampling.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Provenance | None:
        """A provenance read back from JSON; None when ``data`` is not one (older replies, other keys)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("sampling"), Mapping):
            return None
        try:
            quant = data.get("quantization")
            budget = data.get("thinking_budget")
            kv_bits = data.get("kv_bits")
            return cls(
                sampling=Sampling.from_dict(dict(data["sampling"])),
                seed=int(data["seed"]),
                seed_was_random=bool(data.get("seed_was_random", False)),
                model_name=str(data.get("model_name") or ""),
                model_repo_id=_opt_str(data.get("model_repo_id")),
                model_revision=_opt_str(data.get("model_revision")),
                model_fingerprint=str(data.get("model_fingerprint") or ""),
                quantization=dict(quant) if isinstance(quant, Mapping) else None,
                template_hash=str(data.get("template_hash") or ""),
                thinking_budget=int(budget) if isinstance(budget, int) and not isinstance(budget, bool) else None,
                keep_reasoning=bool(data.get("keep_reasoning", True)),
                kv_bits=int(kv_bits) if isinstance(kv_bits, int) and not isinstance(kv_bits, bool) else None,
                context_limit=int(data.get("context_limit") or 0),
                engine_version=str(data.get("engine_version") or ""),
                reconcile=cast(Reconcile, str(data.get("reconcile") or "fresh")),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def reproduce_sampling(self) -> dict[str, Any]:
        """The settings to regenerate this reply exactly: every sampling value, the seed that was used, and the
        effective reasoning choice (so a template default that changed cannot change the prompt)."""
        return {**self.sampling.to_dict(), "seed": self.seed, "keep_reasoning": self.keep_reasoning}


@dataclass(frozen=True)
class TranscriptMessage:
    """One message on the active path, as the chat view and the CLI show it."""

    id: str
    role: Role
    content: str  # the user's text, or the answer (reasoning removed)
    reasoning: str | None
    parent_id: str | None
    user_turn_index: int
    branch_index: int
    branch_count: int
    finish_reason: FinishReason | None = None
    stats: TurnStats | None = None
    tokens: tuple[int, ...] = ()  # assistant: the sampled ids, stop token included
    in_context: bool = True  # False: an old turn the overflow policy left out of the prompt
    provenance: Provenance | None = None  # assistant: what the reply was made with
    calls: str | None = None  # assistant: its function calls as written (between the tags), if it made any
    tool: dict[str, Any] | None = None  # tool data: an assistant's parsed calls, an environment turn's result


@dataclass(frozen=True)
class NodeState:
    """A message in the conversation tree, as saved."""

    id: str
    role: Role
    content: str
    raw: str  # what the chat template renders as this message's content ("<think>…</think>answer" for Think)
    parent: str | None  # None: a first user message (a child of the conversation root)
    reasoning: str | None = None
    tokens: tuple[int, ...] = ()
    children: tuple[str, ...] = ()
    active: int = 0
    finish_reason: FinishReason | None = None
    stats: TurnStats | None = None
    think: bool = False
    provenance: Provenance | None = None
    # Tool turns (olmo3.chat.tool_turns): an assistant's calls exactly as the model wrote them between
    # <function_calls> tags (what the template renders back), and the tool data the app shows and stores:
    # {"calls": [{"name", "arguments"}]} for an assistant, the call and its result for an environment turn.
    calls: str | None = None
    tool: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = list(self.tokens)
        d["children"] = list(self.children)
        d["stats"] = self.stats.to_dict() if self.stats is not None else None
        d["provenance"] = self.provenance.to_dict() if self.provenance is not None else None
        return d

    @classmethod
    def from_json(cls, data: Any) -> NodeState:
        if not isinstance(data, Mapping):
            raise TranscriptError("a node is not an object")
        node_id = _str(data, "id")
        role = data.get("role")
        if role not in ROLES:
            raise TranscriptError(f"node {node_id}: role {role!r} is not one of {', '.join(ROLES)}")
        finish = data.get("finish_reason")
        if finish is not None and finish not in FINISH_REASONS:
            raise TranscriptError(f"node {node_id}: finish_reason {finish!r} is not one of {', '.join(FINISH_REASONS)}")
        stats = data.get("stats")
        parent = data.get("parent")
        reasoning = data.get("reasoning")
        content = data.get("content")
        raw = data.get("raw", content)
        if not isinstance(content, str) or not isinstance(raw, str):
            raise TranscriptError(f"node {node_id}: content must be text")
        return cls(
            id=node_id,
            role=cast(Role, role),
            content=content,
            raw=raw,
            parent=parent if isinstance(parent, str) else None,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            tokens=_ints(data.get("tokens") or (), f"node {node_id}: tokens"),
            children=tuple(_strs(data.get("children") or (), f"node {node_id}: children")),
            active=_int(data.get("active", 0), f"node {node_id}: active"),
            finish_reason=cast(FinishReason | None, finish),
            stats=TurnStats.from_dict(stats) if isinstance(stats, Mapping) else None,
            think=bool(data.get("think", False)),
            provenance=Provenance.from_dict(data.get("provenance")),
            calls=_opt_text(data.get("calls"), f"node {node_id}: calls"),
            tool=dict(tool) if isinstance(tool := data.get("tool"), Mapping) else None,
        )


@dataclass(frozen=True)
class TranscriptState:
    """Everything about a conversation but its cache: the tree, the cached token ids, and what they were made with."""

    system_prompt: str | None = None
    drop_turns: int = 0  # oldest user turns left out of the prompt (the overflow policy)
    root_children: tuple[str, ...] = ()
    root_active: int = 0
    nodes: tuple[NodeState, ...] = ()
    tokens: tuple[int, ...] = ()
    model_fingerprint: str = ""
    template_hash: str = ""
    version: int = field(default=STATE_VERSION)

    def node(self, node_id: str) -> NodeState | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def active_path(self) -> list[NodeState]:
        """The nodes on the active path, from the first user message to the leaf."""
        by_id = {n.id: n for n in self.nodes}
        path: list[NodeState] = []
        kids, active = self.root_children, self.root_active
        while True:
            present = [k for k in kids if k in by_id]
            if not present:
                return path
            node = by_id[present[min(active, len(present) - 1)]]
            path.append(node)
            kids, active = node.children, node.active

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "system_prompt": self.system_prompt,
            "drop_turns": self.drop_turns,
            "root_children": list(self.root_children),
            "root_active": self.root_active,
            "nodes": [n.to_json() for n in self.nodes],
            "tokens": list(self.tokens),
            "model_fingerprint": self.model_fingerprint,
            "template_hash": self.template_hash,
        }

    @classmethod
    def from_json(cls, data: Any) -> TranscriptState:
        """Validate and read a saved state; a malformed one raises :class:`TranscriptError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise TranscriptError("the conversation state is not an object")
        version = data.get("version")
        if version != STATE_VERSION:
            raise TranscriptError(f"unsupported conversation state version {version!r}")
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise TranscriptError("the conversation state has no node list")
        system_prompt = data.get("system_prompt")
        return cls(
            system_prompt=system_prompt if isinstance(system_prompt, str) and system_prompt else None,
            drop_turns=_int(data.get("drop_turns", 0), "drop_turns"),
            root_children=tuple(_strs(data.get("root_children") or (), "root_children")),
            root_active=_int(data.get("root_active", 0), "root_active"),
            nodes=tuple(NodeState.from_json(n) for n in nodes),
            tokens=_ints(data.get("tokens") or (), "tokens"),
            model_fingerprint=str(data.get("model_fingerprint") or ""),
            template_hash=str(data.get("template_hash") or ""),
        )


@dataclass(frozen=True)
class HistoryMessage:
    """A stored message without tokens, for :func:`state_from_messages` (store rows, imported conversations)."""

    id: str
    role: str  # messages of other roles than user/assistant/environment are skipped
    content: str
    parent_id: str | None
    active: bool
    reasoning: str | None = None
    finish_reason: FinishReason | None = None
    stats: TurnStats | None = None
    tool: Mapping[str, Any] | None = None  # an assistant's calls ({"raw_calls", "calls"}) or a tool result


def split_reasoning(raw: str, think: bool) -> tuple[str | None, str]:
    """``"<think>why</think>answer"`` → ``("why", "answer")``; non-Think text → ``(None, text)``."""
    if not think:
        return None, raw
    body = raw[len(THINK_OPEN) :] if raw.startswith(THINK_OPEN) else raw
    if THINK_CLOSE in body:
        reasoning, answer = body.split(THINK_CLOSE, 1)
        return reasoning, answer.lstrip("\n")
    return body, ""


def state_from_messages(
    messages: Iterable[HistoryMessage], *, system_prompt: str | None, think: bool
) -> TranscriptState:
    """A state rebuilt from a message tree without tokens (an imported conversation).

    Node ids are the messages' ids. The first turn after loading it re-reads the whole history.
    """
    msgs = [m for m in messages if m.role in ROLES]
    by_parent: dict[str | None, list[HistoryMessage]] = {}
    for m in msgs:
        by_parent.setdefault(m.parent_id, []).append(m)

    def active_index(children: Sequence[HistoryMessage]) -> int:
        return next((i for i, m in enumerate(children) if m.active), max(0, len(children) - 1))

    nodes = []
    for m in msgs:
        kids = by_parent.get(m.id, [])
        assistant = m.role == "assistant"
        reasoning = (m.reasoning or None) if assistant else None
        raw = m.content
        if assistant and think and reasoning is not None:
            raw = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{raw}"
        tool = dict(m.tool) if isinstance(m.tool, Mapping) else None
        raw_calls = tool.get("raw_calls") if assistant and tool is not None else None
        nodes.append(
            NodeState(
                id=m.id,
                role=cast(Role, m.role),
                content=m.content,
                raw=raw,
                parent=m.parent_id,
                reasoning=reasoning,
                children=tuple(k.id for k in kids),
                active=active_index(kids),
                finish_reason=(m.finish_reason or "stop") if assistant else None,
                stats=m.stats,
                think=bool(think and assistant),
                calls=raw_calls if isinstance(raw_calls, str) else None,
                tool=tool,
            )
        )
    roots = by_parent.get(None, [])
    return TranscriptState(
        system_prompt=system_prompt or None,
        root_children=tuple(m.id for m in roots),
        root_active=active_index(roots),
        nodes=tuple(nodes),
    )


def _opt_text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TranscriptError(f"{what} must be text or null")


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise TranscriptError(f"{key} must be a non-empty string, not {value!r}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TranscriptError(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, list | tuple):
        raise TranscriptError(f"{what} must be a list of integers")
    return tuple(_int(v, what) for v in values)


def _strs(values: Any, what: str) -> list[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise TranscriptError(f"{what} must be a list of strings")
    return list(values)
