"""The error every check of a request raises to refuse it."""

from __future__ import annotations

from http import HTTPStatus


class HttpError(Exception):
    """A request to refuse with ``status``; the connection is closed after."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
