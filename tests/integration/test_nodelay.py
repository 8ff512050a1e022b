"""No Nagle stalls: every connection has TCP_NODELAY, in every mode, for both interfaces.

Both workers write a response head and its body in separate writes. Without
TCP_NODELAY, the second write waits for the client's delayed ACK, about 40 ms
on Linux, on every keep-alive request after the first.
"""

import statistics
import time

import pytest

from tests.harness import running

pytestmark = pytest.mark.http_path

APPS = {"wsgi": "tests.apps.wsgi_behaviour:echo", "asgi": "tests.apps.asgi_apps:echo"}


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_keep_alive_requests_do_not_wait_for_delayed_acks(dispatch, interface):
    with running([APPS[interface], "-w", "1", "--dispatch", dispatch, "--http", "h11"], workers=1) as server:
        conn = server.http()
        timings = []
        try:
            for _ in range(25):
                started = time.perf_counter()
                conn.request("POST", "/", body=b"ping")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                timings.append(time.perf_counter() - started)
        finally:
            conn.close()
    assert statistics.median(timings) < 0.025, [round(t * 1000, 1) for t in timings]
