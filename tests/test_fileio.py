"""``olmo3.fileio.read_json``: JSON from outside is read with limits on size and nesting, with clear errors."""

from __future__ import annotations

import json
import sys

import pytest

from olmo3.fileio import json_depth, loads_json, read_json


def test_reads_ordinary_json_and_counts_depth_outside_strings(tmp_path):
    path = tmp_path / "config.json"
    data = {"a": [1, {"b": "[[[{{{ not nesting }}}]]]", "c": 'quote \\" [ backslash \\\\'}], "d": "é"}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert read_json(path) == data
    assert json_depth(path.read_bytes()) == 3
    assert json_depth("[]") == 1 and json_depth("42") == 0 and json_depth('"[["') == 0


def test_deep_nesting_is_refused_before_the_parser_sees_it(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    limit = sys.getrecursionlimit()
    with pytest.raises(ValueError, match=r"deep\.json is nested 100000 levels deep \(at most 64 allowed\)"):
        read_json(path)
    assert sys.getrecursionlimit() == limit
    path.write_text("[" * 64 + "]" * 64)
    assert read_json(path) is not None
    with pytest.raises(ValueError, match="nested 65 levels"):
        loads_json("[" * 65 + "]" * 65)
    assert read_json(path, max_depth=100) is not None


def test_size_limit_and_bad_content_name_the_file(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "y" * 2000}))
    with pytest.raises(ValueError, match=r"big\.json: larger than 1,000 bytes"):
        read_json(path, max_bytes=1000)
    assert read_json(path, max_bytes=5000)["x"] == "y" * 2000
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"big\.json: not valid JSON"):
        read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"big\.json: not UTF-8"):
        read_json(path)
    with pytest.raises(OSError):
        read_json(tmp_path / "missing.json")
