"""The model picker: installed models, the catalog and Hugging Face search results as cards, with downloads.

It is a view over :class:`desktop.models.ModelManager`; closing it does not stop downloads. Every card says what
the model is for, how big it is, whether it fits this Mac (with the numbers in the tooltip) and offers the one
obvious next step (Download, Load, Resume...). Sections, top to bottom: models on this Mac; the catalog's MLX
conversions; Ai2's own releases, downloaded and quantized to 4-bit here; the results of "Search Hugging Face"
(shown from the cache when offline, with when they were fetched).

Failure stays on its card: a failed download's message wraps under it, with Resume and Cancel; paused downloads
offer the same. The banner at the top is for what belongs to no card (adding a folder, deleting, a custom repo)
and clears after the next success. The list is rebuilt after every add, import, delete and download.

An Olmo server's card (:mod:`desktop.remote`): on top while connected, after the models on this Mac otherwise.

Signals:
    load_requested(str, str): model folder, display name (the picker closes: Load returns to the chat).
    unload_requested()
    connect_requested(), disconnect_requested(): the server card's buttons.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.model_cards import (
    DESCRIPTIONS,
    ModelCard,
    ask_copy_or_link,
    breakable,
    confirm_box,
    display_name,
    fit_text,
    pretty_name,
    search_status,
    wont_fit_reason,
)
from desktop.models import ModelManager, friendly_error
from desktop.remote import remote_card

__all__ = ["DESCRIPTIONS", "ModelCard", "ModelPickerDialog", "fit_text", "pretty_name"]


class ModelPickerDialog(QDialog):
    """See the module docstring."""

    load_requested = Signal(str, str)
    unload_requested = Signal()
    connect_requested = Signal()
    disconnect_requested = Signal()

    def __init__(self, manager: ModelManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self.setWindowTitle("Models")
        self.setModal(False)
        self.resize(760, 660)
        self.manager = manager
        self._loaded_path: str | None = None
        self._loading_path: str | None = None
        self._cards: dict[str, ModelCard] = {}
        self._banner_is_error = False
        self._search: Any = manager.cached_search()  # olmo3.hub.search.SearchResults (shown offline too)
        self._custom: tuple[str, Any] | None = None  # a custom repo's id and DownloadPlan, after "Check"
        self._remote: tuple[str | None, str] = (None, "")  # the connected server's "host:port" and model name
        # Overridable for tests (no modal dialogs offscreen).
        self.confirm: Callable[[str, str], bool] = self._confirm_box
        self.ask_folder: Callable[[], str | None] = self._folder_dialog
        self.ask_link: Callable[[str], bool | None] = self._link_box
        self.context_for: Callable[[Any], int] = lambda model: 8192  # the window's: each model's context length

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        header = QWidget(self)
        header.setObjectName("pickerHeader")
        header_layout = QVBoxLayout(header)
        header_layout.setContentsMargins(24, 20, 24, 12)
        header_layout.setSpacing(4)
        title = QLabel("Choose a model", header)
        title.setObjectName("pickerTitle")
        self.subtitle = QLabel("", header)
        self.subtitle.setObjectName("pickerSubtitle")
        self.subtitle.setWordWrap(True)
        header_layout.addWidget(title)
        header_layout.addWidget(self.subtitle)
        outer.addWidget(header)

        self.banner = QFrame(self)
        self.banner.setObjectName("errorBanner")
        self.banner.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        banner_row = QHBoxLayout(self.banner)
        banner_row.setContentsMargins(12, 8, 8, 8)
        self.banner_icon = QLabel(self.banner)
        self.banner_text = QLabel(self.banner)
        self.banner_text.setWordWrap(True)
        self.banner_text.setMinimumWidth(40)
        self.banner_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(self.banner)
        close.setIcon(th.icon("close", "muted"))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.banner.hide)
        banner_row.addWidget(self.banner_icon, 0, Qt.AlignmentFlag.AlignTop)
        banner_row.addWidget(self.banner_text, 1)
        banner_row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        banner_wrap = QWidget(self)
        wrap_layout = QVBoxLayout(banner_wrap)
        wrap_layout.setContentsMargins(24, 0, 24, 8)
        wrap_layout.addWidget(self.banner)
        self.banner.hide()
        outer.addWidget(banner_wrap)

        self.scroll_area = QScrollArea(self)
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.body = QWidget(self.scroll_area)
        self.body.setObjectName("pickerBody")
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(24, 4, 24, 16)
        self.body_layout.setSpacing(10)
        self.scroll_area.setWidget(self.body)
        outer.addWidget(self.scroll_area, 1)

        footer = QWidget(self)
        footer_row = QHBoxLayout(footer)
        footer_row.setContentsMargins(24, 10, 24, 16)
        self.add_folder_button = QPushButton("Add model folder…", footer)
        self.add_folder_button.setObjectName("secondaryButton")
        self.custom_field = QLineEdit(footer)
        self.custom_field.setPlaceholderText("Custom Hugging Face repo, e.g. mlx-community/Olmo-3-7B-Think-4bit")
        self.check_button = QPushButton("Check", footer)
        self.check_button.setObjectName("secondaryButton")
        self.done_button = QPushButton("Done", footer)
        self.done_button.setObjectName("primaryButton")
        for button in (self.add_folder_button, self.check_button):
            button.setAutoDefault(False)
        self.done_button.setDefault(True)
        footer_row.addWidget(self.add_folder_button)
        footer_row.addWidget(self.custom_field, 1)
        footer_row.addWidget(self.check_button)
        footer_row.addSpacing(12)
        footer_row.addWidget(self.done_button)
        outer.addWidget(footer)

        self.search_button: QPushButton | None = None
        self.search_status: QLabel | None = None
        self.search_header: QWidget | None = None

        self.add_folder_button.clicked.connect(self._add_folder)
        self.check_button.clicked.connect(self._check_custom)
        self.custom_field.returnPressed.connect(self._check_custom)
        self.done_button.clicked.connect(self.accept)
        manager.changed.connect(self.refresh)
        manager.download_event.connect(self._on_download_event)
        manager.error.connect(self.show_error)
        manager.deleted.connect(self._on_deleted)
        manager.imported.connect(self._on_imported)
        manager.planned.connect(self._on_planned)
        manager.searched.connect(self._on_searched)
        self.refresh()

    # state -----------------------------------------------------------------------------------------------------
    def set_loaded(self, path: str | None, *, loading: str | None = None) -> None:
        self._loaded_path = path
        self._loading_path = loading
        if path is not None and self._banner_is_error:
            self.banner.hide()  # a model loaded: an old error is stale
        self.refresh()

    def set_remote(self, label: str | None, model_name: str = "") -> None:
        self._remote = (label, model_name)
        self.refresh()

    def show_error(self, title: str, message: str) -> None:
        self.banner_icon.setPixmap(th.pixmap("warning", 18, "danger"))
        self.banner_text.setText(f"<b>{_esc(title)}</b><br>{_esc(breakable(message))}")
        self._banner_is_error = True
        self.banner.show()

    def show_info(self, message: str) -> None:
        """A success; it replaces whatever the banner said before (a stale error included)."""
        self.banner_icon.setPixmap(th.pixmap("check", 18, "success"))
        self.banner_text.setText(_esc(breakable(message)))
        self._banner_is_error = False
        self.banner.show()

    def cards(self) -> dict[str, ModelCard]:
        return dict(self._cards)

    # building --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        budget = self.manager.budget()
        self.subtitle.setText(f"Models run entirely on this Mac. Memory available for models: {budget.describe()}.")
        while self.body_layout.count():
            item = self.body_layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self._cards = {}
        self.search_button = self.search_status = None
        self.search_header = None
        local = self.manager.installed()
        shown: set[str] = set()
        server = remote_card(self.body, *self._remote, self.connect_requested.emit, self.disconnect_requested.emit)
        self._cards["remote-server"] = server
        if self._remote[0]:
            self._section("OLMO SERVER", "", server)  # the model that chats now: on top
        self._section(
            "ON THIS MAC", "" if local else "No models yet. Download one below or add a folder you already have."
        )
        for model in local:
            self._add(self._local_card(model, budget))
            shown.add(model.repo_id or model.name)
        if not self._remote[0]:
            self._section("OLMO SERVER", "", server)
        catalog = self.manager.catalog()
        offered = [item for item in catalog if item.entry.repo_id not in shown]
        mlx = [item for item in offered if item.entry.quantize_bits is None]
        ai2 = [item for item in offered if item.entry.quantize_bits is not None]
        if mlx:
            self._section("DOWNLOAD", "Sizes are for the download; the badge says whether the model fits this Mac.")
            for item in mlx:
                self._add(self._catalog_card(item))
        if ai2:
            self._section(
                "FROM AI2, QUANTIZED ON THIS MAC",
                "Ai2's original bf16 weights, converted to 4-bit here after the download. It needs disk space for "
                "both copies while it runs, and a few minutes; the bf16 copy is deleted afterwards.",
            )
            for item in ai2:
                self._add(self._catalog_card(item))
        shown |= {item.entry.repo_id for item in catalog}
        if self._custom is not None and self._custom[0] not in shown:
            self._add(self._custom_card(*self._custom, budget))
            shown.add(self._custom[0])
        self._search_section(shown, budget)
        self.body_layout.addStretch(1)

    def _add(self, widget: QWidget) -> None:
        """Add to the list and show now (a layout shows a new child only when the event loop next runs, so a
        card just built would read as hidden until then)."""
        self.body_layout.addWidget(widget)
        widget.show()

    def _section(self, title: str, hint: str, card: QWidget | None = None) -> None:
        label = QLabel(title, self.body)
        label.setObjectName("sectionTitle")
        self.body_layout.addSpacing(6)
        self._add(label)
        if hint:
            self._hint(hint)
        if card is not None:
            self._add(card)

    def _hint(self, text: str) -> QLabel:
        hint_label = QLabel(text, self.body)
        hint_label.setObjectName("sectionHint")
        hint_label.setWordWrap(True)
        hint_label.setMinimumWidth(40)
        self._add(hint_label)
        return hint_label

    def _search_section(self, shown: set[str], budget: Any) -> None:
        header = QWidget(self.body)  # a widget, not a layout: refresh() deletes the body's widgets
        row = QHBoxLayout(header)
        row.setContentsMargins(0, 0, 0, 0)
        label = QLabel("ON HUGGING FACE", header)
        label.setObjectName("sectionTitle")
        button = QPushButton("Searching…" if self.manager.searching else "Search Hugging Face", header)
        button.setObjectName("secondaryButton")
        button.setAutoDefault(False)
        button.setEnabled(not self.manager.searching)
        button.clicked.connect(self._start_search)
        row.addWidget(label, 1, Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(button)
        self.body_layout.addSpacing(6)
        self._add(header)
        self.search_header = header
        self.search_button = button
        results = self._search
        self.search_status = self._hint(search_status(results))
        if results is None:
            return
        if results.error:
            self.search_status.setToolTip(results.error)
        others = [r for r in results.results if r.repo_id not in shown]
        for result in others:
            self._add(self._search_card(result, budget))
        if results.results and not others:
            self._hint("Every Olmo-3 conversion found is listed above.")

    def _local_card(self, model: Any, budget: Any) -> ModelCard:
        from olmo3.units import format_bytes

        card = ModelCard(model.name, self.body)
        self._cards[model.name] = card
        card.set_name(pretty_name(model.name))
        card.description.setText(DESCRIPTIONS.get(model.variant, "Olmo-3 model."))
        meta = [model.variant, model.quant_label]
        if model.param_count:
            meta.append(
                f"{model.param_count / 1e9:.1f}B parameters"
                if model.param_count > 5e8
                else f"{model.param_count:,} parameters"
            )
        meta.append(format_bytes(model.size_bytes) + (" on disk" if model.installed else " downloaded"))
        if model.source == "hf_cache":
            meta.append("from the Hugging Face cache")
        elif model.source == "link":
            meta.append(f"linked from {model.origin}")
        elif model.source == "quantized":
            meta.append(f"quantized on this Mac from {model.origin}")
        card.meta.setText(breakable(" · ".join(m for m in meta if m and m != "?")))
        fit = model.memory_fit(self.context_for(model), budget=budget) if model.installed else None
        card.badge.set_fit(fit)
        card.badge.setVisible(model.installed)
        path = str(model.path)
        loaded = self._loaded_path is not None and Path(self._loaded_path) == Path(path)
        card.set_loaded(loaded)
        key = model.repo_id or model.name
        if model.installed:
            if loaded:
                card.add_button("unload", "Unload", self.unload_requested.emit)
            elif self._loading_path == path:
                card.add_button("load", "Loading…", lambda: None, kind="primaryButton").setEnabled(False)
            else:
                card.add_button("load", "Load", _call(self._load, path, model.name), kind="primaryButton")
            card.add_button("delete", "Delete…", _call(self._delete, model), kind="dangerButton")
            if fit is not None and fit.verdict == "wont_fit":
                card.set_note(wont_fit_reason(fit))
            return card
        self._download_actions(card, key, local=model, resume_label="Resume")
        if model.problem and not card.note.isVisible():
            card.set_note(model.problem[0].upper() + model.problem[1:] + ".")
        return card

    def _download_actions(
        self,
        card: ModelCard,
        repo_id: str,
        *,
        fit: Any = None,
        quantize_bits: int | None = None,
        local: Any = None,
        download_label: str = "Download",
        resume_label: str | None = None,
    ) -> None:
        """The buttons and progress of a model that is not installed: running, failed, paused or not started."""
        state = self.manager.downloads.get(repo_id)
        if state is not None and state.active:
            card.add_button("pause", "Pause", _call(self.manager.pause, repo_id))
            card.add_button("cancel", "Cancel", _call(self._cancel, repo_id))
            card.set_download(state)
            return
        failed = state is not None and state.status == "failed"
        paused = (state is not None and state.status == "paused") or local is not None
        if failed or paused:
            partial = (state.done_bytes if state is not None else 0) or (local.size_bytes if local else 0)
            label = resume_label or ("Resume" if partial else "Try again")
            card.add_button("resume", label, _call(self._resume, repo_id, quantize_bits), kind="primaryButton")
            card.add_button("cancel", "Cancel", _call(self._cancel, repo_id))
            card.set_download(state)
            if paused and not failed and state is None and local is not None and local.problem:
                card.set_note(local.problem[0].upper() + local.problem[1:] + ".")
            return
        wont_fit = fit is not None and fit.verdict == "wont_fit"
        card.add_button(
            "download",
            download_label,
            _call(self._start, repo_id, quantize_bits),
            kind="secondaryButton" if wont_fit else "primaryButton",
        )
        if wont_fit:
            card.set_note(wont_fit_reason(fit))

    def _catalog_card(self, item: Any) -> ModelCard:
        from olmo3.units import format_bytes

        entry = item.entry
        card = ModelCard(entry.repo_id, self.body)
        self._cards[entry.repo_id] = card
        card.set_name(entry.title)
        card.description.setText(DESCRIPTIONS.get(entry.variant, ""))
        if entry.quantize_bits is not None:
            meta = (
                f"{format_bytes(entry.download_bytes)} download → {format_bytes(entry.installed_bytes)} on disk · "
                f"{entry.repo_id}"
            )
            label = f"Download and quantize to {entry.quantize_bits}-bit"
        else:
            meta = f"{format_bytes(entry.download_bytes)} download · {entry.repo_id}"
            label = "Download"
        card.meta.setText(breakable(meta))
        card.setToolTip(entry.note)
        fit = entry.memory_fit(self.context_for(entry), self.manager.budget())
        card.badge.set_fit(fit)
        local = item.local if item.local is not None and not item.installed else None
        self._download_actions(
            card, entry.repo_id, fit=fit, quantize_bits=entry.quantize_bits, local=local, download_label=label
        )
        return card

    def _search_card(self, result: Any, budget: Any) -> ModelCard:
        from olmo3.units import format_bytes

        card = ModelCard(result.repo_id, self.body)
        self._cards[result.repo_id] = card
        card.set_name(
            display_name(result.repo_id, result.quant_label) if result.usable else pretty_name(result.repo_id)
        )
        card.description.setText(f"Published on Hugging Face · {result.downloads:,} downloads")
        size = f"{format_bytes(result.total_bytes)} download · " if result.total_bytes is not None else ""
        card.meta.setText(breakable(size + result.repo_id))
        fit = result.memory_fit(budget=budget)
        card.badge.set_fit(fit)
        if not result.usable:
            card.badge.hide()
            problem = str(result.problem)
            if problem.startswith(result.repo_id + " "):
                problem = "the repo " + problem.removeprefix(result.repo_id + " ")
            card.set_note(f"Olmo Desktop can't run it: {problem}.")
            return card
        self._download_actions(card, result.repo_id, fit=fit)
        return card

    def _custom_card(self, repo_id: str, plan: Any, budget: Any) -> ModelCard:
        from olmo3.units import format_bytes

        card = ModelCard(repo_id, self.body)
        self._cards[repo_id] = card
        card.set_name(pretty_name(repo_id))
        card.description.setText("Custom model from Hugging Face.")
        card.meta.setText(breakable(f"{format_bytes(plan.total_bytes)} download · {repo_id}"))
        fit = plan.memory_fit(budget=budget)
        card.badge.set_fit(fit)
        self._download_actions(card, repo_id, fit=fit)
        return card

    # actions ---------------------------------------------------------------------------------------------------
    def _start(self, repo_id: str, quantize_bits: int | None = None) -> None:
        if self._banner_is_error:
            self.banner.hide()
        self.manager.start_download(repo_id, quantize_bits=quantize_bits)

    def _resume(self, repo_id: str, quantize_bits: int | None = None) -> None:
        if self._banner_is_error:
            self.banner.hide()
        self.manager.resume(repo_id, quantize_bits=quantize_bits)

    def _load(self, path: str, name: str) -> None:
        self._loading_path = path
        self.load_requested.emit(path, name)
        self.refresh()
        self.accept()  # back to the chat; the header shows the model loading

    def _delete(self, model: Any) -> None:
        from olmo3.units import format_bytes

        what = "the downloaded part of " if not model.installed else ""
        if model.source == "link":
            detail = "Only Olmo Desktop's links are removed; the original files stay where they are."
        elif model.source == "hf_cache":
            detail = "This removes it from the Hugging Face cache, which other apps may share."
        else:
            detail = f"This frees about {format_bytes(model.size_bytes)}."
        if not self.confirm(
            f"Delete {what}{pretty_name(model.name)}?",
            f"{detail} Your conversations are kept; their saved memory for this model is removed.",
        ):
            return
        if self._loaded_path is not None and Path(self._loaded_path) == Path(model.path):
            self.unload_requested.emit()
        self.manager.delete(model.name)

    def _cancel(self, repo_id: str) -> None:
        if self.confirm("Cancel this download?", "The part downloaded so far is deleted. Use Pause to keep it."):
            self.manager.cancel(repo_id, discard=True)

    def _on_deleted(self, name: str, freed: int) -> None:
        from olmo3.units import format_bytes

        self.show_info(f"Deleted {pretty_name(name)} and freed {format_bytes(freed)}.")

    def _on_imported(self, model: object) -> None:
        name = getattr(model, "name", "")
        self.show_info(f"Added {pretty_name(name)}. Load it from the list.")
        card = self._cards.get(name)
        if card is not None:
            self.scroll_area.ensureWidgetVisible(card)

    def _add_folder(self) -> None:
        """Check the folder first (MLX-free, headers only), then ask how to add it."""
        from olmo3.model.modelinfo import ModelLoadError, inspect_model_dir

        folder = self.ask_folder()
        if not folder:
            return
        try:
            inspect_model_dir(folder)
        except (ModelLoadError, OSError, ValueError) as exc:
            message = str(exc).removeprefix(f"{folder}: ").removeprefix(f"{folder}/")
            self.show_error("Couldn't add that folder", f"{folder} is not a loadable Olmo-3 model: {message}")
            return
        link = self.ask_link(folder)
        if link is None:
            return
        self.manager.import_folder(folder, link=link)

    def _check_custom(self) -> None:
        text = self.custom_field.text().strip()
        if not text:
            self.show_error("Enter a model", "Type a Hugging Face repo id like mlx-community/Olmo-3-7B-Think-4bit.")
            return
        self.check_button.setEnabled(False)
        self.check_button.setText("Checking…")
        self.manager.plan(text)

    def _on_planned(self, repo_id: str, result: object) -> None:
        self.check_button.setEnabled(True)
        self.check_button.setText("Check")
        if isinstance(result, BaseException):
            from olmo3.hub import DownloadError

            message = friendly_error(result.code, result.message) if isinstance(result, DownloadError) else str(result)
            self.show_error(f"Can't use {repo_id}", message)
            return
        self._custom = (repo_id, result)
        self.banner.hide()
        self.refresh()
        card = self._cards.get(repo_id)
        if card is not None:
            self.scroll_area.ensureWidgetVisible(card)

    def _start_search(self) -> None:
        self.manager.search()
        if self.search_button is not None:
            self.search_button.setEnabled(False)
            self.search_button.setText("Searching…")

    def _on_searched(self, results: object) -> None:
        self._search = results
        self.refresh()

    def _on_download_event(self, event: object) -> None:
        from olmo3 import hub

        repo_id = getattr(event, "repo_id", "")
        card = self._cards.get(repo_id)
        state = self.manager.downloads.get(repo_id)
        if card is not None and state is not None:
            if state.active and "pause" not in card.button_keys():
                self.refresh()  # the card was built before this download ran: give it Pause and Cancel
                card = self._cards.get(repo_id)
            if card is not None:
                card.set_download(state)
        if isinstance(event, hub.DownloadCompleted):
            self.show_info(f"{pretty_name(event.model.name)} is ready.")

    # dialogs (replaced in tests) -------------------------------------------------------------------------------
    def _confirm_box(self, title: str, text: str) -> bool:
        return confirm_box(self, title, text)

    def _folder_dialog(self) -> str | None:
        return QFileDialog.getExistingDirectory(self, "Choose an Olmo-3 model folder") or None

    def _link_box(self, folder: str) -> bool | None:
        return ask_copy_or_link(self, folder)


def _call(fn: Callable[..., object], *args: Any) -> Callable[[], None]:
    """``fn(*args)`` as a slot without arguments (a typed stand-in for ``lambda a=a: fn(a)``)."""

    def call() -> None:
        fn(*args)

    return call


def _esc(text: str) -> str:
    return html.escape(text)
