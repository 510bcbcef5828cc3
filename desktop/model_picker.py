"""The model picker: installed models and the catalog as cards, with memory-fit badges and downloads.

It is a view over :class:`desktop.models.ModelManager`; closing it does not stop downloads. Every card says what
the model is for, how big it is, whether it fits this Mac (with the numbers in the tooltip) and offers the one
obvious next step (Download, Load, Resume...). Errors (offline, disk full, not an Olmo-3 model...) appear in a
banner at the top, in words, never as a stack trace.

Signals:
    load_requested(str, str): model folder, display name.
    unload_requested()
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.models import DownloadState, ModelManager, describe_download

DESCRIPTIONS = {
    "Instruct": "Everyday assistant: quick, direct answers.",
    "Think": "Shows its reasoning first. Slower, better at maths and code.",
    "RL-Zero": "Research model trained with RL from the base model; no chat tuning.",
    "RL-Zero Code": "Research model trained with RL from the base model; no chat tuning.",
    "RL-Zero Math": "Research model trained with RL from the base model; no chat tuning.",
}


def fit_text(fit: Any) -> str:
    """ "Fits · 4.6 GB of 24 GB" for a ``olmo3.hub.MemoryFit``."""
    from olmo3.units import format_bytes

    word = {"fits": "Fits", "tight": "Tight", "wont_fit": "Won't fit"}.get(fit.verdict, "?")
    return f"{word} · {format_bytes(fit.needed_bytes)} of {format_bytes(fit.budget_bytes)}"


def pretty_name(name: str) -> str:
    """ "mlx-community/Olmo-3-7B-Instruct-4bit" → "Olmo 3 7B Instruct 4bit"."""
    base = name.split("/")[-1]
    return base.replace("Olmo-3.1-", "Olmo 3.1 ").replace("Olmo-3-", "Olmo 3 ").replace("-", " ")


class FitBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fitBadge")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)

    def set_fit(self, fit: Any | None) -> None:
        if fit is None:
            self.setText("Size unknown")
            self.setProperty("verdict", "unknown")
            self.setToolTip("Olmo Desktop could not read this model's configuration.")
        else:
            self.setText(fit_text(fit))
            self.setProperty("verdict", fit.verdict)
            self.setToolTip(fit.message)
        self.style().unpolish(self)
        self.style().polish(self)


class ModelCard(QFrame):
    """One model: name, description, meta line, fit badge, actions and (while downloading) progress."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key  # repo id or local name
        self.setObjectName("modelCard")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        grid = QGridLayout(self)
        grid.setContentsMargins(16, 12, 12, 12)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        name_row = QHBoxLayout()
        name_row.setSpacing(8)
        self.name = QLabel(self)
        self.name.setObjectName("cardName")
        self.loaded_badge = QLabel("Loaded", self)
        self.loaded_badge.setObjectName("loadedBadge")
        self.loaded_badge.hide()
        self.badge = FitBadge(self)
        name_row.addWidget(self.name)
        name_row.addWidget(self.loaded_badge)
        name_row.addStretch(1)
        name_row.addWidget(self.badge)
        self.description = QLabel(self)
        self.description.setObjectName("cardDescription")
        self.description.setWordWrap(True)
        self.meta = QLabel(self)
        self.meta.setObjectName("cardMeta")
        self.meta.setWordWrap(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress_label = QLabel(self)
        self.progress_label.setObjectName("cardMeta")
        self.progress.hide()
        self.progress_label.hide()
        self.buttons = QHBoxLayout()
        self.buttons.setSpacing(6)
        grid.addLayout(name_row, 0, 0, 1, 2)
        grid.addWidget(self.description, 1, 0)
        grid.addWidget(self.meta, 2, 0)
        grid.addLayout(self.buttons, 1, 1, 2, 1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom)
        grid.addWidget(self.progress, 3, 0, 1, 2)
        grid.addWidget(self.progress_label, 4, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        self._button_widgets: dict[str, QPushButton] = {}

    def set_loaded(self, loaded: bool) -> None:
        self.loaded_badge.setVisible(loaded)
        self.setProperty("loaded", "true" if loaded else "false")
        self.style().unpolish(self)
        self.style().polish(self)

    def add_button(
        self, key: str, text: str, slot: Callable[[], None], *, kind: str = "secondaryButton"
    ) -> QPushButton:
        button = QPushButton(text, self)
        button.setObjectName(kind)
        button.setAutoDefault(False)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        # clicked(bool) would fill the slot's first default argument; call it without arguments instead.
        # (GUI-thread signal, so a lambda is safe here.)
        button.clicked.connect(lambda _checked=False: slot())
        self.buttons.addWidget(button)
        self._button_widgets[key] = button
        return button

    def button(self, key: str) -> QPushButton | None:
        return self._button_widgets.get(key)

    def button_keys(self) -> list[str]:
        return list(self._button_widgets)

    def set_download(self, state: DownloadState | None) -> None:
        if state is None or state.status in ("completed",):
            self.progress.hide()
            self.progress_label.hide()
            return
        self.progress.show()
        self.progress_label.show()
        self.progress.setValue(int(state.fraction * 1000))
        self.progress_label.setText(describe_download(state))


class ModelPickerDialog(QDialog):
    """See the module docstring."""

    load_requested = Signal(str, str)
    unload_requested = Signal()

    def __init__(self, manager: ModelManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self.setWindowTitle("Models")
        self.setModal(False)
        self.resize(720, 640)
        self.manager = manager
        self._loaded_path: str | None = None
        self._loading_path: str | None = None
        self._cards: dict[str, ModelCard] = {}
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

        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.body = QWidget(self.scroll)
        self.body.setObjectName("pickerBody")
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(24, 4, 24, 16)
        self.body_layout.setSpacing(10)
        self.scroll.setWidget(self.body)
        outer.addWidget(self.scroll, 1)

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

        self.add_folder_button.clicked.connect(self._add_folder)
        self.check_button.clicked.connect(self._check_custom)
        self.custom_field.returnPressed.connect(self._check_custom)
        self.done_button.clicked.connect(self.accept)
        manager.changed.connect(self.refresh)
        manager.download_event.connect(self._on_download_event)
        manager.error.connect(self.show_error)
        manager.deleted.connect(self._on_deleted)
        manager.planned.connect(self._on_planned)
        self._custom_card: ModelCard | None = None
        self.refresh()

    # state -----------------------------------------------------------------------------------------------------
    def set_loaded(self, path: str | None, *, loading: str | None = None) -> None:
        self._loaded_path = path
        self._loading_path = loading
        self.refresh()

    def show_error(self, title: str, message: str) -> None:
        self.banner_icon.setPixmap(th.pixmap("warning", 18, "danger"))
        self.banner_text.setText(f"<b>{_esc(title)}</b><br>{_esc(message)}")
        self.banner.show()

    def show_info(self, message: str) -> None:
        self.banner_icon.setPixmap(th.pixmap("check", 18, "success"))
        self.banner_text.setText(_esc(message))
        self.banner.show()

    def cards(self) -> dict[str, ModelCard]:
        return dict(self._cards)

    # building --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        budget = self.manager.budget()
        self.subtitle.setText(f"Models run entirely on this Mac. Memory available for models: {budget.describe()}.")
        while self.body_layout.count():
            item = self.body_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self._cards = {}
        local = self.manager.installed()
        installed_keys: set[str] = set()
        self._section(
            "ON THIS MAC", "" if local else "No models yet. Download one below or add a folder you already have."
        )
        for model in local:
            card = self._local_card(model, budget)
            installed_keys.add(model.repo_id or model.name)
            self.body_layout.addWidget(card)
        catalog = [item for item in self.manager.catalog() if item.entry.repo_id not in installed_keys]
        if catalog:
            self._section(
                "DOWNLOAD", "Sizes are for the download; the badge says whether the model fits this Mac's memory."
            )
            for item in catalog:
                self.body_layout.addWidget(self._catalog_card(item))
        if self._custom_card is not None and self._custom_card.key not in self._cards:
            self.body_layout.addWidget(self._custom_card)
            self._custom_card.show()
            self._cards[self._custom_card.key] = self._custom_card
        self.body_layout.addStretch(1)

    def _section(self, title: str, hint: str) -> None:
        label = QLabel(title, self.body)
        label.setObjectName("sectionTitle")
        self.body_layout.addSpacing(6)
        self.body_layout.addWidget(label)
        if hint:
            hint_label = QLabel(hint, self.body)
            hint_label.setObjectName("sectionHint")
            hint_label.setWordWrap(True)
            self.body_layout.addWidget(hint_label)

    def _local_card(self, model: Any, budget: Any) -> ModelCard:
        from olmo3.units import format_bytes

        card = ModelCard(model.name, self.body)
        self._cards[model.name] = card
        card.name.setText(pretty_name(model.name))
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
        card.meta.setText(" · ".join(m for m in meta if m and m != "?"))
        fit = model.memory_fit(self.context_for(model), budget=budget) if model.installed else None
        card.badge.set_fit(fit)
        card.badge.setVisible(model.installed)
        path = str(model.path)
        loaded = self._loaded_path is not None and Path(self._loaded_path) == Path(path)
        card.set_loaded(loaded)
        state = self.manager.downloads.get(model.repo_id or model.name)
        if model.installed:
            if loaded:
                card.add_button("unload", "Unload", self.unload_requested.emit)
            elif self._loading_path == path:
                card.add_button("load", "Loading…", lambda: None, kind="primaryButton").setEnabled(False)
            else:
                card.add_button("load", "Load", lambda p=path, n=model.name: self._load(p, n), kind="primaryButton")
            card.add_button("delete", "Delete…", lambda m=model: self._delete(m), kind="dangerButton")
        else:
            active = state is not None and state.active
            if active:
                card.add_button("pause", "Pause", lambda r=(model.repo_id or model.name): self.manager.pause(r))
                card.add_button("cancel", "Cancel", lambda r=(model.repo_id or model.name): self._cancel(r))
                card.set_download(state)
            else:
                card.add_button(
                    "resume", "Resume download", lambda n=model.name: self.manager.resume(n), kind="primaryButton"
                )
                card.add_button("delete", "Discard…", lambda m=model: self._delete(m), kind="dangerButton")
                card.meta.setText(card.meta.text() + f" · {model.problem}" if model.problem else card.meta.text())
                if state is not None:
                    card.set_download(state)
        return card

    def _catalog_card(self, item: Any) -> ModelCard:
        from olmo3.units import format_bytes

        entry = item.entry
        card = ModelCard(entry.repo_id, self.body)
        self._cards[entry.repo_id] = card
        card.name.setText(entry.title)
        card.description.setText(DESCRIPTIONS.get(entry.variant, ""))
        meta = f"{format_bytes(entry.download_bytes)} download · {entry.repo_id}"
        if not entry.known:
            meta += " · unverified name"
        card.meta.setText(meta)
        card.setToolTip(entry.note)
        fit = item.entry.memory_fit(self.context_for(item.entry), self.manager.budget())
        card.badge.set_fit(fit)
        state = self.manager.downloads.get(entry.repo_id)
        if state is not None and state.active:
            card.add_button("pause", "Pause", lambda r=entry.repo_id: self.manager.pause(r))
            card.add_button("cancel", "Cancel", lambda r=entry.repo_id: self._cancel(r))
            card.set_download(state)
        else:
            label = "Download" if state is None or state.status in ("cancelled", "failed") else "Resume"
            button = card.add_button(
                "download", label, lambda r=entry.repo_id: self.manager.start_download(r), kind="primaryButton"
            )
            if fit.verdict == "wont_fit":
                button.setToolTip("This model probably won't fit in this Mac's memory: " + fit.message)
            if state is not None and state.status == "failed":
                card.set_download(state)
        return card

    # actions ---------------------------------------------------------------------------------------------------
    def _load(self, path: str, name: str) -> None:
        self._loading_path = path
        self.load_requested.emit(path, name)
        self.refresh()

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

    def _add_folder(self) -> None:
        folder = self.ask_folder()
        if not folder:
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
        from olmo3.units import format_bytes

        self.check_button.setEnabled(True)
        self.check_button.setText("Check")
        if isinstance(result, BaseException):
            from olmo3.hub import DownloadError

            if isinstance(result, DownloadError):
                from desktop.models import FRIENDLY_ERRORS

                message = FRIENDLY_ERRORS.get(result.code, "") or result.message
                if message != result.message:
                    message += f" ({result.message})"
            else:
                message = str(result)
            self.show_error(f"Can't use {repo_id}", message)
            return
        plan: Any = result
        card = ModelCard(repo_id, self.body)
        card.name.setText(pretty_name(repo_id))
        card.description.setText("Custom model from Hugging Face.")
        card.meta.setText(f"{format_bytes(plan.total_bytes)} download · {repo_id}")
        card.badge.set_fit(plan.memory_fit(budget=self.manager.budget()))
        card.add_button("download", "Download", lambda r=repo_id: self.manager.start_download(r), kind="primaryButton")
        self._custom_card = card
        self.banner.hide()
        self.refresh()
        self.scroll.ensureWidgetVisible(card)

    def _on_download_event(self, event: object) -> None:
        repo_id = getattr(event, "repo_id", "")
        card = self._cards.get(repo_id)
        state = self.manager.downloads.get(repo_id)
        if card is not None and state is not None:
            card.set_download(state)

    # dialogs (replaced in tests) -------------------------------------------------------------------------------
    def _confirm_box(self, title: str, text: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Warning, title, title, QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText(text)
        ok = box.addButton("Delete" if title.startswith("Delete") else "OK", QMessageBox.ButtonRole.DestructiveRole)
        box.exec()
        return box.clickedButton() is ok

    def _folder_dialog(self) -> str | None:
        return QFileDialog.getExistingDirectory(self, "Choose an Olmo-3 model folder") or None

    def _link_box(self, folder: str) -> bool | None:
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Add model folder",
            "How should Olmo Desktop use this folder?",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setInformativeText(
            f"{folder}\n\nCopying keeps working if the folder moves; using it in place saves disk space."
        )
        copy = box.addButton("Copy", QMessageBox.ButtonRole.AcceptRole)
        link = box.addButton("Use in place", QMessageBox.ButtonRole.AcceptRole)
        box.exec()
        if box.clickedButton() is copy:
            return False
        if box.clickedButton() is link:
            return True
        return None


def _esc(text: str) -> str:
    import html

    return html.escape(text)
