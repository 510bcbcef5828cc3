"""Entry script of the frozen app (PyInstaller needs a script path; ``build_app.py`` points it here).

Why a launcher instead of ``desktop/__main__.py`` itself: a script run by PyInstaller's bootloader is
``__main__`` with no package, so relative imports in ``desktop/__main__.py`` would break; importing it as
``desktop.__main__`` keeps it an ordinary module. The launcher also owns the two things that must happen
before any GUI code runs:

1. ``multiprocessing.freeze_support()`` first: a frozen app that spawns a child process (multiprocessing,
   or a library that uses it) would otherwise start a second copy of the whole app.
2. ``--self-test [--screenshot PNG]`` goes straight to :func:`desktop.selftest.run_self_test`, so the smoke
   test does not depend on the GUI's argument parsing.

Everything else is ``desktop.__main__.main()``.
"""

from __future__ import annotations

import multiprocessing
import sys


def launch(argv: list[str]) -> int:
    if "--self-test" in argv:
        from desktop.selftest import main as self_test_main

        return self_test_main(argv)
    from desktop.__main__ import main

    return int(main() or 0)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(launch(sys.argv[1:]))
