"""How the matrix's apps tell the tests what happened inside a worker: one file per
event in the directory named by ``ASGI_APPS_RECORDS``, written whole."""

import os
from pathlib import Path


def records_dir() -> Path:
    return Path(os.environ["ASGI_APPS_RECORDS"])


def record(name: str, text: str = "") -> None:
    path = records_dir() / name
    partial = path.with_name(f".{name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.rename(path)


def released(name: str) -> bool:
    """Whether the test has dropped the file ``name`` that a waiting response waits for."""
    return (records_dir() / name).exists()
