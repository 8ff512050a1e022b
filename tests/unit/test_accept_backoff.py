"""Out of descriptors, accept loops back off instead of spinning, and say so seldom.

Each case runs in a child process whose open-file limit is lowered and used
up, so that ``accept`` really fails with EMFILE on a real listening socket.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.timeout(30)

PRELUDE = """
import logging, os, resource, socket, sys, time
from clusterserve.logs import log
logging.basicConfig(stream=sys.stdout, format="LOG %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
hoard = []

def use_up_descriptors():
    try:
        while True:
            hoard.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
"""


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_accept_loop_raises_out_of_descriptors_and_logs_once():
    out = run("""
        from clusterserve.sockets import OutOfDescriptors, accept_until_empty
        use_up_descriptors()
        for _ in range(1000):
            try:
                list(accept_until_empty(server.accept))
            except OutOfDescriptors as err:
                last = err
        print("errno", last.errno)
    """)
    assert "errno 24" in out
    assert out.count("LOG accept failed: [Errno 24] Too many open files; not accepting for") == 1


def test_the_round_robin_arbiter_leaves_the_listener_alone_then_accepts_again():
    out = run("""
        from clusterserve.dispatch.round_robin import RoundRobinDispatcher
        from clusterserve.poller import Poller
        from clusterserve.sockets import ACCEPT_BACKOFF, Listener, TcpAddress
        poller = Poller()
        dispatcher = RoundRobinDispatcher([Listener(server, TcpAddress("127.0.0.1", 0))], poller,
                                          queue_limit=100, available=lambda pid: True)
        dispatcher.start()
        use_up_descriptors()
        turns = 0
        started = time.monotonic()
        while time.monotonic() - started < ACCEPT_BACKOFF / 2:
            poller.poll(0.01)
            turns += 1
        print("watched", server.fileno() in poller, "queued", dispatcher.queued)
        for fd in hoard[:10]:
            os.close(fd)
        time.sleep(ACCEPT_BACKOFF)
        dispatcher.dispatch()  # the arbiter calls it on every worker message
        poller.poll(0.1)
        print("watched", server.fileno() in poller, "queued", dispatcher.queued)
    """)
    assert "watched False queued 0" in out  # backing off: no spin
    assert "watched True queued 1" in out  # then the connection is taken
    assert out.count("LOG accept failed") == 1


def test_a_shared_acceptor_backs_off_and_resumes():
    out = run("""
        from clusterserve.dispatch.shared import SharedAcceptor
        from clusterserve.poller import Poller
        from clusterserve.sockets import ACCEPT_BACKOFF, Listener, TcpAddress
        poller = Poller()
        taken = []
        acceptor = SharedAcceptor([Listener(server, TcpAddress("127.0.0.1", 0))], poller,
                                  lambda conn, peer: taken.append(conn), lambda: True)
        acceptor.resume()
        use_up_descriptors()
        for _ in range(20):
            poller.poll(0.005)
            acceptor.flush()
        print("watched", server.fileno() in poller, "taken", len(taken))
        for fd in hoard[:10]:
            os.close(fd)
        time.sleep(ACCEPT_BACKOFF)
        acceptor.flush()  # the worker's loop calls it every turn
        poller.poll(0.1)
        print("watched", server.fileno() in poller, "taken", len(taken))
    """)
    assert "watched False taken 0" in out
    assert "watched True taken 1" in out
