"""The watchdog's side channel over real loopback sockets: a peer that exits, fails, goes silent or says goodbye."""

from __future__ import annotations

import socket
import struct
import threading

from olmo3.parallel import watchdog as wd
from olmo3.parallel.watchdog import Watchdog, leader_addresses


class Lost:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.event = threading.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.event.set()


def pair(world: int = 2) -> tuple[Watchdog, Watchdog, Lost, Lost]:
    lost0, lost1 = Lost(), Lost()
    leader, follower = Watchdog(0, world, lost0), Watchdog(1, world, lost1)
    port = leader.listen()
    assert follower.connect(["127.0.0.1"], port, timeout=5)
    assert leader.wait_for_followers(timeout=5) == []
    return leader, follower, lost0, lost1


def test_a_follower_that_closes_without_goodbye_is_reported_as_gone():
    leader, follower, lost0, _ = pair()
    for peer in follower._peers.values():  # as if the process died: the kernel closes its socket
        peer.sock.close()
    assert lost0.event.wait(5)
    assert "rank 1" in lost0.messages[0] and "is gone" in lost0.messages[0]
    leader.close()


def test_a_failing_follower_sends_its_reason():
    leader, follower, lost0, _ = pair()
    follower.report_error("MemoryError: out of memory")
    assert lost0.event.wait(5)
    assert "rank 1" in lost0.messages[0] and "out of memory" in lost0.messages[0]
    leader.close()
    follower.close()


def test_rank_0_going_away_is_noticed_by_the_follower():
    leader, follower, _, lost1 = pair()
    for peer in leader._peers.values():
        peer.sock.close()
    assert lost1.event.wait(5)
    assert "rank 0" in lost1.messages[0]
    follower.close()


def test_goodbye_is_not_a_loss():
    leader, follower, lost0, lost1 = pair()
    follower.close()
    leader.close()
    assert not lost0.event.wait(1.5) and not lost1.event.is_set()


def test_a_silent_peer_is_given_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr(wd, "TIMEOUT_S", 1.0)
    lost = Lost()
    leader = Watchdog(0, 2, lost)
    port = leader.listen()
    # A "host" that connects and then never sends a heartbeat (asleep, cable pulled: no FIN either).
    silent = socket.create_connection(("127.0.0.1", port))
    silent.sendall(b"R" + struct.pack("<ii", 1, 4242))
    assert leader.wait_for_followers(timeout=5) == []
    assert lost.event.wait(5)
    assert "stopped answering" in lost.messages[0] and "pid 4242" in lost.messages[0]
    leader.close()
    silent.close()


def test_missing_followers_are_named():
    leader = Watchdog(0, 3, Lost())
    port = leader.listen()
    follower = Watchdog(2, 3, Lost())
    assert follower.connect(["127.0.0.1"], port, timeout=5)
    assert leader.wait_for_followers(timeout=0.5) == [1]
    leader.close()
    follower.close()


def test_leader_addresses_come_from_what_mlx_launch_set(monkeypatch, tmp_path):
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[["10.0.0.1:5000", "10.0.1.1:5001"], ["10.0.0.2:5002"]]')
    monkeypatch.setenv("MLX_HOSTFILE", str(hostfile))
    monkeypatch.setenv("OLMO3_LEADER_ADDR", "mac-1.local")
    monkeypatch.delenv("NCCL_HOST_IP", raising=False)
    monkeypatch.delenv("MLX_JACCL_COORDINATOR", raising=False)
    assert leader_addresses() == ["mac-1.local", "10.0.0.1", "10.0.1.1", "127.0.0.1"]
    monkeypatch.delenv("MLX_HOSTFILE")
    monkeypatch.delenv("OLMO3_LEADER_ADDR")
    monkeypatch.setenv("NCCL_HOST_IP", "192.168.1.5")
    assert leader_addresses() == ["192.168.1.5", "127.0.0.1"]
