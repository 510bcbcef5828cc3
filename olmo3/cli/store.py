"""``olmo3 store check`` and ``olmo3 store recover DEST``: the conversation database, from a terminal.

``check`` reads the file read-only (it is never changed, and nothing is created beside it) and says whether it
is healthy: exit 0 healthy, 1 damaged, 2 refused (not a conversation store, written by a newer version, missing).
``recover`` copies every readable conversation and message into a new store at DEST (see
:mod:`olmo3.store.salvage`); the damaged file is only read. Exit 0 when the copy was written, 2 when refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_store_parser"]


def add_store_parser(sub: Any) -> None:
    """Register ``store`` on the ``olmo3`` subparsers."""
    from ..appinfo import conversation_db_path

    p = sub.add_parser("store", help="the conversation database: check | recover")
    ssub = p.add_subparsers(dest="store_command", required=True)
    db_help = f"the database file (default: {conversation_db_path()})"

    s = ssub.add_parser("check", help="check the database read-only: exit 0 healthy, 1 damaged, 2 refused")
    s.add_argument("--db", help=db_help)
    s.set_defaults(fn=cmd_store_check)

    s = ssub.add_parser("recover", help="copy what is readable of a damaged database into a new file DEST")
    s.add_argument("dest", help="the new database file to write (must not exist)")
    s.add_argument("--db", help=db_help)
    s.set_defaults(fn=cmd_store_recover)


def _db(args: argparse.Namespace) -> Path:
    from ..appinfo import conversation_db_path

    return Path(args.db).expanduser() if args.db else conversation_db_path()


def cmd_store_check(args: argparse.Namespace) -> int:
    from ..store.health import check
    from ..store.records import StoreError

    path = _db(args)
    try:
        report = check(path)
    except StoreError as e:
        if getattr(args, "debug", False):
            raise
        print(f"olmo3: {e}", file=sys.stderr)
        return 2
    if report.healthy:
        print(
            f"{path}: healthy (schema version {report.version}, {report.conversations} conversations, "
            f"{report.messages} messages)"
        )
        return 0
    print(f"{path}: damaged")
    for problem in report.problems[:10]:
        print(f"  {problem}")
    if len(report.problems) > 10:
        print(f"  … and {len(report.problems) - 10} more")
    print(f"  salvage what is readable: olmo3 store recover NEW.sqlite3 --db {path}")
    return 1


def cmd_store_recover(args: argparse.Namespace) -> int:
    from ..store.records import StoreError
    from ..store.salvage import salvage

    source, dest = _db(args), Path(args.dest).expanduser()
    try:
        report = salvage(source, dest)
    except (StoreError, FileExistsError, ValueError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"olmo3: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
