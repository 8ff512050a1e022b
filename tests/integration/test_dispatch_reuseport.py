"""``reuseport`` dispatch: one SO_REUSEPORT socket per worker slot, held by the arbiter."""

import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.harness import LISTENING, ROOT, pid_on_new_connection, wait_until

RP = ["--dispatch", "reuseport"]


def listening_inodes(port: int, path: str = "/proc/net/tcp") -> set[str]:
    inodes = set()
    for line in open(path).read().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def inodes_held_by(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[len("socket:["):-1])
    return held


def test_each_worker_has_its_own_socket_on_the_same_port(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "3", *RP], workers=3)
    slots = listening_inodes(server.port)
    assert len(slots) == 3  # port 0 was asked for: every slot got the first one's port
    arbiter = inodes_held_by(server.pid)
    assert slots <= arbiter  # the arbiter holds every slot's socket
    owned = [inodes_held_by(pid) & slots for pid in server.workers()]
    assert sorted(len(o) for o in owned) == [1, 1, 1] and set().union(*owned) == slots
    with ThreadPoolExecutor(8) as pool:
        pids = set(pool.map(lambda _: pid_on_new_connection(server), range(60)))
    assert pids == set(server.workers())
    assert "reuseport: net.ipv4.tcp_migrate_req=" in server.log() or "cannot migrate" in server.log()


def test_a_restarted_worker_gets_its_slot_back_and_nothing_queued_is_lost(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "2", *RP], workers=2)
    victim = server.workers()[0]
    slot = inodes_held_by(victim) & listening_inodes(server.port)
    os.kill(victim, signal.SIGKILL)
    # Connections hashed to the dead worker's socket wait in its queue for the replacement.
    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(lambda _: pid_on_new_connection(server), range(40)))
    assert len(pids) == 40
    server.wait_ready(3)
    assert [pid for pid in server.workers() if slot <= inodes_held_by(pid)] != [], \
        "no worker took the dead worker's slot socket"
    assert listening_inodes(server.port) >= slot


def test_a_retired_slot_is_lent_to_the_others_and_taken_back(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "3", *RP], workers=3)
    slots = listening_inodes(server.port)
    oldest = min(server.workers())
    retired = inodes_held_by(oldest) & slots
    server.send(signal.SIGTTOU)
    assert wait_until(lambda: len(server.workers()) == 2 and all(
        retired <= inodes_held_by(pid) for pid in server.workers()))
    assert listening_inodes(server.port) == slots  # nothing was closed
    with ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(lambda _: pid_on_new_connection(server), range(60)))) == 60
    survivors = set(server.workers())
    server.send(signal.SIGTTIN)
    server.wait_ready(4)
    (newcomer,) = set(server.workers()) - survivors
    assert wait_until(lambda: retired <= inodes_held_by(newcomer) and not any(
        retired <= inodes_held_by(pid) for pid in survivors))
    assert listening_inodes(server.port) == slots


def test_several_tcp_binds_get_a_socket_per_slot_each(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "2", *RP, "-b", "127.0.0.2:0"], workers=2)
    ports = {host: int(port) for host, port in LISTENING.findall(server.log()) if host}
    assert set(ports) == {"127.0.0.1", "127.0.0.2"}
    for host, port in ports.items():
        assert len(listening_inodes(port)) == 2
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_unix_bind_is_a_configuration_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "clusterserve", "tests.apps.basic:app", *RP, "-b", f"unix:{tmp_path}/s"],
        cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"clusterserve: error: setting 'dispatch' from command line: reuseport needs TCP addresses, "
        f"but bind has 'unix:{tmp_path}/s'; use shared or round-robin for unix: and fd:// binds"
    ]
