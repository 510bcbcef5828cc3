"""A conversation of the local server: a :class:`ChatSession` whose history comes whole with every request.

Runs on the engine thread (it is a ``ChatSession``: MLX). The server's requests are stateless, so a
:class:`ServeSession` keeps no message tree of its own: each request's messages are loaded as they came and
rendered by the model's chat template exactly as the client sent them (system messages anywhere, assistant
replies with or without their reasoning). What it keeps between requests is what the chat session keeps: the
token-exact transcript, the live cache and turn snapshots, so ``send`` reconciles the new rendering with them
(extend, restore a snapshot, or re-prefill) by the session's own rules.

Two more snapshots are taken while a prompt is prefilled (:meth:`ServeSession._prompt_checkpoints`):

* at the end of the system prompt, on a conversation's first turn: a new conversation with the same system
  prompt (an editor's or agent's long instructions, or the template's default) is forked from it;
* before a Think prompt's ``<think>``: clients send replies back without their reasoning, so the next request's
  rendering leaves the cached tokens right after ``<|im_start|>assistant\\n``; from the checkpoint, the follow-up
  feeds only the short answer and the new message, also long after the sliding window wrapped.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mlx.core as mx
from tokenizers import Tokenizer

from ..model.template import Rendering
from ..tools.messages import system_message
from .completion import CacheSource, ChatMessage, CompletionFinish, CompletionFinished, CompletionRequest, StopMatcher
from .events import Event, TextDelta, TurnFinished
from .session import ChatSession, ContextOverflowError
from .transcript import THINK_CLOSE, THINK_OPEN, OverflowPolicy, Reconcile

# Turn-end snapshots plus (Think) prompt checkpoints a server conversation keeps: enough to edit or regenerate
# any of the last few turns without re-reading the history. The engine's memory budget drops them first.
SERVE_SNAPSHOTS = 8
_PLACEHOLDER = "(request)"  # the user node's text: the rendering comes from the request, not from the tree

# The system-prompt text of each head of messages, per chat template (two probe renderings each).
_SYSTEM_TEXTS: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()

_SOURCES: dict[Reconcile, CacheSource] = {
    "append": "live",
    "append_turn_end": "live",
    "trim": "live",
    "snapshot": "snapshot",
    "restored": "disk",
    "fresh": "none",
    "reprefill": "none",
}


def template_messages(
    messages: tuple[ChatMessage, ...], *, think: bool, with_tools: bool = False
) -> list[dict[str, str]]:
    """The request's messages as the chat template takes them. A Think reply sent back with its reasoning is
    rendered the way the model wrote it (``<think>reasoning</think>answer``), so its cached tokens match. With tools,
    a reply's calls go in ``function_calls`` (as the model writes them), a tool's result is an ``environment`` turn,
    and a system prompt gets the space the training data had before ``<functions>`` (``olmo3.tools.messages``)."""
    out = []
    for m in messages:
        content = m.content
        if m.role == "assistant" and think and m.reasoning is not None:
            content = f"{THINK_OPEN}{m.reasoning}{THINK_CLOSE}{m.content}"
        if m.role == "system":
            out.append(system_message(content, with_tools=with_tools))
            continue
        message = {"role": m.role, "content": content}
        if m.calls is not None:
            message["function_calls"] = m.calls
        out.append(message)
    return out


class ServeSession(ChatSession):
    """One of the server's conversations (see the module docstring). ``conv_key``: the requests it serves
    (:meth:`CompletionRequest.conversation_key`)."""

    def __init__(self, model: Any, tokenizer: Any, *, conv_key: str | None, **options: Any):
        options.setdefault("max_snapshots", SERVE_SNAPSHOTS)
        super().__init__(model, tokenizer, None, **options)
        self.conv_key = conv_key
        self.request_messages: list[dict[str, str]] = []
        self.raw_prompt: str | None = None
        self._added: list[str] | None = None
        self._reserve: int | None = None

    def load_request(self, request: CompletionRequest) -> None:
        """Make ``request`` the conversation to render; the transcript, cache and snapshots stay."""
        self.nodes, self.root_children, self.root_active, self.drop_turns = {}, [], 0, 0
        self.system_prompt = None
        self.raw_prompt = request.prompt
        self.tools = [dict(t) for t in request.tools] if request.tools else None
        self.request_messages = template_messages(
            request.messages, think=self.info.is_think, with_tools=bool(self.tools)
        )

    def rendered(self) -> Rendering:
        """The request rendered with the chat template plus the generation prompt (or the raw prompt)."""
        return self.render(self._template_messages([]), add_generation_prompt=True)

    def _decode(self, ids: list[int]) -> str:
        """The session's decode, straight from the ``tokenizers`` backend when there is one (transformers' own
        ``decode`` first checks every id in Python: most of the time a request spends matching long histories)."""
        backend = getattr(getattr(self.tokenizer, "_tokenizer", None), "_tokenizer", None)
        if isinstance(backend, Tokenizer):
            return str(backend.decode(ids, skip_special_tokens=False))
        return super()._decode(ids)

    # ChatSession hooks: render the request, not the (empty) message tree, exactly as the client sent it: the
    # template does with earlier reasoning what it does (a client that wants it kept sends reasoning_content).
    def _template_messages(self, path: list[Any], keep_reasoning: bool = True) -> list[dict[str, str]]:
        return [dict(m) for m in self.request_messages]

    def _render_history(self, path: list[Any], keep_reasoning: bool) -> Rendering:
        return self.render(self._template_messages(path), add_generation_prompt=True)

    def template_keeps_reasoning(self) -> bool:
        return True  # nothing to drop: the request's messages are the prompt (and no probe per conversation)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> Rendering:
        if self.raw_prompt is not None:  # a raw completion: all of it plain text, like any text from outside
            tokens = self.template.tokens
            assert tokens is not None, "the loader attaches the tokenizer to the template"
            return Rendering(self.raw_prompt, (), tokens)
        return super().render(messages, add_generation_prompt)

    def _markup_start(self, text: str, at: int) -> int:
        """Where an added token (``<|im_end|>``, ...) starts in ``text`` if it spans position ``at``, else ``at``."""
        if self._added is None:
            vocab: dict[str, int] = getattr(self.tokenizer, "get_added_vocab", dict)()
            self._added = [t for t in vocab if len(t) > 1]
        for token in self._added:
            i = text.find(token, max(0, at - len(token) + 1), at + len(token) - 1)
            while 0 <= i < at:
                if at < i + len(token):
                    return i
                i = text.find(token, i + 1, at + len(token) - 1)
        return at

    def _prompt_checkpoints(self, target: list[int], target_text: str) -> list[int]:
        if self.raw_prompt is not None:
            return []
        points = []
        system = self._system_text() if not self.tokens else ""  # a conversation's first turn
        if system and target_text.startswith(system):
            points.append(self._boundary(target, system))
        if target_text.endswith(THINK_OPEN):
            points.append(self._reply_start(target, target_text))
        return [p for p in points if 0 < p < len(target)]

    def _system_text(self) -> str:
        """The rendering of everything before the first user message's content (the system prompt, the template's
        default one included, and the user turn's header): every conversation with that system prompt starts with
        it. Found as what two probe conversations, different only in their first user message, have in common."""
        head = []
        for m in self.request_messages:
            if m["role"] == "user":
                break
            head.append(m)
        memo = _SYSTEM_TEXTS.setdefault(self.template, {})  # shared by the model's conversations
        key = repr(head)
        if key not in memo:
            try:
                a, b = (self.render([*head, {"role": "user", "content": c}], False).text for c in ("A", "B"))
                n = common_text_prefix(a, b)
                text = a[:n] if n < len(a) else ""
            except Exception:  # a template that refuses the probes: no checkpoint
                text = ""
            if len(memo) >= 64:
                memo.clear()
            memo[key] = text
        return memo[key]

    def _boundary(self, target: list[int], text: str) -> int:
        """Tokens of ``target`` that ``text`` covers, never cut inside the template's markup."""
        at = self._verbatim_prefix(target, text)
        cut = self._markup_start(text, len(self._decode(target[:at])))
        while at and len(self._decode(target[:at])) > cut:
            at -= 1
        return at

    # ------------------------------------------------------------------ the turn
    def run_request(
        self,
        request: CompletionRequest,
        should_stop: Callable[[], bool],
        *,
        forked: bool,
        processors: list[Any] | None = None,
    ) -> Iterator[Event]:
        """Start the request's turn (raises ``ContextOverflowError`` before feeding anything) and return its
        events: ``TextDelta`` cut at the stop strings, then one :class:`CompletionFinished`. ``processors``: the
        engine's own logits processors, before the request's ``logit_bias``."""
        sampling = dict(request.sampling)
        matcher = StopMatcher(request.stop)
        processors = list(processors or [])
        if request.logit_bias:
            processors.append(logit_bias_processor(request.logit_bias))

        def stop() -> bool:
            return matcher.hit or should_stop()

        # OpenAI's max_tokens is a reservation: a prompt that leaves less room is refused (context_length_exceeded).
        # Without it, the model's default is a cap, and the reply stops where the context is full (finish "length").
        self._reserve = int(sampling["max_tokens"]) if "max_tokens" in sampling else None
        events = self.send(_PLACEHOLDER, sampling=sampling, should_stop=stop, logits_processors=processors)
        return self._completion_events(events, matcher, forked=forked)

    def _plan(
        self, user: Any, overflow: OverflowPolicy, max_tokens: int, keep_reasoning: bool = True
    ) -> tuple[list[int], str, int]:
        try:  # without a reservation, any prompt that leaves room for one token is served (as OpenAI does)
            reserve = max_tokens if self._reserve else 1
            target, target_text, dropped = super()._plan(user, overflow, reserve, keep_reasoning)
        except ContextOverflowError as e:
            if self._reserve is None:
                raise
            raise ContextOverflowError(e.used, e.new_tokens, self._reserve, e.limit, 0, e.reason) from None
        if self._reserve is not None:
            ok, limit, reason = self._fits(len(target) + self._reserve)
            if not ok:
                raise ContextOverflowError(len(target), 0, self._reserve, limit, 0, reason)
        return target, target_text, dropped

    def _completion_events(self, events: Iterator[Event], matcher: StopMatcher, *, forked: bool) -> Iterator[Event]:
        raw = self.raw_prompt is not None
        channel = ""
        for event in events:
            if isinstance(event, TextDelta):
                text = event.text
                if raw and event.channel == "answer" and channel == "reasoning":
                    text = THINK_CLOSE + text  # a raw completion is the text as generated
                channel = event.channel
                if raw or event.channel == "answer":
                    text = matcher.feed(text)
                if text:
                    yield TextDelta(text=text, channel="answer" if raw else event.channel)
            elif isinstance(event, TurnFinished):
                tail = ""
                reply = event.reply
                if (
                    raw
                    and channel == "reasoning"
                    and reply is not None
                    and THINK_CLOSE in self._decode(list(reply.tokens))
                ):
                    tail = matcher.feed(THINK_CLOSE)  # the reply ended right after </think>
                tail += matcher.flush()
                if tail:
                    yield TextDelta(text=tail, channel="answer")
                st = event.stats
                completion = st.generated_tokens - (1 if st.finish_reason == "stop" else 0)
                source = _SOURCES[st.reconcile]
                if forked and st.cached_tokens:
                    source = "fork"
                finish: CompletionFinish = "length" if st.finish_reason == "context" else st.finish_reason
                yield CompletionFinished(
                    finish_reason="stop" if matcher.hit else finish,
                    prompt_tokens=st.prompt_tokens + st.cached_tokens,
                    cached_tokens=st.cached_tokens,
                    completion_tokens=completion,
                    reconcile=st.reconcile,
                    source=source,
                    stats=st,
                )
            else:
                yield event


def logit_bias_processor(bias: Mapping[int, float]) -> Callable[[Any, Any], Any]:
    """A logits processor adding OpenAI's ``logit_bias`` (token id → bias; -100 bans a token, +100 forces it)."""
    ids = mx.array(list(bias), dtype=mx.int32)
    values = mx.array([float(v) for v in bias.values()], dtype=mx.float32)

    def process(tokens: Any, logits: Any) -> Any:
        return logits.at[..., ids].add(values.astype(logits.dtype))

    return process


def common_text_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings (binary search over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
