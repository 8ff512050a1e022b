"""``max_requests`` is a bound, not a hint: a worker past its limit takes no new
connection and answers its open keep-alive connections with ``Connection: close``.

Every test runs in every dispatch mode and for both interfaces.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.http_path

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


def test_the_overshoot_is_bounded_by_the_open_connections(start_server, dispatch, apps):
    """Concurrent keep-alive clients: a worker serves at most ``max_requests`` plus one
    request on each other connection it had open when it reached the limit."""
    clients = 4
    server = start_server([f"{apps}:app", "-w", "2", "--threads", str(clients), "--dispatch", dispatch,
                           "--max-requests", str(MAX_REQUESTS)], workers=2)
    results: list[Counter[int] | BaseException] = []

    def client() -> None:
        try:
            results.append(serve_all(server, keep_alive=True))
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            results.append(err)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == clients and not any(isinstance(r, BaseException) for r in results), results
    served = sum(results, Counter())  # type: ignore[arg-type]  # only Counters, as asserted above
    assert max(served.values()) <= MAX_REQUESTS + clients - 1, served
    assert sum(served.values()) == clients * REQUESTS
