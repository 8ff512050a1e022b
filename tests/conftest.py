import random

import pytest

from tests.harness import ServerProcess


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Hypothesis tests run with a seed chosen here (before Hypothesis reads it, and before
    xdist hands the options to its workers), so that the header can print it."""
    if getattr(config.option, "hypothesis_seed", "") is None and not hasattr(config, "workerinput"):
        config.option.hypothesis_seed = random.SystemRandom().randrange(1 << 32)


def pytest_report_header(config):
    seed = getattr(config.option, "hypothesis_seed", None)
    return None if seed is None else f"hypothesis seed: {seed} (pytest --hypothesis-seed {seed} replays it)"


def pytest_addoption(parser):
    parser.addoption("--fault-seed", type=int, default=None,
                     help="replay the fault injection tests with this seed (each run prints its seed)")


def pytest_terminal_summary(terminalreporter):
    """The seed and counts of every fault injection run, passed or failed."""
    lines = {value for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ()) if name == "fault injection"}
    if lines:
        terminalreporter.section("fault injection")
        for line in sorted(lines):
            terminalreporter.write_line(line)


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
