import pytest

from tests.frameworks import django_project as project
from tests.frameworks.servers import SERVER_KINDS


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server_kind(request) -> str:
    """Every module of the matrix runs once per server: clusterserve in each dispatch mode,
    clusterserve under wsgiref.validate, and gunicorn's sync worker."""
    return request.param


@pytest.fixture(scope="session")
def django_project(tmp_path_factory) -> project.DjangoProject:
    """One generated Django project per test session (per xdist worker)."""
    return project.generate(tmp_path_factory.mktemp("django") / "site")
