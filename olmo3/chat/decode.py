"""Decoding one reply: sampling after the prompt, streaming text split into reasoning and answer, and the thinking
budget (MLX: runs on the engine thread).

``generate_step`` feeds each sampled token before it yields it, so when a reply ends the cache holds every id of it,
stop token included: the session's transcript stays token-exact. :class:`Decoder` adds what a chat needs on top:

* it stops at a stop token, at max tokens, at the end of the context (finish reason ``"context"``), or when the
  turn is cancelled (within one decode step);
* **the thinking budget**: once a Think reply's reasoning reaches ``close_at`` tokens, the decoder feeds ``close``
  itself (``</think>`` and the lines after it, like prompt tokens: they become part of the reply and of the cache)
  and sampling goes on with the answer, which max tokens then limits on its own. Without a budget max tokens
  limits the whole reply;
* :class:`ReasoningSplitter` streams a Think reply's text as reasoning until ``</think>``, then as answer, even when
  the tag arrives split across chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step

from .events import TextDelta
from .transcript import THINK_CLOSE, FinishReason

__all__ = ["Decoder", "ReasoningSplitter"]

_AS_IS = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}  # decode every id, change nothing


class ReasoningSplitter:
    """Splits streamed text of a Think turn into reasoning and answer at ``</think>`` (even across chunks).

    Newlines right after ``</think>`` are not part of the answer (as ``split_reasoning`` has it)."""

    def __init__(self, think: bool):
        self.in_reasoning = think
        self._held = ""
        self._answer_started = not think

    def _answer(self, text: str) -> list[tuple[str, str]]:
        if not self._answer_started:
            text = text.lstrip("\n")
            self._answer_started = bool(text)
        return [(text, "answer")] if text else []

    def feed(self, text: str) -> list[tuple[str, str]]:
        if not self.in_reasoning:
            return self._answer(text)
        buf = self._held + text
        i = buf.find(THINK_CLOSE)
        if i >= 0:
            self.in_reasoning = False
            self._held = ""
            out = [(buf[:i], "reasoning")] if buf[:i] else []
            return out + self._answer(buf[i + len(THINK_CLOSE) :])
        # Hold back a tail that could be the start of "</think>".
        keep = 0
        for k in range(1, len(THINK_CLOSE)):
            if buf.endswith(THINK_CLOSE[:k]):
                keep = k
        self._held = buf[len(buf) - keep :] if keep else ""
        emit = buf[: len(buf) - keep] if keep else buf
        return [(emit, "reasoning")] if emit else []

    def flush(self) -> list[tuple[str, str]]:
        held, self._held = self._held, ""
        if not self.in_reasoning:
            return self._answer(held)
        return [(held, "reasoning")] if held else []


def _with_context(processors: list[Any], context: list[int]) -> list[Any]:
    """Logits processors that also see ``context`` before the tokens ``generate_step`` gives them (the reply so
    far, when decoding resumes after forced tokens: a repetition penalty then sees what one run would)."""
    if not context:
        return processors
    prefix = mx.array(context)
    return [lambda tokens, logits, p=p: p(mx.concatenate([prefix, tokens]), logits) for p in processors]


class Decoder:
    """One reply's decode loop; see the module docstring. After :meth:`run`, the attributes say what happened."""

    def __init__(
        self,
        model: Any,
        cache: list[Any],
        tokenizer: Any,
        *,
        sampler: Callable[[Any], Any],
        processors: list[Any],
        think: bool,
        max_tokens: int,
        room: int,
        budget: int | None,
        close: list[int],
        stop: Callable[[], bool],
    ) -> None:
        self.model, self.cache, self.tokenizer = model, cache, tokenizer
        self.sampler, self.processors = sampler, processors
        self.think, self.max_tokens, self.room, self.budget, self.close = think, max_tokens, room, budget, close
        self.stop = stop
        self.generated: list[int] = []
        self.finish: FinishReason = "length"  # if no stop token comes
        self.reasoning_tokens = 0
        self.stopped = False  # the budget closed the reasoning
        self.t_first: float | None = None
        self.t_last = 0.0

    def run(self, last_prompt_token: int) -> Iterator[TextDelta]:
        eos = set(self.tokenizer.eos_token_ids)
        detok = self.tokenizer.detokenizer
        detok.reset()
        splitter = ReasoningSplitter(self.think)
        generated, close, room, budget = self.generated, self.close, self.room, self.budget
        close_at = budget - self.tokens_to_close(close) if budget is not None else None
        prompt, context = [last_prompt_token], list[int]()
        if close_at is not None and close_at <= 0 and len(close) < room:  # a budget shorter than the closing tag
            prompt, self.stopped = prompt + close, True
            generated += close
            for text, channel in self._detokenize(detok, splitter, close):
                yield TextDelta(text=text, channel=channel)
            self.reasoning_tokens = self.tokens_to_close(close)
        while True:
            force = False
            cap = self.max_tokens + (budget + len(close) if budget is not None else 0)
            for token, _ in generate_step(
                mx.array(prompt),
                self.model,
                max_tokens=max(1, min(cap, room) - len(generated)),
                sampler=self.sampler,
                logits_processors=_with_context(self.processors, context) or None,
                prompt_cache=self.cache,
            ):
                now = time.perf_counter()
                self.t_first = self.t_first or now
                self.t_last = now
                generated.append(int(token))
                if token in eos:
                    self.finish = "stop"
                    break
                for text, channel in self._detokenize(detok, splitter, [int(token)]):
                    yield TextDelta(text=text, channel=channel)
                if self.think and not self.reasoning_tokens and not splitter.in_reasoning:
                    self.reasoning_tokens = len(generated)
                if self.stop():
                    self.finish = "cancelled"
                    break
                if len(generated) >= room:
                    self.finish = "context"
                    break
                if splitter.in_reasoning:
                    if close_at is not None and len(generated) >= close_at:
                        if len(generated) + len(close) >= room:  # no room to close and answer: the context ends
                            self.finish = "context"
                        else:
                            force = True
                        break
                elif len(generated) - self.reasoning_tokens >= self.max_tokens:
                    break  # the answer reached max tokens: "length"
            if not force:
                break
            # Everything sampled so far is in the cache; feed the close, then sample the answer after it.
            context, prompt, self.stopped = [last_prompt_token, *generated], close, True
            generated += close
            for text, channel in self._detokenize(detok, splitter, close):
                yield TextDelta(text=text, channel=channel)
            self.reasoning_tokens = len(generated) - len(close) + self.tokens_to_close(close)
        detok.finalize()
        for text, channel in splitter.feed(detok.last_segment) + splitter.flush():
            yield TextDelta(text=text, channel=channel)
        if self.think and splitter.in_reasoning:
            self.reasoning_tokens = len(generated)  # the reply ended inside its reasoning

    def tokens_to_close(self, close: list[int]) -> int:
        """How many of the budget's closing ids it takes to complete ``</think>`` (they count as reasoning)."""
        decode = self.tokenizer.decode
        return next(
            (i for i in range(1, len(close) + 1) if THINK_CLOSE in decode(close[:i], **_AS_IS)),
            len(close),
        )

    @staticmethod
    def _detokenize(detok: Any, splitter: ReasoningSplitter, ids: list[int]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for token in ids:
            detok.add_token(token)
            out += splitter.feed(detok.last_segment)
        return out
