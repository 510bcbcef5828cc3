"""Before the store writes a byte: is this file a conversation store we may open, and is it intact?

A refused file must stay byte-identical and get no companion files, so :func:`preflight` decides with reads only:

1. The 100-byte SQLite header, read as plain bytes: the magic string (not SQLite?), the file-format versions (a
   newer SQLite?), the application id (another program's file?) and ``user_version`` (a newer Olmo Desktop?).
2. A read-only connection (``file:…?mode=ro``): the same numbers again as SQLite sees them (a WAL file may hold
   newer ones), the tables (an SQLite file of someone else's that uses ``user_version`` too?) and
   ``PRAGMA quick_check`` (damaged pages?). A WAL-mode file whose ``-wal`` file does not exist is opened with
   ``immutable=1``: otherwise even a read-only reader creates ``-wal`` and ``-shm`` files beside it.

Only then does :class:`olmo3.store.ConversationStore` open the file for writing and switch it to WAL.
:func:`check` is the long form for ``olmo3 store check`` (``PRAGMA integrity_check``, foreign keys, counts).
"""

from __future__ import annotations

import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .records import DamagedStoreError, NewerStoreError, NotAStoreError, StoreError
from .schema import CURRENT_VERSION

__all__ = [
    "APPLICATION_ID",
    "HealthReport",
    "check",
    "connect_read_only",
    "damaged_message",
    "preflight",
]

APPLICATION_ID: Final = 0x4F4C4D4F  # "OLMO" in the header's application-id field (offset 68)
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_HEADER_BYTES: Final = 100
_REQUIRED_TABLES: Final = frozenset({"conversations", "messages"})


@dataclass
class HealthReport:
    """What :func:`check` found; ``problems`` empty means healthy."""

    path: Path
    version: int = 0
    conversations: int | None = None
    messages: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def damaged_message(path: Path, detail: str) -> str:
    """The one-line explanation of a damaged store, with the way out."""
    db = shlex.quote(str(path))
    detail = " ".join(detail.replace("*** in database main ***", "").split())
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return (
        f"{path} is damaged ({detail}); it was left untouched. Salvage what is readable into a new file with "
        f"`olmo3 store recover NEW.sqlite3 --db {db}` (Olmo Desktop keeps a damaged file aside and starts a new one)"
    )


def _int(header: bytes, offset: int) -> int:
    return int.from_bytes(header[offset : offset + 4], "big")


def _check_header(path: Path) -> bool:
    """Refuse on the raw header; False for an empty (new) file. Raises the refusal errors."""
    with open(path, "rb") as f:
        header = f.read(_HEADER_BYTES)
    if not header:
        return False
    # The magic string, and the payload fractions every SQLite file has had since 3.0 (64, 32, 32).
    if len(header) < _HEADER_BYTES or not header.startswith(SQLITE_MAGIC) or header[21:24] != b"\x40\x20\x20":
        raise NotAStoreError(f"{path} is not a conversation database (not an SQLite file); it was left untouched")
    write_version, read_version = header[18], header[19]
    if not (write_version and read_version):
        raise NotAStoreError(f"{path} is not a conversation database (not an SQLite file); it was left untouched")
    if read_version > 2 or write_version > 2:
        raise NewerStoreError(
            f"{path} uses an SQLite file format newer than this SQLite {sqlite3.sqlite_version} knows "
            f"(versions {write_version}/{read_version}); it was left untouched"
        )
    _check_numbers(path, _int(header, 60), _int(header, 68))
    return True


def _check_numbers(path: Path, version: int, application_id: int) -> None:
    if application_id not in (0, APPLICATION_ID):
        raise NotAStoreError(
            f"{path} is an SQLite file of another program (application id {application_id:#010x}), "
            "not a conversation store; it was left untouched"
        )
    if version > CURRENT_VERSION:
        raise NewerStoreError(
            f"{path} has schema version {version}, written by a newer Olmo Desktop "
            f"(this one reads up to {CURRENT_VERSION}); it was left untouched"
        )


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write ``path`` and creates no file beside it (see the module docstring)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    with open(path, "rb") as f:
        header = f.read(_HEADER_BYTES)
    wal_mode = len(header) > 19 and header[18] == 2
    if wal_mode and not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"  # no -wal: nothing to read from it, and no -shm to create
    return sqlite3.connect(uri, uri=True, timeout=10.0)


def _classify(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    text = str(exc)
    if "not a database" in text or "file is encrypted" in text:
        return NotAStoreError(f"{path} is not a conversation database ({text}); it was left untouched")
    if "malformed" in text or "corrupt" in text:
        return DamagedStoreError(damaged_message(path, text))
    return StoreError(f"{path}: cannot read the conversation database ({text})")


def _inspect(path: Path, conn: sqlite3.Connection, *, full: bool) -> HealthReport:
    report = HealthReport(path)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    _check_numbers(path, version, int(conn.execute("PRAGMA application_id").fetchone()[0]))
    report.version = version
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and tables:
        raise NotAStoreError(f"{path} is an SQLite file but not a conversation store; it was left untouched")
    if version > 0 and not tables >= _REQUIRED_TABLES:
        raise NotAStoreError(
            f"{path} is an SQLite file but not a conversation store (no {', '.join(sorted(_REQUIRED_TABLES - tables))}"
            " table); it was left untouched"
        )
    rows = conn.execute("PRAGMA integrity_check(20)" if full else "PRAGMA quick_check(20)").fetchall()
    lines = (line.strip() for r in rows if r[0] != "ok" for line in str(r[0]).splitlines())
    report.problems += [line for line in lines if line and not line.startswith("*** in database")]
    if full and not report.problems and version > 0:
        report.problems += [
            f"foreign key: {table} row {rowid} refers to a missing {parent} row"
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
        ]
        report.conversations = int(conn.execute("SELECT count(*) FROM conversations").fetchone()[0])
        report.messages = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    return report


def _run(path: Path, *, full: bool) -> HealthReport | None:
    try:
        if not _check_header(path):
            return None
        conn = connect_read_only(path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the conversation database ({exc.strerror or exc})") from exc
    try:
        return _inspect(path, conn, full=full)
    except sqlite3.DatabaseError as exc:
        raise _classify(path, exc) from exc
    finally:
        conn.close()


def preflight(path: Path) -> None:
    """Refuse ``path`` without writing to it (or beside it) unless it is missing, empty or an intact store.

    Raises :class:`NotAStoreError` or :class:`NewerStoreError` (refused), :class:`DamagedStoreError`
    (``quick_check`` found damage), or :class:`StoreError` (unreadable for another reason).
    """
    if not path.exists():
        return
    report = _run(path, full=False)
    if report is not None and report.problems:
        raise DamagedStoreError(damaged_message(path, report.problems[0]))


def check(path: Path) -> HealthReport:
    """The full check for ``olmo3 store check``: refusals raise as in :func:`preflight`; damage is reported."""
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    try:
        report = _run(path, full=True)
    except DamagedStoreError as exc:  # unreadable beyond what integrity_check can list
        return HealthReport(path, problems=[str(exc.__cause__ or exc)])
    if report is None:
        raise NotAStoreError(f"{path} is an empty file, not a conversation store")
    return report
