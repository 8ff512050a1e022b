"""A pytest plugin that points another project's test suite at a server that is already running.

``tests/foreign/run.py`` loads it (``-p served_fixtures``) into the test suites of
requests and httpx, after starting the server under test itself. It replaces the
fixtures with which those suites start a server of their own:

- requests: ``httpbin``, ``httpbin_secure`` and ``httpbin_ca_bundle``, the fixtures
  of the pytest-httpbin plugin (which requests' conftest wraps);
- httpx: ``server``, a uvicorn server its conftest starts in a thread. A conftest's
  fixture wins over a plugin's, so this one is overridden by direct
  parametrization, which wins over any fixture of the same name; its tests get
  the id suffix ``[served]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class ServedApp:
    """The part of pytest-httpbin's server object that the suites read."""

    url: str


@dataclass(frozen=True)
class ServedHttpxApp:
    """The part of httpx's ``TestServer`` that its tests read: ``url``, an ``httpx.URL``."""

    url: object


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("served", "the server under test, started outside pytest")
    group.addoption("--served-url", help="base URL of the app over HTTP")
    group.addoption("--served-tls-url", help="base URL of the same app over HTTPS")
    group.addoption("--served-ca-bundle", help="CA bundle (PEM) that verifies the HTTPS server")


def _option(config: pytest.Config, name: str) -> str:
    value = config.getoption(name)
    if not value:
        pytest.fail(f"--{name.replace('_', '-')} is needed by this test", pytrace=False)
    return value


@pytest.fixture(scope="session")
def httpbin(pytestconfig: pytest.Config) -> ServedApp:
    return ServedApp(_option(pytestconfig, "served_url"))


@pytest.fixture(scope="session")
def httpbin_secure(pytestconfig: pytest.Config) -> ServedApp:
    return ServedApp(_option(pytestconfig, "served_tls_url"))


@pytest.fixture(scope="session")
def httpbin_ca_bundle(pytestconfig: pytest.Config) -> str:
    return _option(pytestconfig, "served_ca_bundle")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    url = metafunc.config.getoption("served_url")
    if url and "server" in metafunc.fixturenames:
        import httpx  # only httpx's suite asks for ``server``

        metafunc.parametrize("server", [ServedHttpxApp(httpx.URL(url))], ids=["served"], scope="session")
