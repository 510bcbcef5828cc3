"""Cases tried and cases held, per class of hostile input: runs the hostile-input tests and counts them.

    python tests/hostile/tally.py           # the fast suite's cases
    python tests/hostile/tally.py --slow    # with the 10x process runs

Each parametrized case counts once; the exit-code tests count their process runs, and the import fuzz reports
its variants (imported and exported, or refused).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {  # (module, a word of the test's name) -> class; the first match wins
    ("test_store_files", "refus"): "3a. refused store files stay byte-identical",
    ("test_store_files", "accepted"): "3a. refused store files stay byte-identical",
    ("test_store_files", ""): "3b. olmo3 store check / recover",
    ("test_gui_damaged_store", ""): "3c. the app keeps a damaged store aside",
    ("test_json_bounds", "tool"): "4g. tool arguments and config",
    ("test_json_bounds", "config"): "4a. model configs",
    ("test_json_bounds", "side_files"): "4a. model configs",
    ("test_json_bounds", "olmo3_info"): "4a. model configs",
    ("test_json_bounds", "import"): "4b. conversation imports (table)",
    ("test_json_bounds", "chains"): "4b. conversation imports (table)",
    ("test_import_fuzz", ""): "4c. conversation imports (fuzz: import -> export)",
    ("test_json_bounds", "settings"): "4d. settings",
    ("test_json_bounds", "cache"): "4e. spilled cache files",
    ("test_json_bounds", "script"): "4f. chat --script files",
    ("test_links", "refused"): "5a. refused link destinations (8 forms x 3 views each)",
    ("test_links", "allowed"): "5b. allowed link destinations",
    ("test_links", ""): "5c. raw HTML and other text in the exports",
    ("test_exit_codes", ""): "7. processes exit 0",
    ("test_cli_refusals", "debug"): "8b. olmo3 --debug shows the traceback",
    ("test_cli_refusals", ""): "8a. refused CLI input: one line, exit 2",
}
RUNS = {"fast": 2, "10x": 10, "3x": 3}
ONE_FAST = ("self_test", "sigterm")


def runs_of(name: str) -> int:
    m = re.search(r"\[(\w+)\]$", name)
    if m is None:
        return 1
    if m.group(1) == "fast" and any(k in name for k in ONE_FAST):
        return 1
    return RUNS.get(m.group(1), 1)


def main(argv: list[str]) -> int:
    slow = "--slow" in argv
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        cmd += ["-o", "junit_logging=system-out", "tests/hostile", "tests/desktop/test_gui_damaged_store.py"]
        if not slow:
            cmd += ["-m", "not slow"]
        subprocess.run(cmd, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        root = ET.parse(xml).getroot()
    tried: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    notes: list[str] = []
    for case in root.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "")
        kind = next((k for (m, word), k in CLASSES.items() if m == module and word in name.split("[")[0]), None)
        if kind is None or case.find("skipped") is not None:
            continue
        weight = runs_of(name) if module == "test_exit_codes" else 1
        tried[kind] += weight
        if case.find("failure") is None and case.find("error") is None:
            held[kind] += weight
        out = case.findtext("system-out") or ""
        notes += [line for line in out.splitlines() if line.startswith("import fuzz:")]
    width = max(len(k) for k in tried)
    print(f"{'class':<{width}}  tried  held")
    for kind in sorted(tried):
        unit = " (process runs)" if kind.startswith("7.") else ""
        print(f"{kind:<{width}}  {tried[kind]:>5}  {held[kind]:>4}{unit}")
    for note in notes:
        print(note)
    return 0 if tried == held else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
