"""What a trusted proxy says about the client, for ASGI apps: the WSGI worker's rules.

``X-Forwarded-For``, ``Forwarded`` (RFC 7239) and ``secure_scheme_headers``
are read by ``http/forwarded.py`` for both workers, so an ASGI app gets the
client, scheme and host a WSGI app would, and scheme headers that contradict
each other get the same 400.  Applied when the peer (or the PROXY header's
client) is in ``forwarded_allow_ips`` and ``proxy_headers`` is on.
"""

from __future__ import annotations

from typing import Any

from clusterserve.http.connection import error_parts
from clusterserve.http.environ import TrustedProxies
from clusterserve.http.errors import HttpError
from clusterserve.http.forwarded import apply_proxy_headers

_SCHEMES = {("http", "https"): "https", ("http", "http"): "http",
            ("websocket", "https"): "wss", ("websocket", "http"): "ws"}


def _environ_key(name: bytes) -> str:
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


class ForwardedMiddleware:
    def __init__(self, app: Any, proxies: TrustedProxies, secure_scheme_headers: dict[str, str]) -> None:
        self.app = app
        self.proxies = proxies
        self.secure_scheme_headers = secure_scheme_headers
        self.read = frozenset([b"x-forwarded-for", b"forwarded",
                               *(name.lower().encode("latin-1") for name in secure_scheme_headers)])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.proxies.trust(client[0] if client else ""):
                try:
                    scope = self._apply(scope)
                except HttpError as err:
                    await _refuse(scope, send, err)
                    return
        await self.app(scope, receive, send)

    def _apply(self, scope: Any) -> Any:
        environ: dict[str, Any] = {}
        for name, value in scope["headers"]:
            if name in self.read:
                key, text = _environ_key(name), value.decode("latin-1")
                environ[key] = f"{environ[key]},{text}" if key in environ else text
        if not environ:
            return scope
        secure = scope["scheme"] in ("https", "wss")
        environ["wsgi.url_scheme"] = "https" if secure else "http"
        apply_proxy_headers(environ, self.proxies.trust_hop, self.secure_scheme_headers)
        scope = dict(scope)
        scope["scheme"] = _SCHEMES[scope["type"], environ["wsgi.url_scheme"]]
        if "REMOTE_ADDR" in environ:
            scope["client"] = (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))
        if "HTTP_HOST" in environ:  # Forwarded: host=
            host = environ["HTTP_HOST"].encode("latin-1")
            scope["headers"] = [(name, value) for name, value in scope["headers"] if name != b"host"]
            scope["headers"].append((b"host", host))
        return scope


async def _refuse(scope: Any, send: Any, err: HttpError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    headers, body = error_parts(err.status, err.detail)
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
