"""``olmo-desktop --screenshot DIR``: PNGs of the main screens, light and dark, wide and narrow.

Everything runs against a throwaway home folder with synthetic content (no model is loaded and nothing is
downloaded): a conversation with reasoning and code written to a real conversation store (its reply's reasoning
stopped by the thinking budget, with a full provenance record), a model picker fed download events as the hub
would send them (a download running, one failed offline, search results kept from an earlier search), a reply's
Info popover, the context bar's tooltip, the settings window (each page; the Model page for a posed 7B 4-bit on a
16 GB Mac), the first-run state, the Trash, the sidebar collapsed and shown at 800 px, the question for a model
that won't fit in memory, a reply that filled the context, a conversation about attached documents (chips,
"Sources", a passage, and files being attached in the composer, one refused), and tools (cards, the consent question,
a running call, Settings → Tools: :mod:`desktop.screenshots_tools`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtGui import QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QWidget

from desktop import samples
from desktop.chat import AssistantMessageWidget
from desktop.screenshots_tools import tool_screenshots

WIDE = (1100, 720)
NARROW = (800, 720)
MAC_16GB = 12 * 1024**3  # what a 16 GB Mac gives models (75 % of RAM)


def _settle(app: QApplication, rounds: int = 6) -> None:
    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.01)


def _save(widget: QWidget, path: Path, app: QApplication) -> Path:
    _settle(app)
    pixmap = widget.grab()
    if pixmap.isNull() or not pixmap.save(str(path)):
        raise RuntimeError(f"could not save a screenshot to {path}")
    print(f"  {path}")
    return path


def _composite(window: QWidget, popup: QWidget, path: Path, app: QApplication) -> Path:
    """The window with a popup (a separate top-level window: not in ``window.grab()``) painted where it shows."""
    _settle(app)
    shot: QPixmap = window.grab()
    painter = QPainter(shot)
    painter.drawPixmap(window.mapFromGlobal(popup.mapToGlobal(QPoint(0, 0))), popup.grab())
    painter.end()
    if not shot.save(str(path)):
        raise RuntimeError(f"could not save a screenshot to {path}")
    print(f"  {path}")
    return path


def _tooltip_like(text: str, parent: QWidget) -> QWidget:
    """A label that looks like the app's QToolTip (style.qss), as a popup window."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel

    from desktop import theme as th

    t = th.current()
    label = QLabel(text, parent, Qt.WindowType.ToolTip)
    label.setStyleSheet(
        f"background: {t['card']}; color: {t['text']}; border: 1px solid {t['border_strong']}; "
        "border-radius: 6px; padding: 4px 8px;"
    )
    label.adjustSize()
    return label


def sample_provenance(seed: int = 1_734_019_283) -> dict[str, Any]:
    """What a reply of Olmo 3 7B Think made with a 4K thinking budget records (as the app stores it)."""
    from olmo3.chat.sampling import THINK_DEFAULTS
    from olmo3.chat.transcript import Provenance

    made = Provenance(
        sampling=replace(THINK_DEFAULTS, max_tokens=2048, seed=seed, thinking_budget=4096, keep_reasoning=True),
        seed=seed,
        seed_was_random=True,
        model_name="Olmo-3-7B-Think-4bit",
        model_repo_id="mlx-community/Olmo-3-7B-Think-4bit",
        model_revision="5c8a0e4f93b1d27a6e0f1c9b8d7a6e5f4c3b2a19",
        model_fingerprint="9f3c1a7e52d04b86",
        quantization={"group_size": 64, "bits": 4},
        template_hash="e41b2c09d8f7a615",
        thinking_budget=4096,
        keep_reasoning=True,
        kv_bits=8,
        context_limit=65_536,
        engine_version="0.1.0",
        reconcile="append",
    )
    return {**made.to_dict(), "model": "Olmo 3 7B Think · 4-bit", "thought_s": 7.4}


def _seed_conversations(store: Any) -> str:
    """Some sidebar history plus one conversation with reasoning, code and stats; returns its id."""
    for title, text in (
        ("Trip ideas for Lisbon in spring", "Plan three days in Lisbon."),
        ("Explain KV caching like I'm five", "What is a KV cache?"),
        ("A very long conversation title that will certainly not fit in the sidebar row", "Hi"),
    ):
        conv = store.create_conversation(title=title)
        store.append_message(conv, None, "user", text)
    pinned = store.create_conversation(title="Weekly report template")
    store.append_message(pinned, None, "user", "Draft a weekly report template.")
    store.set_pinned(pinned, True)
    conv = store.create_conversation()
    user = store.append_message(conv, None, "user", samples.USER_QUESTION)
    stats = {
        "prompt_tokens": 58,
        "cached_tokens": 0,
        "generated_tokens": 412,
        "ttft_s": 0.21,
        "tokens_per_s": 38.4,
        "finish_reason": "stop",
    }
    store.append_message(conv, user, "assistant", "A first, shorter answer.", stats=stats)
    budget_stats = {**stats, "generated_tokens": 4508, "reasoning_tokens": 4096, "answer_tokens": 412}
    budget_stats.update(thinking_budget=4096, reasoning_stopped=True, seed=1_734_019_283, reconcile="append")
    reply = store.append_message(
        conv,
        user,
        "assistant",
        samples.ANSWER,
        reasoning=samples.REASONING,
        stats=budget_stats,
        provenance=sample_provenance(),
    )
    follow = store.append_message(conv, reply, "user", samples.FOLLOW_UP)
    store.append_message(
        conv,
        follow,
        "assistant",
        samples.FOLLOW_UP_ANSWER,
        stats={
            **stats,
            "cached_tokens": 1180,
            "generated_tokens": 61,
            "ttft_s": 0.08,
            "tokens_per_s": 41.9,
            "finish_reason": "stop",
        },
        provenance=sample_provenance(seed=402_118_577),
    )
    return conv


def _seed_documents(store: Any, tmp: Path) -> str:
    """A conversation about two attached documents: a long PDF retrieved from, a short memo read whole."""
    import random

    from olmo3.docs.minipdf import wrap, write_pdf
    from olmo3.docs.synth import prose
    from olmo3.docs.turn import prepare, prepare_bytes
    from olmo3.store.attachments import index_document

    rng = random.Random(5)
    pages = [prose(rng, 3, 4) for _ in range(24)]
    pages[16] += "\n\nThe harbour master Ingrid Valdottir sealed the copper vault in 1903, after the spring flood."
    pdf = write_pdf(tmp / "Harbour Commission minutes 1903.pdf", [wrap(t, 90) for t in pages])
    conv = store.create_conversation(title="Harbour Commission minutes")
    report = index_document(store.path, conv, prepare(pdf))
    memo_text = (
        "Ferry timetable, summer 1903\n\nThe ferry to Ostholm leaves the quay at seven every morning and returns at "
        "six. On Sundays there is one crossing only, at ten."
    )
    memo = index_document(store.path, conv, prepare_bytes("Ferry timetable.md", memo_text.encode()))
    question = "Who sealed the copper vault, and when? Did the ferry still run that week?"
    plan = store.plan_turn(conv, question, [report, memo], remaining_context=12_000)
    user = store.append_message(conv, None, "user", question, provenance=plan.provenance())
    store.bind_attachments([report, memo], user)
    stats = {"prompt_tokens": 3912, "cached_tokens": 0, "generated_tokens": 88, "ttft_s": 0.74, "tokens_per_s": 39.2}
    store.append_message(conv, user, "assistant", samples.DOCUMENT_ANSWER, stats={**stats, "finish_reason": "stop"})
    return conv


def _pose_loaded(window: Any, name: str, *, used: int = 1_650, limit: int = 65_536) -> None:
    """Make the window look like a model is loaded (header, composer, greeting), without loading one."""
    window.header.set_model(name)
    window.chat_view.set_model_name(name)
    window.composer.set_state("ready", model_name=name)
    window.status_row.context.set_usage(used, limit)
    window.stack.setCurrentWidget(window.chat_view)


def _feed_download(manager: Any, repo_id: str) -> None:
    """Download events as the hub's download thread would deliver them (36 % of the catalog entry's size)."""
    from olmo3 import hub

    total = next(e for e in hub.CATALOG if e.repo_id == repo_id).download_bytes
    done = int(total * 0.36)
    speed = 31_400_000.0
    manager._on_download_event(
        hub.DownloadStarted(
            repo_id=repo_id, commit="0" * 40, files=("model.safetensors",), total_bytes=total, done_bytes=0
        )
    )
    manager._on_download_event(
        hub.DownloadProgress(
            repo_id=repo_id,
            file="model.safetensors",
            file_done=done,
            file_total=total,
            done_bytes=done,
            total_bytes=total,
            speed_bps=speed,
            eta_s=(total - done) / speed,
        )
    )


def _feed_failure(manager: Any, repo_id: str) -> None:
    """A download that failed offline, as the hub reports it (what a Mac without a connection sees)."""
    from olmo3 import hub

    manager._on_download_event(hub.DownloadStarted(repo_id=repo_id, commit="", files=(), total_bytes=0, done_bytes=0))
    manager._on_download_event(
        hub.DownloadFailed(
            repo_id=repo_id,
            code="unreachable",
            message="cannot reach https://huggingface.co (connection to huggingface.co failed: ConnectError: "
            "[Errno 8] nodename nor servname provided, or not known); check your internet connection",
        )
    )


def _search_results() -> Any:
    """What "Search Hugging Face" returns, sized from the architecture (repos named in the notes on Olmo-3 repos)."""
    from olmo3.hub import OLMO3_7B, OLMO3_32B
    from olmo3.hub.catalog import TOKENIZER_AND_CONFIG_BYTES
    from olmo3.hub.search import SearchResult, SearchResults

    def result(repo: str, arch: Any, bits: int | None, downloads: int) -> SearchResult:
        weights = arch.weight_bytes(bits)
        return SearchResult(
            repo,
            downloads=downloads,
            total_bytes=weights + TOKENIZER_AND_CONFIG_BYTES,
            weight_bytes=weights,
            bits=bits,
            kv_bytes_per_token_full=arch.kv_bytes_per_token_full,
            kv_bytes_per_token_sliding=arch.kv_bytes_per_token_sliding,
            sliding_window=arch.sliding_window,
        )

    return SearchResults(
        (
            result("mlx-community/Olmo-3-7B-Instruct-8bit", OLMO3_7B, 8, 2_310),
            result("lmstudio-community/Olmo-3-1025-7B-MLX-6bit", OLMO3_7B, 6, 1_204),
            result("lmstudio-community/Olmo-3.1-32B-Instruct-MLX-4bit", OLMO3_32B, 4, 877),
            result("mlx-community/Olmo-3-1125-32B-6bit", OLMO3_32B, 6, 301),
            SearchResult(
                "someone/Olmo-3-7B-Instruct-GGUF",
                downloads=12,
                problem="someone/Olmo-3-7B-Instruct-GGUF has no .safetensors weights (it has model.gguf)",
            ),
        ),
        "2026-11-30T08:34:00+00:00",
        from_cache=True,
        error="connection to huggingface.co failed",
    )


def picker_screenshots(window: Any, out_dir: Path, theme: str, app: QApplication) -> list[Path]:
    """The picker after an offline download failed (wide and narrow), with search results (offline: saved), and
    quantizing an Ai2 download."""
    from desktop.models import DownloadState
    from olmo3 import hub

    saved = []
    picker = window.open_model_picker()
    _feed_failure(window.models, "mlx-community/Olmo-3-7B-Think-4bit")
    for width in (1270, 800):
        picker.resize(width, 700)
        saved.append(_save(picker, out_dir / f"02b-model-picker-error-{width}-{theme}.png", app))
    picker.resize(800, 700)
    picker._on_searched(_search_results())
    _settle(app)
    if picker.search_header is not None:
        picker.scroll_area.verticalScrollBar().setValue(picker.search_header.y() - 8)
    saved.append(_save(picker, out_dir / f"02c-model-picker-search-{theme}.png", app))
    # "Download and quantize" in its second phase, on an Ai2 card.
    ai2 = "allenai/Olmo-3-7B-Instruct"
    window.models.downloads[ai2] = DownloadState(ai2, quantize_bits=4)
    window.models._on_download_event(
        hub.DownloadQuantizing(repo_id=ai2, bits=4, done_steps=12, total_steps=34, what="layer 12 of 32")
    )
    _settle(app)
    card = picker.cards().get(ai2)
    if card is not None:
        picker.scroll_area.verticalScrollBar().setValue(card.y() - 120)
    saved.append(_save(picker, out_dir / f"02d-model-picker-quantizing-{theme}.png", app))
    for repo in ("mlx-community/Olmo-3-7B-Think-4bit", ai2):
        window.models.downloads.pop(repo, None)
    window.models.changed.emit()
    picker.hide()
    return saved


def _posed_7b() -> tuple[Any, str]:
    """The Model page's model: Olmo 3 7B Instruct 4-bit, from the catalog's architecture."""
    from olmo3 import hub
    from olmo3.fit import ModelShape

    entry = next(e for e in hub.CATALOG if e.repo_id == "mlx-community/Olmo-3-7B-Instruct-4bit")
    shape = ModelShape.of_any(entry)
    return shape, "Olmo 3 7B Instruct · 4-bit"


def _wont_fit_event() -> Any:
    """What the engine says about a 32B 8-bit model on a 16 GB Mac."""
    from olmo3 import hub
    from olmo3.chat.events import ModelWontFit
    from olmo3.memory import MemoryBudget

    entry = next(e for e in hub.CATALOG if e.arch.label == "32B" and e.quant == "8bit")
    fit = entry.memory_fit(8192, MemoryBudget(MAC_16GB, "ram_fraction", 16 * 1024**3))
    return ModelWontFit(
        path="/Users/you/Models/Olmo-3.1-32B-Instruct-MLX-8bit",
        context_tokens=fit.context_tokens,
        max_context=entry.arch.max_position_embeddings,
        weight_bytes=fit.weight_bytes,
        kv_bytes=fit.kv_bytes,
        needed_bytes=fit.needed_bytes,
        budget_bytes=fit.budget_bytes,
        message=fit.message,
    )


def _trash_rows(store: Any) -> list[Any]:
    """The Trash as the sidebar shows it, with deletions spread over the last days."""
    from desktop.sidebar import ConversationRow

    now = time.time()
    ages = (20, 26 * 3600, 4 * 86400, 3 * 3600)
    return [
        ConversationRow(c.id, c.title, c.updated_at, False, "cold", now - ages[i % len(ages)])
        for i, c in enumerate(store.list_trash())
    ]


def _document_screens(window: Any, out_dir: Path, theme: str, home: Path, app: QApplication) -> list[Path]:
    from desktop.chat import AssistantMessageWidget as Reply

    files = home / "files"
    files.mkdir(exist_ok=True)
    conv = _seed_documents(window.store, files)
    window.refresh_sidebar()
    window.controller.open(conv)
    _pose_loaded(window, "Olmo 3 7B Instruct · 4-bit", used=4_000, limit=65_536)
    window.controller._context[conv] = (4_000, 65_536)  # as the engine would report it
    window.status_row.set_stats_text(window.controller._last_stats_text())
    notes = files / "Pier repairs.md"
    notes.write_text("# Pier repairs\n\nThe east pier needs 40 cartloads of timber before winter.\n")
    photo = files / "scan-0001.txt"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    window.documents.attach_paths([str(notes), str(photo)])
    deadline = time.monotonic() + 20
    while window.documents.busy() and time.monotonic() < deadline:
        _settle(app, 2)
    window.composer.set_text("Summarise the repairs the pier needs.")
    window.chat_view.scroll_to_bottom()
    shots = [_save(window, out_dir / f"19-documents-{theme}.png", app)]
    window.resize(*NARROW)
    _settle(app)
    window.chat_view.scroll_to_bottom()
    shots.append(_save(window, out_dir / f"20-documents-narrow-{theme}.png", app))
    window.resize(*WIDE)
    reply = next(w for w in window.chat_view.messages() if isinstance(w, Reply))
    planted = next((b for b in reply.sources.buttons if "17" in b.text()), reply.sources.buttons[0])
    planted.click()
    dialog = window.documents.dialog
    shots.append(_save(dialog, out_dir / f"21-source-passage-{theme}.png", app))
    dialog.close()
    return shots


def main_screenshots(out_dir: Path) -> int:
    from desktop.app import MainWindow, create_application
    from desktop.paths import AppPaths
    from desktop.settings import Settings
    from olmo3.hub import ModelStore

    out_dir.mkdir(parents=True, exist_ok=True)
    app = create_application([])
    saved: list[Path] = []
    print(f"olmo-desktop --screenshot {out_dir}")
    for theme in ("light", "dark"):
        with tempfile.TemporaryDirectory(prefix="olmo-shots-") as home:
            paths = AppPaths.under(home)
            window = MainWindow(
                paths=paths,
                theme_mode=theme,
                start_engine=False,
                settings=Settings(theme=theme),
                model_store=ModelStore(paths.models_dir, include_hf_cache=False),
            )
            window.resize(*WIDE)
            window.show()
            _settle(app)
            # 1. first run: no model, no conversations
            saved.append(_save(window, out_dir / f"01-empty-{theme}.png", app))
            # 1b. models installed, none loaded: the chat says so and the composer offers the picker
            window._has_installed_models = lambda: True  # type: ignore[method-assign]
            window.update_empty_state()
            saved.append(_save(window, out_dir / f"11-no-model-loaded-{theme}.png", app))
            window.chat_view.set_model_name("Olmo 3 7B Instruct · 4-bit", loading=True)
            window.header.set_model("Olmo 3 7B Instruct · 4-bit", loading=True)
            window.composer.set_state("loading", model_name="Olmo 3 7B Instruct · 4-bit")
            saved.append(_save(window, out_dir / f"12-loading-last-model-{theme}.png", app))
            window.header.set_model(None)
            window.chat_view.set_model_name(None)
            # 2. the model picker with a download in progress
            _feed_download(window.models, "mlx-community/Olmo-3-7B-Instruct-4bit")
            picker = window.open_model_picker()
            picker.resize(760, 700)
            saved.append(_save(picker, out_dir / f"02-model-picker-download-{theme}.png", app))
            picker.hide()
            saved.extend(picker_screenshots(window, out_dir, theme, app))
            # 3. a chat with reasoning, code, a table, branches and stats
            conv = _seed_conversations(window.store)
            window.refresh_sidebar()
            window.controller.open(conv)
            _pose_loaded(window, "Olmo 3 7B Think · 4-bit")
            window.status_row.set_stats_text(window.controller._last_stats_text())
            window.chat_view.finish_backfill()
            reasoning = next(w for w in window.chat_view.messages() if isinstance(w, AssistantMessageWidget)).reasoning
            reasoning.set_expanded(theme == "dark")
            _settle(app)
            window.chat_view.verticalScrollBar().setValue(0)
            saved.append(_save(window, out_dir / f"03-chat-{theme}.png", app))
            # 3b. the Info popover of the reply whose reasoning the budget stopped (another model loaded: it warns)
            replies = [w for w in window.chat_view.messages() if isinstance(w, AssistantMessageWidget)]
            budget_reply = next(w for w in replies if w.message.get("reasoning"))
            budget_reply.set_actions_pinned(True)
            _settle(app)
            window.chat_view.ensureWidgetVisible(budget_reply.info_button, 0, 40)
            _settle(app)
            popover = budget_reply.show_info()
            saved.append(_composite(window, popover, out_dir / f"11-info-popover-{theme}.png", app))
            popover.close()
            budget_reply.set_actions_pinned(False)
            last_reply = replies[-1]  # the last reply can be reproduced; here another model is loaded
            last_reply.reproduce_note = lambda data: (
                "The loaded model's weights (1d04e7bb29c3f5a0) differ from the ones this reply was made with "
                "(9f3c1a7e52d04b86): reproducing gives a different reply."
            )
            window.chat_view.scroll_to_bottom()
            _settle(app)
            popover = last_reply.show_info()
            saved.append(_composite(window, popover, out_dir / f"12-info-popover-other-model-{theme}.png", app))
            popover.close()
            window.chat_view.scroll_to_bottom()
            saved.append(_save(window, out_dir / f"04-chat-bottom-{theme}.png", app))
            # 3c. the context bar's tooltip: earlier reasoning dropped, 8-bit KV
            bar = window.status_row.context
            bar.set_usage(41_300, 65_536)
            bar.set_details(
                [
                    "Earlier reasoning is left out of the context: 12,288 tokens saved.",
                    "8-bit KV cache: 2.9 GB instead of 5.4 GB (2.5 GB saved).",
                ]
            )
            tip = _tooltip_like(bar.toolTip(), window)  # offscreen Qt shows no real tooltips: one drawn alike
            tip.move(bar.mapToGlobal(QPoint(0, -tip.height() - 6)))
            tip.show()
            saved.append(_composite(window, tip, out_dir / f"13-context-tooltip-{theme}.png", app))
            tip.close()
            bar.set_details([])
            _pose_loaded(window, "Olmo 3 7B Think · 4-bit")
            # 4. narrow window
            window.resize(*NARROW)
            _settle(app)
            window.chat_view.verticalScrollBar().setValue(0)
            saved.append(_save(window, out_dir / f"05-chat-narrow-{theme}.png", app))
            # 5. a reply streaming, thinking phase, plus search results in the sidebar
            window.resize(*WIDE)
            window.controller.new_chat()
            _pose_loaded(window, "Olmo 3 7B Think · 4-bit", used=0, limit=0)
            window.chat_view.add_user_message("Why is the sky blue? Think it through.", 0)
            widget = window.chat_view.begin_assistant()
            window.chat_view.append_delta(
                "Rayleigh scattering: shorter wavelengths scatter more strongly...", "reasoning"
            )
            window.chat_view.flush()
            widget.reasoning.set_expanded(True)
            window.composer.set_state("generating", model_name="Olmo 3 7B Think")
            window.sidebar.search.setText("interval")
            window.sidebar._emit_search()
            saved.append(_save(window, out_dir / f"06-streaming-search-{theme}.png", app))
            window.chat_view.end_stream()
            window.sidebar.search.clear()
            # 6. settings
            from desktop.settings_dialog import SettingsDialog

            dialog = SettingsDialog(
                replace(window.settings, system_prompt="You are a concise assistant."),
                default_models_dir=paths.models_dir,
                conversation_prompt=None,
                conversation_sampling={"keep_reasoning": False},
                conversation_title="Merging intervals",
                parent=window,
            )
            dialog.show()
            saved.append(_save(dialog, out_dir / f"07-settings-{theme}.png", app))
            dialog.show_page("Sampling")
            saved.append(_save(dialog, out_dir / f"08-settings-sampling-{theme}.png", app))
            dialog.show_page("Memory & storage")
            dialog.kv_8bit.setChecked(True)
            saved.append(_save(dialog, out_dir / f"13-settings-memory-{theme}.png", app))
            dialog.close()
            from olmo3.memory import MemoryBudget

            dialog = SettingsDialog(
                window.settings,
                default_models_dir=paths.models_dir,
                model_dir="/Users/you/Models/Olmo-3-7B-Instruct-4bit",
                budget=MemoryBudget(MAC_16GB, "ram_fraction", 16 * 1024**3),
                model=_posed_7b(),
                parent=window,
            )
            dialog.show_page("Model")
            dialog.show()
            saved.append(_save(dialog, out_dir / f"14-settings-model-{theme}.png", app))
            dialog.close()
            # the question for a model that won't fit
            from desktop import dialogs

            box, _load = dialogs.load_anyway_box(window, _wont_fit_event(), "Olmo 3.1 32B Instruct · 8-bit")
            box.show()
            saved.append(_save(box, out_dir / f"15-wont-fit-{theme}.png", app))
            box.close()
            # 7. empty conversation with a model loaded
            window.controller.new_chat()
            _pose_loaded(window, "Olmo 3 7B Instruct · 4-bit", used=0, limit=0)
            saved.append(_save(window, out_dir / f"09-new-chat-{theme}.png", app))
            # 8. an error reply (inline notice with Retry) and the Trash view
            failed = window.store.create_conversation(title="Summarise the attached notes")
            user = window.store.append_message(failed, None, "user", "Summarise these notes in three bullets.")
            oom = "the model ran out of memory (Metal: insufficient memory)"
            window.store.append_message(
                failed, user, "assistant", "Here are the", state="error", provenance={"error": oom}
            )
            trashed = window.store.create_conversation(title="Old draft about sourdough")
            window.store.append_message(trashed, None, "user", "Sourdough?")
            window.store.delete(trashed)
            window.refresh_sidebar()
            older = window.store.create_conversation(title="Packing list for the Alps")
            window.store.append_message(older, None, "user", "What should I pack?")
            window.store.delete(older)
            oldest = window.store.create_conversation(title="Which houseplants like shade?")
            window.store.append_message(oldest, None, "user", "Shade plants?")
            window.store.delete(oldest)
            window.refresh_sidebar()
            window.controller.open(failed)
            _pose_loaded(window, "Olmo 3 7B Instruct · 4-bit", used=96, limit=65_536)
            window.sidebar.show_trash(True)
            window.sidebar.set_trash(_trash_rows(window.store))
            saved.append(_save(window, out_dir / f"10-error-and-trash-{theme}.png", app))
            window.sidebar.show_trash(False)
            # a reply that filled the context: the notice offers to continue
            full = window.store.create_conversation(title="A story that never ends")
            user = window.store.append_message(full, None, "user", "Tell me a very long story.")
            story = "Once upon a time, a fox kept every key and every value she had ever seen. " + (
                "Each night she counted them again, and each night there were more. " * 30
            )
            stats = {"prompt_tokens": 40, "cached_tokens": 0, "generated_tokens": 4056, "finish_reason": "context"}
            window.store.append_message(full, user, "assistant", story, stats=stats)
            window.refresh_sidebar()
            window.controller.open(full)
            _pose_loaded(window, "Olmo 3 7B Instruct · 4-bit", used=4096, limit=4096)
            window.chat_view.finish_backfill()
            window.chat_view.scroll_to_bottom()
            saved.append(_save(window, out_dir / f"16-context-full-{theme}.png", app))
            saved += tool_screenshots(window, paths, out_dir, theme, app)  # cards, consent, Settings → Tools
            window.controller.open(full)
            _pose_loaded(window, "Olmo 3 7B Instruct · 4-bit", used=4096, limit=4096)
            # narrow: the sidebar collapses below 900 px; the toolbar button shows it
            window.resize(*NARROW)
            _settle(app)
            saved.append(_save(window, out_dir / f"17-narrow-collapsed-{theme}.png", app))
            window.toggle_sidebar()
            saved.append(_save(window, out_dir / f"18-narrow-sidebar-shown-{theme}.png", app))
            window.resize(*WIDE)
            # chat with documents: chips on the message, Sources under the reply, files in the composer
            saved += _document_screens(window, out_dir, theme, Path(home), app)
            window.close()
            _settle(app)
    print(f"{len(saved)} screenshots")
    return 0
