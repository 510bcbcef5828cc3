"""Export a conversation to Markdown, JSON, HTML or PDF, and import JSON: the file formats and the window's dialogs.

Markdown, JSON and HTML come from :mod:`olmo3.store.interchange`. PDF is Qt's job: the HTML export is laid out by a
``QTextDocument`` and printed with ``QPdfWriter`` (QtGui, part of PySide6-Essentials), so no browser engine is
needed. Files are written to a temporary name and renamed, so a failed export never leaves half a file behind.

:class:`Transfer` is the window's side: File → Export/Import, the sidebar's "Export as", and the save and open
dialogs they ask (:meth:`Transfer.ask_save_path` is replaced in tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QFileDialog

from desktop.formatting import ellipsize
from olmo3.fileio import write_atomic

if TYPE_CHECKING:
    from desktop.app import MainWindow

FORMATS = {"md": ("Markdown", ".md"), "json": ("JSON", ".json"), "html": ("HTML", ".html"), "pdf": ("PDF", ".pdf")}


def file_filter(fmt: str) -> str:
    label, ext = FORMATS[fmt]
    return f"{label} (*{ext})"


def safe_filename(title: str, fmt: str) -> str:
    """A file name from a conversation title: no slashes or control characters, at most 80 characters."""
    keep = "".join(ch if ch.isalnum() or ch in " -_.,()" else " " for ch in title).strip()
    keep = " ".join(keep.split())[:80] or "Conversation"
    return keep + FORMATS[fmt][1]


def export_conversation(conv: dict[str, Any], fmt: str, path: str | Path) -> Path:
    """Write ``conv`` (a ``store.export_dict``) to ``path`` in ``fmt``; returns the path."""
    from olmo3.store import interchange as export

    path = Path(path)
    if fmt == "md":
        write_atomic(path, export.to_markdown(conv).encode("utf-8"))
    elif fmt == "json":
        write_atomic(path, export.to_json(conv).encode("utf-8"))
    elif fmt == "html":
        write_atomic(path, export.to_html(conv).encode("utf-8"))
    elif fmt == "pdf":
        write_pdf(export.to_html(conv), path)
    else:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    return path


def write_pdf(html: str, path: str | Path) -> Path:
    """Lay ``html`` out on A4 pages and write a PDF (GUI thread: QTextDocument is a GUI-thread object)."""
    from PySide6.QtCore import QMarginsF
    from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    doc = QTextDocument()
    doc.setHtml(html)
    writer = QPdfWriter(str(tmp))
    writer.setTitle(doc.metaInformation(QTextDocument.MetaInformation.DocumentTitle) or path.stem)
    writer.setCreator("Olmo Desktop")
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(16, 16, 16, 16), QPageLayout.Unit.Millimeter)
    try:
        doc.print_(writer)
        del writer  # closes the file
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"Qt wrote no PDF data to {tmp}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_import(path: str | Path) -> dict[str, Any]:
    """Read and validate a JSON export; ``ValueError`` names the problem and the file."""
    from olmo3.store import interchange as export

    path = Path(path)
    try:
        with open(path, "rb") as f:  # at most one byte over the limit: from_json refuses a larger file
            data = f.read(export.MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"can't read {path}: {exc.strerror or exc}") from None
    try:
        return export.from_json(data)
    except ValueError as exc:
        raise ValueError(f"{path.name} is not an Olmo Desktop conversation: {exc}") from None


class Transfer:
    """Export and import from the window: the dialogs, then the file, then a toast that says what happened."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window

    def export_current_dialog(self) -> None:
        """File → Export…: one save dialog; the format follows the file name's extension (or the chosen filter)."""
        w = self.window
        conv_id = w.controller.current
        if conv_id is None:
            w.show_toast("Open a conversation to export it.")
            return
        conv = w.store.get_conversation(conv_id)
        filters = ";;".join(file_filter(f) for f in FORMATS)
        path, chosen = QFileDialog.getSaveFileName(
            w, "Export Conversation", str(Path.home() / safe_filename(conv.title, "md")), filters
        )
        if not path:
            return
        fmt = next((f for f, (_l, ext) in FORMATS.items() if path.lower().endswith(ext)), None)
        if fmt is None:
            fmt = next((f for f in FORMATS if file_filter(f) == chosen), "md")
            path += FORMATS[fmt][1]
        self.export_to(conv_id, fmt, path)

    def export_current(self, fmt: str) -> None:
        if self.window.controller.current is not None:
            self.export_conversation(self.window.controller.current, fmt)

    def export_conversation(self, conv_id: str, fmt: str) -> None:
        conv = self.window.store.get_conversation(conv_id)
        path = self.ask_save_path(safe_filename(conv.title, fmt), fmt)
        if path:
            self.export_to(conv_id, fmt, path)

    def ask_save_path(self, name: str, fmt: str) -> str | None:
        """Replaced in tests; asks where to save an export."""
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export Conversation", str(Path.home() / name), file_filter(fmt)
        )
        return path or None

    def export_to(self, conv_id: str, fmt: str, path: str | Path) -> Path | None:
        w = self.window
        try:
            w.store.flush()
            written = export_conversation(w.store.export_dict(conv_id), fmt, path)
        except (OSError, ValueError) as exc:
            w.show_error("Export failed", f"Couldn't write {path}: {exc}")
            return None
        w.show_toast(f"Exported to {Path(written).name}")
        return written

    def import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Import Conversation", str(Path.home()), file_filter("json"))
        if path:
            self.import_from(path)

    def import_from(self, path: str | Path) -> str | None:
        w = self.window
        try:
            conv = read_import(path)
            conv_id = w.store.import_conversation(conv)
        except (ValueError, OSError) as exc:
            w.show_error("Import failed", str(exc))
            return None
        w.refresh_sidebar()
        w.controller.open(conv_id)
        w.show_toast(f"Imported “{ellipsize(conv.get('title', ''), 40)}”")
        return conv_id
