"""A side channel beside the collectives: rank 0 learns within seconds that a rank died or stopped answering.

A collective that waits for a rank that is gone never returns: ``mx.eval`` blocks in C++ (with the GIL released)
and nothing in MLX times it out. So every rank keeps one small TCP connection to rank 0 next to the MLX group
and both ends send a heartbeat byte every second, on their own threads:

* a process that dies closes its socket: the other end reads end-of-file at once;
* a host that stops answering (asleep, cable pulled) sends no heartbeat: after :data:`TIMEOUT_S` it is given up;
* a follower that fails (an exception in its loop, out of memory) sends its message before it exits.

Then ``on_lost(message)`` runs on the watchdog's thread. The default prints one line and ends the process with
``os._exit`` (the MLX thread may be blocked in a collective, so an orderly exit could wait forever); the survivors
notice the same way, or are stopped by ``mlx.launch``, which stops every rank once one exits with an error. A server
(``olmo3 serve --parallel``) passes its own ``on_lost``: answer 503, then restart the group (an MLX group cannot be
re-initialised inside a process, so "restart" means exiting for a supervisor or ``mlx.launch`` to start again).

:func:`take_sigterm` turns ``mlx.launch``'s SIGTERM into a clean one-line exit on every rank, also while the main
thread is blocked inside a collective (where a Python signal handler would never run).

Messages: ``R`` + rank + pid (hello), ``H`` (heartbeat), ``B`` (bye: a normal end), ``E`` + length + text (error).
MLX-free: this runs beside MLX, never inside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["CONNECT_TIMEOUT_S", "HEARTBEAT_S", "TIMEOUT_S", "Watchdog", "leader_addresses", "take_sigterm"]

HEARTBEAT_S: Final = 1.0
TIMEOUT_S: Final = 5.0  # no heartbeat for this long: the peer is given up (well within the 10 s promised)
CONNECT_TIMEOUT_S: Final = 10.0

LostFn = Callable[[str], None]


def _prefix(rank: int) -> str:
    return "olmo3: " if rank == 0 else f"olmo3 (rank {rank}): "


def _die(rank: int, message: str, code: int = 1) -> None:
    """Print one line and end the process now (the MLX thread may be blocked in a collective)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(_prefix(rank) + message + "\n")
        sys.stderr.flush()
    os._exit(code)


def leader_addresses() -> list[str]:
    """Where the followers can reach rank 0: ``OLMO3_LEADER_ADDR``, else what ``mlx.launch`` told the backend
    (the ring hostfile's rank-0 IPs, ``NCCL_HOST_IP``, the JACCL coordinator), else this host."""
    out: list[str] = []
    if os.environ.get("OLMO3_LEADER_ADDR"):
        out += [a.strip() for a in os.environ["OLMO3_LEADER_ADDR"].split(",") if a.strip()]
    hostfile = os.environ.get("MLX_HOSTFILE")
    if hostfile:
        try:
            import json

            with open(hostfile) as f:
                hosts = json.load(f)
            out += [str(a).rsplit(":", 1)[0] for a in hosts[0]]
        except (OSError, ValueError, IndexError, TypeError, KeyError):
            pass
    if os.environ.get("NCCL_HOST_IP"):
        out.append(os.environ["NCCL_HOST_IP"])
    if os.environ.get("MLX_JACCL_COORDINATOR"):
        out.append(os.environ["MLX_JACCL_COORDINATOR"].rsplit(":", 1)[0])
    out.append("127.0.0.1")
    return list(dict.fromkeys(out))


class _Peer:
    def __init__(self, sock: socket.socket, rank: int, pid: int):
        self.sock, self.rank, self.pid = sock, rank, pid
        self.last = time.monotonic()
        self.said_bye = False
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


class Watchdog:
    """One rank's end of the side channel (see the module docstring)."""

    def __init__(self, rank: int, world: int, on_lost: LostFn | None = None):
        self.rank, self.world = rank, world
        self.on_lost: LostFn = on_lost or (lambda message: _die(rank, message))
        self.lost: str | None = None
        self._peers: dict[int, _Peer] = {}
        self._server: socket.socket | None = None
        self._closing = False
        self._lock = threading.Lock()
        self._connected = threading.Condition(self._lock)
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ set-up
    def listen(self) -> int:
        """Rank 0: accept the followers' connections (on a port the OS picks); returns the port."""
        server = socket.create_server(("", 0), backlog=max(8, self.world))
        self._server = server
        threading.Thread(target=self._accept, name="olmo3-watchdog-accept", daemon=True).start()
        return int(server.getsockname()[1])

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            try:
                sock.settimeout(CONNECT_TIMEOUT_S)
                hello = _recv_exact(sock, 9)
                if hello[:1] != b"R":
                    sock.close()
                    continue
                rank, pid = struct.unpack("<ii", hello[1:])
            except OSError:
                sock.close()
                continue
            self._add(_Peer(sock, rank, pid))

    def connect(self, addresses: list[str], port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
        """A follower: connect to rank 0 (trying each address until ``timeout``). False if none answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for host in addresses:
                try:
                    sock = socket.create_connection((host, port), timeout=2.0)
                    sock.sendall(b"R" + struct.pack("<ii", self.rank, os.getpid()))
                except OSError:
                    continue
                self._add(_Peer(sock, 0, 0))
                return True
            time.sleep(0.2)
        return False

    def _add(self, peer: _Peer) -> None:
        peer.sock.settimeout(HEARTBEAT_S / 2)
        with self._connected:
            self._peers[peer.rank] = peer
            self._connected.notify_all()
        threading.Thread(target=self._watch, args=(peer,), name=f"olmo3-watchdog-{peer.rank}", daemon=True).start()
        if len(self._peers) == 1:
            threading.Thread(target=self._beat, name="olmo3-heartbeat", daemon=True).start()

    def wait_for_followers(self, timeout: float = CONNECT_TIMEOUT_S) -> list[int]:
        """Rank 0: wait until every follower has connected; returns the ranks that did not."""
        deadline = time.monotonic() + timeout
        with self._connected:
            while len(self._peers) < self.world - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._connected.wait(left)
            return [r for r in range(1, self.world) if r not in self._peers]

    # ------------------------------------------------------------------ running
    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            for peer in list(self._peers.values()):
                with contextlib.suppress(OSError):
                    peer.send(b"H")

    def _watch(self, peer: _Peer) -> None:
        who = "rank 0" if self.rank != 0 else f"rank {peer.rank} (pid {peer.pid})"
        while not self._stopped.is_set():
            try:
                kind = peer.sock.recv(1)
            except TimeoutError:
                if time.monotonic() - peer.last > TIMEOUT_S and not self._closing:
                    self._lose(f"{who} stopped answering (no heartbeat for {TIMEOUT_S:.0f} s); stopping")
                    return
                continue
            except OSError:
                kind = b""
            if not kind:
                if not peer.said_bye and not self._closing:
                    self._lose(f"{who} is gone (its process exited or its host dropped the connection); stopping")
                return
            peer.last = time.monotonic()
            if kind == b"B":
                peer.said_bye = True
            elif kind == b"E":
                try:
                    peer.sock.settimeout(CONNECT_TIMEOUT_S)
                    (n,) = struct.unpack("<i", _recv_exact(peer.sock, 4))
                    text = _recv_exact(peer.sock, min(max(n, 0), 4096)).decode(errors="replace")
                except OSError:
                    text = "an error it could not send"
                peer.said_bye = True
                self._lose(f"{who} failed: {text}; stopping")
                return

    def _lose(self, message: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = message
        self.on_lost(message)

    # ------------------------------------------------------------------ ending
    def report_error(self, message: str) -> None:
        """A follower that must stop tells rank 0 why, before it exits."""
        data = message.encode()[:4096]
        for peer in list(self._peers.values()):
            with contextlib.suppress(OSError):
                peer.send(b"E" + struct.pack("<i", len(data)) + data)

    def close(self) -> None:
        """A normal end: say goodbye (so the other ends do not report us) and stop watching."""
        self._closing = True
        for peer in list(self._peers.values()):
            with contextlib.suppress(OSError):
                peer.send(b"B")
        self._stopped.set()
        for peer in list(self._peers.values()):
            with contextlib.suppress(OSError):
                peer.sock.close()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


_sigterm_taken = False


def take_sigterm(rank: int, watchdog: Callable[[], Watchdog | None] = lambda: None) -> None:
    """Handle SIGTERM on a thread of its own (call first, before any other thread starts).

    ``mlx.launch`` stops every rank with SIGTERM once one of them exits with an error. A Python handler runs only
    when the main thread executes Python, never while it waits inside a collective, so the signal is blocked in
    every thread and one thread waits for it: rank 0 gives the watchdog a moment to name the rank that went away,
    then exits with one line; a follower exits quietly (rank 0 says what happened).
    """
    global _sigterm_taken
    if _sigterm_taken or not hasattr(signal, "pthread_sigmask"):
        return
    _sigterm_taken = True

    def stopped() -> None:
        if rank != 0:
            os._exit(143)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            dog = watchdog()
            if dog is not None and dog.lost is not None:
                time.sleep(0.5)  # its own report is on the way
                break
            time.sleep(0.05)
        _die(0, "stopped by mlx.launch (another rank exited; see its message)", 143)

    # Threads that existed before this call (OpenBLAS starts its pool when the library loads, before any Python
    # runs) do not block SIGTERM, and the kernel may hand the signal to one of them. With SIGTERM's default action
    # that would end the process at once, with no message. A Python handler makes SIGTERM "caught" for the whole
    # process: whichever thread receives it, nothing dies, and the handler runs when the main thread next runs
    # Python. The waiting thread covers the main thread being blocked in a collective.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        signal.sigwait({signal.SIGTERM})
        stopped()

    threading.Thread(target=wait, name="olmo3-sigterm", daemon=True).start()
