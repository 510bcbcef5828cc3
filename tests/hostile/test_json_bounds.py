"""Deep, huge or out-of-range JSON from outside: every reader refuses it with a clear error or falls back, never a
RecursionError, OverflowError or hang. Configs, conversation imports, settings, spilled cache files, chat
scripts and tool arguments; one table per reader."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from olmo3.chat.cachefile import check_cache_file
from olmo3.cli.main import main
from olmo3.model.modelinfo import ModelLoadError, inspect_model_dir
from olmo3.store import ConversationStore, interchange

DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def deep_text(n: int) -> str:
    return "[" * n + "1" + "]" * n


# ---- model configs ------------------------------------------------------------------------------------------

CONFIG_CASES: list[tuple[str, str]] = [
    ("100,000 nested lists", DEEP_LIST),
    ("100,000 nested objects", DEEP_OBJECT),
    ("2,500 nested lists in a field", '{"model_type": "olmo3", "x": ' + deep_text(2500) + "}"),
    ("brackets inside strings do not count, but the rest does", '{"s": "[[[[", "x": ' + deep_text(70) + "}"),
    ("17 MB of spaces", " " * (17 * 1024**2) + "{}"),
    ("not UTF-8", "\udcff"),
    ("NaN hidden_size", '{"model_type": "olmo3", "hidden_size": NaN}'),
    ("1e400 hidden_size", '{"model_type": "olmo3", "hidden_size": 1e400}'),
    ("a 5,000-digit number", '{"model_type": "olmo3", "hidden_size": ' + "9" * 5000 + "}"),
    ("a list", "[1, 2, 3]"),
    ("empty", ""),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


@pytest.mark.parametrize(("name", "text"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_hostile_config_json_is_refused(tmp_path: Path, model_dir: Path, name: str, text: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelLoadError) as info:
        inspect_model_dir(folder)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("what", ["generation_config.json", "tokenizer_config.json"])
def test_deep_side_files_do_not_crash(tmp_path: Path, model_dir: Path, what: str) -> None:
    from olmo3.chat.sampling import INSTRUCT_DEFAULTS, recommended

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / what).write_text(DEEP_LIST)
    if what == "generation_config.json":
        assert recommended(folder, think=False) == INSTRUCT_DEFAULTS
    try:
        inspect_model_dir(folder)
    except ModelLoadError as e:  # refused with a message is fine; a RecursionError is not
        assert what in str(e)


def test_olmo3_info_on_a_deep_config_exits_2_in_one_line(tmp_path: Path, model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "config.json").write_text(DEEP_LIST)
    r = subprocess.run(
        [sys.executable, "-m", "olmo3.cli", "info", "--model", str(folder)], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nested 100000 levels deep" in r.stderr


def test_olmo3_info_on_truncated_weights_exits_2_in_one_line(tmp_path: Path, model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 1000)
    r = subprocess.run(
        [sys.executable, "-m", "olmo3.cli", "info", "--model", str(folder)], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "truncated" in r.stderr, r.stderr


# ---- conversation imports ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with ConversationStore(tmp_path_factory.mktemp("s") / "s.sqlite3") as store:
        conv = store.create_conversation(title="base", sampling={"temperature": 0.6})
        m1 = store.append_message(conv, None, "user", "hello", token_ids=[1, 2, 3])
        store.append_message(conv, m1, "assistant", "**hi** [x](https://allenai.org)", stats={"tokens_per_s": 3.5})
        store.set_engine_state(conv, {"version": 1, "nodes": [{"id": m1}]})
        return store.export_dict(conv)


def _with(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


IMPORT_CASES: list[tuple[str, Any, str]] = [
    # (name, file text or (path, value) mutation, expected message pattern)
    ("2,500 nested lists", deep_text(2500), "nested 2500 levels deep"),
    ("100,000 nested lists", DEEP_LIST, "nested 100000 levels deep"),
    ("100,000 nested objects", DEEP_OBJECT, "nested 100000 levels deep"),
    ("2,500 deep in sampling", (("sampling",), "__DEEP__"), "nested 2502 levels deep"),
    ("2,500 deep in engine_state", (("engine_state",), "__DEEP__"), "nested"),
    ("2,500 deep in stats", (("messages", 1, "stats"), "__DEEP__"), "nested"),
    ("created_at beyond 9999 in UTC", (("created_at",), "9999-12-31T23:59:59-12:00"), "created_at: expected"),
    ("created_at before year 1 in UTC", (("created_at",), "0001-01-01T00:00:00+01:00"), "created_at: expected"),
    ("message created_at beyond 9999", (("messages", 0, "created_at"), "9999-12-31T23:00:00-01:00"), "created_at"),
    ("updated_at not a date", (("updated_at",), "soon"), "updated_at: expected"),
    ("NaN in sampling", '{"sampling": NaN}', "NaN is not a JSON number"),
    ("Infinity in stats", (("messages", 1, "stats"), "__INF__"), "Infinity is not a JSON number"),
    ("1e400 in sampling", (("sampling",), "__1E400__"), "sampling: expected plain JSON"),
    ("a 5,000-digit number", (("sampling",), "__DIGITS__"), "not valid JSON"),
    ("token id 2**32", (("messages", 0, "token_ids"), [2**32]), "token_ids"),
    ("unpaired surrogate in content", (("messages", 0, "content"), "__SURROGATE__"), "unpaired surrogates"),
    ("unpaired surrogate in a stats key", (("messages", 1, "stats"), "__SURROGATE_KEY__"), "stats: expected plain"),
    ("unpaired surrogate in title", (("title",), "__SURROGATE__"), "title: expected text"),
    ("null messages", (("messages",), None), "messages: expected a list"),
    ("title a number", (("title",), 1e308), "title: expected a string"),
]


REPLACEMENTS = {  # values JSON cannot carry through json.dumps, written into the text afterwards
    "__DEEP__": '{"x": ' + deep_text(2500) + "}",
    "__INF__": "Infinity",
    "__1E400__": '{"temperature": 1e400}',
    "__DIGITS__": '{"seed": ' + "7" * 5000 + "}",
    "__SURROGATE__": '"a\\ud800b"',
    "__SURROGATE_KEY__": '{"\\udfff": 1}',
}


def _text(base: dict[str, Any], case: Any) -> str:
    if isinstance(case, str):
        return case
    path, value = case
    text = json.dumps(_with(base, path, value))
    if isinstance(value, str) and value in REPLACEMENTS:
        text = text.replace(json.dumps(value), REPLACEMENTS[value])
    return text


@pytest.mark.parametrize(("name", "case", "pattern"), IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_hostile_import_is_refused_clearly(tmp_path: Path, exported, name: str, case: Any, pattern: str) -> None:
    text = _text(exported, case)
    with pytest.raises(ValueError, match=pattern) as info:
        interchange.from_json(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    # And through the app's reader, which reads the file bounded and names it.
    from desktop.transfer import read_import

    path = tmp_path / "import.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with pytest.raises(ValueError, match=r"import\.json is not an Olmo Desktop conversation"):
        read_import(path)


def test_import_bounded_in_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exported) -> None:
    from desktop.transfer import read_import

    monkeypatch.setattr(interchange, "MAX_IMPORT_BYTES", 1000)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_with(exported, ("messages", 0, "content"), "x" * 5000)))
    with pytest.raises(ValueError, match="larger than"):
        read_import(path)


def test_long_chains_validate_in_linear_time(exported) -> None:
    """20,000 messages in one chain, listed children first: validation and import order stay linear."""
    n = 20_000
    base = exported["messages"][0]
    messages = [
        {**base, "id": f"m{i}", "parent_id": f"m{i - 1}" if i else None, "role": "user" if i % 2 == 0 else "assistant"}
        for i in range(n)
    ]
    data = {**exported, "messages": messages[::-1], "engine_state": None}
    clean = interchange.validate_conversation(data)
    ordered = interchange.parents_first(clean["messages"])
    assert [m["id"] for m in ordered] == [f"m{i}" for i in range(n)]


# ---- settings ---------------------------------------------------------------------------------------------------

SETTINGS_CASES: list[tuple[str, str]] = [
    ("100,000 nested lists", DEEP_LIST),
    ("deep value", '{"theme": "dark", "system_prompt": ' + deep_text(5000) + "}"),
    ("NaN budget", '{"memory_budget_gb": NaN}'),
    ("Infinity budget", '{"memory_budget_gb": Infinity}'),
    ("1e400 budget", '{"memory_budget_gb": 1e400}'),
    ("string 1e309 budget", '{"memory_budget_gb": "1e309"}'),
    ("negative budget", '{"memory_budget_gb": -4}'),
    ("NaN temperature", '{"sampling": {"temperature": NaN, "top_p": 0.5}}'),
    ("1e400 max_tokens", '{"sampling": {"max_tokens": 1e400}}'),
    ("5,000-digit top_k", '{"sampling": {"top_k": ' + "9" * 5000 + "}}"),
    ("huge seed", '{"sampling": {"seed": 1e300}}'),
    ("out-of-range top_p", '{"sampling": {"top_p": 7}}'),
    ("NUL in models_dir", '{"models_dir": "/tmp/a\\u0000b"}'),
    ("NUL in last_model", '{"last_model": "/x\\u0000"}'),
    ("surrogate in system prompt", '{"system_prompt": "a\\ud800"}'),
    ("wrong types", '{"theme": 3, "sampling": [], "auto_load_last_model": "yes", "memory_budget_gb": {}}'),
    ("a list", "[1, 2]"),
    ("5 MB", '{"system_prompt": "' + "x" * (5 * 1024**2) + '"}'),
]


@pytest.mark.parametrize(("name", "text"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_hostile_settings_fall_back_field_by_field(tmp_path: Path, name: str, text: str) -> None:
    from desktop.settings import Settings, load_settings, save_settings

    path = tmp_path / "settings.json"
    path.write_text(text)
    settings = load_settings(path)
    defaults = Settings()
    assert 0 <= settings.memory_budget_bytes <= 1024**4
    settings.sampling.validate()
    for value in (settings.models_dir, settings.last_model, settings.system_prompt):
        assert "\x00" not in value
        value.encode("utf-8")
    Path(settings.last_model or ".").is_dir()
    save_settings(tmp_path / "again.json", settings)  # what was read can be written back
    assert load_settings(tmp_path / "again.json") == settings
    if name == "NaN temperature":  # the bad field falls back, the good one stays
        assert settings.sampling.temperature == defaults.sampling.temperature and settings.sampling.top_p == 0.5


# ---- spilled cache files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    from olmo3.chat.engine import Engine

    kv = tmp_path_factory.mktemp("kv")
    eng = Engine(lambda e: None, cache_dir=kv, session_options={"temperature": 0.0, "max_tokens": 4})
    eng.start()
    try:
        eng.wait(eng.load_model(model_dir), 60)
        eng.wait(eng.open_conversation("c1"), 30)
        eng.wait(eng.send("c1", "hello"), 60)
        eng.wait(eng.spill_all(), 30)
    finally:
        eng.shutdown(30)
    return kv / "c1.safetensors"


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict[str, Any] | str, body: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _meta(change: dict[str, str]) -> Any:
    def mutate(data: bytes) -> bytes:
        header, body = _split(data)
        header["__metadata__"].update(change)
        return _join(header, body)

    return mutate


def _rename_tensor(old: str, new: str) -> Any:
    def mutate(data: bytes) -> bytes:
        header, body = _split(data)
        header[new] = header.pop(old)
        return _join(header, body)

    return mutate


CACHE_CASES: list[tuple[str, Any]] = [
    ("header nested 10,000 deep", lambda d: _join('{"a":' + deep_text(10_000) + "}", b"")),
    ("header length 2**60", lambda d: struct.pack("<Q", 2**60) + d[8:]),
    ("truncated", lambda d: d[: len(d) - 100]),
    ("padded", lambda d: d + b"\0" * 64),
    ("list index 999,999,999 in metadata", _meta({"2.999999999.0": "0.0", "2.999999999.1": "scalar"})),
    ("layer index 10**6 in a tensor name", _rename_tensor("0.0", "999999.0")),
    ("foreign class name", _meta({"1.0": "Popen"})),
    ("class of a layer missing", _meta({"1.9": "KVCache"})),
    ("unknown metadata key", _meta({"3.0": "x"})),
    ("scalar naming no tensor", _meta({"2.1.0": "7.7"})),
    ("scalar of unknown kind", _meta({"2.1.1": "pickle"})),
    ("metadata 1 MB long", _meta({"0.format": "x" * 2**20})),
]


@pytest.mark.parametrize(("name", "mutate"), CACHE_CASES, ids=[c[0] for c in CACHE_CASES])
def test_hostile_cache_file_is_refused_before_mlx_reads_it(tmp_path: Path, cache_file: Path, name, mutate) -> None:
    check_cache_file(cache_file, 4)  # the real one passes
    path = tmp_path / "c.safetensors"
    path.write_bytes(mutate(cache_file.read_bytes()))
    with pytest.raises(ValueError, match=str(path)):
        check_cache_file(path, 4)


def test_engine_discards_a_hostile_cache_file_and_answers(tmp_path: Path, model_dir: Path, caplog) -> None:
    from olmo3.chat.engine import Engine
    from olmo3.chat.events import TurnFinished

    events: list[Any] = []
    eng = Engine(events.append, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 4})
    eng.start()
    try:
        eng.wait(eng.load_model(model_dir), 60)
        eng.wait(eng.open_conversation("c1"), 30)
        eng.wait(eng.send("c1", "one"), 60)
        eng.wait(eng.spill_all(), 30)
        path = tmp_path / "kv" / "c1.safetensors"
        path.write_bytes(_meta({"2.999999999.0": "0.0", "2.999999999.1": "scalar"})(path.read_bytes()))
        with caplog.at_level(logging.WARNING):
            job = eng.send("c1", "two")
            eng.wait(job, 60)
        fin = [e for e in events if isinstance(e, TurnFinished) and e.job_id == job]
        assert fin and fin[0].stats.reconcile == "reprefill"
        assert "discarding cache file" in caplog.text and not path.exists()
    finally:
        assert eng.shutdown(30)


# ---- olmo3 chat --script -------------------------------------------------------------------------------------

SCRIPT_CASES: list[tuple[str, str, str]] = [
    ("100,000 nested lists", DEEP_LIST, "nested 100000 levels deep"),
    ("deep send text", '[{"send": ' + deep_text(3000) + "}]", "nested"),
    ("NaN in sampling", '[{"send": "hi", "sampling": {"temperature": NaN}}]', "must hold finite numbers"),
    ("send not text", '[{"send": {"a": 1}}]', "'send' must be text"),
    ("edit not a number", '[{"send": "a"}, {"edit": "zero", "text": "b"}]', "'edit' must be a user turn"),
    ("edit 1e400", '[{"send": "a"}, {"edit": 1e400, "text": "b"}]', "'edit' must be a user turn"),
    ("edit without text", '[{"send": "a"}, {"edit": 0}]', "needs the new 'text'"),
    ("two actions in one", '[{"send": "a", "regenerate": true}]', "exactly one of"),
    ("unknown key", '[{"send": "a", "sampling": {}, "temprature": 0}]', "unknown key 'temprature'"),
    ("regenerate false", '[{"regenerate": false}]', "'regenerate' must be true"),
    ("sampling a list", '[{"send": "a", "sampling": [1]}]', "'sampling' must be an object"),
    ("not a list", '{"send": "a"}', "expected a JSON list"),
    ("not JSON", "[{send: a}]", "not valid JSON"),
    ("not UTF-8", "\udcff", "not UTF-8"),
    ("missing", "", "cannot read the script"),
]


@pytest.mark.parametrize(("name", "text", "pattern"), SCRIPT_CASES, ids=[c[0] for c in SCRIPT_CASES])
def test_hostile_chat_script_is_refused_before_the_model_loads(
    tmp_path, model_dir, capsys, name, text, pattern
) -> None:
    script = tmp_path / "script.json"
    if name != "missing":
        script.write_bytes(text.encode("utf-8", "surrogateescape"))
    # The model is fine; the script is refused before the engine starts and loads it.
    code = main(["chat", "--model", str(model_dir), "--script", str(script), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and pattern in err and str(script) in err, err


# ---- tool arguments and config --------------------------------------------------------------------------------

TOOL_ARG_CASES = [DEEP_LIST, deep_text(100), '{"a": NaN', "[1]", '"text"']


@pytest.mark.parametrize("arguments", TOOL_ARG_CASES, ids=["100,000 deep", "100 deep", "broken", "list", "string"])
def test_hostile_tool_arguments_exit_2(tmp_path: Path, capsys, arguments: str) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {}}')
    assert main(["tools", "call", "x", arguments, "--config", str(config)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("text", [DEEP_LIST, DEEP_OBJECT, '{"mcpServers": ' + deep_text(5000) + "}"])
def test_hostile_tool_config_is_refused(tmp_path: Path, text: str) -> None:
    from olmo3.tools.config import ToolConfigError, load_config

    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(ToolConfigError, match="nested"):
        load_config(path)
