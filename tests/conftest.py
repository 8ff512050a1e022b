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
