import pytest

from tests.harness import ServerProcess


@pytest.fixture
def start_server():
    """Start servers inside a test; every one is stopped and killed afterwards."""
    servers: list[ServerProcess] = []

    def start(args, *, workers=None, **kwargs):
        server = ServerProcess(args, **kwargs)
        servers.append(server)
        return server.start(wait_ready=workers)

    yield start
    for server in servers:
        server.kill_all()


DISPATCH_MODES = ("shared", "round-robin", "reuseport")


@pytest.fixture(scope="module", params=DISPATCH_MODES)
def dispatch(request):
    """Run a module's tests once per dispatch mode (modules opt in by using this)."""
    return request.param
