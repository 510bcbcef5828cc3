"""How the chat controller answers the engine's events (GUI thread): a turn's text, its end, a refusal or a failure,
a model loaded or refused, a conversation opened, a branch switched, a cache spilled.

Plain functions over the controller (:class:`desktop.controller.ChatController` dispatches to them), so the
controller keeps the user's actions and this module the engine's answers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from desktop.formatting import format_stats
from olmo3.chat import events as ev

if TYPE_CHECKING:
    from desktop.controller import ChatController

log = logging.getLogger("desktop.controller")


def on_delta(ctl: ChatController, event: ev.TextDelta) -> None:
    turn = ctl._turn_of(event)
    if turn is None:
        return
    if ctl.recorder.ensure_rows(turn):
        ctl.draft_saver(None, "")
        ctl.conversations_changed.emit()
    ctl.recorder.on_delta(turn, event)
    if ctl.current == turn.conv_id:
        ctl.view.append_delta(event.text, event.channel)


def on_prefill(ctl: ChatController, event: ev.PrefillProgress) -> None:
    turn = ctl._turn_of(event)
    if turn is None or ctl.current != turn.conv_id:
        return
    if event.total >= 512 and event.done < event.total:
        ctl.view.set_pending_text(f"Reading the conversation… {event.done / event.total:.0%}")


def on_turn_finished(ctl: ChatController, event: ev.TurnFinished) -> None:
    turn = ctl._turn_of(event)
    if turn is None:
        return
    ctl.tool_calls.close_consent()
    ctl.turn = None
    ctl._flush_timer.stop()
    stats = event.stats
    ctl.last_stats = stats
    ctl.last_finished = event
    conv_id = turn.conv_id
    ctl._context[conv_id] = (int(stats.context_used), int(stats.context_limit))
    if not ctl.recorder.on_finished(turn, event):
        # Cancelled before the first token: the engine kept nothing, so neither do we.
        ctl._end_turn_view(conv_id, restore_text=turn.text if turn.kind in ("send", "edit") else "")
        ctl._restore_documents(conv_id)
        ctl.message.emit("Stopped before the reply started.")
        return
    ctl._engine_msgs[conv_id] = event.messages
    made_with = event.provenance
    if made_with is not None:  # the conversation names the model its latest reply came from
        conv = ctl.store.get_conversation(conv_id)
        model_id = made_with.model_repo_id or conv.model_id
        if (conv.model_id, conv.model_revision) != (model_id, made_with.model_revision):
            ctl.store.update_settings(conv_id, model_id=model_id, model_revision=made_with.model_revision)
    ctl._end_turn_view(conv_id)
    if ctl.current == conv_id:
        ctl.status.set_stats_text(format_stats(stats))
    ctl.conversations_changed.emit()


def on_overflow(ctl: ChatController, event: ev.ContextOverflow) -> None:
    turn = ctl._turn_of(event)
    if turn is None:
        return
    ctl.turn = None
    ctl._flush_timer.stop()
    ctl._end_turn_view(turn.conv_id)
    ctl._restore_documents(turn.conv_id)
    choice = ctl.ask_overflow(event) if event.droppable_turns > 0 else "cancel"
    if event.droppable_turns <= 0:
        ctl.message.emit(
            "This message doesn't fit in the model's context even on its own. "
            "Shorten it, or choose a longer context for this model in Settings."
        )
    if choice == "drop":
        if turn.kind == "send":
            ctl.send(
                turn.text,
                overflow="drop_oldest",
                attach_user_id=None if turn.new_user else turn.user_id,
                documents=turn.attachment_ids,
            )
        elif turn.kind == "edit":
            ctl.edit(turn.user_turn_index, turn.text, overflow="drop_oldest")
        else:
            ctl.regenerate(overflow="drop_oldest")
    elif turn.text and not ctl.composer.text().strip():
        ctl.composer.set_text(turn.text)


def on_failed(ctl: ChatController, event: ev.JobFailed) -> None:
    if ctl._load_job is not None and event.job_id == ctl._load_job:
        ctl._load_job = None
        ctl.loading = None
        ctl.model_failed.emit(event.message)
        ctl._update_composer()
        return
    turn = ctl._turn_of(event)
    if turn is None:
        log.warning("engine job %s failed: %s", event.job_id, event.message)
        if event.conv_id and event.conv_id in ctl._opened and "not open" in event.message:
            ctl._opened.discard(event.conv_id)
        return
    ctl.turn = None
    ctl._flush_timer.stop()
    ctl.recorder.on_failed(turn, event.message)
    if ctl.current == turn.conv_id:
        if turn.rows_written:
            ctl.view.end_stream()
            ctl._render_current()
        else:
            ctl.view.fail_stream(event.message)
            ctl._restore_documents(turn.conv_id)
    ctl.view.set_busy(False)
    ctl.busy_changed.emit(False)
    ctl._update_composer()
    ctl.conversations_changed.emit()


def on_wont_fit(ctl: ChatController, event: ev.ModelWontFit) -> None:
    if event.job_id != ctl._load_job:
        return
    ctl._load_job = None
    ctl.loading = None
    ctl._update_composer()
    ctl.model_wont_fit.emit(event)


def on_model_loaded(ctl: ChatController, event: Any) -> None:
    info = event.info
    ctl.model_info = info
    ctl.context_tokens = int(getattr(event, "context_tokens", 0) or getattr(info, "max_position_embeddings", 0))
    path, name = ctl.loading if ctl.loading else (str(getattr(info, "path", "")), str(getattr(info, "name", "")))
    ctl.model_path, ctl.model_name = path, name
    ctl.loading = None
    ctl._load_job = None
    # The engine re-created the sessions it had; others are opened on demand.
    ctl.view.set_model_name(name)
    ctl.model_changed.emit(info)
    if ctl.current is not None:
        ctl.ensure_open(ctl.current)
    ctl._update_composer()


def on_model_unloaded(ctl: ChatController, _event: Any) -> None:
    ctl.model_info = None
    ctl.model_path = None
    ctl.model_name = ""
    ctl.view.set_model_name(None)
    ctl.model_changed.emit(None)
    ctl._update_composer()


def on_opened(ctl: ChatController, event: ev.ConversationOpened) -> None:
    ctl._engine_msgs[event.conv_id] = event.messages
    ctl._context[event.conv_id] = (int(event.context_used), int(event.context_limit))
    if event.cache_state:
        nbytes = ctl._cache.get(event.conv_id, ("", 0))[1]
        ctl._cache[event.conv_id] = (event.cache_state, nbytes)
        ctl.cache_state_changed.emit(event.conv_id, event.cache_state, nbytes)
    if event.conv_id == ctl.current:
        ctl.status.context.set_usage(int(event.context_used), int(event.context_limit))


def on_branch_switched(ctl: ChatController, event: ev.BranchSwitched) -> None:
    ctl.store.set_engine_state(event.conv_id, event.state.to_json())
    ctl._engine_msgs[event.conv_id] = event.messages


def on_cache_state(ctl: ChatController, event: ev.CacheState) -> None:
    ctl._cache[event.conv_id] = (event.state, int(event.nbytes))
    ctl.cache_state_changed.emit(event.conv_id, event.state, int(event.nbytes))
    if event.conv_id == ctl.current:
        ctl._update_context_details()
