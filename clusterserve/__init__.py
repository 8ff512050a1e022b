"""clusterserve: a pre-fork application server for Python WSGI and ASGI apps."""

__version__ = "0.1.0"
