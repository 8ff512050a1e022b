"""The WebSocket limits of the ASGI worker, with uvicorn's flag names: --ws-max-size,
--ws-max-queue, --ws-ping-interval, --ws-ping-timeout, --ws-per-message-deflate.

Each is checked on the wire, from the client's side, on every WebSocket
implementation that applies it and that the installed uvicorn has.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clusterserve.workers import uvicorn_internals
from tests.harness import ServerProcess

pytestmark = pytest.mark.http_path

ECHO = "tests.apps.asgi_apps:echo"
SINK = "tests.apps.asgi_apps:ws_sink"
IMPLEMENTATIONS = ["websockets", "websockets-sansio", "wsproto"]


def start(start_server, app: str, ws: str, *extra: str) -> ServerProcess:
    if uvicorn_internals.unknown_ws(ws):
        pytest.skip(uvicorn_internals.unknown_ws(ws))
    return start_server([app, "-w", "1", "--ws", ws, *extra], workers=1)


def handshake(server: ServerProcess, extensions: str = "") -> tuple[socket.socket, bytes]:
    """A WebSocket opened by hand: the socket, and the server's 101 head."""
    sock = server.connect(timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, head.partition(b"\r\n\r\n")[0]


def uvicorn_release() -> tuple[int, ...]:
    return tuple(int(part) for part in uvicorn.__version__.split(".")[:3] if part.isdigit())


@pytest.mark.parametrize("ws", IMPLEMENTATIONS)
def test_ws_max_size_closes_on_a_larger_message_with_1009(start_server, ws):
    if ws == "wsproto" and uvicorn_release() < (0, 46):
        pytest.skip(f"uvicorn {uvicorn.__version__}'s wsproto protocol has no message size limit (0.46 has)")
    server = start(start_server, ECHO, ws, "--ws-max-size", "1024")
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5, compression=None) as client:
        client.send("a" * 1000)
        assert client.recv(timeout=5) == "echo: " + "a" * 1000
        client.send("b" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def frames_until_closed(sock: socket.socket, seconds: float) -> tuple[list[tuple[float, int]], float | None]:
    """The (time, opcode) of each frame the server sends, never answering a ping, and
    when the connection ended (None if it did not within ``seconds``)."""
    started = time.monotonic()
    frames: list[tuple[float, int]] = []
    data = b""
    sock.settimeout(0.1)
    while time.monotonic() - started < seconds:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return frames, time.monotonic() - started
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):  # short frames only
            frames.append((time.monotonic() - started, data[0] & 0x0F))
            data = data[2 + (data[1] & 0x7F):]
    return frames, None


def test_ws_ping_interval_and_timeout_close_a_client_that_never_answers(start_server):
    server = start(start_server, ECHO, "websockets", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "1")
    sock, _ = handshake(server)
    with sock:
        frames, ended = frames_until_closed(sock, 6)
    pings = [at for at, opcode in frames if opcode == 0x9]
    assert pings and 0.3 < pings[0] < 1.5, frames
    assert ended is not None and 1.2 < ended < 4.0, (frames, ended)


def test_a_client_that_answers_pings_stays_connected(start_server):
    server = start(start_server, ECHO, "websockets", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "1")
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as client:
        time.sleep(3)  # several pings, each answered by the client library
        client.send("still here")
        assert client.recv(timeout=5) == "echo: still here"


def test_ws_ping_interval_off_sends_no_ping(start_server):
    server = start(start_server, ECHO, "websockets", "--ws-ping-interval", "off")
    sock, _ = handshake(server)
    with sock:
        frames, ended = frames_until_closed(sock, 1.5)
    assert frames == [] and ended is None


def sent_before_the_server_stops_reading(server: ServerProcess, seconds: float = 3.0) -> int:
    """1 MiB messages to an app that never reads them: how many go out before sending stalls."""
    sent = 0
    message = os.urandom(1 << 20)
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5, compression=None,
                 max_size=None, close_timeout=1) as client:

        def send_forever() -> None:
            nonlocal sent
            try:
                while True:
                    client.send(message)
                    sent += 1
            except (OSError, ConnectionClosed):
                pass

        sender = threading.Thread(target=send_forever, daemon=True)
        sender.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            before = sent
            time.sleep(0.5)
            if sent == before and sent > 0:
                break
        stalled_at = sent
        client.socket.shutdown(socket.SHUT_RDWR)
        sender.join(5)
    return stalled_at


def test_ws_max_queue_bounds_what_the_worker_reads_ahead_of_the_app(start_server):
    small = start(start_server, SINK, "websockets", "--ws-max-queue", "1")
    large = start(start_server, SINK, "websockets", "--ws-max-queue", "64")
    held_by_small = sent_before_the_server_stops_reading(small)
    held_by_large = sent_before_the_server_stops_reading(large)
    # Besides the queue, the kernel's buffers hold a few messages either way.
    assert held_by_small + 40 <= held_by_large, (held_by_small, held_by_large)


@pytest.mark.parametrize("ws", IMPLEMENTATIONS)
@pytest.mark.parametrize("deflate", ["true", "false"])
def test_ws_per_message_deflate_is_offered_or_not(start_server, ws, deflate):
    server = start(start_server, ECHO, ws, "--ws-per-message-deflate", deflate)
    sock, head = handshake(server, "permessage-deflate; client_max_window_bits")
    sock.close()
    assert (b"permessage-deflate" in head.lower()) == (deflate == "true"), head
