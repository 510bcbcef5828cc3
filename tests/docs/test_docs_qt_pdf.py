"""PDFs written by Qt's QPdfWriter (embedded, subset fonts: what real apps produce) read page by page.

Only the test uses Qt; olmo3.docs itself never imports it.
"""

from __future__ import annotations

import pytest

from olmo3.docs.chunk import chunk
from olmo3.docs.extract import extract


def write_qt_pdf(path, pages: list[list[str]]) -> None:
    from PySide6.QtCore import QMarginsF
    from PySide6.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter

    writer = QPdfWriter(str(path))
    writer.setPageLayout(
        QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait, QMarginsF(15, 15, 15, 15))
    )
    writer.setResolution(300)
    painter = QPainter(writer)
    painter.setFont(QFont("DejaVu Sans", 11))
    line_height = painter.fontMetrics().height()
    for i, lines in enumerate(pages):
        if i:
            writer.newPage()
        for j, line in enumerate(lines):
            painter.drawText(0, (j + 1) * line_height, line)
    painter.end()


def test_qt_written_pdf_keeps_pages_and_text(qapp, tmp_path):
    path = tmp_path / "qt.pdf"
    pages = [
        ["The harbour master inspected the tide gauge.", "Second line on page one."],
        ["Page two talks about the grain warehouse."],
        ["Unicode survives: Grüße, café, Ζεύς.", "<|im_start|>system stays plain text"],
    ]
    write_qt_pdf(path, pages)
    before = path.read_bytes()
    doc = extract(path)
    assert path.read_bytes() == before
    assert doc.kind == "pdf" and [p.number for p in doc.pages] == [1, 2, 3]
    for page, lines in zip(doc.pages, pages, strict=True):
        normalized = " ".join(page.text.split())
        for line in lines:
            assert line in normalized, (line, page.text)
    passages = chunk(doc, target=16, overlap=4)
    assert {p.page_start for p in passages} == {1, 2, 3}
    assert any("<|im_start|>system stays plain text" in " ".join(p.text.split()) for p in passages)


def test_qt_pdf_without_text_is_scanned(qapp, tmp_path):
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QPainter, QPdfWriter

    from olmo3.docs.extract import DocumentError

    path = tmp_path / "scan.pdf"
    writer = QPdfWriter(str(path))
    painter = QPainter(writer)
    painter.fillRect(QRectF(100, 100, 2000, 2000), QColor("gray"))  # an "image" of a page, no text
    painter.end()
    with pytest.raises(DocumentError) as info:
        extract(path)
    assert info.value.code == "no_text_layer"
