"""One response per path, as real apps send them, for both interfaces.

``CASES`` maps a path to (status line, headers, body chunks): the WSGI app
sends them as they are, the ASGI app as bytes with the status code.
"""

from __future__ import annotations

from typing import Any

CASES: dict[str, tuple[str, list[tuple[str, str]], list[bytes]]] = {
    # Django's SimpleCookie output starts with a space.
    "/leading-space": ("200 OK", [("Set-Cookie", " csrftoken=abc; Path=/; SameSite=Lax")], [b"ok"]),
    "/trailing-space": ("200 OK", [("X-Trailing", "bar ")], [b"ok"]),
    "/tabs": ("200 OK", [("X-Tabs", "\tv\t")], [b"ok"]),
    "/inner-space": ("200 OK", [("X-Inner", "a  b")], [b"ok"]),
    "/latin1": ("200 OK", [("X-Latin1", "caf\xe9\xa0")], [b"ok"]),
    "/crlf": ("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")], [b"ok"]),
    "/lf-only": ("200 OK", [("X-Injected", "a\nSet-Cookie: evil=1")], [b"ok"]),
    "/trailing-cr": ("200 OK", [("X-Injected", "a\r")], [b"ok"]),
    "/vertical-tab": ("200 OK", [("X-Vt", "a\x0b")], [b"ok"]),
    "/nul": ("200 OK", [("X-Nul", "a\x00b")], [b"ok"]),
    "/space-in-name": ("200 OK", [("X Bad", "v")], [b"ok"]),
    "/mixed-case": ("200 OK", [("X-MiXeD-CaSe", "v")], [b"ok"]),
    "/no-reason": ("200", [("Content-Type", "text/plain")], [b"ok"]),
    "/own-date-and-server": ("200 OK", [("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("Server", "app/1")],
                             [b"ok"]),
    "/app-chunked": ("200 OK", [("Transfer-Encoding", "chunked")], [b"ok"]),
}


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status, headers, body = CASES[environ["PATH_INFO"]]
    start_response(status, headers)
    return body


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    status, headers, body = CASES[scope["path"]]
    await send({"type": "http.response.start", "status": int(status[:3]),
                "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]})
    await send({"type": "http.response.body", "body": b"".join(body)})
