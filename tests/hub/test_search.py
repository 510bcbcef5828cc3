"""Searching Hugging Face for Olmo-3 MLX repos: the real ``HfApi.list_models`` against the local Hub server, each
result sized from ``model_info(files_metadata=True)`` and judged for memory; the cached list when offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hub_server import FakeHub

from olmo3.hub import ModelStore
from olmo3.hub.search import SEARCH_TAGS, load_cached, search_hub


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from olmo3.model.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("search-models")
    q4 = make_tiny_model(root / "q4", quant_bits=4, seed=1)
    bf16 = make_tiny_model(root / "bf16", seed=2)
    llama = root / "llama"
    shutil.copytree(bf16, llama)
    config = json.loads((llama / "config.json").read_text())
    config["model_type"] = "llama"
    (llama / "config.json").write_text(json.dumps(config))
    no_weights = root / "gguf"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(q4 / name, no_weights / name)
    (no_weights / "model.gguf").write_bytes(b"GGUF")
    return {"q4": q4, "bf16": bf16, "llama": llama, "gguf": no_weights}


def store_for(tmp_path: Path, endpoint: str, **kw) -> ModelStore:
    return ModelStore(tmp_path / "models", include_hf_cache=False, endpoint=endpoint, token=False, **kw)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_search_lists_olmo3_mlx_repos_with_sizes_and_fit(tmp_path, models):
    cache = tmp_path / "cache" / "hub-search.json"
    with FakeHub() as hub:
        hub.page_size = 2  # three pages: the client must follow the Link headers
        hub.add_folder("mlx-community/Olmo-3-Tiny-4bit", models["q4"], downloads=500)
        hub.add_folder("lmstudio-community/Olmo-3-Tiny-MLX-4bit", models["q4"], downloads=20)
        hub.add_folder("someone/Olmo-3-Tiny-bf16-mlx", models["bf16"], downloads=7)
        hub.add_folder("someone/Olmo-3-no-safetensors", models["gguf"], downloads=1, tags=["olmo3", "mlx"])
        hub.add_folder("allenai/Olmo-3-Tiny", models["bf16"], tags=["transformers", "safetensors", "olmo3"])
        hub.add_folder("someone/Llama-Tiny-4bit", models["llama"], downloads=9000)  # tagged llama + mlx
        store = store_for(tmp_path, hub.url)
        found = search_hub(store, cache_path=cache)

        lists = [r for r in hub.requests("GET", "/api/models") if r["path"] == "/api/models"]
        assert all(r["query"]["filter"] == list(SEARCH_TAGS) for r in lists)
        assert any(r["query"].get("cursor") for r in lists)  # paginated like the Hub
    assert found.error is None and not found.from_cache and found.fetched_at
    by_id = {r.repo_id: r for r in found.results}
    # Tags select Olmo-3 MLX repos only (not Ai2's transformers repo, not a llama), most downloaded first.
    assert list(by_id) == [
        "mlx-community/Olmo-3-Tiny-4bit",
        "lmstudio-community/Olmo-3-Tiny-MLX-4bit",
        "someone/Olmo-3-Tiny-bf16-mlx",
        "someone/Olmo-3-no-safetensors",
    ]
    q4 = by_id["mlx-community/Olmo-3-Tiny-4bit"]
    assert q4.usable and q4.bits == 4 and q4.quant_label == "4-bit" and q4.downloads == 500
    assert q4.total_bytes == folder_bytes(models["q4"])  # the sizes model_info(files_metadata=True) reported
    assert q4.weight_bytes == (models["q4"] / "model.safetensors").stat().st_size
    assert by_id["someone/Olmo-3-Tiny-bf16-mlx"].bits is None
    fit = q4.memory_fit(budget=16 * 10**9)
    assert fit is not None and fit.verdict == "fits" and fit.weight_bytes == q4.weight_bytes and fit.kv_bytes > 0
    assert q4.memory_fit(budget=10**6).verdict == "wont_fit"  # type: ignore[union-attr]
    bad = by_id["someone/Olmo-3-no-safetensors"]
    assert not bad.usable and "no .safetensors weights" in (bad.problem or "") and bad.memory_fit() is None

    # The hub is gone (offline): the cached list comes back, with when it was fetched and why it is old.
    again = search_hub(store, cache_path=cache)
    assert again.from_cache and "cannot reach" in (again.error or "") and again.fetched_at == found.fetched_at
    assert again.results == found.results
    # Offline mode: no request at all; a cache from another endpoint is not shown.
    offline = search_hub(store_for(tmp_path, "http://127.0.0.1:9", offline=True), cache_path=cache)
    assert offline.results == () and offline.fetched_at is None and "offline" in (offline.error or "")
    assert (
        load_cached(cache, store.endpoint) is not None and load_cached(tmp_path / "none.json", store.endpoint) is None
    )


def test_search_text_narrows_the_list_and_is_not_cached(tmp_path, models):
    cache = tmp_path / "hub-search.json"
    with FakeHub() as hub:
        hub.add_folder("mlx-community/Olmo-3-Tiny-Think-4bit", models["q4"])
        hub.add_folder("mlx-community/Olmo-3-Tiny-Instruct-4bit", models["q4"])
        store = store_for(tmp_path, hub.url)
        found = search_hub(store, query="think", cache_path=cache)
        assert any(r["query"].get("search") == ["think"] for r in hub.requests("GET", "/api/models"))
    assert [r.repo_id for r in found.results] == ["mlx-community/Olmo-3-Tiny-Think-4bit"]
    assert not cache.exists()  # only the full list is kept for offline use


def test_a_broken_cache_file_reads_as_no_cache(tmp_path):
    cache = tmp_path / "hub-search.json"
    for text in ("not json", json.dumps({"format": 1, "endpoint": "http://x", "results": [{"repo_id": "../x"}, 3]})):
        cache.write_text(text)
        got = load_cached(cache, "http://x")
        assert got is None or got.results == ()


def test_cli_models_search(tmp_path, models, monkeypatch, capsys):
    import argparse

    from olmo3.cli.models import add_models_parser, run_models

    def run(argv: list[str]) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="olmo3")
        add_models_parser(parser.add_subparsers(dest="command", required=True))
        code = run_models(parser.parse_args(["models", "--models-dir", str(tmp_path / "models"), *argv]))
        out = capsys.readouterr()
        return code, out.out, out.err

    cache = str(tmp_path / "search.json")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_folder("mlx-community/Olmo-3-Tiny-4bit", models["q4"], downloads=3)
        code, out, err = run(["search", "--json", "--cache", cache])
        assert code == 0, err
        data = json.loads(out)
        [result] = data["results"]
        assert result["repo_id"] == "mlx-community/Olmo-3-Tiny-4bit" and result["fit"] in ("fits", "tight")
        assert result["total_bytes"] == folder_bytes(models["q4"]) and data["error"] is None
        code, out, _ = run(["search", "--cache", cache])
        assert code == 0 and "mlx-community/Olmo-3-Tiny-4bit" in out and "last updated" in out
    code, out, err = run(["search", "--cache", cache])  # the hub is gone: the saved list, and why
    assert code == 0 and "mlx-community/Olmo-3-Tiny-4bit" in out and "could not search Hugging Face" in err
    code, out, err = run(["search", "--cache", str(tmp_path / "none.json")])
    assert code == 1 and "could not search" in err and "0 repos" in out
