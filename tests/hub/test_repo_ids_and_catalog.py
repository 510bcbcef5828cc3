"""Repo ids (validated before any path or request), the catalog's sizes and memory verdicts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hub_server import FakeHub

from olmo3 import hub as H  # noqa: N812 - short alias, as in test_hub.py
from olmo3.hub import CATALOG, InvalidRepoIdError, ModelStore, validate_repo_id
from olmo3.model.modelinfo import kv_cache_bytes


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def make_store(tmp_path, hub: FakeHub | None) -> ModelStore:
    endpoint = hub.url if hub else "http://127.0.0.1:9"
    return ModelStore(tmp_path / "models", hf_cache_dir=tmp_path / "hf-cache", endpoint=endpoint, token=False)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "olmo",
        "a/b/c",
        "/etc/passwd",
        "../../etc",
        "a/..",
        "owner/../x",
        "~/models",
        "C:/x",
        "a\\b",
        ".hidden/x",
        "a/-x",
        "a/x.",
        "a/b c",
        "a/b?c",
        "a/b%2f",
        "a--b/c",
        "a/" + "x" * 97,
        None,
        42,
    ],
)
def test_bad_repo_ids_are_refused_before_any_path_or_request(tmp_path, hub, bad):
    store = make_store(tmp_path, hub)
    with pytest.raises(InvalidRepoIdError):
        validate_repo_id(bad)
    with pytest.raises(ValueError):
        store.start_download(bad)
    with pytest.raises(ValueError):
        store.model_dir(bad)
    with pytest.raises(ValueError):
        store.delete_model(bad)
    assert hub.requests() == []
    assert not store.models_dir.exists()


def test_good_repo_ids_and_urls():
    assert validate_repo_id(" mlx-community/Olmo-3-7B-Instruct-4bit ") == "mlx-community/Olmo-3-7B-Instruct-4bit"
    assert validate_repo_id("lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit")
    assert H.repo_id_from_text("https://huggingface.co/mlx-community/Olmo-3-7B-Think-bfloat16/tree/main") == (
        "mlx-community/Olmo-3-7B-Think-bfloat16"
    )
    with pytest.raises(InvalidRepoIdError, match="only use letters"):
        validate_repo_id("a/b c")


NOTES = Path(__file__).resolve().parents[2].parent / "shared" / "notes" / "olmo3-repos.md"


def _notes() -> str:
    if not NOTES.is_file():
        pytest.skip(f"{NOTES} not present")
    return NOTES.read_text()


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_catalog_offers_only_repos_on_record():
    notes = _notes()
    confirmed = set(
        re.findall(r"^\| ((?:mlx|lmstudio)-community/\S+) \|", _section(notes, "## MLX conversions confirmed"), re.M)
    )
    evidence = set(re.findall(r"^\| ((?:mlx|lmstudio)-community/\S+) \|", _section(notes, "## Strong evidence"), re.M))
    not_found = set(re.findall(r"(?:mlx|lmstudio)-community/[\w.-]+", _section(notes, "## Not found anywhere")))
    ai2 = set(re.findall(r"allenai/[\w.-]+[\w]", _section(notes, "## Ai2's own repos")))
    assert len(confirmed) == 7 and len(not_found) == 6 and "allenai/Olmo-3-7B-Instruct" in ai2
    mlx = {e.repo_id for e in CATALOG if e.quantize_bits is None}
    # The Hub-page table, less the two base models (no chat tuning), plus the three with the strongest evidence:
    # a pinned commit with the exact size, a catalog listing with its size, a chat template fetched from the repo.
    assert confirmed - mlx == {"mlx-community/Olmo-3-1125-32B-6bit", "lmstudio-community/Olmo-3-1025-7B-MLX-6bit"}
    assert (
        mlx - confirmed
        == {
            "mlx-community/Olmo-3-7B-Think-4bit",
            "lmstudio-community/Olmo-3-32B-Think-MLX-4bit",
            "lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit",
        }
        <= evidence
    )
    assert not mlx & not_found
    assert {e.repo_id for e in CATALOG if e.quantize_bits is not None} <= ai2
    assert all(e.evidence for e in CATALOG) and not hasattr(CATALOG[0], "known")
    assert all("OLMo" not in e.repo_id for e in CATALOG)  # "Olmo", exactly
    # The welcome screen's quick picks are catalog entries: 7B Instruct and Think at 4 bits.
    assert [e.repo_id for e in CATALOG if e.recommended] == [
        "mlx-community/Olmo-3-7B-Instruct-4bit",
        "mlx-community/Olmo-3-7B-Think-4bit",
    ]


def test_catalog_sizes_agree_with_the_sizes_on_record():
    by_id = {e.repo_id: e for e in CATALOG}
    # Exact byte counts on record (notes): within 0.5 % (they agree to 0.07 %).
    assert by_id["mlx-community/Olmo-3-7B-Think-4bit"].download_bytes == pytest.approx(4_115_716_535, rel=0.005)
    assert by_id["lmstudio-community/Olmo-3-32B-Think-MLX-4bit"].download_bytes == pytest.approx(18.13e9, rel=0.005)
    # Rounded sizes on record (~4.1 GB, ~14.6 GB): within their rounding.
    assert by_id["mlx-community/Olmo-3-7B-Instruct-4bit"].download_bytes == pytest.approx(4.1e9, abs=0.05e9)
    for repo in ("mlx-community/Olmo-3-7B-Instruct-bf16", "mlx-community/Olmo-3-7B-Think-bfloat16"):
        assert by_id[repo].download_bytes == pytest.approx(14.6e9, abs=0.05e9)
    # The Ai2 route: a bf16 download, a 4-bit install, both on disk at once while it runs.
    ai2 = by_id["allenai/Olmo-3-7B-Instruct"]
    assert ai2.download_bytes == by_id["mlx-community/Olmo-3-7B-Instruct-bf16"].download_bytes
    assert ai2.installed_bytes == by_id["mlx-community/Olmo-3-7B-Instruct-4bit"].download_bytes
    assert ai2.disk_bytes_needed == ai2.download_bytes + ai2.installed_bytes
    assert ai2.quant_label == "4-bit" and "Ai2 bf16" in ai2.title
    assert ai2.memory_fit(8192, budget=16 * 10**9).weight_bytes == ai2.weight_bytes < ai2.download_bytes / 3


def test_catalog_sizes_and_memory_verdicts(tmp_path):
    by_id = {e.repo_id: e for e in CATALOG}
    assert {e.arch.label for e in CATALOG} == {"7B", "32B"}
    assert {e.quant for e in CATALOG} == {"4bit", "8bit", "bf16"}
    assert {"Instruct", "Think"} <= {e.variant for e in CATALOG} and any("RL-Zero" in e.variant for e in CATALOG)
    # The computed table in the notes (§6): 7B 4-bit 4.11 GB, bf16 14.60 GB; 32B 8-bit 34.25 GB.
    assert by_id["mlx-community/Olmo-3-7B-Instruct-4bit"].weight_bytes == pytest.approx(4.11e9, rel=0.005)
    assert by_id["mlx-community/Olmo-3-7B-Think-bfloat16"].weight_bytes == pytest.approx(14.60e9, rel=0.005)
    assert by_id["lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit"].weight_bytes == pytest.approx(34.25e9, rel=0.005)
    assert H.OLMO3_7B.param_count == pytest.approx(7.30e9, rel=0.005)

    # Hybrid KV: 7B at 32K tokens = 8 full layers x 32K + 24 sliding layers x 4K, 128 KiB per token-layer pair.
    assert (
        kv_cache_bytes(32768, H.OLMO3_7B.kv_bytes_per_token_full, H.OLMO3_7B.kv_bytes_per_token_sliding, 4096)
        == 4 * 2**30 + 3 * 2**29
    )
    small = by_id["mlx-community/Olmo-3-7B-Instruct-4bit"]
    assert small.memory_fit(8192, budget=16 * 10**9).verdict == "fits"
    assert small.memory_fit(8192, budget=7_800_000_000).verdict == "tight"
    fit = by_id["lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit"].memory_fit(8192, budget=16 * 10**9)
    assert fit.verdict == "wont_fit" and fit.needed_bytes > fit.budget_bytes
    assert "Won't fit" in fit.message and "34" in fit.message
    longer = small.memory_fit(65536, budget=16 * 10**9)
    assert longer.kv_bytes > small.memory_fit(8192, budget=16 * 10**9).kv_bytes

    budget = H.memory_budget()
    assert budget.bytes > 0 and budget.source in ("mlx_working_set", "ram_fraction")
    items = make_store(tmp_path, None).catalog(context_tokens=4096, budget=24 * 10**9)
    assert len(items) == len(CATALOG) and all(not i.installed for i in items)
