"""The model manager against a real local HTTP server speaking the Hub's API, with the real huggingface_hub client.

Nothing is mocked: ``tests/hub_server.py`` serves tiny Olmo-3 folders made by ``olmo3.model.tiny.make_tiny_model`` over
HTTP on 127.0.0.1 (LFS files through a "CDN" on another origin), and ``olmo3.hub.ModelStore`` downloads them with
huggingface_hub into temporary folders.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import pytest
from hub_server import FakeHub, Hold

from olmo3 import hub as H  # noqa: N812 - short alias, used on almost every line
from olmo3.hub import (
    DownloadCancelled,
    DownloadCompleted,
    DownloadFailed,
    DownloadProgress,
    DownloadRetrying,
    DownloadStarted,
    FileCompleted,
    ModelImportError,
    ModelNotFoundError,
    ModelStore,
    RetryPolicy,
)

REPO = "mlx-community/Olmo-3-Tiny-Instruct"
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
JUNK = {  # served by the repo, must never be fetched
    "modeling_olmo3.py": b"raise SystemExit('never run code from a download')\n",
    "pytorch_model.bin": b"\x80\x04pickle",
    "README.md": b"# tiny\n",
    "original/consolidated.safetensors": b"\0" * 64,
}


# -- fixtures ----------------------------------------------------------------------------------------------------


def _make_sharded(src: Path, dst: Path) -> Path:
    """Split a tiny model's weights into two shards with an index, as large conversions are published."""
    import mlx.core as mx

    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name != "model.safetensors":
            shutil.copy(p, dst / p.name)
    weights = mx.load(str(src / "model.safetensors"))
    names = sorted(weights)
    shards = {SHARD1: names[: len(names) // 2], SHARD2: names[len(names) // 2 :]}
    for fname, keys in shards.items():
        mx.save_safetensors(str(dst / fname), {k: weights[k] for k in keys}, metadata={"format": "mlx"})
    total = sum((dst / f).stat().st_size for f in shards)
    index = {"metadata": {"total_size": total}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (dst / INDEX).write_text(json.dumps(index, indent=2))
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from olmo3.model.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("src")
    plain = make_tiny_model(root / "Olmo-3-Tiny-Instruct", seed=1)
    think = make_tiny_model(root / "Olmo-3-Tiny-Think-4bit", think=True, quant_bits=4, seed=2)
    sharded = _make_sharded(plain, root / "sharded")
    llama = root / "llama"
    shutil.copytree(plain, llama)
    cfg = json.loads((llama / "config.json").read_text())
    cfg["model_type"] = "llama"
    cfg["architectures"] = ["LlamaForCausalLM"]
    (llama / "config.json").write_text(json.dumps(cfg))
    return {"plain": plain, "think": think, "sharded": sharded, "llama": llama}


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def make_store(tmp_path: Path, hub: FakeHub | None, **kw) -> ModelStore:
    kw.setdefault("hf_cache_dir", tmp_path / "hf-cache")
    kw.setdefault("chunk_size", 16 * 1024)
    kw.setdefault("retry", RetryPolicy(max_attempts=6, base_delay_s=0.0, planning_attempts=2))
    kw.setdefault("progress_interval_s", 0.0)
    kw.setdefault("token", False)  # never pick up a token saved on the machine running the tests
    return ModelStore(tmp_path / "models", endpoint=hub.url if hub else "http://127.0.0.1:9", **kw)


def same_files(a: Path, b: Path, names) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def weight_gets(hub: FakeHub) -> list[dict]:
    return [r for r in hub.requests("GET") if r["path"].endswith(".safetensors")]


# -- downloads ---------------------------------------------------------------------------------------------------


def test_full_download_verify_and_load(tmp_path, hub, models):
    import mlx.core as mx

    import olmo3

    hub.add_folder(REPO, models["sharded"], extra=JUNK)
    store = make_store(tmp_path, hub)
    events = []
    model = store.download(REPO, on_event=events.append)

    dest = store.models_dir / "mlx-community" / "Olmo-3-Tiny-Instruct"
    assert model.installed and model.path == dest and model.source == "download"
    wanted = sorted(p.name for p in models["sharded"].iterdir())
    assert sorted(p.name for p in dest.iterdir()) == sorted([*wanted, H.MARKER_NAME])
    assert same_files(dest, models["sharded"], wanted)
    assert not (dest / H.DOWNLOAD_DIR).exists()

    # Only allowed files were requested: no code, no pickles, nothing from subfolders.
    fetched = {r["path"].rsplit("/", 1)[-1] for r in hub.requests()}
    assert not fetched & {"modeling_olmo3.py", "pytorch_model.bin", "README.md", "consolidated.safetensors"}

    marker = json.loads((dest / H.MARKER_NAME).read_text())
    assert marker["repo_id"] == REPO and marker["commit"] == hub.repos[REPO].commit
    assert marker["files"][SHARD1] == (models["sharded"] / SHARD1).stat().st_size

    started = next(e for e in events if isinstance(e, DownloadStarted))
    total = sum((models["sharded"] / n).stat().st_size for n in wanted)
    assert started.total_bytes == total and started.done_bytes == 0
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    done = [e.done_bytes for e in progress]
    assert done == sorted(done) and done[-1] == total and progress[-1].fraction == 1.0
    assert {e.file for e in events if isinstance(e, FileCompleted)} == set(wanted)
    assert isinstance(events[-1], DownloadCompleted) and events[-1].model.installed

    [listed] = store.list_models()
    assert listed.installed and listed.revision == hub.repos[REPO].commit
    assert listed.param_count == model.param_count > 0 and listed.variant == "Instruct"
    assert listed.memory_fit(1024, budget=10**9).verdict == "fits"

    m, tok = olmo3.load(listed.path)
    ids = tok.encode("Hello! How are you today?")
    logits = m(mx.array([ids]))
    assert logits.shape == (1, len(ids), m.args.vocab_size)

    # Asking again is a no-op that reports the installed model.
    again = store.start_download(REPO).wait(30)
    assert isinstance(again, DownloadCompleted) and again.already_installed


def test_dropped_connections_resume_to_identical_files(tmp_path, hub, models):
    """10 seeded trials: the server drops the connection at random byte offsets, mostly with a TCP reset
    (recovered by our retry loop), in two trials with a clean close mid-body (huggingface_hub's own reconnect)."""
    src = models["sharded"]
    names = sorted(p.name for p in src.iterdir())
    for trial in range(10):
        rng = random.Random(trial)
        repo_id = f"cuts/trial-{trial}"
        repo = hub.add_folder(repo_id, src)
        repo.cut_with_reset = trial not in (3, 7)
        plan = {}
        for name in (SHARD1, SHARD2, "tokenizer.json"):
            size = len(repo.files[name])
            if repo.cut_with_reset:
                plan[name] = sorted(rng.sample(range(1, size), rng.randint(1, 3)))
            elif name == SHARD1:  # huggingface_hub sleeps 1 s before its own reconnect: one cut is enough
                plan[name] = [rng.randrange(1, size)]
        repo.cut_at = {n: list(v) for n, v in plan.items()}
        store = make_store(tmp_path / f"t{trial}", hub)
        events = []
        model = store.download(repo_id, on_event=events.append)
        assert model.installed
        assert same_files(model.path, src, names), f"trial {trial}: files differ"
        assert all(not v for v in repo.cut_at.values()), f"trial {trial}: not every cut happened"
        ranged = [r for r in hub.requests("GET", f"/{SHARD1}") + hub.requests("GET", f"/{SHARD2}") if r["range"]]
        assert ranged, f"trial {trial}: no resumed (Range) request"
        if repo.cut_with_reset:
            assert any(isinstance(e, DownloadRetrying) for e in events)
        hub.log.clear()


def test_server_ignoring_range_still_gives_identical_files(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    repo.ignore_range = True
    repo.cut_with_reset = True
    repo.cut_at = {"model.safetensors": [200_000, 500_000]}
    model = make_store(tmp_path, hub).download(REPO)
    assert (model.path / "model.safetensors").read_bytes() == (models["plain"] / "model.safetensors").read_bytes()


def test_server_errors_are_retried_then_reported(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    repo.fail_next["model.safetensors"] = [503, 502, 500]  # (408 and 429 huggingface_hub retries itself)
    events = []
    assert make_store(tmp_path / "a", hub).download(REPO, on_event=events.append).installed
    retries = [e for e in events if isinstance(e, DownloadRetrying)]
    assert [e.attempt for e in retries] == [1, 2, 3] and "503" in retries[0].reason

    repo.fail_next["model.safetensors"] = [503] * 50
    store = make_store(tmp_path / "b", hub)
    final = store.start_download(REPO).wait(30)
    assert isinstance(final, DownloadFailed) and final.code == "unreachable"
    assert "gave up on model.safetensors after 6 attempts" in final.message and "start again to resume" in final.message
    [listed] = store.list_models()
    assert listed.status == "incomplete" and listed.size_bytes > 0  # the small files are kept


def test_pause_then_resume_after_restart(tmp_path, hub, models):
    hub.add_folder(REPO, models["plain"])
    store = make_store(tmp_path, hub)
    size = (models["plain"] / "model.safetensors").stat().st_size
    handle_box = {}

    def pause_midway(ev):
        if isinstance(ev, DownloadProgress) and ev.file == "model.safetensors" and ev.file_done >= size // 3:
            handle_box["h"].pause()

    handle = store.start_download(REPO, on_event=lambda e: pause_midway(e) if "h" in handle_box else None)
    handle_box["h"] = handle
    final = handle.wait(30)
    assert isinstance(final, DownloadCancelled) and final.paused and not final.discarded
    assert handle.state == "paused"

    [listed] = store.list_models()
    assert listed.status == "incomplete" and not listed.installed
    assert 0 < listed.size_bytes < listed.total_bytes
    assert "not finished" in listed.problem
    part = listed.path / H.DOWNLOAD_DIR / "model.safetensors.part"
    kept = part.stat().st_size
    assert size // 3 <= kept < size
    assert (models["plain"] / "model.safetensors").read_bytes()[:kept] == part.read_bytes()

    # A new store on the same folder is the app after a restart: it resumes from the partial file.
    hub.log.clear()
    restarted = make_store(tmp_path, hub)
    events = []
    model = restarted.resume_download(REPO, on_event=events.append).wait(30)
    assert isinstance(model, DownloadCompleted)
    started = next(e for e in events if isinstance(e, DownloadStarted))
    assert started.done_bytes >= kept
    [get] = weight_gets(hub)
    assert get["range"] == f"bytes={kept}-"
    assert same_files(model.model.path, models["plain"], ["model.safetensors", "config.json", "tokenizer.json"])


def test_pause_and_discard_from_another_thread(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    hold = repo.hold["model.safetensors"] = Hold(offset=16 * 1024 * 5)
    store = make_store(tmp_path, hub)
    client_at_hold = threading.Event()

    def watch(ev):
        if isinstance(ev, DownloadProgress) and ev.file == "model.safetensors" and ev.file_done >= hold.offset:
            client_at_hold.set()

    handle = store.start_download(REPO, on_event=watch)
    assert hold.reached.wait(30) and client_at_hold.wait(30)
    assert [m.active for m in store.list_models()] == [True]
    handle.pause()  # from the test thread while the worker is blocked in a read
    hold.release.set()
    final = handle.wait(30)
    assert isinstance(final, DownloadCancelled) and final.paused
    part = store.model_dir(REPO) / H.DOWNLOAD_DIR / "model.safetensors.part"
    assert part.stat().st_size == hold.offset  # stopped at the next chunk; nothing half-written

    hold2 = repo.hold["model.safetensors"] = Hold(offset=16 * 1024 * 10)
    handle = store.start_download(REPO)
    assert hold2.reached.wait(30)
    handle.cancel(discard=True)
    hold2.release.set()
    final = handle.wait(30)
    assert isinstance(final, DownloadCancelled) and final.discarded and not final.paused
    assert not store.model_dir(REPO).exists()
    assert store.list_models() == []


def test_resume_right_after_pause_starts_when_the_pause_has_landed(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    hold = repo.hold["model.safetensors"] = Hold(offset=16 * 1024 * 3)
    store = make_store(tmp_path, hub)
    client_at_hold = threading.Event()
    first = store.start_download(
        REPO,
        on_event=lambda ev: (
            client_at_hold.set()
            if isinstance(ev, DownloadProgress) and ev.file == "model.safetensors" and ev.file_done >= hold.offset
            else None
        ),
    )
    assert hold.reached.wait(30) and client_at_hold.wait(30)
    first.pause()
    assert first.state == "stopping"
    second = store.start_download(REPO)  # the user clicks Resume before the pause has finished
    assert second is not first
    hold.release.set()
    assert isinstance(first.wait(30), DownloadCancelled)
    final = second.wait(30)
    assert isinstance(final, DownloadCompleted) and not final.already_installed
    assert [r["range"] is not None for r in weight_gets(hub)] == [False, True]
    assert same_files(final.model.path, models["plain"], ["model.safetensors"])


def test_plan_download_for_a_custom_repo_id(tmp_path, hub, models):
    hub.add_folder(REPO, models["sharded"], extra=JUNK)
    hub.add_folder("someone/llama", models["llama"])
    store = make_store(tmp_path, hub)
    plan = store.plan_download(REPO)
    assert plan.commit == hub.repos[REPO].commit
    assert {f.name for f in plan.files} == {p.name for p in models["sharded"].iterdir()}
    assert plan.weight_bytes == sum((models["sharded"] / s).stat().st_size for s in (SHARD1, SHARD2))
    assert plan.memory_fit(1024, budget=10**9).verdict == "fits"
    assert plan.memory_fit(1024, budget=10**6).verdict == "wont_fit"
    with pytest.raises(H.DownloadError) as info:
        store.plan_download("someone/llama")
    assert info.value.code == "not_olmo3"
    assert not store.models_dir.exists() and weight_gets(hub) == []


def test_two_downloads_of_the_same_model(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    hold = repo.hold["model.safetensors"] = Hold(offset=16 * 1024 * 4)
    first = make_store(tmp_path, hub)
    seen_by_first, seen_by_joiner = [], []
    handle = first.start_download(REPO, on_event=seen_by_first.append)
    assert hold.reached.wait(30)

    # Another store on the same folder stands for a second app instance or `olmo3 models download`.
    other = make_store(tmp_path, hub).start_download(REPO).wait(30)
    assert isinstance(other, DownloadFailed) and other.code == "busy"
    assert "already being downloaded" in other.message

    # The same store joins the running download instead of starting a second one.
    joined = first.start_download(REPO, on_event=seen_by_joiner.append)
    assert joined is handle
    with pytest.raises(H.ModelBusyError):
        first.delete_model(REPO)

    hold.release.set()
    final = handle.wait(30)
    assert isinstance(final, DownloadCompleted)
    assert isinstance(seen_by_joiner[-1], DownloadCompleted)
    assert any(isinstance(e, DownloadProgress) for e in seen_by_joiner)
    assert same_files(final.model.path, models["plain"], [p.name for p in models["plain"].iterdir()])
    assert len(weight_gets(hub)) == 1


@pytest.mark.parametrize(
    "setup, code, words",
    [
        ("missing", "not_found", "no model"),
        ("llama", "not_olmo3", "'llama'"),
        ("gguf", "unsupported", "no .safetensors"),
        ("quota", "disk_full", "not enough disk space"),
        ("gated", "auth_required", "gated"),
        ("offline", "offline", "offline"),
        ("down", "unreachable", "cannot reach"),
    ],
)
def test_download_failures_are_clear_and_install_nothing(tmp_path, hub, models, setup, code, words):
    kw = {}
    repo_id = REPO
    if setup == "llama":
        hub.add_folder(REPO, models["llama"])
    elif setup == "gguf":
        files = {n: p.read_bytes() for n, p in ((p.name, p) for p in models["plain"].iterdir())}
        del files["model.safetensors"]
        hub.add_repo(REPO, {**files, "olmo-3-q4.gguf": b"GGUF"})
    elif setup == "quota":
        hub.add_folder(REPO, models["plain"])
        kw["free_space_fn"] = lambda path: 100_000
    elif setup == "gated":
        hub.add_folder(REPO, models["plain"], token="hf_secret")
    elif setup == "offline":
        hub.add_folder(REPO, models["plain"])
        kw["offline"] = True
    store = make_store(tmp_path, None if setup == "down" else hub, **kw)
    final = store.start_download(repo_id).wait(30)
    assert isinstance(final, DownloadFailed), final
    assert final.code == code and words in final.message, final.message
    with pytest.raises(H.DownloadError) as info:
        store.download(repo_id)
    assert info.value.code == code
    assert store.list_models() == []
    assert not store.model_dir(repo_id).exists()
    assert weight_gets(hub) == []
    if setup == "quota":
        total = sum(p.stat().st_size for p in models["plain"].iterdir())
        assert "100,000 bytes" in final.message and f"{total:,} bytes" in final.message
    if setup == "offline":
        assert hub.requests() == []


def test_gated_repo_with_token_never_leaks_it_to_the_cdn(tmp_path, hub, models):
    hub.add_folder(REPO, models["plain"], token="hf_secret")
    model = make_store(tmp_path, hub, token="hf_secret").download(REPO)
    assert model.installed
    hub_requests = [r for r in hub.requests() if r["host"].startswith("127.0.0.1")]
    cdn_requests = [r for r in hub.requests() if r["host"].startswith("localhost")]
    assert cdn_requests and hub_requests
    assert all(r["authorization"] == "Bearer hf_secret" for r in hub_requests)
    assert all(r["authorization"] is None for r in cdn_requests)


def test_corrupt_transfer_is_detected_and_not_installed(tmp_path, hub, models):
    repo = hub.add_folder(REPO, models["plain"])
    good = repo.files["model.safetensors"]
    repo.tamper["model.safetensors"] = good[:-10] + b"x" * 10  # same size, wrong bytes
    store = make_store(tmp_path, hub)
    final = store.start_download(REPO).wait(30)
    assert isinstance(final, DownloadFailed) and final.code == "verify_failed"
    assert "hash" in final.message
    assert store.installed_models() == []
    # Fixed upstream (the CDN serves the right bytes again): starting again completes.
    del repo.tamper["model.safetensors"]
    assert store.download(REPO).installed


def test_folder_that_does_not_load_is_never_installed(tmp_path, hub, models):
    broken = dict((p.name, p.read_bytes()) for p in models["plain"].iterdir())
    broken["model.safetensors"] = broken["model.safetensors"][:-1000]  # truncated, but consistently reported
    hub.add_repo(REPO, broken)
    store = make_store(tmp_path, hub)
    final = store.start_download(REPO).wait(30)
    assert isinstance(final, DownloadFailed) and final.code == "verify_failed"
    assert "does not load" in final.message and "model.safetensors" in final.message
    [listed] = store.list_models()
    assert listed.status == "incomplete"
    assert not (listed.path / H.MARKER_NAME).exists()


def test_tensor_check_catches_wrong_shapes(tmp_path, hub, models):
    files = {p.name: p.read_bytes() for p in models["plain"].iterdir()}
    cfg = json.loads(files["config.json"])
    cfg["intermediate_size"] = 96  # config no longer matches the weights' shapes; headers still parse
    files["config.json"] = json.dumps(cfg).encode()
    hub.add_repo(REPO, files)
    final = make_store(tmp_path, hub).start_download(REPO).wait(60)
    assert isinstance(final, DownloadFailed) and final.code == "verify_failed"
    wrong = "tensor 'model.layers.0.mlp.down_proj.weight' has shape [64, 128], config.json implies [64, 96]"
    assert f"model.safetensors: {wrong}" in final.message


# -- listing, HF cache, offline, delete, import ------------------------------------------------------------------


def test_hf_cache_model_is_offered_in_place(tmp_path, hub, models):
    from huggingface_hub import snapshot_download

    hub.add_folder(REPO, models["think"])
    hub.add_folder("someone/not-olmo", models["llama"])
    cache = tmp_path / "hf-cache"
    for repo_id in (REPO, "someone/not-olmo"):
        snapshot_download(
            repo_id, cache_dir=cache, endpoint=hub.url, token=False, allow_patterns=list(H.ALLOW_PATTERNS)
        )
    hub.log.clear()
    store = make_store(tmp_path, hub, offline=True)
    [found] = store.list_models()
    assert found.installed and found.source == "hf_cache" and found.name == REPO
    assert found.path.is_relative_to(cache) and found.revision == hub.repos[REPO].commit
    assert (found.path / "model.safetensors").is_symlink()  # the cache's own layout: no copy was made
    assert not store.models_dir.exists()
    assert found.is_think and found.variant == "Think" and found.quant_label == "4-bit"
    assert hub.requests() == []

    [item] = [i for i in store.catalog(budget=10**10) if i.entry.repo_id == REPO] or [None]
    assert item is None  # the tiny repo is not in the catalog; catalog lookups still work offline
    assert store.find(REPO).source == "hf_cache"

    freed = store.delete_model(REPO)
    assert freed >= (models["think"] / "model.safetensors").stat().st_size
    assert store.list_models() == []


def test_offline_store_still_lists_installed_models(tmp_path, hub, models):
    hub.add_folder(REPO, models["plain"])
    make_store(tmp_path, hub).download(REPO)
    hub.log.clear()
    offline = make_store(tmp_path, hub, offline=True)
    [m] = offline.installed_models()
    assert m.name == REPO and m.installed
    final = offline.start_download("mlx-community/Olmo-3-7B-Instruct-4bit").wait(30)
    assert isinstance(final, DownloadFailed) and final.code == "offline"
    assert hub.requests() == []


def test_delete_frees_bytes_and_conversation_caches(tmp_path, hub, models):
    hub.add_folder(REPO, models["plain"])
    store = make_store(tmp_path, hub)
    model = store.download(REPO)
    cache_file = tmp_path / "caches" / "conv-1.safetensors"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"k" * 12345)
    seen = []

    def drop_caches(m):
        seen.append(m.name)
        n = cache_file.stat().st_size
        cache_file.unlink()
        return n

    expected = sum(p.stat().st_size for p in model.path.rglob("*") if p.is_file())
    freed = store.delete_model(REPO, also_delete=drop_caches)
    assert freed == expected + 12345
    assert seen == [REPO] and not cache_file.exists()
    assert not model.path.exists() and not model.path.parent.exists()
    assert store.list_models() == []
    with pytest.raises(ModelNotFoundError):
        store.delete_model(REPO)


def test_tampered_install_is_listed_as_incomplete(tmp_path, hub, models):
    hub.add_folder(REPO, models["plain"])
    store = make_store(tmp_path, hub)
    model = store.download(REPO)
    with open(model.path / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    [m] = store.list_models()
    assert m.status == "incomplete" and "model.safetensors" in m.problem


def test_import_copy_and_link(tmp_path, models):
    store = make_store(tmp_path, None)
    src = models["think"]
    progress = []
    copied = store.import_model(src, on_progress=lambda d, t: progress.append((d, t)))
    assert copied.installed and copied.source == "copy" and copied.name == "local/Olmo-3-Tiny-Think-4bit"
    assert not (copied.path / "model.safetensors").is_symlink()
    assert progress[-1][0] == progress[-1][1] > 0
    assert copied.is_think and copied.quant_label == "4-bit"

    linked = store.import_model(src, link=True, name="local/think-linked")
    assert linked.installed and linked.source == "link" and linked.origin == str(src.resolve())
    assert (linked.path / "model.safetensors").resolve() == (src / "model.safetensors").resolve()
    assert {m.name for m in store.installed_models()} == {"local/Olmo-3-Tiny-Think-4bit", "local/think-linked"}

    with pytest.raises(ModelImportError, match="already exists"):
        store.import_model(src, link=True, name="local/think-linked")
    freed = store.delete_model("local/think-linked")
    assert freed < 10_000  # links and the marker only
    assert (src / "model.safetensors").is_file()  # the original is untouched

    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(ModelImportError, match="not a loadable Olmo-3 model"):
        store.import_model(bad)
    with pytest.raises(ModelImportError, match="not a loadable Olmo-3 model"):
        store.import_model(models["llama"], name="local/llama")
    assert not (store.models_dir / "local" / "llama").exists()
