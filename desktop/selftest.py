"""``--self-test``: prove that a build (frozen or not) can do everything the app needs, without a user.

The packaged app is tested by running it, not by inspecting it: ``"Olmo Desktop" --self-test`` (or
``python -m desktop.selftest``) runs these checks in order and prints **one JSON line** on stdout:

1. ``qt_app`` – the ``QApplication`` starts (``desktop.app.create_application``: names the app, loads its icon
   from ``resources/``). ``QT_QPA_PLATFORM=offscreen`` is set first when no display is configured, so a
   headless CI machine or an SSH session works; a missing platform plugin aborts Qt here.
2. ``data_dir_writable`` – ``platformdirs.user_data_dir("Olmo Desktop")`` can be created and written to.
3. ``mlx_eval`` – ``mx.eval`` of a small matmul on MLX's default device gives the right number. On macOS the
   default device must be the GPU, which makes MLX load ``mlx.metallib`` from next to the loaded ``libmlx``;
   a failure names the metallib and the paths MLX searched (the main bundling risk, see ``build_app.py``).
4. ``tiny_model`` – a tiny random-weight Olmo-3 folder is written to a temp dir (``olmo3.model.tiny``).
5. ``engine_generate`` – :class:`olmo3.chat.engine.Engine` starts its thread, loads that folder, opens a
   conversation and greedily generates a few tokens (tokenizer, chat template, model, KV cache, sampler).
6. ``local_server`` – the local server (``olmo3.serve``: Starlette on uvicorn, on a thread) starts on that engine
   at a free port and answers one ``POST /v1/chat/completions`` (uvicorn imports its protocol, loop and
   lifespan modules by name: a frozen build missing them fails here).
7. ``engine_shutdown`` – ``Engine.shutdown()`` returned True (the thread joined in time).
8. ``dynamic_imports`` – modules that mlx-lm and transformers import by name are present (a real checkpoint
   needs more of them than the tiny model does).
9. ``main_window`` – :class:`desktop.app.MainWindow` is built with every data folder in a temp dir
   (``OLMO_DESKTOP_HOME``), shown (offscreen, or with ``WA_DontShowOnScreen`` on a real display), grabbed,
   and shut down (``MainWindow.shutdown()`` must return True).
10. ``screenshot`` – only with ``screenshot=PATH``: the grab is saved as a non-empty PNG.

It returns 0 when every check passed, else 1 after printing ``self-test FAILED: <check>: <why>`` lines on
stderr. Nothing is written outside the temp dir except the probe in step 2 (a file created and deleted) and
the screenshot.

A frozen app must call ``multiprocessing.freeze_support()`` before anything else (PyInstaller's pitfall:
otherwise a child process re-runs the app); ``resources/launcher.py`` does, then hands ``--self-test`` here.

Environment: ``OLMO_SELFTEST_ALLOW_CPU=1`` accepts MLX's CPU device on macOS (GitHub's macOS runners are VMs
without Metal); it is never needed on Linux, where MLX has only the CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olmo3.appinfo import APP_NAME

ALLOW_CPU_ENV = "OLMO_SELFTEST_ALLOW_CPU"
HOME_ENV = "OLMO_DESKTOP_HOME"  # desktop.paths.HOME_ENV; repeated so this module imports nothing from the GUI early
CONV_ID = "selftest"
PROMPT = "Hello! Say something."
MAX_TOKENS = 8
JOB_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 30.0
WINDOW_SIZE = (1100, 720)

# Packages whose submodules mlx-lm imports by name (chosen from the tokenizer's chat template).
DYNAMIC_PACKAGES = ("mlx_lm.tool_parsers", "mlx_lm.chat_templates")
# Tokenizer classes a real Olmo-3 tokenizer_config.json may name (transformers imports their modules by name).
TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend", "GPT2Tokenizer", "GPT2TokenizerFast")


class CheckFailedError(Exception):
    """A check's own, already clear, failure message (no traceback needed)."""


class SelfTest:
    """Runs the checks, remembers what each found, and renders the JSON report."""

    def __init__(self, screenshot: str | None, workdir: Path) -> None:
        self.screenshot = Path(screenshot).expanduser().resolve() if screenshot else None
        self.workdir = workdir
        self.passed: list[str] = []
        self.failed: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.app: Any = None
        self.tiny_dir: Path | None = None

    # ------------------------------------------------------------------ bookkeeping
    def check(self, name: str, fn: Callable[[], None], *, needs: tuple[str, ...] = ()) -> bool:
        """Run one check; an exception marks it failed with a message. Skips (as failed) when a prerequisite failed."""
        missing = [n for n in needs if n not in self.passed]
        if missing:
            self.failed[name] = f"not run: needs {', '.join(missing)}"
            return False
        try:
            fn()
        except CheckFailedError as e:
            self.failed[name] = str(e)
            return False
        except BaseException as e:  # a self-test reports everything, SystemExit included
            if isinstance(e, KeyboardInterrupt):
                raise
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            self.failed[name] = detail
            print(f"self-test: {name} raised:\n{traceback.format_exc()}", file=sys.stderr)
            return False
        self.passed.append(name)
        return True

    def report(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "frozen": bool(getattr(sys, "frozen", False)),
            "meipass": getattr(sys, "_MEIPASS", None),
            "executable": sys.executable,
            "python": platform.python_version(),
            "platform": platform.platform(),
            **self.info,
            "checks": {"passed": self.passed, "failed": self.failed},
            "elapsed_s": round(elapsed_s, 2),
        }

    # ------------------------------------------------------------------ checks
    def qt_app(self) -> None:
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import qVersion
        from PySide6.QtGui import QGuiApplication
        from PySide6.QtWidgets import QApplication

        try:
            from desktop.app import create_application
        except ModuleNotFoundError as e:
            if e.name != "desktop.app":
                raise
            app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else APP_NAME])
        else:
            app = create_application(sys.argv[:1])  # names the app and loads its icon from resources/
        self.app = app
        self.info.update(
            qt_version=qVersion(), pyside_version=pyside_version, qpa_platform=QGuiApplication.platformName()
        )

    def data_dir_writable(self) -> None:
        from olmo3.appinfo import data_dir

        folder = data_dir()
        self.info["user_data_dir"] = str(folder)
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".selftest-", delete=True) as f:
                f.write(b"ok")
                f.flush()
        except OSError as e:
            raise CheckFailedError(f"the data folder {folder} is not writable: {e}") from e
        finally:
            for path in created:  # leave no empty folders behind on a build machine
                try:
                    path.rmdir()
                except OSError:
                    break

    def mlx_eval(self) -> None:
        info = self.info
        try:
            import mlx.core as mx
        except Exception as e:
            raise CheckFailedError(f"cannot import mlx.core: {type(e).__name__}: {e}") from e
        info["mlx_version"] = getattr(mx, "__version__", "?")
        info["libmlx"] = loaded_library_path("libmlx")
        info["metallib"] = find_metallib(info["libmlx"])
        metal = bool(getattr(mx, "metal", None) and mx.metal.is_available())
        info["metal_available"] = metal
        device = mx.default_device()
        info["mlx_device"] = str(device)
        try:
            a = mx.arange(16, dtype=mx.float32).reshape(4, 4)
            total = (a @ a.T).sum()
            mx.eval(total)
            value = total.item()
            got = float(value.real if isinstance(value, complex) else value)
        except Exception as e:
            message = f"mx.eval on {device} failed: {type(e).__name__}: {e}"
            if sys.platform == "darwin" or "metallib" in str(e).lower():
                message += f". {metallib_hint(info['libmlx'])}"
            raise CheckFailedError(message) from e
        expected = float(sum(sum(4 * i + j for i in range(4)) ** 2 for j in range(4)))  # |sum of rows|^2 = 3680
        if got != expected:
            raise CheckFailedError(f"mx.eval on {device} gave {got}, expected {expected}: MLX computes wrong results")
        if sys.platform == "darwin" and "gpu" not in str(device).lower() and os.environ.get(ALLOW_CPU_ENV) != "1":
            raise CheckFailedError(
                f"MLX's default device is {device}, not the GPU (Metal available: {metal}); the app would be very "
                f"slow. A Mac without Metal (a VM)? Set {ALLOW_CPU_ENV}=1 to accept the CPU. "
                f"{metallib_hint(info['libmlx'])}"
            )

    def tiny_model(self) -> None:
        from olmo3.model.tiny import make_tiny_model

        self.tiny_dir = make_tiny_model(self.workdir / "tiny-olmo3", sliding_window=16)

    def engine(self) -> None:
        """Load, open, generate and shut down through the engine thread (the path the GUI uses)."""
        from olmo3.chat.engine import Engine
        from olmo3.chat.events import Event, JobFailed, ModelLoaded, TextDelta, TurnFinished

        assert self.tiny_dir is not None
        events: list[Event] = []  # list.append is atomic: the engine thread appends, this thread reads after wait()
        engine = Engine(events.append, cache_dir=self.workdir / "kv")
        engine.start()
        try:

            def run(what: str, job: int) -> list[Event]:
                if not engine.wait(job, JOB_TIMEOUT_S):
                    raise CheckFailedError(f"engine job '{what}' did not finish within {JOB_TIMEOUT_S:.0f} s")
                mine = [e for e in events if e.job_id == job]
                for e in mine:
                    if isinstance(e, JobFailed):
                        raise CheckFailedError(f"engine job '{what}' failed: {e.error}: {e.message}")
                return mine

            loaded = [e for e in run("load_model", engine.load_model(self.tiny_dir)) if isinstance(e, ModelLoaded)]
            if not loaded:
                raise CheckFailedError("load_model finished without a ModelLoaded event")
            run(
                "open_conversation",
                engine.open_conversation(CONV_ID, sampling={"temperature": 0.0, "max_tokens": MAX_TOKENS}),
            )
            turn = run("send", engine.send(CONV_ID, PROMPT))
            finished = [e for e in turn if isinstance(e, TurnFinished)]
            if not finished or finished[-1].stats is None:
                raise CheckFailedError(
                    f"send finished without a TurnFinished event (events: {[type(e).__name__ for e in turn]})"
                )
            stats = finished[-1].stats
            text = "".join(e.text for e in turn if isinstance(e, TextDelta))
            self.info.update(
                tokens_generated=stats.generated_tokens,
                tok_per_s=round(stats.tokens_per_s, 1),
                finish_reason=stats.finish_reason,
                reply_chars=len(text),
                load_s=round(loaded[0].load_s, 3),
            )
            if stats.generated_tokens < 1:
                raise CheckFailedError(f"the engine generated no tokens (finish_reason={stats.finish_reason})")
            self._serve_one(engine)
        finally:
            self.info["engine_stopped"] = engine.shutdown(timeout=SHUTDOWN_TIMEOUT_S)

    def _serve_one(self, engine: Any) -> None:
        """Serve one chat request over HTTP from the engine just used (see ``local_server``)."""
        import http.client

        from olmo3.serve.server import LocalServer, ServeConfig

        try:
            server = LocalServer(engine, ServeConfig(port=0))
            server.start()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=JOB_TIMEOUT_S)
                body = {"model": str(self.tiny_dir.name if self.tiny_dir else ""), "max_tokens": 3}
                body["messages"] = [{"role": "user", "content": PROMPT}]
                conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = json.loads(response.read() or b"{}")
                conn.close()
            finally:
                server.stop()
            if response.status != 200:
                raise CheckFailedError(f"the local server answered HTTP {response.status}: {data}")
            self.info["served"] = {"status": response.status, "usage": data.get("usage")}
        except CheckFailedError as e:
            self.info["served"] = str(e)
        except Exception as e:
            self.info["served"] = f"{type(e).__name__}: {e}"

    def local_server(self) -> None:
        served = self.info.get("served")
        if served is None:
            raise CheckFailedError("the engine never got to serve a request")
        if not isinstance(served, dict):
            raise CheckFailedError(f"the local server failed: {served}")

    def engine_shutdown(self) -> None:
        stopped = self.info.get("engine_stopped")
        if stopped is None:
            raise CheckFailedError("the engine was never started")
        if not stopped:
            raise CheckFailedError(
                f"engine.shutdown() returned False: its thread did not stop within {SHUTDOWN_TIMEOUT_S:.0f} s"
            )

    def main_window(self) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication, QLabel

        home = self.workdir / "home"
        previous = os.environ.get(HOME_ENV)
        os.environ[HOME_ENV] = str(home)  # settings, database, caches and logs in the temp dir; no HF-cache scan
        try:
            window, cls_name, shutdown = build_main_window(home)
            if window is None:
                window = QLabel(f"{APP_NAME} self-test (desktop.app does not exist)")
                self.info["window_note"] = "desktop.app does not exist: a QLabel was shown instead"
            self.info["window_class"] = cls_name
            window.resize(*WINDOW_SIZE)
            if self.info.get("qpa_platform") != "offscreen":
                # A real display (cocoa, xcb): render the window without it ever appearing on screen.
                window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
            window.show()
            settle(QApplication.instance(), 0.3)
            pixmap = window.grab()
            if pixmap.isNull() or pixmap.width() == 0:
                raise CheckFailedError(f"{cls_name}.grab() returned an empty pixmap")
            self.info["window_size"] = [pixmap.width(), pixmap.height()]
            self._pixmap = pixmap
            if shutdown is not None and not shutdown():
                raise CheckFailedError(
                    f"{cls_name}.shutdown() returned False (a thread did not stop or saving failed; "
                    f"see the log in {home / 'logs'})"
                )
            window.close()
            window.deleteLater()
            settle(QApplication.instance(), 0.1)
        finally:
            if previous is None:
                os.environ.pop(HOME_ENV, None)
            else:
                os.environ[HOME_ENV] = previous

    def dynamic_imports(self) -> None:
        """Modules that mlx-lm and transformers import by name at run time (invisible to PyInstaller's analysis).

        The tiny model exercises only the generic tokenizer class; a real Olmo-3 checkpoint may name
        ``GPT2Tokenizer``, have its ``olmo3`` config resolved through ``AutoConfig``, or make mlx-lm pick a
        tool-call parser from its chat template. A frozen build missing any of them fails here, not on a user's Mac.
        """
        import pkgutil

        importlib.import_module("mlx_lm.models.olmo3")
        counts = {}
        for package_name in DYNAMIC_PACKAGES:
            package = importlib.import_module(package_name)
            names = [m.name for m in pkgutil.iter_modules(package.__path__)]
            if not names:
                raise CheckFailedError(f"{package_name} has no submodules in this build (missing hidden imports)")
            for name in names:
                importlib.import_module(f"{package_name}.{name}")
            counts[package_name] = len(names)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

        for class_name in TOKENIZER_CLASSES:
            if tokenizer_class_from_name(class_name) is None:
                raise CheckFailedError(f"transformers cannot resolve the tokenizer class {class_name} in this build")
        CONFIG_MAPPING["olmo3"]
        self.info["dynamic_modules"] = counts

    def save_screenshot(self) -> None:
        assert self.screenshot is not None
        self.screenshot.parent.mkdir(parents=True, exist_ok=True)
        if not self._pixmap.save(str(self.screenshot), "PNG"):
            raise CheckFailedError(f"could not write the screenshot to {self.screenshot}")
        size = self.screenshot.stat().st_size
        if size == 0:
            raise CheckFailedError(f"the screenshot {self.screenshot} is empty")
        self.info["screenshot"] = str(self.screenshot)
        self.info["screenshot_bytes"] = size

    def xet(self) -> None:
        """Informational: whether huggingface_hub sees hf_xet (its metadata must be bundled for fast downloads)."""
        try:
            from huggingface_hub.utils._runtime import (
                is_xet_available,  # not re-exported by huggingface_hub.utils (2.x)
            )

            self.info["hf_xet_available"] = bool(is_xet_available())
        except Exception as e:
            self.info["hf_xet_available"] = f"unknown ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------- helpers
def configure_qt_platform(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """Choose ``offscreen`` when Qt would find no display; returns the value set, or None when left alone.

    Must run before the first ``QApplication``. Off macOS and Windows a display means ``DISPLAY`` (X11) or
    ``WAYLAND_DISPLAY``; without either, Qt's default xcb plugin aborts the whole process.
    """
    if environ.get("QT_QPA_PLATFORM"):
        return None
    if sys.platform in ("darwin", "win32"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    environ["QT_QPA_PLATFORM"] = "offscreen"
    return "offscreen"


def loaded_library_path(stem: str) -> str | None:
    """The path a shared library whose file name starts with ``stem`` was loaded from, as the loader recorded it.

    This is what MLX's ``current_binary_dir()`` (``dladdr`` on libmlx) sees, symlinks unresolved; MLX looks for
    ``mlx.metallib`` in that folder first. macOS: dyld's image list; Linux: ``dl_iterate_phdr``.
    """
    try:
        if sys.platform == "darwin":
            libsystem = ctypes.CDLL(None)  # dlopen(NULL): libSystem's dyld functions are always loaded
            libsystem._dyld_image_count.restype = ctypes.c_uint32
            libsystem._dyld_get_image_name.restype = ctypes.c_char_p
            libsystem._dyld_get_image_name.argtypes = [ctypes.c_uint32]
            names = [libsystem._dyld_get_image_name(i) for i in range(libsystem._dyld_image_count())]
            paths = [n.decode() for n in names if n]
        elif sys.platform.startswith("linux"):
            paths = _linux_loaded_objects()
        else:
            return None
    except Exception:
        return None
    for p in paths:
        if os.path.basename(p).startswith(stem + "."):
            return p
    return None


def _linux_loaded_objects() -> list[str]:
    class DlPhdrInfo(ctypes.Structure):
        _fields_ = [("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p)]

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)
    names: list[str] = []

    def collect(info: Any, _size: int, _data: Any) -> int:
        name = info.contents.dlpi_name
        if name:
            names.append(name.decode(errors="replace"))
        return 0

    libc = ctypes.CDLL(None)
    libc.dl_iterate_phdr(callback_type(collect), None)
    return names


def metallib_candidates(libmlx: str | None) -> list[Path]:
    """Where MLX looks for its default metallib, in order (``load_default_library`` in mlx/backend/metal/device.cpp)."""
    if not libmlx:
        return []
    d = Path(libmlx).parent
    return [d / "mlx.metallib", d / "Resources" / "mlx.metallib", d / "Resources" / "default.metallib"]


def find_metallib(libmlx: str | None) -> str | None:
    for candidate in metallib_candidates(libmlx):
        if candidate.exists():
            return str(candidate)
    return None


def metallib_hint(libmlx: str | None) -> str:
    searched = ", ".join(str(p) for p in metallib_candidates(libmlx)) or "(libmlx not found among loaded libraries)"
    found = find_metallib(libmlx)
    state = f"found {found}" if found else "none of them exists"
    return (
        f"MLX loads mlx.metallib from next to the loaded libmlx ({libmlx}); searched: {searched}; {state}. "
        "In a .app, build_app.py places mlx.metallib beside libmlx in Contents/Frameworks and in mlx/lib."
    )


def build_main_window(home: Path) -> tuple[Any, str, Callable[[], bool] | None]:
    """``(window, class name, shutdown)``: the app's :class:`desktop.app.MainWindow`, every folder under ``home``.

    ``(None, "QLabel (fallback)", None)`` only when ``desktop.app`` does not exist at all; a module that exists
    but fails to import is an error (in a frozen build: a missing hidden import), never a reason to fall back.
    """
    try:
        from desktop.app import MainWindow
    except ModuleNotFoundError as e:
        if e.name != "desktop.app":
            raise
        return None, "QLabel (fallback)", None
    from desktop.paths import AppPaths

    window = MainWindow(paths=AppPaths.under(home))
    return window, f"{MainWindow.__module__}.{MainWindow.__qualname__}", window.shutdown


def settle(app: Any, seconds: float) -> None:
    """Let queued events (layouts, deferred start-up work) run for a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


# ---------------------------------------------------------------------- entry points
def run_self_test(screenshot: str | None = None) -> int:
    """Run every check, print one JSON line on stdout; 0 if all passed, else 1 (reasons on stderr)."""
    t0 = time.perf_counter()
    forced = configure_qt_platform()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
    with tempfile.TemporaryDirectory(prefix="olmo-selftest-") as tmp:
        test = SelfTest(screenshot, Path(tmp))
        test.info["qpa_forced_offscreen"] = forced is not None
        test.check("qt_app", test.qt_app)
        test.check("data_dir_writable", test.data_dir_writable)
        test.check("mlx_eval", test.mlx_eval)
        test.check("tiny_model", test.tiny_model, needs=("mlx_eval",))
        test.check("engine_generate", test.engine, needs=("tiny_model",))
        test.check("local_server", test.local_server, needs=("engine_generate",))
        test.check("engine_shutdown", test.engine_shutdown, needs=("tiny_model",))
        test.check("dynamic_imports", test.dynamic_imports)
        test.check("main_window", test.main_window, needs=("qt_app",))
        if test.screenshot is not None:
            test.check("screenshot", test.save_screenshot, needs=("main_window",))
        test.xet()
        report = test.report(time.perf_counter() - t0)
    _emit(report)
    return 0 if report["ok"] else 1


def _emit(report: dict[str, Any]) -> None:
    line = json.dumps(report, default=str, sort_keys=False)
    if sys.stdout is not None:  # a windowed app on Windows has no stdout
        print(line, flush=True)
    if sys.stderr is not None:
        for name, why in report["checks"]["failed"].items():
            print(f"self-test FAILED: {name}: {why}", file=sys.stderr)
        if report["ok"]:
            print(
                f"self-test passed: {len(report['checks']['passed'])} checks in {report['elapsed_s']} s",
                file=sys.stderr,
            )
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m desktop.selftest [--screenshot PNG]`` (``--self-test`` is accepted and ignored)."""
    parser = argparse.ArgumentParser(prog="olmo-desktop --self-test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--screenshot", metavar="PNG", help="save the main window to this PNG file")
    args = parser.parse_args(argv)
    return run_self_test(args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
