"""Think models and provenance in the app: the Info popover and Reproduce, "Reasoning stopped at N tokens", the
thinking budget and earlier reasoning per conversation, 8-bit KV in Settings and the context bar's tooltip.

Real window, engine thread, conversation store and generated tiny Olmo-3 Think models."""

from __future__ import annotations

import json

import pytest
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    close_window,
    fast_settings,
    load_model,
    make_window,
    send,
    threads_are_joined,
    wait_idle,
)
from PySide6.QtCore import Qt

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def think_dirs(tmp_path_factory):
    from olmo3.model.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("think")
    # head_dim 32: the full-attention layers can hold their KV in 8 bits.
    size = dict(think=True, num_attention_heads=2, num_key_value_heads=1, sliding_window=16)
    return make_tiny_model(root / "a", **size), make_tiny_model(root / "b", max_position_embeddings=2048, **size)


def _replies(window):
    return [w for w in window.chat_view.messages() if w.role == "assistant"]


def test_info_popover_reproduce_and_a_changed_model(qtbot, tmp_path, think_dirs):
    first_model, other_model = think_dirs
    settings = fast_settings(temperature=1.0, top_p=0.95, top_k=50, seed=None, max_tokens=6, thinking_budget=5)
    window = make_window(qtbot, tmp_path / "home", settings=settings)
    load_model(qtbot, window, first_model)
    send(qtbot, window, "Tell me a story")
    conv_id = window.controller.current
    fin = window.controller.last_finished
    made = fin.provenance
    assert made.seed_was_random and made.thinking_budget == 5 and fin.stats.reasoning_tokens <= 5

    # The store keeps the whole record; the conversation names its model.
    row = window.store.active_leaf(conv_id)
    assert row.provenance["seed"] == made.seed and row.provenance["sampling"]["temperature"] == 1.0
    assert row.provenance["model_fingerprint"] == window.controller.model_info.fingerprint
    assert row.provenance["engine_version"] and row.provenance["model"] == window.controller.model_name
    assert window.store.get_conversation(conv_id).model_id == window.controller.model_name

    # Info: what the reply was made with; Reproduce regenerates it token for token.
    reply = _replies(window)[-1]
    qtbot.mouseClick(reply.info_button, Qt.MouseButton.LeftButton)
    popover = reply.popover
    assert popover is not None and popover.isVisible()
    rows = dict(popover.rows)
    assert rows["Seed"] == f"{made.seed} (random)" and "temperature 1" in rows["Sampling"]
    assert rows["Thinking budget"].startswith("5 tokens") and rows["Weights"] == made.model_fingerprint
    assert not popover.note.isVisible() and popover.reproduce_button.isEnabled()
    assert json.loads(popover.json_text())["seed"] == made.seed
    qtbot.mouseClick(popover.reproduce_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    again = window.controller.last_finished
    assert again.reply.id != fin.reply.id and again.reply.tokens == fin.reply.tokens
    assert again.provenance.seed == made.seed and not again.provenance.seed_was_random
    reproduced = window.store.active_leaf(conv_id)
    assert reproduced.token_ids == row.token_ids and reproduced.content == row.content
    assert (_replies(window)[-1].message["branch_index"], _replies(window)[-1].message["branch_count"]) == (1, 2)

    # Export: the JSON carries the full record, Markdown and HTML a one-line summary.
    exported = window.store.export_dict(conv_id)
    replies = [m for m in exported["messages"] if m["role"] == "assistant"]
    assert all(m["provenance"]["sampling"]["seed"] == made.seed for m in replies)
    from olmo3.store.interchange import to_html, to_markdown

    assert f"seed {made.seed}" in to_markdown(exported) and f"seed {made.seed}" in to_html(exported)

    # Another model loaded: the popover says so before reproducing.
    load_model(qtbot, window, other_model)
    qtbot.waitUntil(lambda: window.controller.model_info.path == str(other_model), timeout=60_000)
    popover = _replies(window)[-1].show_info()
    assert popover.note.isVisible() and "differ" in popover.note.text()
    popover.close()
    close_window(window)


def test_budget_note_context_tooltip_and_settings(qtbot, tmp_path, think_dirs):
    from desktop.settings_dialog import SAME, UNCHANGED, SettingsDialog

    settings = fast_settings(max_tokens=6, thinking_budget=4)
    window = make_window(qtbot, tmp_path / "home", settings=settings)
    load_model(qtbot, window, think_dirs[0])

    # Settings: 8-bit KV (Memory & storage) and, for this conversation, earlier reasoning dropped.
    send(qtbot, window, "First")
    conv_id = window.controller.current
    dialog = SettingsDialog(
        window.settings,
        default_models_dir=tmp_path,
        conversation_prompt=None,
        conversation_sampling={},
        parent=window,
    )
    assert dialog.conv_budget.value() is SAME and dialog.budget.value() == 4
    dialog.kv_8bit.setChecked(True)
    dialog.conv_keep.setCurrentIndex(dialog.conv_keep.findData(False))
    dialog.conv_budget.set_value(3000)
    new = dialog.result_settings()
    assert new.kv_8bit and new.sampling.thinking_budget == 4
    assert dialog.conversation_sampling() == {"keep_reasoning": False, "thinking_budget": 3000}
    dialog.close()
    window.apply_settings(new)
    window.controller.set_conversation_sampling(conv_id, dialog.conversation_sampling())
    assert window.controller._sampling()["thinking_budget"] == 3000
    window.controller.set_conversation_sampling(conv_id, {"keep_reasoning": False})
    assert window.controller._sampling()["thinking_budget"] == 4
    qtbot.waitUntil(lambda: window.bridge.kv_bits == 8)  # set on the engine thread

    send(qtbot, window, "Second")
    send(qtbot, window, "Third")
    fin = window.controller.last_finished
    assert fin.provenance.kv_bits == 8 and not fin.provenance.keep_reasoning
    assert fin.stats.reasoning_dropped_tokens > 0
    qtbot.waitUntil(lambda: any("8-bit KV cache" in line for line in window.status_row.context.details()))
    tip = window.status_row.context.toolTip()
    assert f"{fin.stats.reasoning_dropped_tokens:,} tokens saved" in tip and "8-bit KV cache" in tip

    # A reply whose reasoning the budget closed says so next to its reasoning.
    rows = [m for m in window.store.active_path(conv_id) if m.role == "assistant"]
    assert any(row.stats.get("reasoning_stopped") for row in rows)
    for widget, row in zip(_replies(window), rows, strict=True):
        stopped = bool(row.stats.get("reasoning_stopped"))
        assert widget.reasoning.note.isVisibleTo(window) is stopped
        if stopped:
            n = row.stats["reasoning_tokens"]
            assert widget.reasoning.note.text() == f"Reasoning stopped at {n:,} tokens" and n <= 4
    other = SettingsDialog(window.settings, default_models_dir=tmp_path, parent=window)
    other.preset.setCurrentText("Precise")  # presets set the sampler; the budget stays the user's
    assert other.budget.value() == 4 and other.preset.currentText() == "Precise"
    assert other.conversation_sampling() is UNCHANGED and not other.conv_prompt.isVisibleTo(other)
    other.close()
    close_window(window)


def test_reasoning_note_and_info_rows_from_a_stored_reply(qtbot):
    from desktop.chat import AssistantMessageWidget
    from olmo3.chat.sampling import Sampling
    from olmo3.chat.transcript import Provenance

    prov = Provenance(
        sampling=Sampling(temperature=0.6, top_p=0.95, top_k=50, max_tokens=512, seed=42, thinking_budget=4096),
        seed=42,
        seed_was_random=True,
        model_name="Olmo-3-7B-Think-4bit",
        model_repo_id="mlx-community/Olmo-3-7B-Think-4bit",
        model_revision="0123456789abcdef0123456789abcdef01234567",
        model_fingerprint="ab12cd34ef56ab78",
        quantization={"bits": 4, "group_size": 64},
        template_hash="f572a61ed2816de9",
        thinking_budget=4096,
        keep_reasoning=True,
        kv_bits=8,
        context_limit=65536,
        engine_version="0.1.0",
        reconcile="append",
    )
    stats = {"reasoning_stopped": True, "reasoning_tokens": 4096, "answer_tokens": 80, "finish_reason": "stop"}
    message = {
        "role": "assistant", "content": "The answer.", "reasoning": "Long thoughts…", "sid": "m1",
        "stats": stats, "provenance": {**prov.to_dict(), "model": "Olmo 3 7B Think · 4-bit"},
    }  # fmt: skip
    widget = AssistantMessageWidget(message)
    qtbot.addWidget(widget)
    widget.show()
    assert widget.reasoning.note.isVisible() and widget.reasoning.note.text() == "Reasoning stopped at 4,096 tokens"
    widget.set_regenerate_enabled(True, is_last=False)
    popover = widget.show_info()
    rows = dict(popover.rows)
    assert rows["Source"] == "mlx-community/Olmo-3-7B-Think-4bit @ 0123456789ab"
    assert rows["Model"] == "Olmo 3 7B Think · 4-bit" and rows["Weights"] == "ab12cd34ef56ab78"
    assert rows["Thinking budget"] == "4K · 4,096 reasoning tokens" and rows["KV cache"].startswith("8-bit")
    assert rows["Max tokens"] == "512 for the answer" and rows["Seed"] == "42 (random)"
    assert not popover.reproduce_button.isEnabled()  # only the last reply
    popover.close()
    # An old reply without a record: no Info button, no note.
    old = AssistantMessageWidget({"role": "assistant", "content": "x", "provenance": {"thought_s": 2.0}})
    qtbot.addWidget(old)
    old.show()
    old.set_actions_pinned(True)
    assert not old.info_button.isVisible() and not old.reasoning.note.isVisible()


def test_settings_file_keeps_budget_reasoning_and_kv(tmp_path):
    from desktop.settings import Sampling, Settings, load_settings, save_settings

    path = tmp_path / "settings.json"
    chosen = Settings(sampling=Sampling(thinking_budget=16384, keep_reasoning=False), kv_8bit=True)
    save_settings(path, chosen)
    again = load_settings(path)
    assert again == chosen and again.kv_bits == 8
    data = json.loads(path.read_text())
    data["sampling"].update(thinking_budget="lots", keep_reasoning="maybe")
    path.write_text(json.dumps(data))
    bad = load_settings(path)  # a bad value falls back to the default, field by field
    assert bad.sampling.thinking_budget is None and bad.sampling.keep_reasoning is None and bad.kv_8bit
    data["sampling"]["thinking_budget"] = "4K"
    path.write_text(json.dumps(data))
    assert load_settings(path).sampling.thinking_budget == 4096
