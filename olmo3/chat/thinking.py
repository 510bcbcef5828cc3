"""Think models' reasoning: closing it at a budget, and keeping or dropping earlier reasoning (MLX-free).

Olmo-3 Think templates end the generation prompt with ``<think>``; a reply is ``reasoning</think>answer`` and the
session stores it as ``"<think>" + generated`` so that re-rendering the history reproduces the cached tokens.

**Budget.** When the reasoning reaches its budget the session feeds :data:`BUDGET_CLOSE` itself, exactly like
sampled tokens, and the answer goes on from there. The forced ids are part of the reply's tokens, so the
transcript stays token-exact and a follow-up is a pure append. The close is ``</think>`` on its own line followed
by a blank line: the reasoning may stop mid-sentence, and Ai2's remove-reasoning template strips the newlines
that follow ``</think>`` (``.lstrip('\\n')``), as :func:`olmo3.chat.transcript.split_reasoning` does.

**Earlier reasoning.** Ai2's templates differ: ``olmo_thinker`` renders earlier replies verbatim (reasoning
kept), ``olmo_thinker_remove_intermediate_thinking`` keeps only what follows ``</think>``.
:func:`template_keeps_reasoning` asks the template with a probe conversation. Dropping, when the template keeps,
renders earlier replies as :func:`strip_reasoning` gives them; keeping, when the template drops, renders placeholders
in their place and puts the stored text back (:func:`render_keeping_reasoning`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..model.template import Rendering
from .transcript import THINK_CLOSE, THINK_OPEN

BUDGET_CLOSE = "\n" + THINK_CLOSE + "\n\n"

Messages = list[dict[str, str]]
Render = Callable[[Messages], Rendering]

_PROBE_REASONING = "probe-reasoning-7c1e"
_PLACEHOLDER = "\ue000olmo-reply-{}\ue001"  # private-use characters: never in a template's markup
_MARK = re.compile("\ue000olmo-reply-(\\d+)\ue001")


def has_reasoning(raw: str) -> bool:
    return THINK_OPEN in raw and THINK_CLOSE in raw


def strip_reasoning(raw: str) -> str:
    """A reply without its reasoning, as the remove-reasoning template renders an earlier one."""
    if not has_reasoning(raw):
        return raw
    return raw.split(THINK_CLOSE)[-1].lstrip("\n")


def template_keeps_reasoning(render: Callable[[Messages], str]) -> bool:
    """True when the template renders an earlier reply's reasoning (asked with a probe conversation)."""
    probe = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": f"{THINK_OPEN}{_PROBE_REASONING}{THINK_CLOSE}b"},
        {"role": "user", "content": "c"},
    ]
    try:
        return _PROBE_REASONING in render(probe)
    except Exception:  # a template that cannot render the probe renders verbatim as far as we can tell
        return True


def render_keeping_reasoning(render: Render, messages: Sequence[dict[str, str]]) -> Rendering:
    """Render ``messages`` with every reply's reasoning kept, even where the template would drop it.

    Replies are rendered as placeholders, which the template writes verbatim, then replaced by their text. A
    template that changes the placeholder (so the text cannot be put back exactly) gets a plain render.
    """
    swapped: Messages = []
    replies: list[str] = []
    for m in messages:
        if m["role"] == "assistant" and has_reasoning(m["content"]):
            swapped.append({**m, "content": _PLACEHOLDER.format(len(replies))})
            replies.append(m["content"])
        else:
            swapped.append(dict(m))
    rendering = render(swapped)
    if any(rendering.text.count(_PLACEHOLDER.format(i)) != 1 for i in range(len(replies))):
        return render([dict(m) for m in messages])
    # One pass over each plain stretch, so a reply's own text is never searched for placeholders, and the text
    # put back is content: it lands in plain text, never in the template's markup.
    return rendering.map_plain(lambda plain: _MARK.sub(lambda m: replies[int(m.group(1))], plain))
