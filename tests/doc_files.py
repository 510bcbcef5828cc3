"""Real document files for the chat-with-documents tests: PDFs written by Qt's QPdfWriter (embedded subset fonts,
as real apps write them), Word files by python-docx, and generated archive prose with planted sentences."""

from __future__ import annotations

import random
from pathlib import Path

from olmo3.docs.minipdf import wrap
from olmo3.docs.synth import prose

PLANTED_PDF = "The harbour master Ingrid Valdottir sealed the copper vault in 1903."
PLANTED_DOCX = "The ferry to Ostholm leaves the quay at seven every morning."


def write_qt_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF with one page per list of lines (needs a QGuiApplication: the ``qapp`` fixture)."""
    from PySide6.QtCore import QMarginsF
    from PySide6.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter

    writer = QPdfWriter(str(path))
    writer.setPageLayout(
        QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait, QMarginsF(15, 15, 15, 15))
    )
    writer.setResolution(300)
    painter = QPainter(writer)
    painter.setFont(QFont("DejaVu Sans", 9))
    line_height = painter.fontMetrics().height()
    for i, lines in enumerate(pages):
        if i:
            writer.newPage()
        for j, line in enumerate(lines):
            painter.drawText(0, (j + 1) * line_height, line)
    painter.end()
    return path


def report_pdf(path: Path, pages: int = 8, planted_on: int = 5, seed: int = 11) -> Path:
    """A multi-page report of archive prose with :data:`PLANTED_PDF` on page ``planted_on`` (counted from 1)."""
    rng = random.Random(seed)
    texts = [prose(rng, 3, 4) for _ in range(pages)]
    texts[planted_on - 1] += "\n\n" + PLANTED_PDF
    return write_qt_pdf(path, [wrap(t, 90) for t in texts])


def scanned_pdf(path: Path) -> Path:
    """A PDF page with a picture and no text layer."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QPainter, QPdfWriter

    writer = QPdfWriter(str(path))
    painter = QPainter(writer)
    painter.fillRect(QRectF(100, 100, 2000, 2000), QColor("gray"))
    painter.end()
    return path


def memo_docx(path: Path) -> Path:
    """A short Word memo (python-docx) with :data:`PLANTED_DOCX`."""
    import docx

    document = docx.Document()
    document.add_heading("Travel memo", level=1)
    document.add_paragraph(PLANTED_DOCX)
    document.add_paragraph("Tickets are sold at the kiosk beside the fish market.")
    document.save(str(path))
    return path
