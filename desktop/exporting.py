"""Export a conversation to Markdown, JSON, HTML or PDF, and import JSON.

Markdown, JSON and HTML come from :mod:`olmo3.store.interchange`. PDF is Qt's job: the HTML export is laid out by a
``QTextDocument`` and printed with ``QPdfWriter`` (QtGui, part of PySide6-Essentials), so no browser engine is
needed. Files are written to a temporary name and renamed, so a failed export never leaves half a file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from olmo3.fileio import write_atomic

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
    from olmo3.store import interchange

    path = Path(path)
    if fmt == "md":
        write_atomic(path, interchange.to_markdown(conv).encode("utf-8"))
    elif fmt == "json":
        write_atomic(path, interchange.to_json(conv).encode("utf-8"))
    elif fmt == "html":
        write_atomic(path, interchange.to_html(conv).encode("utf-8"))
    elif fmt == "pdf":
        write_pdf(interchange.to_html(conv), path)
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
    from olmo3.store import interchange

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"can't read {path}: {exc.strerror or exc}") from None
    try:
        return interchange.from_json(data)
    except ValueError as exc:
        raise ValueError(f"{path.name} is not an Olmo Desktop conversation: {exc}") from None
