"""The window's side of models: the picker, loading a model, and what the window shows while one loads or downloads.

:class:`ModelActions` opens :class:`desktop.model_picker.ModelPickerDialog` (one per window, kept), asks the
controller to load or unload (a model that won't fit in memory is refused first; the window asks whether to load it
anyway), and follows the controller's model signals (header, picker, welcome panel) and the
model manager's downloads (header progress; a finished download is loaded when no model is). When a model loads
and "sampling follows the model" is on, the sampling preset of that model becomes the window's settings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.controller import model_display_name
from desktop.model_picker import ModelPickerDialog
from desktop.settings import THINK_PRESET, instruct_preset

if TYPE_CHECKING:
    from desktop.app import MainWindow


def name_for_path(path: str) -> str:
    """The display name of the model folder at ``path`` (its folder name if it can't be read)."""
    try:
        from olmo3.model.modelinfo import inspect_model_dir

        return model_display_name(inspect_model_dir(path), path)
    except Exception:
        return Path(path).name


class ModelActions:
    """Models, for one window: see the module docstring."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.picker: ModelPickerDialog | None = None

    def open_picker(self) -> ModelPickerDialog:
        w = self.window
        if self.picker is None:
            self.picker = ModelPickerDialog(w.models, w)
            self.picker.context_for = self.context_for
            self.picker.load_requested.connect(self.load)
            self.picker.unload_requested.connect(w.controller.unload_model)
            self.picker.connect_requested.connect(w.remote.open_dialog)
            self.picker.disconnect_requested.connect(w.remote.disconnect)
            w.remote.on_model_changed(w.controller.model_info)
        loading = w.controller.loading[0] if w.controller.loading else None
        self.picker.set_loaded(w.controller.model_path, loading=loading)
        self.picker.show()
        self.picker.raise_()
        self.picker.activateWindow()
        return self.picker

    def load(self, path: str, name: str = "") -> None:
        self.window.controller.load_model(path, name or name_for_path(path))

    def context_for(self, model: object) -> int:
        """The context the fit badge assumes for a listed model or catalog entry (see Settings.context_for)."""
        from olmo3.hub import DEFAULT_CONTEXT_TOKENS

        w = self.window
        return w.settings.context_for(model, w.bridge.engine.budget()) or DEFAULT_CONTEXT_TOKENS

    def on_wont_fit(self, event: object) -> None:
        """A load refused before reading the weights: say why, with the numbers, and offer to load it anyway."""
        w = self.window
        path = str(getattr(event, "path", ""))
        name = name_for_path(path)
        w.header.set_model(w.controller.model_name or None)
        w.chat_view.set_model_name(w.controller.model_name or None)
        if self.picker is not None:
            self.picker.set_loaded(w.controller.model_path)
        w.update_empty_state()
        if w.ask_load_anyway(event, name):
            w.controller.load_model(path, name, force=True)

    def on_loading(self, path: str, name: str) -> None:
        self.window.header.set_model(name, loading=True)
        self.window.chat_view.set_model_name(name, loading=True)
        if self.picker is not None:
            self.picker.set_loaded(self.window.controller.model_path, loading=path)
        self.window.update_empty_state()

    def on_changed(self, info: object) -> None:
        w = self.window
        if info is not None:
            name = w.controller.model_name or model_display_name(info)
            w.header.set_model(name)
            if w.bridge.remote is None:  # a server's model is no folder to load at start-up
                # A model on this Mac: the next start loads it, not the server.
                w.settings = replace(w.settings, last_model=w.controller.model_path or "", remote_connected=False)
            if w.settings.sampling_follows_model:
                preset = THINK_PRESET if getattr(info, "is_think", False) else instruct_preset(w.controller.model_path)
                # The seed, thinking budget and earlier-reasoning choice are the user's, not the preset's.
                mine = w.settings.sampling
                kept = replace(
                    preset, seed=mine.seed, thinking_budget=mine.thinking_budget, keep_reasoning=mine.keep_reasoning
                )
                w.settings = replace(w.settings, sampling=kept)
            w.save_settings()
        else:
            w.header.set_model(None)
        if self.picker is not None:
            self.picker.set_loaded(w.controller.model_path)
        w.update_empty_state()

    def on_failed(self, message: str) -> None:
        w = self.window
        w.header.set_model(w.controller.model_name or None)  # a failed load leaves the loaded model loaded
        w.chat_view.set_model_name(w.controller.model_name or None)
        w.show_error("Couldn't load the model", message)
        if self.picker is not None:
            self.picker.set_loaded(w.controller.model_path)
            self.picker.show_error("Couldn't load the model", message)
        w.update_empty_state()

    def welcome_pick(self, repo_id: str) -> None:
        """A recommended model picked on the welcome panel: download it and show the picker with its progress."""
        self.window.models.start_download(repo_id)
        self.open_picker()

    def on_download_event(self, event: object) -> None:
        from olmo3 import hub

        w = self.window
        active = w.models.active_downloads()
        if active:
            quantizing = [d for d in active if d.status == "quantizing"]
            if quantizing and len(quantizing) == len(active):
                fraction = sum(d.fraction for d in active) / len(active)
                w.header.set_download_progress(fraction, f"Quantizing {fraction:.0%}")
            else:
                downloading = [d for d in active if d.status != "quantizing"]
                done = sum(d.done_bytes for d in downloading)
                total = sum(d.total_bytes for d in downloading) or 1
                w.header.set_download_progress(done / total, f"Downloading {done / total:.0%}")
        else:
            w.header.set_download_progress(None)
        if isinstance(event, hub.DownloadCompleted):
            w.show_toast(f"{event.model.name} is ready")
            if w.controller.model_info is None and w.controller.loading is None:
                self.load(str(event.model.path))
        w.update_empty_state()

    def on_error(self, title: str, message: str) -> None:
        """The model manager's errors; the picker shows its own when it is open."""
        if self.picker is None or not self.picker.isVisible():
            self.window.show_error(title, message)

    def on_download_failed(self, repo_id: str, message: str) -> None:
        """A failed download: its card in the picker says so; with the picker closed, the window does."""
        if self.picker is None or not self.picker.isVisible():
            from desktop.model_cards import title_for

            self.window.show_error(f"{title_for(repo_id)} didn't download", message)

    def close(self) -> None:
        if self.picker is not None:
            self.picker.close()
