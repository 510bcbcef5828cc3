"""build_app.py and the ``--self-test``: fast tests of the build's pure parts, the self-test run unfrozen through
the launcher, and (``slow``) a real PyInstaller one-folder build whose frozen ``--self-test`` must pass."""

from __future__ import annotations

import importlib.util
import json
import os
import plistlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import build_app  # noqa: E402 - build_app lives at the repository root, put on sys.path above
from desktop import selftest  # noqa: E402


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a double-clicked app on a headless machine: a fresh HOME, no display, no XDG overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "QT_", "OLMO_DESKTOP")) and k not in ("DISPLAY", "WAYLAND_DISPLAY")
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"expected exactly one JSON line, got stdout:\n{stdout}"
    return json.loads(lines[0])


# ---------------------------------------------------------------------- build_app: pure parts
def test_version_is_read_from_pyproject(tmp_path):
    good = tmp_path / "pyproject.toml"
    good.write_text('[project]\nname = "x"\nversion = " 1.2.3 "\n')
    assert build_app.read_version(good) == "1.2.3"

    missing = tmp_path / "no-version.toml"
    missing.write_text('[project]\nname = "x"\n')
    with pytest.raises(SystemExit, match=r"no-version.toml has no \[project\] version"):
        build_app.read_version(missing)

    broken = tmp_path / "broken.toml"
    broken.write_text("[project\n")
    with pytest.raises(SystemExit, match=r"broken\.toml is not valid TOML"):
        build_app.read_version(broken)

    with pytest.raises(SystemExit, match="not found"):
        build_app.read_version(tmp_path / "absent.toml")

    # The repository's own file: the version the bundle gets is the package version.
    import tomllib

    assert build_app.read_version() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_info_plist_has_the_keys_pyinstaller_does_not_write():
    plist = build_app.info_plist("2.5.0")
    assert plist["CFBundleIdentifier"] == "org.allenai.olmo-desktop"
    assert plist["CFBundleShortVersionString"] == "2.5.0" and plist["CFBundleVersion"] == "2.5.0"
    assert plist["LSMinimumSystemVersion"] == "14.0"
    assert plist["NSHighResolutionCapable"] is True
    assert plist["NSPrincipalClass"] == "NSApplication"
    assert plist["NSRequiresAquaSystemAppearance"] is False
    assert "LSBackgroundOnly" not in plist and "LSUIElement" not in plist  # a Dock icon and a menu bar
    # Every value must be a plist type, or BUNDLE writes a broken Info.plist.
    assert plistlib.loads(plistlib.dumps(plist)) == plist


def test_entitlements_file_is_a_valid_plist_with_the_two_runtime_exceptions():
    data = plistlib.loads((ROOT / build_app.ENTITLEMENTS).read_bytes())
    assert data == {
        "com.apple.security.cs.allow-unsigned-executable-memory": True,
        "com.apple.security.cs.disable-library-validation": True,
    }


def test_metallib_ships_once_in_mlx_lib_with_a_top_level_link(tmp_path):
    mlx_dir = tmp_path / "site-packages" / "mlx"
    (mlx_dir / "lib").mkdir(parents=True)
    assert build_app.metallib_entries(mlx_dir) == ([], [])  # CPU-only MLX (Linux): nothing to place
    assert build_app.metallib_entries(None) == ([], [])

    metallib = mlx_dir / "lib" / "mlx.metallib"
    metallib.write_bytes(b"MTLB fake kernels")
    datas, links = build_app.metallib_entries(mlx_dir)
    assert datas == [(str(metallib), "mlx/lib")]
    assert links == [("mlx.metallib", "mlx/lib/mlx.metallib", "SYMLINK")]

    # Lay the entries out the way COLLECT does (file copied, SYMLINK = os.symlink(target, dest)); the link must
    # reach the file from the top level, where MLX looks when libmlx is loaded through the top-level symlink.
    bundle = tmp_path / "bundle"
    (bundle / "mlx" / "lib").mkdir(parents=True)
    (bundle / "mlx" / "lib" / "mlx.metallib").write_bytes(metallib.read_bytes())
    for dest, target, _ in links:
        os.symlink(target, bundle / dest)
    assert (bundle / "mlx.metallib").read_bytes() == b"MTLB fake kernels"
    top_level_lib = bundle / "libmlx.dylib"  # where dladdr points when dyld keeps the symlinked path
    assert selftest.find_metallib(str(top_level_lib)) == str(bundle / "mlx.metallib")
    assert selftest.find_metallib(str(bundle / "mlx" / "lib" / "libmlx.dylib")) == str(
        bundle / "mlx" / "lib" / "mlx.metallib"
    )


def test_prune_drops_translations_headers_and_cuda_but_keeps_the_rest():
    toc = [
        ("PySide6/Qt/translations/qtbase_de.qm", "/src/a", "DATA"),
        ("mlx/include/mlx/array.h", "/src/b", "DATA"),
        ("libcudart.so", "/usr/local/cuda/lib/libcudart.so", "BINARY"),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", "/src/c", "BINARY"),
        ("mlx/lib/mlx.metallib", "/src/d", "DATA"),
        ("resources/icons/send.svg", "/src/e", "DATA"),
    ]
    assert [e[0] for e in build_app.prune(toc)] == [
        "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "mlx/lib/mlx.metallib",
        "resources/icons/send.svg",
    ]


def test_resource_datas_ship_runtime_files_only():
    datas = build_app.resource_datas(ROOT)
    names = {Path(src).name: dest for src, dest in datas}
    assert names["style.qss"] == "resources"
    assert names["send.svg"] == os.path.join("resources", "icons")
    for build_only in ("launcher.py", "entitlements.plist"):
        assert build_only not in names


def test_excludes_cover_unused_qt_and_never_what_the_app_imports():
    ex = set(build_app.excludes())
    assert {"tkinter", "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtWebEngineCore", "PySide6.Qt3DCore"} <= ex
    used = set()
    for path in [*ROOT.glob("desktop/*.py"), *ROOT.glob("olmo3/*.py")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            for word in line.replace(",", " ").replace("(", " ").split():
                if word.startswith("PySide6.Qt"):
                    used.add(word.rstrip(":"))
    assert used, "expected the GUI to import PySide6 modules"
    assert not (used & ex), f"excluded but imported by the app: {used & ex}"


def test_hidden_imports_name_every_module_of_our_packages():
    modules = build_app.own_modules(ROOT)
    assert {"olmo3", "olmo3.chat.engine", "olmo3.model.tiny", "desktop", "desktop.app", "desktop.selftest"} <= set(
        modules
    )
    files = [p for pkg in ("olmo3", "desktop") for p in ROOT.glob(f"{pkg}/**/*.py") if p.name != "__main__.py"]
    assert len(modules) == len(set(modules)) == len(files)  # one module per file (a package is its __init__.py)
    assert "mlx_lm.models.olmo3" in build_app.HIDDEN_IMPORTS
    from olmo3.serve.server import UVICORN_MODULES

    assert set(UVICORN_MODULES) <= set(build_app.HIDDEN_IMPORTS)  # what uvicorn imports by name for our config


def test_generated_spec_compiles_and_carries_the_config(tmp_path):
    config = build_app.BuildConfig(
        root=str(ROOT), version="0.1.0", icon=None, codesign_identity="Dev ID (T)", entitlements="/x/entitlements.plist"
    )
    spec = build_app.write_spec(config, tmp_path / "work")
    text = spec.read_text()
    compile(text, str(spec), "exec")
    assert build_app.BuildConfig.from_json(config.to_json()) == config
    assert "define_targets" in text and repr(config.to_json()) in text


def test_tree_size_counts_files_once_and_skips_symlinks(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big").write_bytes(b"x" * 1000)
    (tmp_path / "small").write_bytes(b"y" * 10)
    os.symlink("a/big", tmp_path / "link")
    assert build_app.tree_size(tmp_path) == (1010, 2)


def test_iconset_has_every_size_iconutil_wants(tmp_path):
    from PySide6.QtGui import QImage

    source = build_app.icon_source(ROOT)
    if source is None:
        pytest.skip("no app icon (resources/icons/app-icon-1024.png or app-icon.svg) yet")
    iconset = build_app.make_iconset(source, tmp_path / "Olmo Desktop.iconset")
    files = sorted(p.name for p in iconset.iterdir())
    assert len(files) == 10
    for size in build_app.ICONSET_SIZES:
        for scale, suffix in ((1, ""), (2, "@2x")):
            image = QImage(str(iconset / f"icon_{size}x{size}{suffix}.png"))
            assert not image.isNull()
            assert max(image.width(), image.height()) == size * scale


# ---------------------------------------------------------------------- build_app: graceful skips
def test_apple_tools_missing_are_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no codesign, xcrun, hdiutil, iconutil here
    app = tmp_path / "Olmo Desktop.app"
    app.mkdir()

    assert build_app.signing_identity("Developer ID Application: X (T)") is None
    assert build_app.make_dmg(app, tmp_path, "0.1.0", tmp_path / "work", None) is None
    assert build_app.notarize(app, "profile", tmp_path / "work") is False
    assert build_app.build_icns(ROOT, tmp_path / "work") is None
    build_app.verify_signature(app)
    out = capsys.readouterr().out
    assert "skipping signing: codesign not found" in out
    assert "skipping the disk image: hdiutil not found" in out
    assert "skipping notarizing Olmo Desktop.app: xcrun notarytool not found" in out
    assert "skipping the .icns icon: iconutil not found" in out or "skipping the app icon" in out
    assert "skipping signature verification: codesign not found" in out
    assert not (tmp_path / "Olmo-Desktop-0.1.0.dmg").exists()


def test_notarize_without_sign_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        build_app.parse_args(["--notarize", "profile"])
    assert e.value.code == 2
    assert "--notarize needs --sign IDENTITY" in capsys.readouterr().err
    assert build_app.parse_args(["--sign", "X", "--notarize", "p", "--dmg"]).dmg is True


# ---------------------------------------------------------------------- the self-test, unfrozen
def test_qt_platform_is_offscreen_only_without_a_display():
    if sys.platform in ("darwin", "win32"):
        assert selftest.configure_qt_platform({}) is None
        return
    env: dict[str, str] = {}
    assert selftest.configure_qt_platform(env) == "offscreen" and env["QT_QPA_PLATFORM"] == "offscreen"
    env = {"DISPLAY": ":0"}
    assert selftest.configure_qt_platform(env) is None and "QT_QPA_PLATFORM" not in env
    env = {"QT_QPA_PLATFORM": "minimal"}
    assert selftest.configure_qt_platform(env) is None and env["QT_QPA_PLATFORM"] == "minimal"


def test_loaded_libmlx_is_found_where_the_loader_mapped_it():
    import mlx.core  # noqa: F401

    path = selftest.loaded_library_path("libmlx")
    assert path is not None and Path(path).is_file()
    assert [c.name for c in selftest.metallib_candidates(path)] == ["mlx.metallib", "mlx.metallib", "default.metallib"]
    assert selftest.loaded_library_path("libdefinitely-not-loaded") is None


def test_self_test_through_the_launcher_passes_and_writes_a_screenshot(tmp_path):
    shot = tmp_path / "shots" / "window.png"
    (tmp_path / "home").mkdir()
    env = clean_env(tmp_path / "home", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(ROOT / build_app.LAUNCHER), "--self-test", "--screenshot", str(shot)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json_line(result.stdout)
    assert report["ok"] is True and report["frozen"] is False
    assert report["checks"]["failed"] == {}
    assert set(report["checks"]["passed"]) == {
        "qt_app",
        "data_dir_writable",
        "mlx_eval",
        "tiny_model",
        "engine_generate",
        "local_server",
        "engine_shutdown",
        "dynamic_imports",
        "main_window",
        "screenshot",
    }
    assert report["tokens_generated"] >= 1 and report["engine_stopped"] is True
    assert report["served"]["status"] == 200 and report["served"]["usage"]["completion_tokens"] >= 1
    assert report["window_class"] == "desktop.app.MainWindow"
    if not sys.platform.startswith("darwin"):
        assert report["qpa_platform"] == "offscreen" and report["qpa_forced_offscreen"] is True
    assert report["user_data_dir"].startswith(str(tmp_path / "home"))
    if sys.platform.startswith("linux"):  # (Cocoa may keep window state under ~/Library on a Mac)
        # Everything the checks wrote went to temp dirs: the user's home is left exactly as it was (empty).
        assert list((tmp_path / "home").rglob("*")) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["screenshot_bytes"] == shot.stat().st_size > 0
    assert "self-test passed: 10 checks" in result.stderr


def test_self_test_fails_loudly_when_the_data_folder_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder's parent should be")
    env = clean_env(tmp_path / "home", PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(blocker / "share"))
    if sys.platform == "darwin":
        env["HOME"] = str(blocker)  # macOS: ~/Library/Application Support ignores XDG
    result = subprocess.run(
        [sys.executable, "-m", "desktop.selftest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    report = json_line(result.stdout)
    assert report["ok"] is False
    assert "not writable" in report["checks"]["failed"]["data_dir_writable"]
    assert "engine_generate" in report["checks"]["passed"]  # the other checks still ran
    assert "self-test FAILED: data_dir_writable: the data folder" in result.stderr


# ---------------------------------------------------------------------- the real frozen build
@pytest.mark.slow
def test_frozen_one_folder_build_passes_its_self_test(tmp_path):
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (pip install -e '.[test]')")
    dist, work = tmp_path / "dist", tmp_path / "work"
    t0 = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "build_app.py"), "--distpath", str(dist), "--workpath", str(work)]
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    build_s = time.perf_counter() - t0
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    assert "bundle size" in build.stdout

    exe = build_app.executable_path(dist)
    assert exe.is_file() and os.access(exe, os.X_OK)
    bundle = build_app.bundle_path(dist)
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*")}
    assert not any(Path(f).name.startswith(("libopenblas.so", "libcudart")) for f in files), (
        "a preloaded or probed library from the build machine was bundled"
    )
    assert not any("tkinter" in f or "/QtQml" in f or "QtWebEngine" in f for f in files)
    assert any(f.endswith("resources/style.qss") for f in files)

    shot = tmp_path / "frozen.png"
    env = clean_env(tmp_path / "home", QT_QPA_PLATFORM="offscreen")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [str(exe), "--self-test", "--screenshot", str(shot)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    report = json_line(run.stdout)
    assert report["ok"] is True and report["frozen"] is True
    assert report["meipass"] and Path(report["meipass"]).is_relative_to(bundle)
    assert report["checks"]["failed"] == {}
    assert report["tokens_generated"] >= 1
    assert report["window_class"] == "desktop.app.MainWindow"
    assert report["libmlx"] and Path(report["libmlx"]).is_relative_to(bundle)  # MLX from the bundle, not the venv
    if importlib.util.find_spec("hf_xet") is not None:  # its metadata must be bundled, or downloads skip Xet
        assert report["hf_xet_available"] is True
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    size, nfiles = build_app.tree_size(bundle)
    print(
        f"\nfrozen build: {build_s:.0f} s, bundle {size / 1e6:.0f} MB in {nfiles} files, "
        f"self-test {report['elapsed_s']} s, {report['tok_per_s']} tok/s"
    )
