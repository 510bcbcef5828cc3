"""The chat controller: turns (send, stop, regenerate, edit, branches, retry) between the engine, the store and the
chat view.

Data flow of one turn:

1. The user sends. The controller submits the engine job and shows the user message plus a pending reply.
2. The first streamed token proves the engine accepted the turn (no context overflow, not cancelled during
   prefill): only then are the user message and a *streaming* reply row written to the store, so a cancelled or
   refused turn leaves no half-written rows. (The text is also kept as a draft, so a crash before that point
   loses nothing.)
3. Every ``TextDelta`` goes to the view (coalesced rendering) and to ``store.stream_append`` (committed about once
   a second, crash-safe).
4. ``TurnFinished`` finishes the stream row (complete/interrupted, token ids, stats), saves the engine state and
   mirrors the engine's tree into the store (:mod:`desktop.sync`); the view is then re-synced from the store's
   active path, reusing the widgets whose text did not change.

Attached documents: before submitting a send or an edit, the controller plans the message's documents
(:func:`desktop.turns.plan_documents`: the composer's attachments and those of the turns above, whole or as
passages, against the context the engine reported as left) and hands the engine the plan's ``prompt_text`` next to
the text the chat shows. ``documents`` (a :class:`desktop.attachments.DocumentAttacher`, set by the window) owns the
composer's chips.

Engine events arrive through :class:`desktop.bridge.EngineBridge` on the GUI thread; the answers to them are in
:mod:`desktop.controller_events`, the store and transcript lookups in :mod:`desktop.sync`, the rows of a turn in
:mod:`desktop.turns`. (Just over 600 lines: every user action on a conversation — send, edit, regenerate, retry,
reproduce, branch, continue, stop — checks and changes the same turn state, so they stay together.)

Tools (:mod:`desktop.tools`): each turn gets the enabled tools of the app's MCP servers. The engine runs the calls
between rounds of the turn; the controller shows each call as a card, asks before a tool runs (a non-blocking
:class:`desktop.tool_dialogs.ConsentDialog`: Allow Once, Always Allow, Deny), and records every reply and result
(:mod:`desktop.turns`). Stop cancels the running call and the turn.

Signals:
    conversations_changed(): titles/order/trash changed; the sidebar should re-read.
    current_changed(object): the open conversation id (or None for a new, unsaved chat).
    model_changed(object): ``ModelInfo`` of the loaded model, or None.
    model_loading(str, str): path and name of a model being loaded.
    model_failed(str): loading failed; the message says why.
    model_wont_fit(object): loading was refused before reading the weights (``olmo3.chat.events.ModelWontFit``: the
        numbers); :meth:`ChatController.load_model` with ``force=True`` loads it anyway.
    cache_state_changed(str, str, int): conversation id, "warm" | "disk" | "cold", bytes.
    busy_changed(bool): a turn is running.
    message(str): a short note for the toast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop import controller_events as events
from desktop import provenance, sync
from desktop.chat import ChatView
from desktop.composer import Composer, StatusRow
from desktop.formatting import format_stats
from desktop.tool_calls import ToolCalls
from desktop.turns import Turn, TurnRecorder, plan_documents, restore_prompt_texts
from olmo3.chat import events as ev
from olmo3.chat.sampling import Sampling
from olmo3.chat.transcript import BranchKind, OverflowPolicy, TranscriptMessage
from olmo3.docs.turn import TurnPlan, remaining_context
from olmo3.ids import new_id

log = logging.getLogger(__name__)

CONTINUE_TEXT = "Continue."  # what "Continue" after a reply that filled the context sends


class ChatController(QObject):
    """See the module docstring."""

    conversations_changed = Signal()
    current_changed = Signal(object)
    model_changed = Signal(object)
    model_loading = Signal(str, str)
    model_failed = Signal(str)
    model_wont_fit = Signal(object)
    cache_state_changed = Signal(str, str, int)
    busy_changed = Signal(bool)
    message = Signal(str)

    def __init__(
        self,
        *,
        store: Any,
        bridge: Any,
        view: ChatView,
        composer: Composer,
        status: StatusRow,
        settings: Callable[[], Any],
        tools: Any = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.tools = tools  # desktop.tools.AppTools, or None (no tools)
        self.store = store
        self.bridge = bridge
        self.view = view
        self.composer = composer
        self.status = status
        self._settings = settings
        self.current: str | None = None
        self.model_info: Any = None
        self.model_path: str | None = None
        self.model_name: str = ""
        self.context_tokens = 0  # the loaded model's context length
        self.loading: tuple[str, str] | None = None
        self._load_job: int | None = None
        self._opened: set[str] = set()
        self._generation = 0  # the bridge's engine switches when _opened was filled
        self._engine_msgs: dict[str, tuple[TranscriptMessage, ...]] = {}
        self._context: dict[str, tuple[int, int]] = {}
        self._cache: dict[str, tuple[str, int]] = {}
        self.turn: Turn | None = None
        self.recorder = TurnRecorder(store, lambda: self.model_name)
        self.last_stats: Any = None
        self.last_finished: Any = None  # the last TurnFinished event (tests read it)
        self.draft_saver: Callable[[str | None, str], None] = lambda conv, text: None
        # Replaced in tests (offscreen, no modal dialogs): returns "drop" or "cancel".
        self.ask_overflow: Callable[[Any], str] = lambda event: "cancel"
        self.tool_calls = ToolCalls(self)  # the view and the records of tool turns (desktop.tool_calls)
        self.documents: Any = None  # the composer's attachments (desktop.attachments.DocumentAttacher)

        bridge.engine_event.connect(self.on_engine_event)
        view.regenerate_requested.connect(self.regenerate)
        view.reproduce_requested.connect(self.reproduce)
        view.reproduce_note = lambda data: provenance.mismatch(data, self.model_info, self.bridge.kv_bits)
        view.retry_requested.connect(self.retry)
        view.continue_requested.connect(self.continue_after_context)
        view.edit_requested.connect(self.edit)
        view.branch_requested.connect(self.switch_branch)
        composer.send_requested.connect(self.send)
        composer.stop_requested.connect(self.stop)
        view.stop_requested.connect(self.stop)
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(1000)
        self._flush_timer.timeout.connect(self._flush_store)

    # ------------------------------------------------------------------------------------------------- models
    def load_model(self, path: str, name: str, *, force: bool = False) -> None:
        """Load ``path`` with the context chosen for it in Settings (else the engine's default: the model's maximum
        or what fits); a model that won't fit is refused (``model_wont_fit``) unless ``force``."""
        self.loading = (path, name)
        chosen = self._settings().model_context.get(str(path))
        self._load_job = self.bridge.load_model(path, context_tokens=chosen, force=force)
        self.composer.set_state("loading", model_name=name)
        self.model_loading.emit(path, name)

    def unload_model(self) -> None:
        if self.turn is not None:
            self.stop()
        self.bridge.unload_model()

    def is_busy(self) -> bool:
        return self.turn is not None

    # ------------------------------------------------------------------------------------------ conversations
    def new_chat(self) -> None:
        """An empty chat; it is saved when its first message is sent."""
        self._detach_stream_view()
        self.current = None
        self.view.clear()
        self.status.context.set_usage(0, 0)
        self.status.set_stats_text("")
        self.current_changed.emit(None)
        self._update_composer()

    def open(self, conv_id: str) -> None:
        """Show a stored conversation (and open it in the engine when a model is loaded)."""
        from olmo3.store import NotFoundError

        try:
            conv = self.store.get_conversation(conv_id)
        except NotFoundError:
            self.message.emit("That conversation no longer exists.")
            return
        if conv.deleted_at is not None:
            self.message.emit("That conversation is in the Trash.")
            return
        self._detach_stream_view()
        self.current = conv_id
        self.view.clear()
        self._render_current(attach_stream=True)
        used, limit = self._context.get(conv_id, (0, 0))
        self.status.context.set_usage(used, limit)
        self._update_context_details()
        self.status.set_stats_text(self._last_stats_text())
        if self.model_info is not None:
            self.ensure_open(conv_id)
        self.current_changed.emit(conv_id)
        self._update_composer()

    def ensure_open(self, conv_id: str) -> None:
        """Open the conversation in the engine once per engine (restoring its state; the cache comes from disk)."""
        generation = getattr(self.bridge, "generation", 0)
        if generation != self._generation:  # another engine now (a server, or back to local): open them again
            self._opened.clear()
            self._generation = generation
        if conv_id in self._opened or self.model_info is None:
            return
        conv = self.store.get_conversation(conv_id)
        state = sync.engine_state(self.store, conv_id)
        tree = self.store.tree(conv_id)
        if state is None and any(m.role == "user" for m in tree):
            state = sync.state_from_store(
                tree, system_prompt=conv.system_prompt, think=bool(getattr(self.model_info, "is_think", False))
            )
            state = restore_prompt_texts(state, self.store, conv_id)  # the documents the messages carried
        elif state is not None:
            adopted = sync.adopt_store_ids(state, tree)
            if adopted is not state:  # saved by v0.1, before the engine took the store's ids: convert it once
                self.store.set_engine_state(conv_id, adopted.to_json())
            state = sync.align_state_with_store(adopted, tree)
        self.bridge.open_conversation(conv_id, system_prompt=conv.system_prompt, state=state, sampling=self._sampling())
        self._opened.add(conv_id)

    def forget(self, conv_id: str, *, delete_cache: bool = False) -> None:
        """The conversation went to the trash (or is gone): close it in the engine."""
        if self.turn is not None and self.turn.conv_id == conv_id:
            self.stop()
        if conv_id in self._opened:
            self.bridge.close_conversation(conv_id, delete_cache=delete_cache)
            self._opened.discard(conv_id)
        elif delete_cache:
            self.bridge.delete_cache_file(conv_id)
        if self.current == conv_id:
            self.new_chat()

    def set_conversation_prompt(self, conv_id: str, prompt: str | None) -> None:
        self.store.update_settings(conv_id, system_prompt=prompt)
        if conv_id in self._opened:
            self.bridge.set_system_prompt(conv_id, prompt)

    def cache_state(self, conv_id: str) -> tuple[str, int]:
        if conv_id in self._cache:
            return self._cache[conv_id]
        try:
            path = self.bridge.cache_path(conv_id)
            if path.exists():
                return "disk", path.stat().st_size
        except (OSError, ValueError):
            pass
        return "cold", 0

    def _render_current(self, *, attach_stream: bool = False) -> None:
        conv_id = self.current
        if conv_id is None:
            self.view.clear()
            return
        path = self.store.active_path(conv_id)
        messages = sync.view_messages(path, engine_messages=self._engine_msgs.get(conv_id))
        turn = self.turn
        streaming_here = attach_stream and turn is not None and turn.conv_id == conv_id and turn.rows_written
        if streaming_here and turn is not None and messages and messages[-1].get("sid") == turn.reply_id:
            partial = messages.pop()
            self.view.set_messages(messages)
            self.view.set_busy(True)
            self.view.begin_assistant()
            if partial.get("reasoning"):
                self.view.append_delta(str(partial["reasoning"]), "reasoning")
            if partial.get("content"):
                self.view.append_delta(str(partial["content"]), "answer")
        else:
            self.view.set_messages(messages)
            if turn is not None and turn.conv_id == conv_id and attach_stream:
                # Still in prefill: nothing stored yet; show the pending turn again.
                if turn.new_user:
                    self.view.add_user_message(turn.text, turn.user_turn_index, documents=turn.documents)
                self.view.begin_assistant()
            self.view.set_busy(turn is not None)

    def _last_stats_text(self) -> str:
        if self.current is None:
            return ""
        for message in reversed(self.store.active_path(self.current)):
            if message.role == "assistant" and isinstance(message.stats, dict):
                return format_stats(message.stats)
        return ""

    def _detach_stream_view(self) -> None:
        if self.view.streaming_widget() is not None:
            self.view.end_stream()

    # ------------------------------------------------------------------------------------------------- turns
    def ensure_conversation(self) -> str:
        """The current conversation; a new chat is saved now (its first message, or its first document)."""
        if self.current is None:
            info = self.model_info
            self.current = self.store.create_conversation(
                model_id=getattr(info, "repo_id", None) or self.model_name or None,
                model_revision=getattr(info, "revision", None),
                system_prompt=(self._settings().system_prompt or None),
                sampling={},  # this conversation's own settings (thinking budget, earlier reasoning), when set
            )
            self.current_changed.emit(self.current)
            self.conversations_changed.emit()
            self.ensure_open(self.current)
        return self.current

    def send(
        self,
        text: str,
        *,
        overflow: OverflowPolicy = "error",
        attach_user_id: str | None = None,
        documents: tuple[int, ...] | None = None,
    ) -> bool:
        """Send ``text`` in the current conversation (creating it if this is a new chat).

        ``attach_user_id``: the stored user message to answer instead of writing a new one (a retry of a message the
        engine never saw: the app closed before the first token of its reply). ``documents``: the attachments the
        message carries (default: the composer's).
        """
        if not self._can_start():
            return False
        conv_id = self.ensure_conversation()
        self.ensure_open(conv_id)
        turn_index = sync.user_count(self.store, conv_id) - (1 if attach_user_id is not None else 0)
        user_id = attach_user_id or new_id()
        reply_id = new_id()
        parent_id = sync.engine_leaf_id(self.store, conv_id) if attach_user_id is None else None
        if attach_user_id is not None:
            new_ids: tuple[int, ...] = ()
            plan = self._plan(conv_id, text, self.store.get_message(attach_user_id).parent_id, (), attach_user_id)
        else:
            new_ids = documents if documents is not None else self._composer_documents()
            plan = self._plan(conv_id, text, parent_id, new_ids, None)
        job = self.bridge.send(
            conv_id,
            text,
            message_id=user_id,
            reply_id=reply_id,
            sampling=self._sampling(),
            overflow=overflow,
            tools=self.tool_calls.runner(),
            prompt_text=plan.prompt_text if plan.attachments else None,
        )
        self.turn = Turn(
            job_id=job,
            conv_id=conv_id,
            kind="send",
            user_id=user_id,
            reply_id=reply_id,
            new_user=attach_user_id is None,
            parent_id=parent_id,
            text=text,
            user_turn_index=turn_index,
            overflow=overflow,
        )
        self.turn.use_plan(plan, new_ids)
        if attach_user_id is None:
            self.view.add_user_message(text, turn_index, documents=plan.attachments)
        if self.documents is not None:
            self.documents.sent()
        self._start_view_turn()
        self.draft_saver(conv_id, text)
        return True

    def _composer_documents(self) -> tuple[int, ...]:
        return tuple(self.documents.pending_ids()) if self.documents is not None else ()

    def _plan(
        self, conv_id: str, text: str, parent_id: str | None, new_ids: tuple[int, ...], carried_from: str | None
    ) -> TurnPlan:
        """The message's documents (:func:`desktop.turns.plan_documents`); without them if planning fails."""
        try:
            return plan_documents(
                self.store,
                conv_id,
                text,
                parent_id=parent_id,
                new_ids=new_ids,
                carried_from=carried_from,
                in_context={m.id: m.in_context for m in self._engine_msgs.get(conv_id, ())},
                context=self._context_numbers(conv_id),
                max_tokens=int(self._settings().sampling.max_tokens),
            )
        except Exception:
            log.exception("planning the documents of a message failed")
            self.message.emit("The attached documents couldn't be read; the message was sent without them.")
            return TurnPlan(text, text)

    def _context_numbers(self, conv_id: str | None) -> tuple[int, int]:
        """(used, limit) of a conversation's context, as the engine last reported it (else a safe guess)."""
        used, limit = self._context.get(conv_id, (0, 0)) if conv_id is not None else (0, 0)
        if limit > 0:
            return used, limit
        options = getattr(getattr(self.bridge, "engine", None), "session_options", None) or {}
        limits = [int(x) for x in (options.get("context_limit"), self.context_tokens) if x]
        state = sync.engine_state(self.store, conv_id) if conv_id is not None else None
        return (len(state.tokens) if state is not None else 0), (min(limits) if limits else 0)

    def remaining_context(self) -> int:
        """Tokens the next message of the current conversation may use (for the composer chips' whole/passages)."""
        used, limit = self._context_numbers(self.current)
        return remaining_context(limit, used, int(self._settings().sampling.max_tokens))

    def reproduce(self, sid: str) -> bool:
        """Regenerate the reply ``sid`` (the last one) with exactly the settings and seed it was made with."""
        if self.current is None:
            return False
        path = self.store.active_path(self.current)
        if not path or path[-1].id != sid or path[-1].role != "assistant":
            self.message.emit("Only the last reply can be reproduced.")
            return False
        settings = provenance.reproduce_settings(path[-1].provenance)
        if settings is None:
            self.message.emit("This reply has no record of its settings, so it can't be reproduced.")
            return False
        note = provenance.mismatch(path[-1].provenance, self.model_info, self.bridge.kv_bits)
        if note:
            self.message.emit(note)
        return self.regenerate(sampling=settings)

    def regenerate(self, *, overflow: OverflowPolicy = "error", sampling: dict[str, Any] | None = None) -> bool:
        if not self._can_start() or self.current is None:
            return False
        conv_id = self.current
        path = self.store.active_path(conv_id)
        user_id = sync.engine_last_user_id(self.store, conv_id)
        if not path or path[-1].role != "assistant" or user_id is None:
            return False
        self.ensure_open(conv_id)
        reply_id = new_id()
        job = self.bridge.regenerate(
            conv_id,
            reply_id=reply_id,
            sampling=sampling or self._sampling(),
            overflow=overflow,
            tools=self.tool_calls.runner(),
        )
        self.turn = Turn(
            job_id=job,
            conv_id=conv_id,
            kind="regenerate",
            user_id=user_id,
            reply_id=reply_id,
            new_user=False,
            user_turn_index=max(0, sync.user_count(self.store, conv_id) - 1),
            overflow=overflow,
        )
        self.view.remove_last_assistant()
        self._start_view_turn()
        return True

    def edit(self, user_turn_index: int, text: str, *, overflow: OverflowPolicy = "error") -> bool:
        if not self._can_start() or self.current is None:
            return False
        conv_id = self.current
        users = [m for m in self.store.active_path(conv_id) if m.role == "user"]
        if not 0 <= user_turn_index < len(users):
            return False
        self.ensure_open(conv_id)
        user_id, reply_id = new_id(), new_id()
        old = users[user_turn_index]
        plan = self._plan(conv_id, text, old.parent_id, (), old.id)  # the edited message keeps its documents
        job = self.bridge.edit(
            conv_id,
            user_turn_index,
            text,
            message_id=user_id,
            reply_id=reply_id,
            sampling=self._sampling(),
            overflow=overflow,
            tools=self.tool_calls.runner(),
            prompt_text=plan.prompt_text if plan.attachments else None,
        )
        self.turn = Turn(
            job_id=job,
            conv_id=conv_id,
            kind="edit",
            user_id=user_id,
            reply_id=reply_id,
            new_user=True,
            parent_id=users[user_turn_index].parent_id,
            text=text,
            user_turn_index=user_turn_index,
            overflow=overflow,
        )
        self.turn.use_plan(plan)
        self.view.truncate_from_user_turn(user_turn_index)
        self.view.add_user_message(text, user_turn_index, documents=plan.attachments)
        self._start_view_turn()
        self.draft_saver(conv_id, text)
        return True

    def retry(self) -> bool:
        """Retry an interrupted or failed last reply: regenerate it, or resend its message if the engine lost it."""
        if not self._can_start() or self.current is None:
            return False
        conv_id = self.current
        path = self.store.active_path(conv_id)
        users = [m for m in path if m.role == "user"]
        shown_users = [m for m in self.view.message_dicts() if m.get("role") == "user"]
        if shown_users and not shown_users[-1].get("sid"):
            # The message never reached the store (the engine failed before the first token): send it again.
            self.view.truncate_from_user_turn(len(shown_users) - 1)
            return self.send(str(shown_users[-1].get("content") or ""))
        if not users:
            return False
        last_user = users[-1]
        if sync.engine_last_user_id(self.store, conv_id) == last_user.id:
            return self.regenerate()
        if path[-1].role == "assistant":
            self.view.remove_last_assistant()
        return self.send(last_user.content, attach_user_id=last_user.id)

    def stop(self) -> None:
        """Stop the running turn (also during prefill: the engine checks between prefill chunks, and a running
        tool call is cancelled)."""
        if self.turn is not None:
            self.bridge.cancel()
            self.composer.set_hint("Stopping…")
            self.tool_calls.close_consent()

    def switch_branch(self, request: dict[str, Any]) -> None:
        """Show another alternative of a user turn (``which="user"``: edits; ``"reply"``: regenerations)."""
        if self.current is None or self.turn is not None:
            return
        sid = request.get("sid")
        if not sid:
            return
        conv_id = self.current
        siblings = self.store.siblings(str(sid))
        index = int(request.get("branch_index", 0))
        if not 0 <= index < len(siblings):
            return
        target = siblings[index]
        self.store.set_active(target.id)
        state = sync.engine_state(self.store, conv_id)
        node = state.node(target.id) if state is not None else None
        if state is not None and node is not None and conv_id in self._opened:
            parent = state.node(node.parent) if node.parent is not None else None
            kids = parent.children if parent is not None else state.root_children
            which: BranchKind = "user" if str(request.get("which", "reply")) == "user" else "reply"
            self.bridge.switch_branch(conv_id, int(request.get("user_turn_index", 0)), kids.index(node.id), which)
        self._render_current()
        self.status.set_stats_text(self._last_stats_text())

    def continue_after_context(self) -> bool:
        """A reply filled the context: go on in the same conversation, leaving out the oldest turns."""
        return self.send(CONTINUE_TEXT, overflow="drop_oldest")

    def _can_start(self) -> bool:
        if self.turn is not None:
            self.message.emit("Wait for the current reply to finish, or stop it (⌘.).")
            return False
        if self.model_info is None:
            self.message.emit("Load a model first.")
            return False
        return True

    def _start_view_turn(self) -> None:
        self.view.begin_assistant(pending_text="")
        self.view.set_busy(True)
        self.composer.set_state("generating", model_name=self.model_name)
        self.status.set_stats_text("")
        self.busy_changed.emit(True)
        self._flush_timer.start()

    def _sampling(self) -> dict[str, Any]:
        """The settings' sampling with the open conversation's own settings (thinking budget, earlier reasoning)."""
        base = self._settings().sampling
        if self.current is not None:
            with contextlib.suppress(Exception):
                return Sampling.from_dict(self.store.get_conversation(self.current).sampling, base=base).to_dict()
        return base.to_dict()

    def set_conversation_sampling(self, conv_id: str, overrides: dict[str, Any]) -> None:
        """This conversation's own settings (e.g. ``{"thinking_budget": 4096, "keep_reasoning": False}``)."""
        self.store.update_settings(conv_id, sampling=overrides)  # every turn passes its settings to the engine

    def _flush_store(self) -> None:
        try:
            self.store.flush_due()
        except Exception:
            log.exception("could not commit streamed text")

    # ------------------------------------------------------------------------------------------ engine events
    def on_engine_event(self, event: object) -> None:
        """Dispatch one engine event (GUI thread)."""
        handler = {
            ev.TextDelta: partial(events.on_delta, self),
            ev.PrefillProgress: partial(events.on_prefill, self),
            ev.TurnFinished: partial(events.on_turn_finished, self),
            ev.ContextOverflow: partial(events.on_overflow, self),
            ev.JobFailed: partial(events.on_failed, self),
            ev.ModelWontFit: partial(events.on_wont_fit, self),
            ev.ModelLoaded: partial(events.on_model_loaded, self),
            ev.ModelUnloaded: partial(events.on_model_unloaded, self),
            ev.ConversationOpened: partial(events.on_opened, self),
            ev.BranchSwitched: partial(events.on_branch_switched, self),
            ev.CacheState: partial(events.on_cache_state, self),
            ev.ToolRoundFinished: self.tool_calls.on_round_finished,
            ev.ToolCallRequested: self.tool_calls.on_requested,
            ev.ToolCallStarted: self.tool_calls.on_started,
            ev.ToolCallFinished: self.tool_calls.on_finished,
            ev.ToolRoundStarted: self.tool_calls.on_round_started,
        }.get(type(event))
        if handler is None:
            return
        try:
            handler(event)  # type: ignore[operator]
        except Exception:  # a bug here must not lose the stream: log it and carry on
            log.exception("handling %s failed", type(event).__name__)

    def _turn_of(self, event: ev.Event) -> Turn | None:
        return self.turn if self.turn is not None and event.job_id == self.turn.job_id else None

    def _restore_documents(self, conv_id: str) -> None:
        """A message that never reached the store leaves its documents pending: back to the composer with them."""
        if self.documents is not None and self.current == conv_id:
            self.documents.reload()

    def _end_turn_view(self, conv_id: str, *, restore_text: str = "") -> None:
        if self.current == conv_id:
            self.view.end_stream()
            self._render_current()
            used, limit = self._context.get(conv_id, (0, 0))
            self.status.context.set_usage(used, limit)
            self._update_context_details()
            if restore_text and not self.composer.text().strip():
                self.composer.set_text(restore_text)
        self.view.set_busy(False)
        self.busy_changed.emit(False)
        self._update_composer()

    def _update_context_details(self) -> None:
        """The context bar's tooltip: tokens freed by dropping earlier reasoning, memory saved by 8-bit KV."""
        if self.current is None:
            return
        stats = next((m.stats for m in reversed(self.store.active_path(self.current)) if m.role == "assistant"), None)
        state, nbytes = self._cache.get(self.current, ("cold", 0))
        nbytes = nbytes if state == "warm" else 0
        self.status.context.set_details(provenance.context_lines(stats, nbytes, self.model_info, self.bridge.kv_bits))

    # --------------------------------------------------------------------------------------------- composer
    def _update_composer(self) -> None:
        if self.turn is not None:
            self.composer.set_state("generating", model_name=self.model_name)
        elif self.loading is not None:
            self.composer.set_state("loading", model_name=self.loading[1])
        elif self.model_info is None:
            self.composer.set_state("no_model")
        else:
            self.composer.set_state("ready", model_name=self.model_name)

    # ------------------------------------------------------------------------------------------------ closing
    def shutdown(self, process_events: Callable[[], None]) -> bool:
        """Stop the turn, spill caches and join the engine thread, then persist the events that were still queued."""
        if self.turn is not None:
            self.bridge.cancel()
        stopped = self.bridge.shutdown(timeout=30)
        process_events()  # deliver the queued TurnFinished of a cancelled turn, so it is saved
        if self.turn is not None:
            self.recorder.on_abandoned(self.turn)
        self.turn = None
        self._flush_timer.stop()
        return stopped


def model_display_name(info: Any, path: str | Path | None = None) -> str:
    """ "Olmo 3 7B Instruct · 4-bit" from a ModelInfo (falls back to the folder name)."""
    name = str(getattr(info, "name", "") or (Path(path).name if path else "model"))
    quant = getattr(info, "quantization", None)
    bits = quant.get("bits") if isinstance(quant, dict) else None
    pretty = name.replace("Olmo-3.1-", "Olmo 3.1 ").replace("Olmo-3-", "Olmo 3 ").replace("-", " ")
    for suffix in (" 4bit", " 8bit", " bf16", " bfloat16", " MLX"):
        pretty = pretty.replace(suffix, "")
    return f"{pretty} · {bits}-bit" if bits else pretty
