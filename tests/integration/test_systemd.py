"""systemd integration seen from outside: notify messages on a real datagram socket."""

import signal
import socket

from tests.harness import wait_until


def read_all(sock):
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_notify_ready_reloading_and_stopping(start_server, tmp_path):
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    seen = []
    try:
        server = start_server(["tests.apps.basic:app", "-w", "2"], workers=2,
                              env={"NOTIFY_SOCKET": str(path)})
        assert wait_until(lambda: seen.extend(read_all(receiver)) or any("READY=1" in m for m in seen))
        ready = next(m for m in seen if "READY=1" in m)
        assert f"MAINPID={server.pid}" in ready.splitlines()
        server.send(signal.SIGHUP)
        server.wait_for_log("reload done")
        assert wait_until(lambda: seen.extend(read_all(receiver)) or len([m for m in seen if "READY=1" in m]) == 2)
        reloading = next(m for m in seen if m.startswith("RELOADING=1"))
        assert reloading.splitlines()[1].startswith("MONOTONIC_USEC=")
        assert server.stop() == 0
        seen.extend(read_all(receiver))
        assert seen[-1] == "STOPPING=1"
        kinds = [m.splitlines()[0] for m in seen]
        assert kinds == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    finally:
        receiver.close()
