"""``mlx.launch --hostfile hosts.json -- olmo3 serve --model … --parallel tensor|pipeline``: rank 0 of the group
serves HTTP, the other ranks hold their part of the model and follow (``olmo3.parallel.cluster.run_follower``, as
for ``olmo3 chat --parallel``: :func:`olmo3.cli.parallel.run_parallel` starts them).

Rank 0 is ``olmo3 serve`` with a :class:`olmo3.parallel.cluster.ClusterLoader` as its engine's loader: before it
serves, every rank reports its fingerprint and memory budget, the model must be the same on every rank and fit in
the budgets added up (each rank's part in its own), or rank 0 refuses with one line (exit 2).

**A rank that dies or a host that stops answering** (the watchdog, ``olmo3.parallel.watchdog``: at once for a process
that exits, after 5 s of silence for a host) ends serving, for good: an MLX group cannot be joined again by the same
processes, and the engine thread may be stuck in a collective that will never return. So rank 0

1. prints one line on stderr naming the rank (``olmo3 serve: rank 1 (pid …) is gone …``);
2. ends every request in flight with an error (a 503 ``group_down``, or an error event in a stream that had
   begun) and answers every new one with a 503 and ``Retry-After``; ``/health`` answers 503 ``"status":
   "group_down"`` with the message (:meth:`olmo3.serve.backend.Backend.mark_down`);
3. after ``--lost-grace`` seconds (default 10) exits with status :data:`EXIT_GROUP_LOST` (3), without waiting for the
   engine. The other ranks notice rank 0's exit on the watchdog's connection and exit too.

**Restarting the group is the supervisor's job**: rerun ``mlx.launch`` (a loop in the shell, launchd's
``KeepAlive``; the README shows both). ``mlx.launch`` itself always exits with status 0 and logs "Node with rank 0
exited with code 3". Conversations that had been spilled to disk come back on the restarted group (every rank
kept its part); the client just sends its next request.

Signals on rank 0: SIGINT (Ctrl-C) stops cleanly: requests in flight are cancelled, every cache is spilled by every
rank, the followers are told to stop, exit 0. ``mlx.launch`` sends SIGTERM to rank 0 when another rank exited with
an error, so a SIGTERM (or a SIGHUP: an ``ssh`` session ending) that comes with, or within a second and a half before,
the watchdog's report is the group going down and changes nothing above; any other is a clean stop like SIGINT.
(Python handlers, not a signal mask: libraries such as OpenBLAS start threads before ours that would not block it.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Final

from .parallel import launch_rank

if TYPE_CHECKING:
    from ..parallel.cluster import Cluster
    from ..serve.server import LocalServer

__all__ = ["EXIT_GROUP_LOST", "serve_leader"]

EXIT_GROUP_LOST: Final = 3
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)
REPORT_WAIT_S: Final = 1.5  # a SIGTERM from mlx.launch and the watchdog's report of the lost rank come close together


def _say(line: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"olmo3 serve: {line}\n")
        sys.stderr.flush()


def _exit(code: int) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class _Leader:
    """Rank 0's answers to a lost rank and to stop signals (they come on the watchdog's and the signal thread)."""

    def __init__(self, grace_s: float):
        self.grace_s = max(0.0, grace_s)
        self.cluster: Cluster | None = None
        self.server: LocalServer | None = None
        self.lost = threading.Event()
        self.message = ""  # the watchdog's report
        self._lock = threading.Lock()

    def serving(self, server: LocalServer, group: dict[str, object]) -> None:
        server.signal_hook = self.signal_hook
        with self._lock:
            self.server = server
            server.backend.group = {**group, "status": "ok"}
            lost = self.lost.is_set()
        if lost:  # the group went down while the address was being bound
            self._go_down(self.message)

    # ---------------------------------------------------------------- the watchdog's thread
    def on_lost(self, message: str) -> None:
        text = message.removesuffix("; stopping")
        with self._lock:
            self.message = text
            self.lost.set()
            server = self.server
        if server is None:  # still starting: nothing to answer, nothing to wait for
            _say(f"{text}; the group cannot start (exit {EXIT_GROUP_LOST}: start it again)")
            _exit(EXIT_GROUP_LOST)
        _say(
            f"{text}; answering 503 for {self.grace_s:g} s, then exiting with status {EXIT_GROUP_LOST} for the group "
            "to be started again"
        )
        self._go_down(text)

    def _go_down(self, text: str) -> None:
        server = self.server
        assert server is not None
        backend = server.backend
        if backend.group is not None:
            backend.group = {**backend.group, "status": "down"}
        backend.mark_down(
            f"the server's parallel group lost a rank ({text}); it serves again once the group is restarted",
            retry_after_s=max(1, round(self.grace_s) + 10),
        )
        timer = threading.Timer(self.grace_s, _exit, args=(EXIT_GROUP_LOST,))
        timer.daemon = True
        timer.start()

    # ---------------------------------------------------------------- SIGTERM / SIGHUP
    def signal_hook(self, signum: int) -> bool:
        """The server's signals while it serves: SIGTERM as below, SIGINT left to uvicorn (a clean stop)."""
        if signum not in STOP_SIGNALS:
            return False
        threading.Thread(target=self.on_signal, args=(signum,), name="olmo3-stop", daemon=True).start()
        return True

    def on_signal(self, signum: int) -> None:
        if self.lost.wait(REPORT_WAIT_S):
            return  # the group is going down: the grace period runs its course
        with self._lock:
            server = self.server
        if server is None:  # still starting (or refusing: its own line is on the way)
            _say("stopped by mlx.launch (another rank exited; see its message)")
            _exit(128 + signum)
        assert server is not None
        server.request_stop()  # a clean stop, as for Ctrl-C: run_serve spills and stops the followers


def _take_stop_signals(leader: _Leader) -> None:
    """SIGTERM and SIGHUP go to :meth:`_Leader.on_signal` (on a thread of its own: it waits for the watchdog). The
    server hands them over too while it serves (``LocalServer.signal_hook``); SIGINT stays a clean stop."""

    def handle(signum: int, frame: object) -> None:
        threading.Thread(target=leader.on_signal, args=(signum,), name="olmo3-stop", daemon=True).start()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)


def serve_leader(args: argparse.Namespace) -> int:
    """Rank 0 of ``olmo3 serve --parallel MODE`` (module docstring)."""
    assert launch_rank() == 0
    from ..parallel.cluster import ClusterLoader, init_cluster
    from .options import memory_limit
    from .parallel import _cache_dir
    from .serve import run_serve

    leader = _Leader(args.lost_grace)
    cluster = init_cluster(args.parallel, on_lost=leader.on_lost)  # a signal meanwhile stops this process at once
    leader.cluster = cluster
    _take_stop_signals(leader)
    loader = ClusterLoader(cluster, cache_dir=_cache_dir(args), memory_limit=memory_limit(args))
    try:
        return run_serve(args, loader=loader, on_serving=lambda server: leader.serving(server, loader.describe()))
    finally:
        if leader.lost.is_set():  # the grace period's timer ends the process; the engine is never waited for
            time.sleep(leader.grace_s + 1.0)
            _exit(EXIT_GROUP_LOST)
