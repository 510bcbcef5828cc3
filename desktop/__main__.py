"""``olmo-desktop``: start the app, or take screenshots (``--screenshot DIR``) or benchmark the chat view
(``--bench-ui``)."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from pathlib import Path


def _size(text: str) -> int:
    from olmo3.units import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olmo-desktop", description="Olmo Desktop: chat with Olmo 3 on this Mac.")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="keep settings, conversations, caches and logs under DIR (same as OLMO_DESKTOP_HOME)",
    )
    parser.add_argument("--theme", choices=("system", "light", "dark"), help="override the theme setting")
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="load this model folder (or a name `olmo3 models list` prints) at start, e.g. one `olmo3 tiny` made",
    )
    parser.add_argument(
        "--memory-limit",
        type=_size,
        metavar="BYTES",
        help="let models use at most this much memory, e.g. 8G (a model that won't fit is refused, with the numbers)",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="generate a tiny model, generate through the engine, show the window offscreen, exit 0 or 1 "
        "(with --screenshot FILE.png: save the window)",
    )
    parser.add_argument(
        "--screenshot", metavar="DIR", help="save PNG screenshots of the main screens into DIR and exit"
    )
    parser.add_argument(
        "--bench-ui",
        action="store_true",
        help="stream synthetic tokens through the chat view and report GUI-thread stalls",
    )
    parser.add_argument("--bench-tokens", type=int, default=2000, help="tokens for --bench-ui (default 2000)")
    parser.add_argument(
        "--bench-rate", type=float, default=400.0, help="tokens per second for --bench-ui's live stream"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()  # a frozen app would otherwise respawn itself
    args = build_parser().parse_args(argv)
    if args.self_test:
        from desktop.selftest import run_self_test

        return run_self_test(screenshot=args.screenshot)
    if args.home:
        os.environ["OLMO_DESKTOP_HOME"] = str(Path(args.home).expanduser())
    if (args.screenshot or args.bench_ui) and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.bench_ui:
        from desktop.bench_ui import main_bench

        return main_bench(tokens=args.bench_tokens, rate=args.bench_rate, theme_mode=args.theme or "light")
    if args.screenshot:
        from desktop.screenshots import main_screenshots

        return main_screenshots(Path(args.screenshot))
    model = None
    if args.model:
        from desktop.paths import AppPaths
        from olmo3.cli.options import resolve_model

        try:
            model = str(resolve_model(args.model, AppPaths.default().models_dir))
        except ValueError as e:
            print(f"olmo-desktop: {e}", file=sys.stderr)
            return 2
    return run_app(theme=args.theme, memory_limit=args.memory_limit, model=model)


def run_app(*, theme: str | None = None, memory_limit: int | None = None, model: str | None = None) -> int:
    from desktop.app import MainWindow, create_application
    from desktop.logs import install_excepthook, setup_logging
    from desktop.paths import AppPaths

    paths = AppPaths.default().ensure()
    setup_logging(paths.log_file)
    install_excepthook()
    app = create_application(sys.argv[:1])
    from olmo3.store import StoreError

    try:
        window = MainWindow(paths=paths, theme_mode=theme, memory_limit_bytes=memory_limit, auto_load=model is None)
    except StoreError as exc:  # a newer version's database (never moved or changed): say so and quit
        _refuse_to_start(app, str(exc))
        return 2
    if model is not None:
        window.load_model(model)
    window.show()
    _close_on_signals(window)
    logging.getLogger("desktop").info("window open (pid %d)", os.getpid())
    code = app.exec()
    window.shutdown()
    return int(code)


def _refuse_to_start(app: object, message: str) -> None:
    """One line on stderr and in the log; a message box too, unless there is no screen to show it on."""
    logging.getLogger("desktop").error("cannot start: %s", message)
    print(f"olmo-desktop: {message}", file=sys.stderr)
    if app.platformName() != "offscreen":  # type: ignore[attr-defined]
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Olmo Desktop cannot start", message)


def _close_on_signals(window: object) -> None:
    """Ctrl+C / SIGTERM close the window like the user would (stop, save, spill caches) instead of killing it.

    Python only runs signal handlers between bytecodes, so a timer wakes the interpreter up now and then while
    Qt's event loop is waiting."""
    import signal

    from PySide6.QtCore import QTimer

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("desktop").info("closing on %s", signal.Signals(signum).name)
        QTimer.singleShot(0, window.close)  # type: ignore[attr-defined]

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    timer = QTimer(window)  # type: ignore[arg-type]
    timer.setInterval(250)
    timer.timeout.connect(lambda: None)
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
