"""``olmo3.memory``: one RAM reading and one budget policy; Metal's working set is handed in by the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from olmo3 import memory


@pytest.fixture
def no_working_set():
    saved = memory.working_set_bytes()
    memory.set_working_set(None)
    yield
    memory.set_working_set(saved)


def test_budget_is_three_quarters_of_ram_until_the_engine_reports_a_working_set(no_working_set):
    ram = memory.physical_memory_bytes()
    assert ram is not None and ram > 0
    budget = memory.memory_budget()
    assert budget.source == "ram_fraction" and budget.bytes == int(ram * 0.75) and budget.physical_bytes == ram
    assert "75% of" in budget.describe()

    memory.set_working_set(12 * 10**9)
    budget = memory.memory_budget()
    assert budget.source == "mlx_working_set" and budget.bytes == 12 * 10**9
    assert budget.describe() == "12.0 GB (the GPU working set macOS recommends)"
    # The engine's policies derive from the same budget.
    assert memory.default_memory_budget(4 * 10**9) == 4 * 10**9
    assert memory.conversation_memory_limit(4 * 10**9) == 6 * 10**9
    assert memory.default_memory_budget(20 * 10**9) == memory.MIN_KV_BYTES  # weights beyond the budget

    memory.set_working_set(0)  # no Metal (Linux): forgotten
    assert memory.working_set_bytes() is None and memory.memory_budget().source == "ram_fraction"


def test_importing_the_shared_modules_imports_no_mlx():
    code = (
        "import sys, olmo3.memory, olmo3.appinfo, olmo3.units, olmo3.fileio, olmo3.hub;"
        "olmo3.memory.memory_budget(); olmo3.appinfo.kv_cache_dir();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
