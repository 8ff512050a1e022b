"""Running one request through a WSGI app, on an app thread."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from clusterserve.access_log import AccessLog, RequestRecord
from clusterserve.hooks import run_hook
from clusterserve.http.body import RequestBody
from clusterserve.http.codec import RequestHead
from clusterserve.http.connection import HttpConnection, error_response
from clusterserve.http.environ import ErrorStream, ServerInfo, build_environ
from clusterserve.http.errors import HttpError
from clusterserve.http.response import ClientGone, FileWrapper, LengthMismatch, Response
from clusterserve.http.response_headers import InvalidResponseHeader
from clusterserve.logs import log

# Unread request body a keep-alive connection may skip over; more and it closes.
MAX_DISCARD = 64 * 1024


@dataclass
class RequestContext:
    """Everything a request needs from its worker."""

    app: Callable[..., Any]
    info: ServerInfo
    access_log: AccessLog | None
    keepalive: bool
    closing: Callable[[], bool]  # each response from now on closes its connection
    worker: Any
    errors: ErrorStream
    server_header: bool = True
    date_header: bool = True


@dataclass
class HookRequest:
    """What ``pre_request``/``post_request`` hooks get: the attributes of gunicorn's request."""

    method: str
    uri: str
    path: str
    query: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> HookRequest:
        major, _, minor = environ["SERVER_PROTOCOL"].removeprefix("HTTP/").partition(".")
        headers = [(key[5:].replace("_", "-"), value) for key, value in environ.items()
                   if key.startswith("HTTP_")]
        return cls(environ["REQUEST_METHOD"], environ["RAW_URI"], environ["PATH_INFO"],
                   environ["QUERY_STRING"], (int(major or 1), int(minor or 1)), headers)


# serve_request's steps; the generator returns whether the connection can take another request.
Exchange = Generator[None, None, bool]


def serve_request(connection: HttpConnection, request: RequestHead, ctx: RequestContext) -> Exchange:
    """Run the app for ``request`` and send its response, in steps.

    The response goes out as far as the socket takes it.  When the rest must
    wait for the socket to drain, the generator yields, and the app's
    iterable is not pulled further: the caller resumes it once the
    connection's outbox is empty, or throws ``ClientGone`` into it when the
    client stopped reading.  It returns True when the connection can take
    another request.
    """
    started_wall, started = time.time(), time.perf_counter()
    body = RequestBody(connection)
    try:
        environ = build_environ(request, connection.get_local_address, connection.peer,
                                ctx.info, body, ctx.errors)
    except HttpError as err:
        connection.send_raw(error_response(err.status, err.detail))
        return False
    # Decided when the head goes out: a stop that begins meanwhile adds Connection: close.
    response = Response(connection, request, lambda: ctx.keepalive and not ctx.closing(),
                        server_header=ctx.server_header, date_header=ctx.date_header)
    result: Any = None
    completed = False
    cfg = ctx.worker.cfg
    # Built only for a config that sets a request hook: it costs a few µs per request.
    hook_request = HookRequest.from_environ(environ) \
        if cfg.pre_request is not None or cfg.post_request is not None else None
    run_hook(cfg, "pre_request", ctx.worker, hook_request)
    try:
        result = ctx.app(environ, response.start_response)
        if not (isinstance(result, FileWrapper) and response.send_file(result)):
            for chunk in result:
                if chunk:
                    response.put(chunk)
                    if connection.unsent:
                        yield
        response.finish()
        if connection.unsent:
            yield
        completed = True
    except ClientGone:
        log.debug("client %s went away during the response", environ.get("REMOTE_ADDR"))
    except LengthMismatch as err:
        log.error("%s %s: %s; connection closed", environ["REQUEST_METHOD"], environ["RAW_URI"], err)
    except (HttpError, ConnectionError) as err:
        # The request body was malformed or cut short while the app read it.
        log.info("bad request body from %s: %s", environ.get("REMOTE_ADDR"), err)
        if not response.headers_sent:
            code = err.status if isinstance(err, HttpError) else 400
            response.status = f"{code} {HTTPStatus(code).phrase}"
            connection.send_raw(error_response(code, str(err)))
    except InvalidResponseHeader as err:
        log.error("%s %s: %s; answered 500", environ["REQUEST_METHOD"], environ["RAW_URI"], err)
        if not response.headers_sent:
            response.status = "500 Internal Server Error"
            connection.send_raw(error_response(500))
    except Exception:  # noqa: BLE001 - any app error becomes a 500
        log.exception("Error handling request %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
        if not response.headers_sent:
            response.status = "500 Internal Server Error"
            connection.send_raw(error_response(500))
    finally:
        if hasattr(result, "close"):
            try:
                result.close()
            except Exception:  # noqa: BLE001 - the app's close(), whatever it raises: logged
                log.exception("close() of the response iterable failed")

    duration = time.perf_counter() - started
    status = response.status or "500"
    if ctx.worker.request_stats is not None:
        ctx.worker.request_stats.record(int(status[:3]), duration)
    if ctx.access_log is not None:
        ctx.access_log.write(RequestRecord(
            environ=environ, status=status, response_headers=response.headers,
            body_bytes=response.body_bytes, started=started_wall, duration=duration,
            pid=ctx.worker.pid))
    run_hook(cfg, "post_request", ctx.worker, hook_request, environ, response)
    return completed and _ready_for_next(connection, body)


def _ready_for_next(connection: HttpConnection, body: RequestBody) -> bool:
    """Finish reading this request and reset the codec for the next one, if possible."""
    codec = connection.codec
    if not codec.reusable:
        return False
    if codec.body_unread:
        if body.withheld:
            return False  # the client has not sent the body; it expects us to close
        try:
            if not body.discard(MAX_DISCARD):
                return False
        except (HttpError, ConnectionError):
            return False
    return codec.start_next_cycle()
