"""``max_requests`` is a bound, not a hint: a worker past its limit takes no new
connection and answers its open keep-alive connections with ``Connection: close``.

Every test runs in every dispatch mode and for both interfaces.
"""

from __future__ import annotations

import http.client
from collections import Counter

import pytest

from tests.harness import ServerProcess

MAX_REQUESTS = 5
REQUESTS = 30


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def apps(request):
    """The module whose ``app`` answers ``hello from <pid>``, for one interface."""
    return {"wsgi": "tests.apps.basic", "asgi": "tests.apps.asgi_apps"}[request.param]


def serve_all(server: ServerProcess, keep_alive: bool) -> Counter[int]:
    """Send REQUESTS requests, one at a time, on one keep-alive connection (which
    http.client opens again whenever a response says ``Connection: close``) or on a
    new connection each; count the requests each worker answered."""
    served: Counter[int] = Counter()
    conn = server.http(timeout=20)
    try:
        for _ in range(REQUESTS):
            conn.request("GET", "/", headers={} if keep_alive else {"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, body
            served[int(body.split()[-1])] += 1
    finally:
        conn.close()
    return served


@pytest.mark.parametrize("jitter", [0, 2])
@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connections"])
def test_no_worker_serves_past_its_limit(start_server, dispatch, apps, jitter, keep_alive):
    server = start_server([f"{apps}:app", "-w", "2", "--dispatch", dispatch,
                           "--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", str(jitter)],
                          workers=2)
    served = serve_all(server, keep_alive)
    # One client, one request at a time: nothing else is in flight when a worker reaches
    # its limit, so none serves a request past it.
    assert max(served.values()) <= MAX_REQUESTS + jitter, served
    assert sum(served.values()) == REQUESTS
    assert len(served) >= REQUESTS // (MAX_REQUESTS + jitter)
