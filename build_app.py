"""Build Olmo Desktop with PyInstaller: ``dist/Olmo Desktop.app`` on macOS, ``dist/Olmo Desktop/`` on Linux.

    python build_app.py [--clean] [--self-test] [--sign IDENTITY] [--notarize PROFILE] [--dmg]
                        [--distpath DIR] [--workpath DIR]

One-folder PyInstaller build (``onedir``), wrapped in ``BUNDLE`` on macOS (on Linux ``BUNDLE`` is a no-op, so
the same spec gives a one-folder smoke build that CI runs with ``--self-test``). Onefile is not used: it unpacks
the whole app on every start and does not work signed and sandboxed.

The spec is generated (``<workpath>/olmo_desktop.spec``, a few lines) and calls :func:`define_targets` here, so
every decision lives in this file as ordinary, tested Python:

* **Entry script** ``resources/launcher.py``: ``multiprocessing.freeze_support()``, ``--self-test``, then
  ``desktop.__main__.main()``.
* **MLX's metallib.** MLX finds its GPU kernels (``mlx.metallib``) next to the *path libmlx was loaded from*
  (``dladdr``), not next to the Python package. PyInstaller ≥ 6 keeps ``libmlx.dylib`` in ``mlx/lib/`` and
  links it from the top level of ``Contents/Frameworks``; the extension modules are rewritten to load the
  top-level name, so MLX searches ``Contents/Frameworks/`` (the mlx 0.32 frozen-app failure, stenoai#515, is a
  metallib present only in ``mlx/lib``). If dyld reports the resolved path instead, MLX searches
  ``mlx/lib/``. We ship the metallib once, in ``mlx/lib/`` (beside the real libmlx), plus a relative symlink
  ``mlx.metallib -> mlx/lib/mlx.metallib`` at the top level, so both lookups succeed without a second
  ~180 MB copy. ``--self-test`` on the built app proves which one MLX used (the JSON's ``libmlx``/``metallib``).
* **Hidden imports** for what is imported through ``importlib``: our ``olmo3``/``desktop`` packages,
  ``mlx_lm.models.olmo3`` (mlx-lm's loader picks model modules by name), ``mlx_lm.tool_parsers.*`` and
  ``mlx_lm.chat_templates.*`` (chosen at run time from the tokenizer's chat template), all of ``mlx``, and the
  uvicorn protocol, loop and lifespan modules the local server's configuration names.
* **Metadata** (``*.dist-info``) for packages whose presence is tested with ``importlib.metadata``
  (huggingface_hub checks hf_xet/httpx2/jinja/numpy/safetensors; transformers checks its dependencies).
* **Size**: unused Qt modules, tkinter and heavy optional ML frameworks are excluded; Qt translations are dropped.
* **Signing** (macOS): ``--sign IDENTITY`` makes PyInstaller sign every binary and the bundle with the hardened
  runtime and ``resources/entitlements.plist``; strict signing errors and a signature verification are on.
  ``--notarize PROFILE`` (a ``notarytool store-credentials`` profile) notarizes and staples; ``--dmg`` makes a
  compressed disk image. Each step is skipped with a message when its tool is missing (e.g. on Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
APP_NAME = "Olmo Desktop"
BUNDLE_ID = "org.allenai.olmo-desktop"
MIN_MACOS = "14.0"  # MLX's PyPI wheels need macOS 14 on Apple silicon
LAUNCHER = Path("resources") / "launcher.py"
ENTITLEMENTS = Path("resources") / "entitlements.plist"
ICON_PNG = Path("resources") / "icons" / "app-icon-1024.png"
ICON_SVG = Path("resources") / "icons" / "app-icon.svg"
SPEC_NAME = "olmo_desktop.spec"

# Files under resources/ that are for building, not for the running app.
BUILD_ONLY_RESOURCES = frozenset({"launcher.py", "entitlements.plist", "Info.plist.extra", "olmo_desktop.spec"})

# Modules imported through importlib (or lazily) that PyInstaller's static analysis cannot see. Our own
# packages are listed from their files (no import needed); the others through PyInstaller's collect_submodules.
OWN_PACKAGES = ("olmo3", "desktop")
HIDDEN_IMPORT_PACKAGES = ("mlx", "mlx_lm.tool_parsers", "mlx_lm.chat_templates")
HIDDEN_IMPORTS = (
    "mlx_lm.models.olmo3",
    "mlx_lm.models.base",
    "mlx_lm.models.cache",
    "mlx_lm.models.rope_utils",
    "mlx_lm.models.activations",
    "mlx_lm.tokenizer_utils",
    "mlx_lm.sample_utils",
    "mlx_lm.generate",
    # The local server: uvicorn imports these by name (olmo3.serve.server.UVICORN_MODULES).
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.off",
    "uvicorn.loops.asyncio",
)

# Distributions whose metadata is looked up at run time (importlib.metadata.version / PackageNotFoundError checks).
# transformers' own hook adds its dependency table; these are listed explicitly so a hook change cannot drop them.
METADATA_PACKAGES = (
    "huggingface_hub",
    "hf_xet",
    "httpx2",
    "Jinja2",
    "numpy",
    "safetensors",
    "tokenizers",
    "transformers",
    "tqdm",
    "regex",
    "filelock",
    "packaging",
    "PyYAML",
    "mlx",
    "mlx-lm",
    "platformdirs",
)

# PySide6-Essentials modules the app does not use. PyInstaller collects only imported Qt modules, so these
# matter when something imports one indirectly; listing them keeps the bundle small and the choice explicit.
QT_EXCLUDES = tuple(
    f"PySide6.{m}"
    for m in (
        "QtQml",
        "QtQuick",
        "QtQuickWidgets",
        "QtQuickControls2",
        "QtQuick3D",
        "QtQuickTest",
        "QtNetwork",
        "QtNetworkAuth",
        "QtWebEngineCore",
        "QtWebEngineWidgets",
        "QtWebEngineQuick",
        "QtWebChannel",
        "QtWebSockets",
        "QtWebView",
        "QtHttpServer",
        "Qt3DCore",
        "Qt3DRender",
        "Qt3DInput",
        "Qt3DLogic",
        "Qt3DAnimation",
        "Qt3DExtras",
        "QtMultimedia",
        "QtMultimediaWidgets",
        "QtSpatialAudio",
        "QtCharts",
        "QtDataVisualization",
        "QtGraphs",
        "QtGraphsWidgets",
        "QtPdf",
        "QtPdfWidgets",
        "QtDesigner",
        "QtUiTools",
        "QtHelp",
        "QtSql",
        "QtTest",
        "QtBluetooth",
        "QtNfc",
        "QtPositioning",
        "QtLocation",
        "QtSensors",
        "QtSerialPort",
        "QtSerialBus",
        "QtRemoteObjects",
        "QtScxml",
        "QtStateMachine",
        "QtTextToSpeech",
        "QtOpenGL",
        "QtOpenGLWidgets",
        "QtDBus",
        "QtConcurrent",
        "QtXml",
        "QtAxContainer",
    )
)
# Heavy optional imports of transformers & co. that would be bundled if installed in the build environment.
OTHER_EXCLUDES = (
    "tkinter",
    "_tkinter",
    "torch",
    "torchvision",
    "torchaudio",
    "tensorflow",
    "jax",
    "jaxlib",
    "flax",
    "keras",
    "onnx",
    "onnxruntime",
    "pandas",
    "matplotlib",
    "scipy",
    "sklearn",
    "IPython",
    "notebook",
    "jupyter_client",
    "pytest",
    "_pytest",
    "pytestqt",
    "PIL",
    "cv2",
    "datasets",
    "accelerate",
    "mlx_lm.tuner",
    "mlx_lm.server",
)
# Collected files dropped after analysis (destination path prefixes): Qt's translations of its own dialogs
# (the app is English-only), and MLX's C++ headers and CMake files.
PRUNE_PREFIXES = ("PySide6/Qt/translations/", "PySide6/translations/", "mlx/include/", "mlx/share/")
# Libraries that PyInstaller's ctypes scan finds on the build machine but the app never loads (transformers
# probes for CUDA's runtime by name).
PRUNE_LIBRARIES = ("libcudart",)

ICONSET_SIZES = (16, 32, 128, 256, 512)  # each also at @2x: 16 ... 1024 px


# ---------------------------------------------------------------------- pure parts
@dataclass(frozen=True)
class BuildConfig:
    """What the generated spec needs; serialised into it as JSON."""

    root: str
    version: str
    icon: str | None = None
    codesign_identity: str | None = None
    entitlements: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BuildConfig:
        return cls(**json.loads(text))


def read_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project] version`` from pyproject.toml, with an error that names the file when it is missing."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"build_app: {pyproject} not found (run build_app.py from the repository)") from None
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"build_app: {pyproject} is not valid TOML: {e}") from None
    version = data.get("project", {}).get("version")
    if not isinstance(version, str) or not version.strip():
        raise SystemExit(f"build_app: {pyproject} has no [project] version string")
    return version.strip()


def info_plist(version: str) -> dict[str, Any]:
    """Info.plist keys for BUNDLE (applied last, so they win over PyInstaller's defaults).

    PyInstaller writes the name, identifier, executable, icon and short version itself; it does not write
    ``CFBundleVersion`` or ``LSMinimumSystemVersion``. ``NSPrincipalClass`` is needed for retina rendering and
    ``NSRequiresAquaSystemAppearance: False`` lets Qt follow dark mode.
    """
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "LSMinimumSystemVersion": MIN_MACOS,
        "NSHighResolutionCapable": True,
        "NSPrincipalClass": "NSApplication",
        "NSRequiresAquaSystemAppearance": False,
        "LSApplicationCategoryType": "public.app-category.productivity",
    }


def resource_datas(root: Path) -> list[tuple[str, str]]:
    """``(source file, destination folder)`` pairs for everything under ``resources/`` the app reads at run time."""
    base = root / "resources"
    out: list[tuple[str, str]] = []
    for path in sorted(base.rglob("*")):
        if not path.is_file() or path.name in BUILD_ONLY_RESOURCES or "__pycache__" in path.parts:
            continue
        out.append((str(path), str(path.parent.relative_to(root))))
    return out


def metallib_entries(mlx_dir: Path | None) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The metallib as data in ``mlx/lib`` and a top-level symlink to it (see the module docstring).

    Returns ``(datas, symlink_toc_entries)``; both empty where MLX has no metallib (Linux, CPU-only MLX).
    """
    if mlx_dir is None:
        return [], []
    metallib = mlx_dir / "lib" / "mlx.metallib"
    if not metallib.is_file():
        return [], []
    # PyInstaller SYMLINK entries are (destination, link target relative to the destination's folder, "SYMLINK").
    return [(str(metallib), "mlx/lib")], [("mlx.metallib", "mlx/lib/mlx.metallib", "SYMLINK")]


def own_modules(root: Path) -> list[str]:
    """Every module of our own packages, so a module imported only by name (importlib) is still bundled."""
    names = []
    for package in OWN_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(names))


def prune(toc: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Drop :data:`PRUNE_PREFIXES` and :data:`PRUNE_LIBRARIES`; done before signing, so nothing needs re-signing."""
    kept = []
    for entry in toc:
        dest = entry[0].replace(os.sep, "/")
        if dest.startswith(PRUNE_PREFIXES) or os.path.basename(dest).startswith(PRUNE_LIBRARIES):
            continue
        kept.append(entry)
    return kept


def excludes() -> list[str]:
    return [*QT_EXCLUDES, *OTHER_EXCLUDES]


def bundle_path(distpath: Path) -> Path:
    return distpath / (f"{APP_NAME}.app" if sys.platform == "darwin" else APP_NAME)


def executable_path(distpath: Path) -> Path:
    if sys.platform == "darwin":
        return distpath / f"{APP_NAME}.app" / "Contents" / "MacOS" / APP_NAME
    return distpath / APP_NAME / APP_NAME


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of regular files under ``path``, symlinks not followed (what the bundle really weighs)."""
    total = files = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not os.path.islink(p):
                total += st.st_size
                files += 1
    return total, files


def largest_parts(path: Path, top: int = 8) -> list[tuple[str, int]]:
    """The biggest immediate children of the folder holding the collected files (for the size report)."""
    base = path / "Contents" / "Resources" if (path / "Contents").is_dir() else path / "_internal"
    if not base.is_dir():
        base = path
    sizes = []
    for child in base.iterdir():
        if child.is_symlink():
            continue
        size = child.stat().st_size if child.is_file() else tree_size(child)[0]
        sizes.append((child.name, size))
    # In a .app, binaries live in Contents/Frameworks; count that tree as one entry.
    frameworks = path / "Contents" / "Frameworks"
    if frameworks.is_dir():
        sizes.append(("Contents/Frameworks (binaries)", tree_size(frameworks)[0]))
    return sorted(sizes, key=lambda kv: -kv[1])[:top]


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def find_tool(name: str) -> str | None:
    return shutil.which(name)


def skip(step: str, why: str) -> None:
    print(f"build_app: skipping {step}: {why}", flush=True)


# ---------------------------------------------------------------------- the spec (runs inside PyInstaller)
SPEC_TEMPLATE = """\
# Generated by build_app.py; do not edit (edit build_app.py and rerun it).
import sys
sys.path.insert(0, {root!r})
import build_app

build_app.define_targets(globals(), build_app.BuildConfig.from_json({config!r}))
"""


def write_spec(config: BuildConfig, workpath: Path) -> Path:
    workpath.mkdir(parents=True, exist_ok=True)
    spec = workpath / SPEC_NAME
    spec.write_text(SPEC_TEMPLATE.format(root=config.root, config=config.to_json()), encoding="utf-8")
    return spec


def define_targets(g: dict[str, Any], config: BuildConfig) -> None:
    """Analysis → PYZ → EXE → COLLECT → BUNDLE, using the classes PyInstaller puts in the spec's globals."""
    from PyInstaller.utils.hooks import collect_dynamic_libs, collect_submodules, copy_metadata, get_package_paths

    root = Path(config.root)
    hidden = [*HIDDEN_IMPORTS, *own_modules(root)]
    for package in HIDDEN_IMPORT_PACKAGES:
        hidden += collect_submodules(package, filter=lambda name: ".tests" not in name)

    datas: list[tuple[str, str]] = resource_datas(root)
    for dist in METADATA_PACKAGES:
        try:
            datas += copy_metadata(dist)
        except Exception:
            print(f"build_app: no metadata for {dist} (not installed); skipped")
    try:
        mlx_dir: Path | None = Path(get_package_paths("mlx")[1])
    except Exception:
        mlx_dir = None
    metallib_datas, metallib_links = metallib_entries(mlx_dir)
    datas += metallib_datas

    a = g["Analysis"](
        [str(root / LAUNCHER)],
        pathex=[str(root)],
        binaries=collect_dynamic_libs("mlx"),
        datas=datas,
        hiddenimports=sorted(set(hidden)),
        hookspath=[],
        runtime_hooks=[],
        excludes=excludes(),
        noarchive=False,
        optimize=0,
        # transformers keeps its hook's "pyz+py" mode (~45 MB of .py files): at import it walks its own source
        # tree (utils.import_utils.define_import_structure), so a PYZ-only transformers fails to import.
    )
    a.datas = prune(list(a.datas)) + metallib_links
    a.binaries = prune(list(a.binaries))
    pyz = g["PYZ"](a.pure)
    exe = g["EXE"](
        pyz,
        a.scripts,
        [],
        exclude_binaries=True,
        name=APP_NAME,
        debug=False,
        strip=False,
        upx=False,  # UPX-compressed binaries fail macOS code-signature validation
        console=False,  # console=True would make the .app LSBackgroundOnly: no Dock icon, no menu bar
        argv_emulation=False,
        codesign_identity=config.codesign_identity,
        entitlements_file=config.entitlements,
    )
    coll = g["COLLECT"](exe, a.binaries, a.datas, strip=False, upx=False, name=APP_NAME)
    g["BUNDLE"](
        coll,
        name=f"{APP_NAME}.app",
        icon=config.icon,
        bundle_identifier=BUNDLE_ID,
        version=config.version,
        info_plist=info_plist(config.version),
    )


# ---------------------------------------------------------------------- icon
def make_iconset(source: Path, iconset: Path) -> Path:
    """Write the ``.iconset`` folder ``iconutil`` expects (16…512 px, each also @2x) from a PNG or SVG, with Qt."""
    from PySide6.QtCore import QSize, Qt
    from PySide6.QtGui import QImage, QPainter

    if source.suffix.lower() == ".svg":
        from PySide6.QtSvg import QSvgRenderer

        renderer = QSvgRenderer(str(source))
        if not renderer.isValid():
            raise SystemExit(f"build_app: {source} is not a valid SVG")
        master = QImage(1024, 1024, QImage.Format.Format_ARGB32_Premultiplied)
        master.fill(Qt.GlobalColor.transparent)
        painter = QPainter(master)
        renderer.render(painter)
        painter.end()
    else:
        master = QImage(str(source))
        if master.isNull():
            raise SystemExit(f"build_app: cannot read the icon image {source}")
    iconset.mkdir(parents=True, exist_ok=True)
    for size in ICONSET_SIZES:
        for scale, suffix in ((1, ""), (2, "@2x")):
            px = size * scale
            image = master.scaled(
                QSize(px, px), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            out = iconset / f"icon_{size}x{size}{suffix}.png"
            if not image.save(str(out), "PNG"):
                raise SystemExit(f"build_app: could not write {out}")
    return iconset


def icon_source(root: Path) -> Path | None:
    for candidate in (root / ICON_PNG, root / ICON_SVG):
        if candidate.is_file():
            return candidate
    return None


def build_icns(root: Path, workpath: Path) -> Path | None:
    """``<workpath>/Olmo Desktop.icns`` via ``iconutil``; None (PyInstaller's default icon) when that is impossible."""
    source = icon_source(root)
    if source is None:
        skip("the app icon", f"neither {ICON_PNG} nor {ICON_SVG} exists")
        return None
    iconutil = find_tool("iconutil")
    if iconutil is None:
        skip("the .icns icon", "iconutil not found (it ships with macOS)")
        return None
    iconset = make_iconset(source, workpath / f"{APP_NAME}.iconset")
    icns = workpath / f"{APP_NAME}.icns"
    run([iconutil, "-c", "icns", str(iconset), "-o", str(icns)])
    print(f"build_app: icon {icns} from {source.relative_to(root)}")
    return icns


# ---------------------------------------------------------------------- macOS: sign, notarize, dmg
def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a build step, echoing it; a failure ends the build with the step's own output."""
    print("build_app: $ " + " ".join(f"'{c}'" if " " in c else c for c in cmd), flush=True)
    try:
        return subprocess.run(cmd, check=True, text=True, **kwargs)
    except subprocess.CalledProcessError as e:
        for stream in (e.stdout, e.stderr):
            if stream:
                print(stream[-4000:], file=sys.stderr)
        raise SystemExit(f"build_app: {Path(cmd[0]).name} failed with exit code {e.returncode}") from None


def verify_signature(app: Path) -> None:
    codesign = find_tool("codesign")
    if codesign is None:
        skip("signature verification", "codesign not found")
        return
    run([codesign, "--verify", "--deep", "--strict", "--verbose=2", str(app)])
    run([codesign, "--display", "--verbose=2", str(app)])


def notarize(target: Path, profile: str, workpath: Path) -> bool:
    """Submit ``target`` (.app or .dmg) to Apple's notary service, wait, and staple the ticket."""
    xcrun = find_tool("xcrun")
    found = (
        xcrun is not None
        and subprocess.run([xcrun, "--find", "notarytool"], capture_output=True, check=False).returncode == 0
    )
    if not found:
        skip(f"notarizing {target.name}", "xcrun notarytool not found (needs Xcode 13+ or its command line tools)")
        return False
    upload = target
    if target.suffix == ".app":
        ditto = find_tool("ditto") or "/usr/bin/ditto"
        upload = workpath / f"{target.stem}-notarize.zip"
        upload.unlink(missing_ok=True)
        run([ditto, "-c", "-k", "--sequesterRsrc", "--keepParent", str(target), str(upload)])
    result = run(
        [
            xcrun,
            "notarytool",
            "submit",
            str(upload),
            "--keychain-profile",
            profile,
            "--wait",
            "--output-format",
            "json",
        ],
        capture_output=True,
    )
    print(result.stdout)
    status = json.loads(result.stdout or "{}").get("status")
    if status != "Accepted":
        raise SystemExit(
            f"build_app: notarization of {target.name} ended with status {status!r}; see "
            f"`xcrun notarytool log <id> --keychain-profile {profile}`"
        )
    run([xcrun, "stapler", "staple", str(target)])
    run([xcrun, "stapler", "validate", str(target)])
    spctl = find_tool("spctl")
    if spctl and target.suffix == ".app":
        run([spctl, "--assess", "--type", "execute", "--verbose=4", str(target)])
    return True


def make_dmg(app: Path, distpath: Path, version: str, workpath: Path, identity: str | None) -> Path | None:
    hdiutil = find_tool("hdiutil")
    if hdiutil is None:
        skip("the disk image", "hdiutil not found (it ships with macOS)")
        return None
    staging = workpath / "dmg"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ditto = find_tool("ditto") or "/usr/bin/ditto"
    run([ditto, str(app), str(staging / app.name)])  # ditto keeps symlinks, signatures and extended attributes
    (staging / "Applications").symlink_to("/Applications")
    dmg = distpath / f"Olmo-Desktop-{version}.dmg"
    dmg.unlink(missing_ok=True)
    run(
        [
            hdiutil,
            "create",
            "-volname",
            APP_NAME,
            "-srcfolder",
            str(staging),
            "-fs",
            "HFS+",
            "-format",
            "UDZO",
            "-ov",
            str(dmg),
        ]
    )
    if identity:
        run(["codesign", "--sign", identity, "--timestamp", str(dmg)])
    print(f"build_app: disk image {dmg} ({mb(dmg.stat().st_size)})")
    return dmg


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build Olmo Desktop.app (macOS) or the one-folder Linux bundle with PyInstaller."
    )
    p.add_argument(
        "--sign",
        metavar="IDENTITY",
        help='macOS: codesign identity, e.g. "Developer ID Application: Name (TEAMID)"; hardened runtime',
    )
    p.add_argument(
        "--notarize",
        metavar="PROFILE",
        help="macOS: notarytool keychain profile (xcrun notarytool store-credentials PROFILE); needs --sign",
    )
    p.add_argument("--dmg", action="store_true", help="macOS: also make dist/Olmo-Desktop-VERSION.dmg")
    p.add_argument("--clean", action="store_true", help="remove earlier build output and PyInstaller's cache first")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="run the built app's --self-test (before notarizing); stops the build if it fails",
    )
    p.add_argument("--distpath", type=Path, default=ROOT / "dist", help="where the app goes (default: dist/)")
    p.add_argument(
        "--workpath",
        type=Path,
        default=ROOT / "build" / "pyinstaller",
        help="PyInstaller's work folder (default: build/pyinstaller/)",
    )
    args = p.parse_args(argv)
    if args.notarize and not args.sign:
        p.error("--notarize needs --sign IDENTITY: Apple notarizes only apps signed with a Developer ID")
    return args


def check_pyinstaller() -> str:
    try:
        import PyInstaller
    except ImportError:
        raise SystemExit(
            "build_app: PyInstaller is not installed: pip install -e '.[build]' (or pip install 'pyinstaller>=6.10')"
        ) from None
    version = PyInstaller.__version__
    if int(version.split(".")[0]) < 6:
        raise SystemExit(f"build_app: PyInstaller {version} is too old; need >= 6 (the .app layout relies on it)")
    return version


def signing_identity(requested: str | None) -> str | None:
    if not requested:
        return None
    if sys.platform != "darwin" or find_tool("codesign") is None:
        skip("signing", "codesign not found (signing needs macOS); the build is unsigned")
        return None
    return requested


def self_test(distpath: Path, workpath: Path) -> None:
    exe = executable_path(distpath)
    shot = workpath / "self-test.png"
    print(f"build_app: running {exe} --self-test", flush=True)
    result = subprocess.run(
        [str(exe), "--self-test", "--screenshot", str(shot)], text=True, capture_output=True, check=False, timeout=600
    )
    sys.stderr.write(result.stderr[-4000:])
    print(result.stdout.strip())
    if result.returncode != 0:
        raise SystemExit(f"build_app: the built app's self-test failed (exit {result.returncode}); see above")
    print(f"build_app: self-test passed; screenshot {shot}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    pyinstaller_version = check_pyinstaller()
    version = read_version()
    distpath, workpath = args.distpath.resolve(), args.workpath.resolve()
    if sys.platform == "darwin" and platform.machine() != "arm64":
        print("build_app: warning: MLX's macOS wheels are for Apple silicon; this build will not run MLX on the GPU")
    app = bundle_path(distpath)
    if args.clean:
        shutil.rmtree(workpath, ignore_errors=True)
        shutil.rmtree(app, ignore_errors=True)
        shutil.rmtree(distpath / APP_NAME, ignore_errors=True)  # COLLECT's folder (the .app's source on macOS)
    identity = signing_identity(args.sign)
    icon = build_icns(ROOT, workpath) if sys.platform == "darwin" else None
    config = BuildConfig(
        root=str(ROOT),
        version=version,
        icon=str(icon) if icon else None,
        codesign_identity=identity,
        entitlements=str(ROOT / ENTITLEMENTS) if identity else None,
    )
    spec = write_spec(config, workpath)

    env = dict(os.environ)
    # A preloaded library (e.g. the OpenBLAS speed-up for MLX's Linux CPU wheel) would be picked up by
    # PyInstaller's dependency analysis and bundled; the frozen app must not depend on it.
    env.pop("LD_PRELOAD", None)
    if sys.platform == "darwin":
        # Fail the build on any signing error (ad-hoc signing too: unsigned code does not run on Apple silicon)
        # and verify the bundle's signature with `codesign --verify --deep --strict` at the end.
        env["PYINSTALLER_STRICT_BUNDLE_CODESIGN_ERROR"] = "1"
        env["PYINSTALLER_VERIFY_BUNDLE_SIGNATURE"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(spec),
        "--noconfirm",
        "--log-level",
        "WARN",
        "--distpath",
        str(distpath),
        "--workpath",
        str(workpath),
    ]
    if args.clean:
        cmd.append("--clean")
    print(
        f"build_app: {APP_NAME} {version}, PyInstaller {pyinstaller_version}, Python {platform.python_version()}, "
        f"{sys.platform}/{platform.machine()}",
        flush=True,
    )
    run(cmd, env=env, cwd=ROOT)
    if not app.exists():
        raise SystemExit(f"build_app: PyInstaller finished but {app} does not exist")
    if sys.platform == "darwin":
        # COLLECT's one-folder output is only BUNDLE's input; the .app is the product.
        shutil.rmtree(distpath / APP_NAME, ignore_errors=True)
    build_s = time.perf_counter() - t0

    if identity:
        verify_signature(app)
    if args.self_test:
        self_test(distpath, workpath)
    if args.notarize and identity:
        notarize(app, args.notarize, workpath)
    elif args.notarize:
        skip("notarization", "the app is not signed")
    dmg = None
    if args.dmg:
        if sys.platform == "darwin":
            dmg = make_dmg(app, distpath, version, workpath, identity)
            if dmg and args.notarize and identity:
                notarize(dmg, args.notarize, workpath)
        else:
            skip("the disk image", "hdiutil needs macOS")

    size, files = tree_size(app)
    print(f"\nbuild_app: built {app}")
    print(
        f"build_app: bundle size {mb(size)} in {files} files; build time {build_s:.0f} s "
        f"(total {time.perf_counter() - t0:.0f} s)"
    )
    for name, nbytes in largest_parts(app):
        print(f"build_app:   {mb(nbytes):>8}  {name}")
    print(f"build_app: run it: '{executable_path(distpath)}'" + (f"; disk image: {dmg}" if dmg else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
