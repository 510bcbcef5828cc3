"""The settings window: chat (system prompts), sampling with Olmo-3 presets, memory & storage, appearance, and
the local server (an OpenAI-compatible API for other programs on this computer).

It edits a copy of :class:`desktop.settings.Settings` and, when a conversation is open, that conversation's own
system prompt; :meth:`SettingsDialog.result_settings` / :meth:`conversation_prompt` give the outcome after Save.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.local_server import HOST, base_url
from desktop.settings import Sampling, Settings, presets

UNCHANGED = object()


def _hint(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("formHint")
    label.setWordWrap(True)
    return label


class SettingsDialog(QDialog):
    """Edits settings; nothing is applied until Save."""

    PAGES = ("Chat", "Sampling", "Memory & storage", "Appearance", "Local server")

    def __init__(
        self,
        settings: Settings,
        *,
        default_models_dir: Path,
        model_dir: str | None = None,
        conversation_prompt: str | object | None = UNCHANGED,
        conversation_title: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.resize(720, 520)
        self._settings = settings
        self._default_models_dir = default_models_dir
        self._presets = presets(model_dir)
        self._has_conversation = conversation_prompt is not UNCHANGED

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        body = QHBoxLayout()
        body.setContentsMargins(16, 16, 20, 8)
        body.setSpacing(16)
        self.nav = QListWidget(self)
        self.nav.setObjectName("settingsList")
        self.nav.addItems(list(self.PAGES))
        self.nav.setFixedWidth(170)
        self.pages = QStackedWidget(self)
        body.addWidget(self.nav)
        body.addWidget(self.pages, 1)
        outer.addLayout(body, 1)

        self.pages.addWidget(self._chat_page(conversation_prompt, conversation_title))
        self.pages.addWidget(self._sampling_page())
        self.pages.addWidget(self._memory_page())
        self.pages.addWidget(self._appearance_page())
        self.pages.addWidget(self._server_page())
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.nav.setCurrentRow(0)

        buttons = QHBoxLayout()
        buttons.setContentsMargins(20, 8, 20, 16)
        buttons.addStretch(1)
        self.cancel_button = QPushButton("Cancel", self)
        self.save_button = QPushButton("Save", self)
        self.save_button.setObjectName("primaryButton")
        self.save_button.setDefault(True)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.save_button.clicked.connect(self.accept)

    # pages -----------------------------------------------------------------------------------------------------
    def _chat_page(self, conversation_prompt: str | object | None, title: str) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(QLabel("<b>Default system prompt</b>", page))
        self.system_prompt = QPlainTextEdit(page)
        self.system_prompt.setObjectName("formText")
        self.system_prompt.setPlaceholderText('Empty: the model\'s own default ("You are a helpful AI assistant…")')
        self.system_prompt.setPlainText(self._settings.system_prompt)
        self.system_prompt.setFixedHeight(96)
        layout.addWidget(self.system_prompt)
        layout.addWidget(_hint("Used for new conversations.", page))
        self.conv_prompt = QPlainTextEdit(page)
        self.conv_prompt.setObjectName("formText")
        self.conv_prompt.setFixedHeight(96)
        self.conv_prompt.setPlaceholderText("Empty: the model's own default")
        if self._has_conversation:
            layout.addSpacing(12)
            layout.addWidget(
                QLabel(f"<b>This conversation’s system prompt</b>{(' · ' + _esc(title)) if title else ''}", page)
            )
            self.conv_prompt.setPlainText(conversation_prompt if isinstance(conversation_prompt, str) else "")
            layout.addWidget(self.conv_prompt)
            layout.addWidget(_hint("Applies from the next message; earlier replies stay as they are.", page))
        else:
            self.conv_prompt.hide()
        layout.addStretch(1)
        return page

    def _sampling_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(10)
        row = QHBoxLayout()
        row.addWidget(QLabel("Preset", page))
        self.preset = QComboBox(page)
        self.preset.addItems([*self._presets.keys(), "Custom"])
        row.addWidget(self.preset, 1)
        layout.addLayout(row)
        self.follow_model = QCheckBox("Switch to the Think or Instruct preset when a model loads", page)
        self.follow_model.setChecked(self._settings.sampling_follows_model)
        layout.addWidget(self.follow_model)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(8)
        s = self._settings.sampling
        self.temperature = self._double(0.0, 2.0, 0.05, s.temperature)
        self.top_p = self._double(0.01, 1.0, 0.01, s.top_p)
        self.top_k = self._int(0, 1000, s.top_k)
        self.min_p = self._double(0.0, 0.99, 0.01, s.min_p)
        self.repetition = self._double(0.5, 2.0, 0.01, s.repetition_penalty)
        self.max_tokens = self._int(1, 131072, s.max_tokens)
        self.seed = QLineEdit("" if s.seed is None else str(s.seed), page)
        self.seed.setPlaceholderText("random")
        self.seed.setMaximumWidth(180)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top P", self.top_p)
        form.addRow("Top K (0 = off)", self.top_k)
        form.addRow("Min P", self.min_p)
        form.addRow("Repetition penalty", self.repetition)
        form.addRow("Max tokens per reply", self.max_tokens)
        form.addRow("Seed", self.seed)
        layout.addLayout(form)
        self.seed_error = _hint("", page)
        layout.addWidget(self.seed_error)
        layout.addWidget(
            _hint(
                "Olmo 3 Think: temperature 0.6, top P 0.95, top K 50. Olmo 3 Instruct: the model's "
                "generation config. Precise: greedy decoding (temperature 0).",
                page,
            )
        )
        layout.addStretch(1)
        self._select_matching_preset()
        self.preset.currentTextChanged.connect(self._apply_preset)
        for spin in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            spin.valueChanged.connect(self._select_matching_preset)
        return page

    def _memory_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        form = QFormLayout()
        form.setHorizontalSpacing(14)
        self.memory_budget = self._double(0.25, 512.0, 0.25, self._settings.memory_budget_gb)
        self.memory_budget.setSuffix(" GB")
        form.addRow("Conversation memory", self.memory_budget)
        layout.addLayout(form)
        layout.addWidget(
            _hint(
                "How much RAM recent conversations may keep so follow-ups start instantly. "
                "Older ones are saved to disk and come back when you continue them.",
                page,
            )
        )
        layout.addSpacing(12)
        layout.addWidget(QLabel("<b>Models folder</b>", page))
        row = QHBoxLayout()
        self.models_dir = QLineEdit(self._settings.models_dir, page)
        self.models_dir.setPlaceholderText(str(self._default_models_dir))
        choose = QPushButton("Choose…", page)
        choose.clicked.connect(self._choose_models_dir)
        row.addWidget(self.models_dir, 1)
        row.addWidget(choose)
        layout.addLayout(row)
        layout.addWidget(
            _hint("Where downloaded models are kept. Models already downloaded stay where they are.", page)
        )
        layout.addStretch(1)
        return page

    def _appearance_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(QLabel("<b>Theme</b>", page))
        self.theme_group = QButtonGroup(page)
        for value, text in (("system", "Match the system"), ("light", "Light"), ("dark", "Dark")):
            button = QRadioButton(text, page)
            button.setProperty("value", value)
            button.setChecked(self._settings.theme == value)
            self.theme_group.addButton(button)
            layout.addWidget(button)
        layout.addStretch(1)
        return page

    def _server_page(self) -> QWidget:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.server_enabled = QCheckBox("Serve the loaded model to other programs (OpenAI-compatible API)", page)
        self.server_enabled.setChecked(self._settings.server_enabled)
        layout.addWidget(self.server_enabled)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(14)
        self.server_port = self._int(1024, 65535, self._settings.server_port or 8000)
        self.server_key = QLineEdit(self._settings.server_api_key, page)
        self.server_key.setPlaceholderText("none")
        self.server_key.setMaximumWidth(280)
        form.addRow("Port", self.server_port)
        form.addRow("API key", self.server_key)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.server_url = QLabel("", page)
        self.server_url.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_url_button = QPushButton("Copy base URL", page)
        self.copy_url_button.clicked.connect(self.copy_base_url)
        row.addWidget(self.server_url, 1)
        row.addWidget(self.copy_url_button)
        layout.addLayout(row)
        layout.addWidget(
            _hint(
                f"Editors, agents and scripts on this computer can use the model like OpenAI's API at this "
                f"address (it listens on {HOST} only). They share the loaded model, its memory and its "
                "conversation caches with this window. With an API key, clients send it as "
                "“Authorization: Bearer KEY”.",
                page,
            )
        )
        layout.addStretch(1)
        self.server_port.valueChanged.connect(self._show_base_url)
        self._show_base_url()
        return page

    def _show_base_url(self, *_args: object) -> None:
        self.server_url.setText(base_url(self.server_port.value()))

    def copy_base_url(self) -> None:
        QApplication.clipboard().setText(base_url(self.server_port.value()))

    # helpers ---------------------------------------------------------------------------------------------------
    def _double(self, lo: float, hi: float, step: float, value: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox(self)
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.setValue(value)
        box.setMaximumWidth(180)
        return box

    def _int(self, lo: int, hi: int, value: int) -> QSpinBox:
        box = QSpinBox(self)
        box.setRange(lo, hi)
        box.setValue(value)
        box.setMaximumWidth(180)
        return box

    def _current_sampling(self) -> Sampling:
        seed_text = self.seed.text().strip()
        seed = int(seed_text) if seed_text.lstrip("-").isdigit() else None
        return Sampling(
            temperature=round(self.temperature.value(), 2),
            top_p=round(self.top_p.value(), 2),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 2),
            repetition_penalty=round(self.repetition.value(), 2),
            max_tokens=self.max_tokens.value(),
            seed=seed,
        )

    def _apply_preset(self, name: str) -> None:
        preset = self._presets.get(name)
        if preset is None:
            return
        for widget in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            widget.blockSignals(True)
        self.temperature.setValue(preset.temperature)
        self.top_p.setValue(preset.top_p)
        self.top_k.setValue(preset.top_k)
        self.min_p.setValue(preset.min_p)
        self.repetition.setValue(preset.repetition_penalty)
        self.max_tokens.setValue(preset.max_tokens)
        for widget in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            widget.blockSignals(False)

    def _select_matching_preset(self, *_args: object) -> None:
        current = replace(self._current_sampling(), seed=None)
        name = next((n for n, p in self._presets.items() if replace(p, seed=None) == current), "Custom")
        self.preset.blockSignals(True)
        self.preset.setCurrentText(name)
        self.preset.blockSignals(False)

    def _choose_models_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Models folder", self.models_dir.text() or str(self._default_models_dir)
        )
        if folder:
            self.models_dir.setText(folder)

    def accept(self) -> None:
        seed_text = self.seed.text().strip()
        if seed_text and not seed_text.lstrip("-").isdigit():
            self.nav.setCurrentRow(1)
            self.seed_error.setText(f"Seed must be a whole number or empty, not “{seed_text}”.")
            self.seed.setFocus()
            return
        super().accept()

    # results ---------------------------------------------------------------------------------------------------
    def result_settings(self) -> Settings:
        checked = self.theme_group.checkedButton()
        theme = str(checked.property("value")) if checked is not None else self._settings.theme
        return replace(
            self._settings,
            system_prompt=self.system_prompt.toPlainText().strip(),
            sampling=self._current_sampling(),
            sampling_follows_model=self.follow_model.isChecked(),
            memory_budget_gb=round(self.memory_budget.value(), 2),
            models_dir=self.models_dir.text().strip(),
            theme=theme,
            server_enabled=self.server_enabled.isChecked(),
            server_port=self.server_port.value(),
            server_api_key=self.server_key.text().strip(),
        )

    def conversation_prompt(self) -> str | object | None:
        """The open conversation's system prompt: a string, None (the model's default), or UNCHANGED."""
        if not self._has_conversation:
            return UNCHANGED
        return self.conv_prompt.toPlainText().strip() or None


def _esc(text: str) -> str:
    import html

    return html.escape(text)
