"""One conversation with an Olmo-3 model: a token-exact transcript next to the hybrid KV cache that holds it.

The recipe (why each follow-up feeds only the new tokens, and never a wrong prompt):

1. ``tokens`` are the exact ids whose keys/values the live cache holds: every prompt token fed and every
   sampled token, including the final stop token (``generate_step`` feeds a token before yielding it).
   Generated ids are kept as sampled; reply text is never re-tokenized.
2. For a turn, render the **whole** active conversation with the model's own chat template (so a default
   system prompt appears once, at the top, as the template wants) plus the generation prompt, giving
   ``target_text``. The longest prefix of ``tokens`` whose text is a prefix of ``target_text`` is kept
   verbatim; only the rest of the text is tokenized. Normally that prefix is all of ``tokens``.
3. Find the cache that already holds the longest prefix of that target: the live cache, or a snapshot
   taken at a turn boundary, rewound by a few tokens only while no ring buffer has wrapped. Feed the rest.
   How the cache was brought in line is reported in ``TurnStats.reconcile``.
4. After the turn, the live cache is compacted and snapshotted (copy-on-write, no bytes copied up front):
   regenerate and edit restore the snapshot before the user turn and feed only that turn, also long after
   the sliding layers have wrapped and trimming became impossible.

Think turns (:mod:`olmo3.chat.thinking`): a thinking budget closes the reasoning with forced tokens that become
part of the reply (so the transcript stays exact); earlier reasoning is kept or dropped as asked, and a dropped
one is served by a snapshot taken where the reply began. Each reply carries its :class:`Provenance`.

Branches: messages form a tree (:mod:`olmo3.chat.tree`). Regenerate adds a sibling reply; edit adds a sibling
user message. Nothing is erased; ``switch_branch`` picks which alternative is active. The decode loop itself, with
the thinking budget, is :mod:`olmo3.chat.decode`.

(Over 600 lines: a turn is one transaction over the transcript and the cache: plan and render, take the best
cache, prefill with its checkpoints, decode, snapshot, and put everything back as it was if anything fails; the
parts that stand alone — the tree, the decoder, tool turns, thinking — live in modules of their own.)
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from .. import __version__
from ..ids import new_id
from ..model.config import FULL, SLIDING
from ..model.modelinfo import ModelInfo
from ..model.template import Rendering, for_tokenizer
from ..tools.messages import system_message
from . import kvcache
from .decode import Decoder
from .events import Event, PrefillProgress, TurnFinished
from .sampling import Sampling, recommended
from .thinking import BUDGET_CLOSE, has_reasoning, render_keeping_reasoning, strip_reasoning, template_keeps_reasoning
from .transcript import (
    THINK_OPEN,
    FinishReason,
    OverflowPolicy,
    OverflowReason,
    Provenance,
    Reconcile,
    TranscriptMessage,
    TranscriptState,
    TurnStats,
    split_reasoning,
)
from .tree import ConversationTree, Node

log = logging.getLogger(__name__)


class ContextOverflowError(Exception):
    """The turn does not fit; nothing was fed. Carries the numbers so the UI can offer a policy."""

    def __init__(
        self,
        used: int,
        new_tokens: int,
        max_tokens: int,
        limit: int,
        droppable_turns: int,
        reason: OverflowReason = "context",
    ):
        self.used, self.new_tokens, self.max_tokens = used, new_tokens, max_tokens
        self.limit, self.droppable_turns, self.reason = limit, droppable_turns, reason
        what = "context window" if reason == "context" else "memory budget for this conversation"
        super().__init__(
            f"this turn needs {used} tokens of history and prompt plus at least {max_tokens} for a reply, "
            f"but the {what} allows {limit}; {droppable_turns} older turn(s) could be dropped"
        )


MIN_REPLY_TOKENS = 256  # a turn is refused only when the prompt leaves less room than this (or 1/8 of the context)


class _CancelledError(Exception):
    """Raised inside a turn when ``should_stop`` says so; the turn ends as finish_reason "cancelled"."""


@dataclass
class _TurnPlan:
    """A planned turn: what it feeds and where its messages go (built before anything is touched)."""

    user: Node
    new_user: bool
    reply_id: str
    sampling: Sampling
    target: list[int]
    target_text: str
    dropped: int
    should_stop: Callable[[], bool]
    extra_lp: list[Any]
    previous_active: str | None
    keep_reasoning: bool = True  # effective: the setting, else what the template does
    reasoning_dropped: int = 0  # tokens of earlier reasoning left out of this prompt


@dataclass
class _Snapshot:
    tokens: list[int]
    cache: list[Any]


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def model_info(model: Any) -> ModelInfo:
    info = getattr(model, "info", None)
    if info is not None:
        return info
    a = model.args
    per_layer = 2 * a.num_key_value_heads * a.head_dim * 2
    return ModelInfo(
        path="",
        name="model",
        model_type="olmo3",
        num_layers=a.num_hidden_layers,
        hidden_size=a.hidden_size,
        num_heads=a.num_attention_heads,
        num_kv_heads=a.num_key_value_heads,
        head_dim=a.head_dim,
        sliding_window=a.sliding_window,
        layer_types=list(a.layer_types),
        max_position_embeddings=a.max_position_embeddings,
        vocab_size=a.vocab_size,
        param_count=0,
        weight_bytes=0,
        quantization=None,
        is_think=False,
        kv_bytes_per_token_full=per_layer * a.layer_types.count(FULL),
        kv_bytes_per_token_sliding=per_layer * a.layer_types.count(SLIDING),
    )


class ChatSession(ConversationTree):
    """One conversation: messages (a tree with branches), ``tokens`` and the live hybrid KV cache.

    ``send``/``regenerate``/``edit`` return iterators of events (``PrefillProgress``, ``TextDelta``, then one
    ``TurnFinished``); they raise ``ContextOverflowError`` before feeding anything when a turn would not fit.
    Iterate them to completion (or pass ``should_stop`` to cancel within one decode step / prefill chunk).
    Not thread-safe: the engine drives all sessions from its one MLX thread.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        system_prompt: str | None = None,
        *,
        max_snapshots: int = 4,
        prefill_step_size: int = 1024,
        kv_bits: int | None = None,
        context_limit: int | None = None,
        kv_budget_bytes: int | None = None,
        **sampling: Any,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.template = for_tokenizer(tokenizer)
        self.info = model_info(model)
        self.system_prompt = system_prompt or None
        self.sampling = recommended(self.info.path or None, think=self.info.is_think).merged(sampling)
        self.sampling.validate()
        self.max_snapshots = max_snapshots
        self.prefill_step_size = prefill_step_size
        self.kv_bits = kv_bits
        self.context_limit = min(context_limit or self.info.max_position_embeddings, self.info.max_position_embeddings)
        self.kv_budget_bytes = kv_budget_bytes
        self.tokens: list[int] = []
        self.cache: list[Any] | None = None
        self.snapshots: list[_Snapshot] = []
        self.restored_from_disk = False
        self.last_stats: TurnStats | None = None
        self._template_keeps: bool | None = None
        # The tools offered to the model (template definitions, as ``olmo3.tools.messages`` makes them), or None.
        # Set per turn by the engine (olmo3.chat.tool_turns); rendered by the model's own template.
        self.tools: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ rendering
    def _template_messages(self, path: list[Node], keep_reasoning: bool = True) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system_prompt:
            msgs.append(system_message(self.system_prompt, with_tools=bool(self.tools)))
        turn, kept = -1, []
        for n in path:
            if n.role == "user":
                turn += 1
            if turn >= self.drop_turns:
                raw = n.raw if keep_reasoning or n.role != "assistant" else strip_reasoning(n.raw)
                message = {"role": n.role, "content": raw}
                if n.calls is not None:  # replayed exactly as the model wrote them (olmo3.tools.messages)
                    message["function_calls"] = n.calls
                kept.append(message)
        return msgs + kept

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> Rendering:
        """The model's chat template over ``messages`` (and the offered ``tools``), in the bounded sandbox, with
        every message's content and every tool schema protected: only the template's own markup becomes control
        tokens (``olmo3.model.template``)."""
        return self.template.render(messages, add_generation_prompt=add_generation_prompt, tools=self.tools)

    def template_keeps_reasoning(self) -> bool:
        """Whether the model's chat template keeps earlier replies' reasoning in the prompt (asked once)."""
        if self._template_keeps is None:
            self._template_keeps = template_keeps_reasoning(lambda m: self.render(m, add_generation_prompt=True).text)
        return self._template_keeps

    def _render_history(self, path: list[Node], keep_reasoning: bool) -> Rendering:
        """The prompt for ``path``: earlier reasoning kept or dropped as asked, whatever the template does."""
        messages = self._template_messages(path, keep_reasoning)
        if keep_reasoning and not self.template_keeps_reasoning():
            return render_keeping_reasoning(lambda m: self.render(m, add_generation_prompt=True), messages)
        return self.render(messages, add_generation_prompt=True)

    def _reasoning_dropped(self, path: list[Node], keep_reasoning: bool) -> int:
        """Tokens of earlier reasoning the prompt leaves out (what dropping it saves)."""
        if keep_reasoning:
            return 0
        turn, saved = -1, 0
        for n in path:
            turn += n.role == "user"
            if turn < self.drop_turns or n.role != "assistant" or not has_reasoning(n.raw):
                continue
            if n.stats is not None and n.stats.reasoning_tokens:
                saved += n.stats.reasoning_tokens
            else:
                encode = self.template.encode_text
                saved += len(encode(n.raw)) - len(encode(strip_reasoning(n.raw)))
        return saved

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _verbatim_prefix(self, base: list[int], target_text: str) -> int:
        """Length of the longest prefix of ``base`` whose text is a prefix of ``target_text``."""
        if target_text.startswith(self._decode(base)):
            return len(base)
        lo, hi = 0, len(base)  # invariant: base[:lo] is a text prefix; base[:hi] is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if target_text.startswith(self._decode(base[:mid])):
                lo = mid
            else:
                hi = mid
        return lo

    def _target(self, rendering: Rendering) -> tuple[list[int], int]:
        """Target token ids for a rendering: the longest verbatim prefix of the live transcript or of a
        snapshot's transcript (exact sampled ids), then the rest of the text, tokenized with content as plain
        text (the decoded prefix starts the rendering, so its length is an offset into it)."""
        best, keep = self.tokens, -1
        for base in [self.tokens] + [s.tokens for s in reversed(self.snapshots)]:
            if len(base) <= keep:
                continue
            k = self._verbatim_prefix(base, rendering.text)
            if k > keep:
                best, keep = base, k
        # Never keep a prefix that ends inside the template's markup: a cached ``<`` (of ``<think>``) is a text
        # prefix of ``<|im_end|>`` too, and keeping it would tokenize the rest of that control token as plain text.
        at = len(self._decode(best[:keep])) if keep > 0 else 0
        cut = next((start for start, end, _ in rendering.markup if start < at < end), at)
        while keep > 0 and len(self._decode(best[:keep])) > cut:
            keep -= 1
        prefix = best[: max(keep, 0)]
        return prefix + rendering.encode_from(len(self._decode(prefix))), keep

    # ------------------------------------------------------------------ caches
    def best_cache(self, target: list[int]) -> tuple[int, str, Any, list[int]] | None:
        """Which cache holds the longest usable prefix of ``target`` (at most ``len(target) - 1``: one token
        must be fed to get logits), touching nothing: ``(usable, "live" | "snapshot", cache, its tokens)``."""
        best: tuple[int, str, Any, list[int]] | None = None
        candidates = [("live", self.cache, self.tokens)] + [("snapshot", s.cache, s.tokens) for s in self.snapshots]
        for name, cache, toks in candidates:
            if cache is None or (best is not None and len(toks) <= best[0]):
                continue  # a shorter transcript cannot beat the best match so far
            usable = min(common_prefix_len(toks, target), len(target) - 1)
            if usable < len(toks) and not kvcache.can_trim(cache, len(toks) - usable):
                continue
            if best is None or usable > best[0]:
                best = (usable, name, cache, toks)
        return best

    def _acquire_cache(self, target: list[int]) -> tuple[list[Any], int, Reconcile]:
        """The cache holding the longest prefix of ``target`` (see :meth:`best_cache`), ready to extend.
        Returns ``(cache, cached_len, how)``."""
        best = self.best_cache(target)
        if best is None or best[0] == 0:
            fresh = self.cache is None and not self.tokens
            self.cache = None
            return self.model.make_cache(), 0, "fresh" if fresh else "reprefill"
        usable, name, cache, toks = best
        if name == "snapshot":
            cache = kvcache.restore(cache)
        how: Reconcile = "append" if name == "live" else "snapshot"
        if usable < len(toks):
            kvcache.trim(cache, len(toks) - usable)
            how = "trim" if name == "live" else how
        if name == "live" and self.restored_from_disk:
            how = "restored"
        return cache, usable, how

    def _take_snapshot(self, tokens: list[int] | None = None, cache: list[Any] | None = None) -> None:
        """Snapshot the live cache (or ``cache``, holding ``tokens``: a point inside a turn)."""
        tokens = self.tokens if tokens is None else tokens
        cache = self.cache if cache is None else cache
        if cache is None or self.max_snapshots <= 0:
            return
        self.snapshots = [s for s in self.snapshots if s.tokens != tokens]
        self.snapshots.append(_Snapshot(list(tokens), kvcache.snapshot(cache)))
        del self.snapshots[: -self.max_snapshots]

    def _prompt_checkpoints(self, target: list[int], target_text: str) -> list[int]:
        """Where to snapshot the cache while this turn's prompt is prefilled (token counts; those already cached
        are skipped).

        None here: a conversation snapshots at the end of each turn only. The local server's sessions
        (``olmo3.chat.serve_session``) checkpoint the end of the system prompt (new conversations start from
        it) and a Think prompt before its ``<think>`` (clients send replies back without their reasoning)."""
        return []

    def drop_snapshots(self) -> int:
        freed = sum(kvcache.nbytes(s.cache) for s in self.snapshots)
        self.snapshots = []
        return freed

    def drop_cache(self) -> None:
        """Forget the live cache (e.g. spilled to disk or evicted); the transcript stays."""
        self.cache = None
        self.snapshots = []
        self.restored_from_disk = False

    def kv_bytes(self, include_snapshots: bool = False) -> int:
        n = kvcache.nbytes(self.cache)
        if include_snapshots:
            n += sum(kvcache.nbytes(s.cache) for s in self.snapshots)
        return n

    # ------------------------------------------------------------------ public turns
    def send(
        self,
        text: str,
        *,
        prompt_text: str | None = None,
        message_id: str | None = None,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        should_stop: Callable[[], bool] | None = None,
        logits_processors: list[Any] | None = None,
    ) -> Iterator[Event]:
        """Add a user message and generate the reply.

        ``message_id``/``reply_id`` name the new user message and reply (the store's ids, so both sides agree);
        fresh ids are made when they are not given. ``prompt_text``: what the model reads as this message when it
        differs from the shown ``text`` (attached documents, then the text); it is kept as the message's rendered
        content, so later turns reuse its cached tokens.
        """
        user = self.new_user_node(text, prompt_text=prompt_text, message_id=message_id)
        return self._turn(user, True, reply_id, sampling, overflow, should_stop, logits_processors)

    def regenerate(
        self,
        *,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        should_stop: Callable[[], bool] | None = None,
        logits_processors: list[Any] | None = None,
    ) -> Iterator[Event]:
        """A new reply to the last user message, kept beside the old ones."""
        return self._turn(self.last_user_node(), False, reply_id, sampling, overflow, should_stop, logits_processors)

    def edit(
        self,
        user_turn_index: int,
        text: str,
        *,
        prompt_text: str | None = None,
        message_id: str | None = None,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        should_stop: Callable[[], bool] | None = None,
        logits_processors: list[Any] | None = None,
    ) -> Iterator[Event]:
        """Replace user turn ``i`` with ``text`` (as a new branch) and generate its reply (``prompt_text``: as in
        :meth:`send`)."""
        user = self.new_user_node(text, prompt_text=prompt_text, message_id=message_id, replacing=user_turn_index)
        return self._turn(user, True, reply_id, sampling, overflow, should_stop, logits_processors)

    # ------------------------------------------------------------------ tool turns (olmo3.chat.tool_turns)
    def continue_turn(
        self,
        *,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        should_stop: Callable[[], bool] | None = None,
        logits_processors: list[Any] | None = None,
    ) -> Iterator[Event]:
        """Generate the next reply after the tools' results: the active leaf must be an ``environment`` turn."""
        path = self.active_path()
        if not path or path[-1].role != "environment":
            raise ValueError("nothing to continue: the conversation does not end with a tool's result")
        return self._turn(path[-1], False, reply_id, sampling, overflow, should_stop, logits_processors)

    def set_calls(self, node_id: str, raw: str, calls: str, tool: dict[str, Any]) -> TranscriptMessage:
        """Make reply ``node_id`` one with function calls: ``raw`` is its text before them (what the template
        renders as content), ``calls`` the text between the tags exactly as generated, ``tool`` the parsed calls.
        The transcript's ids stay as sampled; the template renders ``raw`` + the tags + ``calls`` back."""
        node = self.nodes[node_id]
        if node.role != "assistant":
            raise ValueError(f"message {node_id} is not a reply")
        node.reasoning, node.content = split_reasoning(raw, node.think)
        node.raw, node.calls, node.tool = raw, calls, dict(tool)
        return self._message(node, self._turn_index(node))

    def add_environment(
        self, parent_id: str, text: str, *, tool: dict[str, Any], node_id: str | None = None
    ) -> TranscriptMessage:
        """Add a tool's result (an ``environment`` turn, plain text to the tokenizer) after ``parent_id``."""
        if parent_id not in self.nodes:
            raise KeyError(f"no message {parent_id} in this conversation")
        node = self._add(
            Node(id=self.fresh_id(node_id), role="environment", content=text, raw=text, parent=parent_id, tool=tool)
        )
        return self._message(node, self._turn_index(node))

    # ------------------------------------------------------------------ the turn
    def _fits(self, n_tokens: int) -> tuple[bool, int, OverflowReason]:
        if n_tokens > self.context_limit:
            return False, self.context_limit, "context"
        if self.kv_budget_bytes is not None and self.info.kv_bytes(n_tokens) > self.kv_budget_bytes:
            return False, min(self._tokens_that_fit(self.kv_budget_bytes), self.context_limit), "memory"
        return True, self.context_limit, "context"

    def _tokens_that_fit(self, budget: int) -> int:
        """The longest conversation whose hybrid KV (``ModelInfo.kv_bytes``) fits in ``budget`` bytes."""
        full, sliding, window = (
            self.info.kv_bytes_per_token_full,
            self.info.kv_bytes_per_token_sliding,
            self.info.sliding_window,
        )
        within_window = budget // max(1, full + sliding)
        if within_window <= window:
            return int(within_window)
        if not full:  # only sliding layers: the cache stops growing at the window
            return self.context_limit
        return int((budget - sliding * window) // full)

    def _room(self, n_prompt: int) -> int:
        """How many tokens a reply may add before the context (or this conversation's KV budget) is full."""
        limit = self.context_limit
        if self.kv_budget_bytes is not None:
            limit = min(limit, self._tokens_that_fit(self.kv_budget_bytes))
        return max(1, limit - n_prompt)

    def _plan(
        self, user: Node, overflow: OverflowPolicy, max_tokens: int, keep_reasoning: bool = True
    ) -> tuple[list[int], str, int]:
        """Render and tokenize the turn; apply the overflow policy. Returns (target, target_text, dropped)."""
        dropped = 0
        while True:
            path = self._path_to(user) if user.id in self.nodes else [*self._path_to_parent(user), user]
            rendering = self._render_history(path, keep_reasoning)
            target_text = rendering.text
            target, _ = self._target(rendering)
            # max_tokens is a cap, not a reservation: the prompt must leave room for a short reply only.
            min_reply = min(max_tokens, MIN_REPLY_TOKENS, max(1, self.context_limit // 8))
            ok, limit, reason = self._fits(len(target) + min_reply)
            n_users = sum(1 for n in path if n.role == "user")
            droppable = n_users - 1 - self.drop_turns
            if ok:
                return target, target_text, dropped
            if overflow != "drop_oldest" or droppable <= 0:
                self.drop_turns -= dropped
                new_tokens = len(self.template.encode_text(user.raw))
                raise ContextOverflowError(len(target), new_tokens, min_reply, limit, max(droppable, 0), reason)
            self.drop_turns += 1
            dropped += 1

    def _turn(
        self,
        user: Node,
        new_user: bool,
        reply_id: str | None,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy,
        should_stop: Callable[[], bool] | None,
        extra_lp: list[Any] | None,
    ) -> Iterator[Event]:
        s = self.sampling.merged(sampling)
        s.validate()
        if reply_id is not None and (reply_id in self.nodes or reply_id == user.id):
            raise ValueError(f"message id {reply_id!r} is already used in this conversation")
        keep = s.keep_reasoning if s.keep_reasoning is not None else self.template_keeps_reasoning()
        # Plan before touching anything: an overflow leaves the session exactly as it was. A reasoning budget
        # comes on top of max tokens (which then limits the answer alone).
        reserve = s.max_tokens + ((s.thinking_budget or 0) if self.info.is_think else 0)
        target, target_text, dropped = self._plan(user, overflow, reserve, keep)
        plan = _TurnPlan(
            user=user,
            new_user=new_user,
            reply_id=reply_id or new_id(),
            sampling=s,
            target=target,
            target_text=target_text,
            dropped=dropped,
            should_stop=should_stop or (lambda: False),
            extra_lp=list(extra_lp or []),
            previous_active=self._active_child(user.parent) if new_user else None,
            keep_reasoning=keep,
        )
        path = self._path_to(user) if user.id in self.nodes else [*self._path_to_parent(user), user]
        plan.reasoning_dropped = self._reasoning_dropped(path, keep) if self.info.is_think else 0
        return self._run(plan)

    def _run(self, plan: _TurnPlan) -> Iterator[Event]:
        finished = False
        user = plan.user
        try:
            for event in self._run_turn(plan):
                finished = finished or isinstance(event, TurnFinished)
                yield event
        except BaseException:
            if not finished:
                # An error (or an abandoned iterator) mid-turn: the live cache may hold tokens the transcript
                # does not. Drop it (snapshots stay valid) and take the new user message back out.
                self.cache = None
                if plan.new_user and user.id in self.nodes and not self.nodes[user.id].children:
                    self._discard_turn(user, True, plan.previous_active)
            raise

    def _run_turn(self, plan: _TurnPlan) -> Iterator[Event]:
        user, new_user, s, target, target_text = plan.user, plan.new_user, plan.sampling, plan.target, plan.target_text
        dropped, stop, previous_active = plan.dropped, plan.should_stop, plan.previous_active
        t0 = time.perf_counter()
        if new_user:
            self._add(user)
        mx.reset_peak_memory()
        think = target_text.endswith(THINK_OPEN)
        cache, cached_len, how = self._acquire_cache(target)
        if dropped:
            how = "reprefill" if how != "snapshot" else how
        last_reply = next((n for n in reversed(self._path_to_parent(user)) if n.role == "assistant"), None)
        if how == "append" and last_reply is not None and last_reply.finish_reason != "stop":
            how = "append_turn_end"
        self.restored_from_disk = False
        feed = target[cached_len:]
        seed = s.seed if s.seed is not None else random.getrandbits(31)
        # Earlier reasoning dropped: the next turn's prompt leaves this reply's reasoning out, so it shares this
        # one only up to the reply's start. A snapshot there serves it even after the ring buffers wrapped.
        snap_at = self._reply_start(target, target_text) if think and not plan.keep_reasoning else -1
        if snap_at == cached_len:
            self._take_snapshot(target[:snap_at], cache)

        # --- prefill everything but the last token, in chunks (cancellable, with progress) ---
        fed = 0
        points = [*self._prompt_checkpoints(target, target_text), snap_at]
        checkpoints = sorted({c for c in points if cached_len < c < len(target)})
        try:
            yield PrefillProgress(done=0, total=len(feed))
            while len(feed) - fed > 1:
                if stop():
                    raise _CancelledError
                n = min(self.prefill_step_size, len(feed) - fed - 1)
                at = next((c for c in checkpoints if c > cached_len + fed), None)
                if at is not None and at < cached_len + fed + n:
                    n = at - cached_len - fed  # end this chunk at the checkpoint
                self.model(mx.array(feed[fed : fed + n])[None], cache=cache)
                mx.eval([c.state for c in cache])
                fed += n
                mx.clear_cache()
                if cached_len + fed in checkpoints:
                    self._take_snapshot(target[: cached_len + fed], cache)
                yield PrefillProgress(done=fed, total=len(feed))
            if stop():
                raise _CancelledError
        except _CancelledError:
            self.tokens, self.cache = target[: cached_len + fed], cache
            self._discard_turn(user, new_user, previous_active)
            yield self._finished(
                user, None, t0, time.perf_counter() - t0, 0, 0.0, "cancelled", len(feed), cached_len, how, seed, dropped
            )
            return
        t_prefill = time.perf_counter() - t0

        # --- decode (generate_step feeds the last prompt token, then each sampled token) ---
        mx.random.seed(seed)
        sampler = make_sampler(s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k)
        processors = (
            make_logits_processors(repetition_penalty=s.repetition_penalty if s.repetition_penalty != 1.0 else None)
            + plan.extra_lp
        )
        budget = s.thinking_budget if think else None
        decoder = Decoder(
            self.model,
            cache,
            self.tokenizer,
            sampler=sampler,
            processors=processors,
            think=think,
            max_tokens=s.max_tokens,
            room=self._room(len(target)),  # the reply never runs past the context: it stops with "context"
            budget=budget,
            close=self.template.encode_text(BUDGET_CLOSE) if budget is not None else [],
            stop=stop,
        )
        yield from decoder.run(feed[-1])
        generated, finish, reasoning_tokens, stopped = (
            decoder.generated,
            decoder.finish,
            decoder.reasoning_tokens,
            decoder.stopped,
        )
        t_first, t_last = decoder.t_first, decoder.t_last

        self.tokens = target + generated
        self.cache = cache
        if self.kv_bits:
            self.cache = kvcache.quantize_full_layers(self.cache, bits=self.kv_bits)
        self._check_offsets()
        text_ids = generated[:-1] if finish == "stop" else generated
        raw = (THINK_OPEN if think else "") + self._decode(text_ids)
        reasoning, content = split_reasoning(raw, think)
        reply = Node(
            id=plan.reply_id,
            role="assistant",
            content=content,
            raw=raw,
            parent=user.id,
            reasoning=reasoning,
            tokens=list(generated),
            finish_reason=finish,
            think=think,
            provenance=self._provenance(s, seed, how, plan.keep_reasoning),
        )
        self._add(reply)
        if self.cache is not None:
            kvcache.compact(self.cache)
        self._take_snapshot()
        ttft = (t_first or time.perf_counter()) - t0
        tps = (len(generated) - 1) / (t_last - t_first) if t_first and len(generated) > 1 and t_last > t_first else 0.0
        thinking = {
            "reasoning_tokens": reasoning_tokens,
            "answer_tokens": len(generated) - reasoning_tokens,
            "thinking_budget": budget,
            "reasoning_stopped": stopped,
            "reasoning_dropped_tokens": plan.reasoning_dropped,
        }
        yield self._finished(
            user,
            reply,
            t0,
            t_prefill,
            ttft,
            tps,
            finish,
            len(feed),
            cached_len,
            how,
            seed,
            dropped,
            len(generated),
            **thinking,
        )

    def _provenance(self, s: Sampling, seed: int, how: Reconcile, keep_reasoning: bool) -> Provenance:
        """Everything this turn was made with (``s`` as given, the seed actually used)."""
        info = self.info
        return Provenance(
            sampling=replace(s, seed=seed, keep_reasoning=keep_reasoning),
            seed=seed,
            seed_was_random=s.seed is None,
            model_name=info.name,
            model_repo_id=info.repo_id,
            model_revision=info.revision,
            model_fingerprint=info.fingerprint,
            quantization=dict(info.quantization) if info.quantization else None,
            template_hash=self.template_hash(),
            thinking_budget=s.thinking_budget,
            keep_reasoning=keep_reasoning,
            kv_bits=self.kv_bits if kvcache.kv_group_size(info.head_dim) else None,  # None: unquantizable
            context_limit=self.context_limit,
            engine_version=__version__,
            reconcile=how,
        )

    def _reply_start(self, target: list[int], target_text: str) -> int:
        """Tokens of ``target`` before the generation prompt's ``<think>`` (where the reply's own text begins)."""
        for k in range(len(target) - 1, max(0, len(target) - 32), -1):  # only the tail is decoded
            tail = self._decode(target[k:])
            if len(tail) >= len(THINK_OPEN) and target_text.endswith(tail):
                return k
        return self._verbatim_prefix(target, target_text[: -len(THINK_OPEN)])

    def _discard_turn(self, user: Node, new_user: bool, previous_active: str | None) -> None:
        """A turn cancelled before any token: remove the new user message (the UI keeps its text)."""
        if new_user:
            self._remove(user)
            if previous_active is not None and previous_active in self.nodes:
                self._set_active(self.nodes[previous_active])
        self._check_offsets()

    def _check_offsets(self) -> None:
        if self.cache is not None and kvcache.offset(self.cache) != len(self.tokens):
            log.warning(
                "cache offset %d != %d transcript tokens; dropping the cache",
                kvcache.offset(self.cache),
                len(self.tokens),
            )
            self.cache = None

    def _finished(
        self,
        user: Node,
        reply: Node | None,
        t0: float,
        prefill_s: float,
        ttft: float,
        tps: float,
        finish: FinishReason,
        fed: int,
        cached: int,
        how: Reconcile,
        seed: int,
        dropped: int,
        generated: int = 0,
        **thinking: Any,
    ) -> TurnFinished:
        now = time.perf_counter()
        stats = TurnStats(
            prompt_tokens=fed,
            cached_tokens=cached,
            generated_tokens=generated,
            ttft_s=ttft,
            tokens_per_s=tps,
            prefill_s=prefill_s,
            total_s=now - t0,
            finish_reason=finish,
            peak_memory_bytes=int(mx.get_peak_memory()),
            reconcile=how,
            context_used=len(self.tokens),
            context_limit=self.context_limit,
            seed=seed,
            dropped_turns=dropped,
            **thinking,
        )
        self.last_stats = stats
        message = None
        if reply is not None:
            reply.stats = stats
            message = self._message(reply, sum(1 for n in self._path_to(user) if n.role == "user") - 1)
        return TurnFinished(stats=stats, reply=message, messages=self.messages, state=self.to_state())

    # ------------------------------------------------------------------ persistence
    def template_hash(self) -> str:
        return hashlib.sha256(self.template.source.encode()).hexdigest()[:16]

    def tokens_hash(self) -> str:
        return hashlib.sha256(",".join(map(str, self.tokens)).encode()).hexdigest()[:16]

    def to_state(self) -> TranscriptState:
        """Everything but the cache (which the engine saves to disk); ``to_json()`` of it goes to the store."""
        return TranscriptState(
            system_prompt=self.system_prompt,
            drop_turns=self.drop_turns,
            root_children=tuple(self.root_children),
            root_active=self.root_active,
            nodes=tuple(n.freeze() for n in self.nodes.values()),
            tokens=tuple(self.tokens),
            model_fingerprint=self.info.fingerprint,
            template_hash=self.template_hash(),
        )

    def load_state(self, state: TranscriptState) -> None:
        """Restore messages and transcript from ``to_state()``. The cache starts cold."""
        self.system_prompt = state.system_prompt
        self.drop_turns = state.drop_turns
        self.nodes = {n.id: Node.thaw(n) for n in state.nodes}
        self.root_children = list(state.root_children)
        self.root_active = state.root_active
        # Tokens are only meaningful for the same weights/tokenizer; otherwise the next turn re-prefills.
        same_model = state.model_fingerprint in ("", self.info.fingerprint)
        self.tokens = list(state.tokens) if same_model else []
        self.drop_cache()
