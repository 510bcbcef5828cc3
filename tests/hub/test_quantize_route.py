"""Download and quantize: an Ai2-style bf16 repo (transformers config) from the local Hub server, quantized on a real
engine thread (``Engine.run_quantize``), verified and installed; the bf16 copy deleted; pause and cancel in both
phases; the disk check counting both copies; ``olmo3 models download REPO --quantize 4`` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub, Hold

from olmo3.chat.engine import Engine
from olmo3.hub import (
    DownloadCancelled,
    DownloadCompleted,
    DownloadFailed,
    DownloadQuantizing,
    ModelStore,
    RetryPolicy,
)
from olmo3.hub.quantize_route import STAGING_DIR, quantized_name

REPO = "allenai/Olmo-3-Tiny-Instruct"
Q4 = "allenai/Olmo-3-Tiny-Instruct-4bit"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    # Ai2's repos: transformers' config form, bf16 weights.
    return make_tiny_model(tmp_path_factory.mktemp("ai2") / "Olmo-3-Tiny-Instruct", config_format="transformers5")


@pytest.fixture
def hub(bf16):
    with FakeHub() as server:
        server.add_folder(REPO, bf16, tags=["transformers", "safetensors", "olmo3"])
        yield server


@pytest.fixture
def engine():
    e = Engine()
    e.start()
    yield e
    assert e.shutdown()


def make_store(tmp_path: Path, hub: FakeHub, **kw) -> ModelStore:
    kw.setdefault("retry", RetryPolicy(max_attempts=2, base_delay_s=0.0, planning_attempts=1))
    return ModelStore(
        tmp_path / "models", include_hf_cache=False, endpoint=hub.url, token=False, chunk_size=16 * 1024, **kw
    )


def test_download_quantize_verify_install_and_drop_the_bf16_copy(tmp_path, hub, engine, bf16):
    store = make_store(tmp_path, hub)
    events: list = []
    handle = store.start_download(REPO, on_event=events.append, quantize_bits=4, quantizer=engine.run_quantize)
    final = handle.wait(120)
    assert isinstance(final, DownloadCompleted), final
    model = final.model
    assert model.name == Q4 == quantized_name(REPO, 4) and model.installed and model.source == "quantized"
    assert model.repo_id == REPO and model.quantization and model.quantization["bits"] == 4
    assert model.path == store.models_dir / Q4 and not (store.models_dir / STAGING_DIR).exists()
    assert not (store.models_dir / REPO).exists()  # the bf16 copy is gone
    assert model.size_bytes < 0.6 * sum(p.stat().st_size for p in bf16.iterdir())
    steps = [e for e in events if isinstance(e, DownloadQuantizing)]
    assert steps and steps[-1].done_steps == steps[-1].total_steps and any("layer" in e.what for e in steps)
    # Listed, found by the catalog's key (the Ai2 repo), and it loads and answers on the engine thread.
    assert [m.name for m in store.installed_models()] == [Q4]
    loaded = engine.load_model(model.path)
    assert engine.wait(loaded, 60) and engine.info is not None and engine.info.quantization["bits"] == 4
    # Asking again is "already installed", with no request for weights.
    hub.log.clear()
    again = store.download(REPO, quantize_bits=4, quantizer=engine.run_quantize)
    assert again.name == Q4 and not hub.requests(path_contains="/cdn/")


def test_disk_check_counts_both_copies(tmp_path, hub, engine, bf16):
    total = sum(p.stat().st_size for p in bf16.iterdir())
    store = make_store(tmp_path, hub, free_space_fn=lambda _p: total + 1000)  # room for the download alone
    final = store.start_download(REPO, quantize_bits=4, quantizer=engine.run_quantize).wait(60)
    assert isinstance(final, DownloadFailed) and final.code == "disk_full"
    assert "4-bit copy made from it" in final.message
    depths = [0]
    for ch in final.message:  # numbers in parentheses, none nested
        depths.append(depths[-1] + (ch == "(") - (ch == ")"))
    assert max(depths) == 1 and depths[-1] == 0
    assert not hub.requests(path_contains="/cdn/")  # refused before downloading anything


def test_pause_while_quantizing_keeps_the_download_and_resumes(tmp_path, hub, engine):
    store = make_store(tmp_path, hub)

    def pause_at_first_layer(event):
        if isinstance(event, DownloadQuantizing) and event.done_steps == 1:
            handle.pause()  # on the engine thread, between two layers

    handle = store.start_download(REPO, on_event=pause_at_first_layer, quantize_bits=4, quantizer=engine.run_quantize)
    final = handle.wait(120)
    assert isinstance(final, DownloadCancelled) and final.paused
    assert not (store.models_dir / Q4).exists() and not list((store.models_dir / "allenai").glob(".*quantizing*"))
    staged = store.staged(REPO)
    assert staged is not None and not staged.installed and "quantizing did not finish" in (staged.problem or "")
    item = next(i for i in store.catalog(budget=10**10) if i.entry.repo_id == "allenai/Olmo-3-7B-Instruct")
    assert item.local is None  # another repo's staging is not this entry's

    hub.log.clear()
    model = store.download(REPO, quantize_bits=4, quantizer=engine.run_quantize)
    assert model.name == Q4 and model.installed
    assert not hub.requests(path_contains="/cdn/")  # the bf16 download was not fetched again
    assert store.staged(REPO) is None


def test_cancel_while_quantizing_discards_both_copies(tmp_path, hub, engine):
    store = make_store(tmp_path, hub)

    def cancel_at_second_layer(event):
        if isinstance(event, DownloadQuantizing) and event.done_steps == 2:
            handle.cancel(discard=True)

    handle = store.start_download(REPO, on_event=cancel_at_second_layer, quantize_bits=4, quantizer=engine.run_quantize)
    final = handle.wait(120)
    assert isinstance(final, DownloadCancelled) and final.discarded and not final.paused
    assert store.staged(REPO) is None and not (store.models_dir / STAGING_DIR).exists()
    assert not (store.models_dir / Q4).exists() and store.list_models() == []
    assert not [p for p in store.models_dir.rglob("*") if "quantizing" in p.name or p.suffix == ".partial"]


def test_cancel_during_the_download_discards_the_staging_folder(tmp_path, hub, engine):
    hold = hub.repos[REPO].hold["model.safetensors"] = Hold(offset=16 * 1024)
    store = make_store(tmp_path, hub)
    handle = store.start_download(REPO, quantize_bits=4, quantizer=engine.run_quantize)
    assert hold.reached.wait(30)
    assert store.staged(REPO) is not None and store.staged(REPO).problem.startswith("download not finished")
    handle.cancel(discard=True)
    hold.release.set()
    final = handle.wait(30)
    assert isinstance(final, DownloadCancelled) and final.discarded
    assert store.staged(REPO) is None and not (store.models_dir / STAGING_DIR).exists()
    assert store.list_models() == []


def test_without_an_engine_it_fails_clearly_and_keeps_the_download(tmp_path, hub):
    store = make_store(tmp_path, hub)
    stopped = Engine()  # never started
    final = store.start_download(REPO, quantize_bits=4, quantizer=stopped.run_quantize).wait(60)
    assert isinstance(final, DownloadFailed) and final.code == "quantize_failed"
    assert "engine is not running" in final.message
    assert store.staged(REPO) is not None  # the download is kept; deleting it removes the staging folder
    assert store.delete_model(REPO) > 0 and store.staged(REPO) is None
    with pytest.raises(ValueError, match="quantizer"):
        store.start_download(REPO, quantize_bits=4)


def test_cli_download_with_quantize(tmp_path, hub):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    d = ["--models-dir", str(tmp_path / "models")]
    cmd = [sys.executable, "-m", "olmo3.cli", "models", *d]
    r = subprocess.run(
        [*cmd, "download", REPO, "--quantize", "4"], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert f"Installed: {Q4}" in r.stdout and "4-bit" in r.stdout
    assert "Quantizing to 4 bits" in r.stderr and "layer" in r.stderr and "Verifying the 4-bit copy" in r.stderr
    r = subprocess.run([*cmd, "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    [m] = json.loads(r.stdout)
    assert m["name"] == Q4 and m["folder"] == str(tmp_path / "models" / Q4) and m["source"] == "quantized"
    r = subprocess.run([*cmd, "download", REPO, "--quantize", "3"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr
