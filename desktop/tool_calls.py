"""The GUI side of tool turns, for :class:`desktop.controller.ChatController`: cards, consent, records.

The engine runs a turn's calls between its rounds (``olmo3.chat.tool_turns``) and reports each step; here each
step becomes what the person sees and what the store keeps:

* ``ToolRoundFinished``: the reply that called tools is recorded with its calls; its text stays in the chat (a
  reply that is only calls leaves no empty bubble: its cards say it all);
* ``ToolCallRequested``: a card "Waiting for your permission" and the consent question (a non-blocking
  :class:`desktop.tool_dialogs.ConsentDialog`): Allow Once, Always Allow (remembered for the tool), Deny;
* ``ToolCallStarted``: the card runs ("Running… 3 s", with Stop);
* ``ToolCallFinished``: the result is recorded as an ``environment`` message and shown in its card;
* ``ToolRoundStarted``: the next reply streams below the cards.

Tests replace ``ask_consent`` or answer the dialog (``consent_dialog``) like a person would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from desktop.tool_dialogs import ConsentDialog
from olmo3.chat import events as ev


class ToolCalls:
    """See the module docstring; ``controller`` is the :class:`desktop.controller.ChatController` it serves."""

    def __init__(self, controller: Any) -> None:
        self.c = controller
        self.ask_consent: Callable[[Any], object] = self.open_consent
        self.consent_dialog: ConsentDialog | None = None

    def runner(self) -> Any:
        """The turn's tools (``olmo3.tools.runner.HubTools``), or None (no servers, or tools off in Settings)."""
        tools = self.c.tools
        return tools.runner(self.c._settings()) if tools is not None else None

    def _here(self, event: ev.Event) -> Any:
        """The controller's turn for ``event`` and whether its conversation is on screen."""
        turn = self.c._turn_of(event)
        return turn, turn is not None and self.c.current == turn.conv_id

    def _card(self, event: Any, pending: str | None) -> Any:
        view = self.c.view
        card = view.tool_card(event.call_id)
        if card is None:
            tool = {"name": event.name, "server": event.server, "arguments": event.arguments}
            card = view.add_tool_card({"call_id": event.call_id, "tool": tool, "pending": pending})
        return card

    # --- engine events (GUI thread) -------------------------------------------------------------------------
    def on_round_finished(self, event: ev.ToolRoundFinished) -> None:
        turn, shown = self._here(event)
        if turn is None:
            return
        recorder = self.c.recorder
        if recorder.ensure_rows(turn):
            self.c.draft_saver(None, "")
            self.c.conversations_changed.emit()
        recorder.on_round_finished(turn, event)
        turn.new_user = False  # written: a view rebuilt mid-turn must not show it twice
        if shown:
            reply = event.reply
            if not reply.content and not reply.reasoning:
                self.c.view.drop_stream()
            else:
                self.c.view.end_stream({"sid": reply.id, "content": reply.content})

    def on_requested(self, event: ev.ToolCallRequested) -> None:
        turn, shown = self._here(event)
        if turn is None:
            self.c.bridge.answer_tool_call(event.request_id, "deny")  # a turn nobody follows any more
            return
        if shown:
            self._card(event, "asking")
        self.ask_consent(event)

    def on_started(self, event: ev.ToolCallStarted) -> None:
        _turn, shown = self._here(event)
        if shown:
            self._card(event, "running").set_pending("running")

    def on_finished(self, event: ev.ToolCallFinished) -> None:
        turn, shown = self._here(event)
        if turn is None:
            return
        self.c.recorder.on_call_finished(turn, event)
        if shown:
            message = event.message
            self._card(event, None).finish({"sid": message.id, "content": message.content, "tool": message.tool})

    def on_round_started(self, event: ev.ToolRoundStarted) -> None:
        turn, shown = self._here(event)
        if turn is None:
            return
        self.c.recorder.on_round_started(turn, event)
        if shown:
            self.c.view.begin_assistant(pending_text="")

    # --- consent --------------------------------------------------------------------------------------------
    def answer(self, event: Any, decision: str) -> None:
        """The person's answer: "once", "always" (remembered for the tool) or "deny"."""
        if decision == "always" and self.c.tools is not None:
            self.c.tools.always_allow(event.name)
        self.c.bridge.answer_tool_call(event.request_id, decision)

    def open_consent(self, event: Any) -> ConsentDialog:
        self.close_consent()
        dialog = ConsentDialog(event, self.c.view.window())
        dialog.decided.connect(lambda decision, e=event: self.answer(e, decision))
        self.consent_dialog = dialog
        dialog.open()
        return dialog

    def close_consent(self) -> None:
        """Close an open question (the turn ended or was stopped: nobody waits for its answer any more)."""
        dialog, self.consent_dialog = self.consent_dialog, None
        if dialog is not None:
            if dialog.isVisible():
                dialog.reject()
            dialog.deleteLater()
