"""Read an attached file into text, page by page, or refuse it with one clear sentence.

Why it looks the way it does:

* A chat about a document is only as good as the text we got out of it, and a person cannot see that text.
  So every way a file can fail (too large, scanned, encrypted, binary, unsupported, empty, damaged) is a
  :class:`DocumentError` with a ``code`` the GUI can switch on and a ``reason`` it can show as it is; nothing
  half-read is ever returned as if it were fine (a PDF page that fails alone becomes a ``warning``).
* The file is opened read-only, read once into memory (after a size check, so a 4 GB file is refused before
  it is read) and never written: the person's file is theirs.
* Text files come in many encodings. BOMs are exact, UTF-8 is by far the most common and almost never
  decodes by accident, and only then do we ask a detector (``charset-normalizer``). Western European text is
  the usual legacy case, and detectors often cannot tell cp1252 from its look-alikes on short inputs, so a
  tie goes to cp1252 (see :func:`_decode_text`).
* PDF pages keep their numbers (the physical page, counted from 1), so answers can cite them; every other
  kind is one page.
* Extracted text is cleaned of NULs and other control characters (SQLite, the tokenizer and the GUI all
  deserve plain text) but otherwise kept verbatim: a document that contains ``<|im_start|>`` keeps it, as
  text; it is the tokenizer's job, not ours, to treat content as content.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from docx.table import Table

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Document",
    "DocumentError",
    "ErrorCode",
    "Kind",
    "Page",
    "extract",
    "extract_bytes",
]


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list of quoted words)."""
    return frozenset(text.split())


log = logging.getLogger(__name__)
# pypdf logs a warning for every oddity of a malformed PDF ("EOF marker not found", ...). We report what
# matters to the person ourselves, in one sentence, so its chatter would only be noise on stderr.
logging.getLogger("pypdf").setLevel(logging.ERROR)

DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024

Kind = Literal["text", "markdown", "code", "html", "pdf", "docx"]
ErrorCode = Literal[
    "not_found", "too_large", "no_text_layer", "encrypted", "binary", "unsupported", "empty", "unreadable"
]

_MARKDOWN: Final = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mdx"})
_HTML: Final = frozenset({".html", ".htm", ".xhtml"})
_TEXT: Final = frozenset({".txt", ".text", ".log", ".csv", ".tsv", ".rst", ".adoc", ".org", ".srt", ".vtt", ""})
_CODE: Final = _words(
    ".py .pyi .pyx .ipynb .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .c .h .cc .cpp .cxx .hpp .hh .m .mm .swift "
    ".go .rs .rb .php .pl .pm .lua .r .jl .scala .cs .fs .fsx .vb .sh .bash .zsh .fish .ps1 .bat .cmd .sql .json "
    ".jsonl .yaml .yml .toml .ini .cfg .conf .properties .env .xml .xsd .svg .css .scss .sass .less .tex .bib "
    ".sty .proto .gradle .cmake .mk .make .dockerfile .vue .svelte .dart .ex .exs .erl .hrl .hs .ml .mli .clj "
    ".cljs .el .lisp .scm .vim .nix .tf .hcl .graphql .gql .zig .nim .v .sv .vhd .asm .s .f90 .f .cob .pas .d "
    ".groovy .awk .sed .diff .patch .lock .gitignore .editorconfig"
)
_CODE_NAMES: Final = frozenset(
    {"makefile", "dockerfile", "containerfile", "gemfile", "rakefile", "procfile", "justfile", "cmakelists.txt"}
)
# Types people will try that we cannot read: a specific hint beats "unsupported".
_HINTS: Final = {
    ".doc": "old Word .doc files are not supported; save it as .docx",
    ".rtf": "RTF files are not supported; save it as .docx or plain text",
    ".odt": "OpenDocument files are not supported; save it as .docx",
    ".pages": "Pages files are not supported; export it as PDF or .docx",
    ".epub": "EPUB books are not supported yet",
}
# Magic numbers of common binary formats, so "notes.txt" that is really a PNG gets named as such.
_MAGIC: Final = (
    (b"%PDF-", "a PDF"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program"),
    (b"\xcf\xfa\xed\xfe", "a program"),
    (b"MZ", "a Windows program"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"ID3", "an MP3 file"),
    (b"OggS", "an Ogg file"),
    (b"fLaC", "a FLAC file"),
    (b"\x00\x00\x00\x18ftyp", "a video or image"),
    (b"\x00\x00\x00\x1cftyp", "a video or image"),
    (b"\x00\x00\x00\x20ftyp", "a video or image"),
)
_BOMS: Final = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),  # before UTF-16 LE, whose BOM is its prefix
    (b"\x00\x00\xfe\xff", "utf-32"),  # (the plain codecs read the byte order from the BOM and drop it)
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Single-byte encodings a detector cannot tell from cp1252 on short Western European text.
_WESTERN: Final = ("cp1252", "latin_1", "iso8859_15")


class Page(NamedTuple):
    """One page of extracted text; ``number`` counts from 1 (the physical page for PDFs)."""

    number: int
    text: str


@dataclass(frozen=True)
class Document:
    """What :func:`extract` read from one file: enough to show a chip and to chat without the file."""

    name: str
    kind: Kind
    size: int
    sha256: str
    pages: tuple[Page, ...]
    encoding: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def text(self) -> str:
        """All pages, separated by blank lines (page labels are :mod:`olmo3.docs.prompt`'s business)."""
        return "\n\n".join(p.text for p in self.pages if p.text)


class DocumentError(Exception):
    """A file we will not attach, with one sentence that says why (``str()`` is ``"name: reason"``)."""

    def __init__(self, name: str, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.code: ErrorCode = code
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def extract(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Read ``path`` (never writing to it) into a :class:`Document`, or raise :class:`DocumentError`."""
    p = Path(path)
    name = p.name or str(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DocumentError(name, "not_found", "the file does not exist (it may have been moved or deleted)") from None
    except OSError as e:
        raise DocumentError(name, "unreadable", f"the file could not be read ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise DocumentError(name, "unsupported", "this is a folder; attach the files inside it instead")
    if not stat.S_ISREG(st.st_mode):  # a pipe or a device would block or never end
        raise DocumentError(name, "unsupported", "this is not a regular file")
    _check_size(name, st.st_size, max_bytes)
    try:
        with open(p, "rb") as f:  # read-only: the person's file is never written
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise DocumentError(name, "unreadable", f"the file could not be read ({e.strerror or e})") from e
    _check_size(name, len(data), max_bytes)  # it may have grown since stat()
    return extract_bytes(name, data, max_bytes=max_bytes)


def extract_bytes(name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Like :func:`extract` for bytes already in memory (pasted files); ``name`` picks the reader."""
    _check_size(name, len(data), max_bytes)
    if not data:
        raise DocumentError(name, "empty", "the file is empty")
    kind = _kind_for(name, data)
    warnings: list[str] = []
    encoding: str | None = None
    if kind == "pdf":
        pages = _read_pdf(name, data, warnings)
    elif kind == "docx":
        pages = [Page(1, _read_docx(name, data))]
    elif kind == "html":
        text, encoding = _decode_text(name, data, html=True)
        pages = [Page(1, html_to_text(text))]
    else:
        text, encoding = _decode_text(name, data)
        pages = [Page(1, text)]
    pages = [Page(pg.number, _clean(pg.text)) for pg in pages]
    if not any(pg.text.strip() for pg in pages):
        if kind == "pdf":
            raise DocumentError(name, "no_text_layer", "this PDF has no text; it may be scanned")
        raise DocumentError(name, "empty", "the document has no text")
    return Document(
        name=name,
        kind=kind,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pages=tuple(pages),
        encoding=encoding,
        warnings=tuple(warnings),
    )


# ----------------------------------------------------------------------------------------------------------
# Kinds, sizes, encodings
# ----------------------------------------------------------------------------------------------------------


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def _check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DocumentError(
            name, "too_large", f"the file is too large ({_human(size)}; the limit is {_human(max_bytes)})"
        )


def _sniff_binary(data: bytes) -> str | None:
    """The name of a well-known binary format ``data`` starts with, if any."""
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    return None


def _kind_for(name: str, data: bytes) -> Kind:
    """The reader for a file: by extension first (that is what the person sees), by content for the rest."""
    suffix = Path(name).suffix.lower()
    lower = name.lower()
    if suffix == ".pdf":
        return "pdf"
    if suffix == ".docx":
        return "docx"
    if suffix in _HTML:
        return "html"
    if suffix in _MARKDOWN:
        return "markdown"
    if suffix in _CODE or lower in _CODE_NAMES:
        return "code"
    if suffix in _TEXT:
        return "text"
    if suffix in _HINTS:
        raise DocumentError(name, "unsupported", _HINTS[suffix])
    # An unknown extension: plain text is welcome whatever it is called; anything else is not.
    if _sniff_binary(data) is None and _looks_like_text(data):
        return "text"
    raise DocumentError(
        name,
        "unsupported",
        f"{suffix or 'this'} files are not supported (attach text, Markdown, source code, PDF, DOCX or HTML)",
    )


def _looks_like_text(sample: bytes) -> bool:
    try:
        _decode_text("", sample)
    except DocumentError:
        return False
    return True


# Characters that never occur in text: C0/C1 controls other than tab, the line breaks and ESC (ANSI logs).
_NOT_TEXT: Final = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def _is_text(text: str) -> bool:
    """No NUL (git's test for binary) and hardly any other character that never occurs in text."""
    if "\x00" in text:
        return False
    return len(_NOT_TEXT.findall(text)) <= max(2, len(text) // 100)


_META_CHARSET: Final = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _decode_text(name: str, data: bytes, *, html: bool = False) -> tuple[str, str]:
    """Decode bytes that should be text: BOM, (HTML's meta charset), UTF-8, then the detector."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                break  # a BOM followed by garbage: let the checks below judge it
    what = _sniff_binary(data)
    if what is not None:
        raise DocumentError(name, "binary", f"this file is not text (it looks like {what})")
    if html and (m := _META_CHARSET.search(data[:4096])):
        declared = m.group(1).decode("ascii", "replace")
        try:
            text = data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            pass
        else:
            if _is_text(text):
                return text, declared
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _is_text(text):
            return text, "utf-8"
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is not None:
        chosen = best
        for r in results:  # a tie between look-alike single-byte code pages goes to cp1252 (see the docstring)
            if r.encoding in _WESTERN and r.chaos <= best.chaos + 0.005 and r.coherence >= best.coherence - 0.05:
                chosen = r
                break
        encoding = chosen.encoding
        text = data.decode(encoding, errors="replace")
        if _is_text(text):
            return text, encoding
    raise DocumentError(name, "binary", "this file is not text (it looks like binary data)")


_CONTROLS: Final = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """Plain text for storage and tokenizing: newlines normalized, control characters and lone surrogates gone."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = _CONTROLS.sub("", text)
    return text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates (broken PDF font maps) become '?'


# ----------------------------------------------------------------------------------------------------------
# PDF, DOCX, HTML
# ----------------------------------------------------------------------------------------------------------


def _read_pdf(name: str, data: bytes, warnings: list[str]) -> list[Page]:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    if b"%PDF-" not in data[:1024]:
        raise DocumentError(name, "unreadable", "this is not a PDF file, or it is damaged")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are encrypted with an empty user password (only printing or copying is "restricted"):
            # those open like any other. Anything else needs a password we do not ask for.
            try:
                ok = reader.decrypt("") != PasswordType.NOT_DECRYPTED
            except DependencyError:
                ok = False
            if not ok:
                raise DocumentError(name, "encrypted", "this PDF is password-protected")
        n = len(reader.pages)
    except DocumentError:
        raise
    except FileNotDecryptedError:
        raise DocumentError(name, "encrypted", "this PDF is password-protected") from None
    except Exception as e:  # pypdf raises many types on damaged input; all mean the same to a person
        raise DocumentError(name, "unreadable", "this PDF could not be read; it may be damaged") from e
    pages: list[Page] = []
    for i in range(n):
        try:
            text = reader.pages[i].extract_text()
        except Exception as e:  # one bad page should not cost the other 299
            log.warning("%s: page %d: %s", name, i + 1, e)
            warnings.append(f"page {i + 1} could not be read")
            text = ""
        pages.append(Page(i + 1, text))
    if n == 0:
        raise DocumentError(name, "empty", "this PDF has no pages")
    blank = sum(1 for p in pages if not p.text.strip())
    if 0 < blank < n:  # (all blank is an error, raised by the caller)
        warnings.append(f"{blank} of {n} pages have no text; they may be scanned")
    return pages


_OLE: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _read_docx(name: str, data: bytes) -> str:
    """Paragraphs and tables in document order; a table row becomes one line of cells joined by `` | ``."""
    if data.startswith(_OLE):  # Word wraps encrypted .docx files in an OLE container
        raise DocumentError(name, "encrypted", "this Word document is password-protected (or an old .doc file)")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                blocks.append(_docx_table(block))
            else:
                blocks.append(block.text)
    except Exception as e:  # not a zip, a zip without Word parts, broken XML: all "damaged" to a person
        raise DocumentError(name, "unreadable", "this Word document could not be read; it may be damaged") from e
    return "\n\n".join(b for b in blocks if b.strip())


def _docx_table(table: Table) -> str:
    lines = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:  # a merged cell is returned once per grid column it spans
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


_BLOCK_TAGS: Final = _words(
    "address article aside blockquote body dd details dialog div dl dt fieldset figcaption figure footer form h1 "
    "h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody thead tfoot ul title caption"
)
_SKIP_TAGS: Final = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas"})


class _TextParser(HTMLParser):
    """Reduces HTML to the text a reader sees: scripts and styles dropped, blocks on their own lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("td", "th"):
            if not self._at_line_start():
                self.out.append(" | ")
        elif tag == "tr":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")
            if tag == "li":
                self.out.append("- ")
            if tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self.out.append("\n\n")

    def _at_line_start(self) -> bool:
        for piece in reversed(self.out):
            if piece:
                return piece.endswith("\n")
        return True

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.out.append(data)
            return
        text = re.sub(r"\s+", " ", data)
        self.out.append(text.lstrip() if self._at_line_start() else text)


def html_to_text(html: str) -> str:
    """Readable text of an HTML page (stdlib parser: forgiving, no dependency, good enough for chat)."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    text = "\n".join(line.rstrip() for line in "".join(parser.out).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
