"""MLX is imported, not only run, on the engine thread.

A fresh interpreter (the test process has imported MLX long ago) records which thread first imports ``mlx.core``
through an import hook, then does what a user does: opens the real main window offscreen, adds and loads a
generated model, and sends a message. The first import must happen on the engine thread ("olmo3-engine").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys, threading, time
    first = {}

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("mlx.core", "mlx_lm") and name not in first:
                first[name] = threading.current_thread().name
            return None

    sys.meta_path.insert(0, Spy())
    sys.path.insert(0, sys.argv[3])
    from gui_helpers import fast_settings, offline_model_store
    from desktop.app import MainWindow, create_application
    from desktop.paths import AppPaths
    from pathlib import Path

    app = create_application([])
    home = Path(sys.argv[1])
    window = MainWindow(paths=AppPaths.under(home), settings=fast_settings(),
                        model_store=offline_model_store(home), start_engine=True)
    window.show()
    app.processEvents()
    imported_before_load = dict(first)
    window.controller.load_model(sys.argv[2], "tiny")

    def wait(cond, seconds=60):
        end = time.monotonic() + seconds
        while not cond():
            if time.monotonic() > end:
                raise SystemExit("timed out")
            app.processEvents()
            time.sleep(0.01)

    wait(lambda: window.controller.model_info is not None)
    window.controller.send("Hello there")
    wait(lambda: window.controller.last_finished is not None)
    reply = window.controller.last_finished.reply.content
    window.shutdown()
    print(json.dumps({"first": first, "before_load": imported_before_load, "reply": reply}))
    """
)


def test_mlx_is_first_imported_on_the_engine_thread(tmp_path, tiny_model_dir):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "home"), str(tiny_model_dir), str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before_load"] == {}, "MLX was imported while the window opened, before any model was loaded"
    assert result["first"] == {"mlx.core": "olmo3-engine", "mlx_lm": "olmo3-engine"}, result
    assert result["reply"]
