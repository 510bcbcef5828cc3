"""Run the real app entry point (``desktop.__main__.main``) and, once the model has loaded, send one message as a
person would; print ``READY <conversation id>`` when the reply is saved. The test then sends SIGTERM.

Only the window's ``show`` is wrapped (to start a timer that drives it); start-up, the signal handler and shutdown
are the app's own.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QTimer

import desktop.__main__ as entry
from desktop import app as app_module

_show = app_module.MainWindow.show


def _show_and_drive(self: app_module.MainWindow) -> None:
    _show(self)
    timer = QTimer(self)
    state = {"sent": False}

    def tick() -> None:
        controller = self.controller
        if not state["sent"]:
            if controller.model_info is not None and not controller.is_busy():
                state["sent"] = controller.send("Hello there")
        elif not controller.is_busy() and controller.last_finished is not None:
            timer.stop()
            print("READY", controller.current, flush=True)

    timer.timeout.connect(tick)
    timer.start(50)


app_module.MainWindow.show = _show_and_drive  # type: ignore[method-assign]
sys.exit(entry.main(sys.argv[1:]))
