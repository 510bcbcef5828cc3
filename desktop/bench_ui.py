"""``olmo-desktop --bench-ui``: stream synthetic tokens through the real chat view and measure the GUI thread.

Two measurements on the same 2,000-token markdown answer (prose, lists, tables, code):

1. **Live streaming.** A producer thread emits tokens through a queued Qt signal, the way the engine bridge does,
   at ``--bench-rate`` tokens/s. A 2 ms heartbeat timer on the GUI thread records how late it fires; the longest
   delay is the longest stall a user could feel (target ≤ 50 ms). The coalescing timer decides how often the
   view re-renders, exactly as in the app.
2. **Cost per token as the reply grows.** Tokens are appended one at a time, each followed by a flush and a full
   event-loop pass (layout + paint). The time for the last 100 tokens is compared with the first 100 (target
   ≤ 2×): with incremental rendering it must not grow with the length of the reply. The first 100 tokens are a
   little cheaper than later ones because the window is still mostly empty (less to paint), so tokens 500-600 are
   reported too: once the window is full, the cost per token is flat. Each window is the best of three passes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

from desktop import samples
from desktop.chat import ChatView

STALL_TARGET_MS = 50.0
REPEATS = 3
GROWTH_TARGET = 2.0


@dataclass
class BenchResult:
    tokens: int
    rate_tok_s: float
    stream_wall_s: float
    flushes: int
    longest_stall_ms: float
    p99_heartbeat_gap_ms: float
    longest_flush_ms: float
    first100_ms: float
    mid100_ms: float  # tokens 500-600: the window is full of text by then
    last100_ms: float
    growth: float
    passed: bool


class _Producer(QObject):
    """Emits tokens from a plain Python thread, like the engine's callback thread does."""

    token = Signal(str)
    done = Signal()

    def __init__(self, tokens: list[str], rate: float) -> None:
        super().__init__()
        self._tokens = tokens
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._thread = threading.Thread(target=self._run, name="bench-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def _run(self) -> None:
        start = time.perf_counter()
        for i, tok in enumerate(self._tokens):
            target = start + i * self._interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.token.emit(tok)
        self.done.emit()


class _Sink(QObject):
    """GUI-thread receiver (bound methods, so the queued connection delivers on the GUI thread)."""

    def __init__(self, view: ChatView) -> None:
        super().__init__()
        self.view = view
        self.finished = False
        self.flush_times: list[float] = []

    def on_token(self, text: str) -> None:
        self.view.append_delta(text, "answer")

    def on_done(self) -> None:
        self.finished = True


class _Heartbeat(QObject):
    def __init__(self, interval_ms: int = 2) -> None:
        super().__init__()
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000.0)
        self._last = now


def _timed_flush(view: ChatView, sink: _Sink) -> None:
    original = view.flush

    def flush() -> None:
        t0 = time.perf_counter()
        original()
        sink.flush_times.append((time.perf_counter() - t0) * 1000.0)

    view.flush = flush  # type: ignore[method-assign]
    view._flush_timer.timeout.disconnect()
    view._flush_timer.timeout.connect(flush)


def _per_token_costs(app: QApplication, view: ChatView, pieces: list[str]) -> list[float]:
    view.clear()
    view.add_user_message("Again, please.", 0)
    view.begin_assistant()
    app.processEvents()
    costs: list[float] = []
    for piece in pieces:
        t = time.perf_counter()
        view.append_delta(piece, "answer")
        view.flush()
        app.processEvents()
        costs.append((time.perf_counter() - t) * 1000.0)
    view.end_stream({"content": "".join(pieces), "finish_reason": "stop"})
    app.processEvents()
    return costs


def run_bench(app: QApplication, view: ChatView, *, tokens: int = 2000, rate: float = 400.0) -> BenchResult:
    """Run both measurements on ``view`` (which must be shown); returns the numbers."""
    pieces = samples.tokenize(samples.long_answer(tokens))[:tokens]

    # 1. live streaming through a queued signal from another thread
    view.clear()
    view.add_user_message("Write a long overview of local LLM inference.", 0)
    view.begin_assistant()
    sink = _Sink(view)
    _timed_flush(view, sink)
    producer = _Producer(pieces, rate)
    producer.token.connect(sink.on_token)
    producer.done.connect(sink.on_done)
    heartbeat = _Heartbeat()
    for _ in range(3):
        app.processEvents()
    heartbeat.start()
    t0 = time.perf_counter()
    flushes_before = view.flush_count
    producer.start()
    while not sink.finished:
        app.processEvents()
        time.sleep(0.0005)
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)
    view.end_stream({"content": "".join(pieces), "finish_reason": "stop"})
    app.processEvents()
    wall = time.perf_counter() - t0
    heartbeat.stop()
    producer.join()
    flushes = view.flush_count - flushes_before
    gaps = sorted(heartbeat.gaps)
    longest_stall = max(gaps) if gaps else 0.0
    p99 = gaps[int(len(gaps) * 0.99) - 1] if gaps else 0.0

    # 2. cost per token, one flush + event pass per token; each window's best of REPEATS passes (other processes
    # on the machine only ever add time, so the minimum is the least noisy estimate)
    windows: dict[str, list[float]] = {"first": [], "mid": [], "last": []}
    for _ in range(REPEATS):
        costs = _per_token_costs(app, view, pieces)
        windows["first"].append(sum(costs[:100]))
        windows["mid"].append(sum(costs[500:600]))
        windows["last"].append(sum(costs[-100:]))
    first, mid, last = (min(windows[k]) for k in ("first", "mid", "last"))
    growth = last / first if first > 0 else float("inf")
    passed = longest_stall <= STALL_TARGET_MS and growth <= GROWTH_TARGET
    return BenchResult(
        tokens=len(pieces),
        rate_tok_s=rate,
        stream_wall_s=round(wall, 3),
        flushes=flushes,
        longest_stall_ms=round(longest_stall, 2),
        p99_heartbeat_gap_ms=round(p99, 2),
        longest_flush_ms=round(max(sink.flush_times) if sink.flush_times else 0.0, 2),
        first100_ms=round(first, 2),
        mid100_ms=round(mid, 2),
        last100_ms=round(last, 2),
        growth=round(growth, 2),
        passed=passed,
    )


def format_result(result: BenchResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    return "\n".join(
        [
            f"olmo-desktop --bench-ui: {result.tokens} synthetic tokens through the real chat view",
            f"  live stream at {result.rate_tok_s:.0f} tok/s: {result.stream_wall_s:.2f} s, "
            f"{result.flushes} coalesced renders",
            f"  longest GUI-thread stall: {result.longest_stall_ms:.1f} ms (target ≤ {STALL_TARGET_MS:.0f} ms); "
            f"p99 heartbeat gap {result.p99_heartbeat_gap_ms:.1f} ms; longest render {result.longest_flush_ms:.1f} ms",
            f"  render cost, first 100 tokens: {result.first100_ms:.1f} ms; "
            f"last 100 tokens: {result.last100_ms:.1f} ms "
            f"→ {result.growth:.2f}× (target ≤ {GROWTH_TARGET:.0f}×); tokens 500-600 (window already full): "
            f"{result.mid100_ms:.1f} ms",
            f"  {verdict}",
            json.dumps(asdict(result)),
        ]
    )


def main_bench(tokens: int = 2000, rate: float = 400.0, theme_mode: str = "light") -> int:
    """Entry point used by ``desktop.__main__``; builds the real main window with a throwaway home folder."""
    import tempfile

    from desktop.app import MainWindow, create_application
    from desktop.paths import AppPaths

    app = create_application([])
    with tempfile.TemporaryDirectory(prefix="olmo-bench-") as home:
        from olmo3.hub import ModelStore

        paths = AppPaths.under(home)
        window = MainWindow(
            paths=paths,
            theme_mode=theme_mode,
            start_engine=False,
            model_store=ModelStore(paths.models_dir, include_hf_cache=False),
        )
        window.resize(1100, 720)
        window.show()
        window.show_chat_for_bench()
        for _ in range(5):
            app.processEvents()
        result = run_bench(app, window.chat_view, tokens=tokens, rate=rate)
        window.close()
        app.processEvents()
    print(format_result(result))
    return 0 if result.passed else 1
