"""Broken model folders are refused, with the file and tensor named, before a model is ever listed installed.

Every way in goes through ``olmo3.hub.verify.verify_model_folder`` (config, safetensors layout, every tensor's
name/shape/dtype against config.json), without MLX: imports, downloads from the local Hub server, and models found
in the Hugging Face cache. The last test runs a download, an import and a listing in a fresh process and checks
that MLX was never imported there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stn
from hub_server import FakeHub

from olmo3.hub import DownloadFailed, ModelImportError, ModelStore, RetryPolicy

REPO = "someone/Olmo-3-Broken"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("src") / "Olmo-3-Tiny", seed=3)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _with_weights(files: dict[str, bytes], change: Callable[[dict[str, np.ndarray]], None]) -> dict[str, bytes]:
    weights = stn.load(files[WEIGHTS])
    change(weights)
    return {**files, WEIGHTS: stn.save(weights, metadata={"format": "mlx"})}


def _with_config(files: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    config = json.loads(files["config.json"])
    config.update(changes)
    return {**files, "config.json": json.dumps(config).encode()}


def _huge_hidden(files: dict[str, bytes]) -> dict[str, bytes]:
    return _with_config(files, hidden_size=1_000_000_000, head_dim=16)


def _many_layers(files: dict[str, bytes]) -> dict[str, bytes]:
    layers = 100_000
    return _with_config(files, num_hidden_layers=layers, layer_types=["sliding_attention"] * layers)


def _truncated(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**files, WEIGHTS: files[WEIGHTS][:-1000]}


def _padded(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**files, WEIGHTS: files[WEIGHTS] + b"\0" * 64}


def _set(name: str, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda files: _with_weights(files, lambda w: w.__setitem__(name, value(w.get(name, np.zeros(0)))))


def _drop(name: str) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda files: _with_weights(files, lambda w: w.pop(name))


NORM = "model.layers.1.self_attn.q_norm.weight"
BROKEN: dict[str, tuple[Callable[[dict[str, bytes]], dict[str, bytes]], list[str]]] = {
    "huge-hidden-size": (_huge_hidden, ["has shape", "config.json implies", "1000000000"]),
    "many-layers": (_many_layers, ["config.json has 100,000 layers", "model.layers.4"]),
    "truncated": (_truncated, [WEIGHTS, "(truncated?)"]),
    "padded": (_padded, [WEIGHTS, "extra bytes at the end"]),
    "wrong-dtype": (_set(NORM, lambda a: a.astype(np.int32)), [WEIGHTS, f"'{NORM}' is I32", "BF16 or F16 or F32"]),
    "wrong-shape": (_set(NORM, lambda a: a[:32]), [WEIGHTS, f"'{NORM}' has shape [32], config.json implies [64]"]),
    "missing": (_drop("model.norm.weight"), ["tensors missing from the weight files: model.norm.weight"]),
    "extra": (
        _set("model.layers.0.mlp.gate_proj.bias", lambda _: np.zeros(128, np.float32)),
        [WEIGHTS, "tensors config.json does not imply: model.layers.0.mlp.gate_proj.bias"],
    ),
}


def _broken_folder(root: Path, plain: Path, case: str) -> Path:
    folder = root / f"broken-{case}"
    folder.mkdir()
    for name, data in BROKEN[case][0](_files(plain)).items():
        (folder / name).write_bytes(data)
    return folder


def _store(tmp_path: Path, endpoint: str = "http://127.0.0.1:9", **kw: object) -> ModelStore:
    return ModelStore(
        tmp_path / "models",
        hf_cache_dir=tmp_path / "hf-cache",
        endpoint=endpoint,
        token=False,
        chunk_size=64 * 1024,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.0, planning_attempts=1),
        **kw,
    )


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folder_is_not_imported(tmp_path, plain, case):
    folder = _broken_folder(tmp_path, plain, case)
    store = _store(tmp_path)
    for link in (False, True):
        with pytest.raises(ModelImportError, match="not a loadable Olmo-3 model") as info:
            store.import_model(folder, link=link)
        for words in BROKEN[case][1]:
            assert words in str(info.value)
    assert store.list_models() == []
    assert not (store.models_dir / "local").exists() or not any((store.models_dir / "local").iterdir())


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_download_is_never_installed(tmp_path, plain, case):
    with FakeHub() as hub:
        hub.add_repo(REPO, BROKEN[case][0](_files(plain)))
        store = _store(tmp_path, hub.url)
        final = store.start_download(REPO).wait(60)
    assert isinstance(final, DownloadFailed) and final.code == "verify_failed", final
    assert final.message.startswith(f"{REPO} downloaded but does not load: ")
    for words in BROKEN[case][1]:
        assert words in final.message
    [listed] = store.list_models()
    assert listed.status == "incomplete" and not listed.installed
    assert not (listed.path / ".olmo-desktop.json").exists()


def test_sound_folders_still_pass(tmp_path, plain):
    """The checks refuse the broken, not the sound: the plain folder, a sharded copy and a linked import."""
    store = _store(tmp_path)
    assert store.import_model(plain).installed
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    files = _files(plain)
    weights = stn.load(files.pop(WEIGHTS))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[:20], "model-00002-of-00002.safetensors": names[20:]}
    for shard, keys in shards.items():
        (sharded / shard).write_bytes(stn.save({k: weights[k] for k in keys}))
    index = {"weight_map": {k: s for s, ks in shards.items() for k in ks}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    for name, data in files.items():
        (sharded / name).write_bytes(data)
    assert store.import_model(sharded, link=True).installed

    # The same tensor in two shards is refused (which copy would the loader keep?).
    (sharded / "model-00002-of-00002.safetensors").write_bytes(
        stn.save({k: weights[k] for k in [*shards["model-00002-of-00002.safetensors"], names[0]]})
    )
    with pytest.raises(ModelImportError, match=f"tensor '{names[0]}' is in both model-00001"):
        store.import_model(sharded, name="local/dup")


def test_broken_model_in_the_hf_cache_is_listed_incomplete(tmp_path, plain):
    from huggingface_hub import snapshot_download

    with FakeHub() as hub:
        hub.add_repo(REPO, BROKEN["wrong-shape"][0](_files(plain)))
        snapshot_download(REPO, cache_dir=tmp_path / "hf-cache", endpoint=hub.url, token=False)
    [found] = _store(tmp_path, offline=True).list_models()
    assert found.source == "hf_cache" and found.status == "incomplete" and not found.installed
    assert "in the Hugging Face cache but" in found.problem and f"'{NORM}' has shape [32]" in found.problem


CHILD = """
import json, sys
from olmo3.hub import ModelStore, RetryPolicy
from olmo3.memory import memory_budget

models, endpoint, folder = sys.argv[1:4]
retry = RetryPolicy(planning_attempts=1)
store = ModelStore(models, include_hf_cache=False, endpoint=endpoint, token=False, retry=retry)
downloaded = store.download("someone/Olmo-3-Tiny")
imported = store.import_model(folder)
listed = [m.name for m in store.installed_models()]
catalog = store.catalog()
budget = memory_budget()
mlx = sorted(m for m in sys.modules if m == "mlx" or m.startswith(("mlx.", "mlx_lm")))
print(json.dumps({"listed": listed, "mlx": mlx, "budget": budget.source, "items": len(catalog)}))
"""


def test_download_import_list_and_budget_never_import_mlx(tmp_path, plain):
    with FakeHub() as hub:
        hub.add_folder("someone/Olmo-3-Tiny", plain)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / "models"), hub.url, str(plain)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "HF_HUB_DISABLE_TELEMETRY": "1", "HOME": str(tmp_path)},
        )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mlx"] == []
    assert sorted(result["listed"]) == ["local/Olmo-3-Tiny", "someone/Olmo-3-Tiny"]
    assert result["budget"] == "ram_fraction" and result["items"] > 0
