"""A minimal PDF writer (text pages in Helvetica), for ``olmo3 bench docs`` and the tests.

Why hand-written: the bench ships with ``olmo3`` and must run on a user's machine without test-only
dependencies or Qt, and a text PDF is small enough to write by hand: a catalog, a page tree, one standard
font and one content stream per page, plus the cross-reference table. A page given no lines gets a filled
rectangle instead, which is what a scanned page looks like to a text extractor: marks, no text layer.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ["pdf_bytes", "wrap", "write_pdf"]

_PAGE_W, _PAGE_H = 612, 792  # US Letter, in points
_MARGIN = 54
_LEADING = 12


def wrap(text: str, width: int = 95) -> list[str]:
    """Lines of at most ``width`` characters, paragraphs (blank-line separated) kept apart by an empty line."""
    lines: list[str] = []
    for para in text.split("\n\n"):
        if lines:
            lines.append("")
        lines.extend(textwrap.wrap(para, width) or [""])
    return lines


def _escape(line: str) -> bytes:
    raw = line.encode("cp1252", "replace")  # WinAnsiEncoding: what Helvetica's standard encoding can show
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(lines: Sequence[str], font_size: int) -> bytes:
    if not lines:
        return b"0.5 g 72 72 468 648 re f\n"  # a grey block: marks but no text, like a scanned page
    out = [b"BT", f"/F1 {font_size} Tf {_LEADING} TL {_MARGIN} {_PAGE_H - _MARGIN} Td".encode()]
    for line in lines:
        out.append(b"(" + _escape(line) + b") Tj T*")
    out.append(b"ET\n")
    return b"\n".join(out)


def pdf_bytes(pages: Sequence[Sequence[str]], *, font_size: int = 10) -> bytes:
    """A PDF with one page per item of ``pages``, each a sequence of lines (``[]``: a page without text)."""
    n = len(pages)
    # Objects: 1 catalog, 2 page tree, 3 font, then for page i: 4 + 2i (page) and 5 + 2i (its content).
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        stream = _content(lines, font_size)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_pdf(path: str | os.PathLike[str], pages: Sequence[Sequence[str]], *, font_size: int = 10) -> Path:
    """Write :func:`pdf_bytes` to ``path`` and return it."""
    p = Path(path)
    p.write_bytes(pdf_bytes(pages, font_size=font_size))
    return p
