"""Files the app writes and reads: atomic writes, and JSON read with limits on size and nesting.

JSON comes from outside (model configs and indexes, imported folders, the Hub, settings, cache metadata), so
:func:`read_json` refuses a file over ``max_bytes`` and nesting deeper than ``max_depth`` before Python's
recursive parser sees it: :func:`json_depth` is a cheap scan (escapes dropped, the text split at quotes, then the
brackets outside strings counted), so a file of 100,000 opening brackets is refused without a ``RecursionError``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Final

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "json_depth", "loads_json", "read_json", "write_atomic"]

MAX_JSON_BYTES: Final = 16 * 1024**2  # configs, markers, indexes; tokenizer.json readers pass more
MAX_JSON_DEPTH: Final = 64

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the character it escapes
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def json_depth(data: bytes | str) -> int:
    """The deepest nesting of arrays/objects in a JSON text (brackets inside strings do not count).

    A guard, not a validator: for invalid JSON the number may be off, and the parser rejects the text anyway.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)  # no escaped quote is left to end a string early
    outside_strings = b"".join(raw.split(b'"')[::2])
    brackets = outside_strings.translate(None, _NOT_BRACKETS).translate(_BRACKET_STEP)
    return max(itertools.accumulate(b if b < 128 else b - 256 for b in brackets), default=0)


def loads_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, what: str = "JSON") -> Any:
    """``json.loads`` that first refuses nesting deeper than ``max_depth`` (ValueError naming ``what``)."""
    depth = json_depth(data)
    if depth > max_depth:
        raise ValueError(f"{what} is nested {depth} levels deep (at most {max_depth} allowed)")
    return json.loads(data)


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read a JSON file of at most ``max_bytes`` bytes nested at most ``max_depth`` levels.

    Raises OSError when the file cannot be read, and ValueError (the message names the file) when it is too
    large, too deep, not UTF-8 or not JSON (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are
    ValueErrors too).
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes:,} bytes; not read")
    try:
        return loads_json(data, max_depth=max_depth, what=str(path))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    except ValueError as e:  # the depth guard names the file; a number of thousands of digits does not
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not valid JSON ({e})") from e
