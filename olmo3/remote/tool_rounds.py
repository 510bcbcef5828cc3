"""Tools in a remote turn: the server generates, the app's MCP tools run on this computer. MLX-free, Qt-free.

A turn with tools (``send``/``regenerate``/``edit`` given a ``ToolRunner``, e.g. ``olmo3.tools.runner.HubTools``)
goes in rounds, as a local one does (``olmo3.chat.tool_turns``)::

    user → assistant (text + calls) → environment (one per call, in call order) → assistant … → assistant (answer)

* The enabled tools' definitions go in every request as OpenAI ``tools`` (:func:`offer`: they already have that
  shape); the server shows them to the model through its own chat template.
* A reply the server ends with ``finish_reason: "tool_calls"`` (:func:`read_calls`) becomes a reply node with calls,
  recorded as the local engine records them (:func:`mark_calls`: ``calls`` is the Olmo text, ``tool`` the parsed
  calls) and announced by ``ToolRoundFinished``.
* The calls run through the local engine's own loop, :meth:`olmo3.chat.tool_turns.ToolTurn.run_calls`: the same
  ``ToolCallRequested`` (answered through ``answer_tool_call``), ``ToolCallStarted`` and ``ToolCallFinished``
  events, the same consent, Stop, timeouts and results (declined, stopped, not run: all results the model reads),
  each an ``environment`` node whose id is the call's id (``RemoteConversation.add_environment``).
* Then ``ToolRoundStarted`` and the next request: the history with the calls as assistant ``tool_calls`` and the
  results as ``tool`` messages carrying the matching ``tool_call_id`` (``olmo3.remote.turns.request_body``), until a
  reply makes no call or the runner's ``max_rounds`` is reached (calls beyond it are answered "not run").

Results and arguments are content: the server's template renders them as text, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..chat.events import Event
from ..chat.tool_turns import ConsentDesk, ToolRunner, ToolTurn
from ..chat.tree import Node
from ..tools.calls import FunctionCall, calls_from_openai, render_calls
from .client import RemoteError, one_line
from .turns import RemoteConversation, TurnReader

__all__ = ["mark_calls", "offer", "read_calls", "run_calls"]


def offer(runner: ToolRunner | None, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
    """The tools to send with this turn (OpenAI function definitions), or None (no runner, none enabled, stopped)."""
    if runner is None:
        return None
    return runner.definitions(should_stop) or None


def read_calls(reader: TurnReader, label: str) -> tuple[FunctionCall, ...]:
    """The calls of a reply that finished with ``tool_calls`` (none when it did not); RemoteError when they cannot
    be read (an Olmo server sends only calls it could read itself)."""
    if not reader.called:
        return ()
    try:
        calls = calls_from_openai(reader.tool_calls)
    except ValueError as e:
        raise RemoteError(f"{label} sent a tool call that cannot be read: {one_line(e)}") from None
    if not calls:
        raise RemoteError(f"{label} said the reply calls tools but sent no tool call.")
    return tuple(calls)


def mark_calls(node: Node, calls: tuple[FunctionCall, ...]) -> None:
    """Make reply ``node`` one with calls, as the local engine records them (its content stays the text before)."""
    text = render_calls(calls)
    node.calls = text
    node.tool = {"calls": [{"name": c.name, "arguments": dict(c.arguments)} for c in calls], "raw_calls": text}


def run_calls(
    conv: RemoteConversation,
    runner: ToolRunner,
    desk: ConsentDesk,
    should_stop: Callable[[], bool],
    number: int,
    reply_id: str,
    calls: tuple[FunctionCall, ...],
    emit: Callable[[Event], None],
) -> bool:
    """Run round ``number``'s calls here (see the module docstring), each event to ``emit``. True if stopped."""
    events = ToolTurn(conv, runner, desk, should_stop=should_stop).run_calls(number, reply_id, calls)
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return bool(done.value)
        emit(event)
