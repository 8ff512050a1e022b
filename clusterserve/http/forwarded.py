"""What a trusted proxy says about the client: X-Forwarded-*, Forwarded (RFC 7239).

Only applied when the peer is in ``forwarded_allow_ips``.  The client is
found as uvicorn's ``ProxyHeadersMiddleware`` finds it, so that the WSGI
and ASGI workers agree: each proxy appends the address it received the
request from, so the list is read from the right, and the first address
that is not a trusted proxy is the client's; when every one is trusted,
the left-most is.  ``Forwarded`` wins over ``X-Forwarded-For`` when both
are sent, and its ``proto`` over the scheme headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from clusterserve.http.errors import HttpError

# One RFC 7239 forwarded-pair: token "=" ( token / quoted-string ).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*')


def split_host_port(value: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``; port 0 when there is none (as uvicorn)."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return value, 0
        return host, int(rest[1:]) if rest[1:].isdigit() else 0
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        if port.isdigit():
            return host, int(port)
    return value, 0


def pick_client(hops: list[str], trusted: Callable[[str], bool]) -> int:
    """The index of the right-most hop that is not a trusted proxy, else 0 (the left-most)."""
    for index in range(len(hops) - 1, -1, -1):
        if not trusted(split_host_port(hops[index])[0]):
            return index
    return 0


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` header, each a dict of lower-case names; None if malformed."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    position = 0
    while True:
        match = _PAIR.match(value, position)
        if match is None:
            return None
        name, raw = match.group(1).lower(), match.group(2)
        pairs[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if position == len(value):
            elements.append(pairs)
            return elements
        separator = value[position]
        position += 1
        if separator == ",":
            elements.append(pairs)
            pairs = {}
        elif separator != ";":
            return None


def _scheme_from_headers(environ: dict[str, Any], secure_headers: dict[str, str]) -> str | None:
    """The scheme the secure scheme headers give, if any is sent; 400 when they disagree."""
    schemes = set()
    for header, secure_value in secure_headers.items():
        key = "HTTP_" + header.upper().replace("-", "_")
        if key in environ:
            schemes.add("https" if environ[key].strip().lower() == secure_value.lower() else "http")
    if len(schemes) > 1:
        raise HttpError(400, "the proxy's scheme headers contradict each other")
    return schemes.pop() if schemes else None


def apply_proxy_headers(environ: dict[str, Any], trusted_hop: Callable[[str], bool],
                        secure_headers: dict[str, str]) -> None:
    """Rewrite REMOTE_ADDR/REMOTE_PORT, ``wsgi.url_scheme`` and HTTP_HOST from a trusted proxy's headers."""
    scheme = _scheme_from_headers(environ, secure_headers)
    client = None
    elements = parse_forwarded(environ["HTTP_FORWARDED"]) if "HTTP_FORWARDED" in environ else None
    if elements:
        chosen = elements[pick_client([element.get("for", "") for element in elements], trusted_hop)]
        client = chosen.get("for")
        if chosen.get("proto", "").lower() in ("http", "https"):
            scheme = chosen["proto"].lower()
        if chosen.get("host"):
            environ["HTTP_HOST"] = chosen["host"]
    elif "HTTP_X_FORWARDED_FOR" in environ:
        hops = [hop.strip() for hop in environ["HTTP_X_FORWARDED_FOR"].split(",")]
        client = hops[pick_client(hops, trusted_hop)]
    if scheme is not None:
        environ["wsgi.url_scheme"] = scheme
    if client:
        host, port = split_host_port(client)
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = host, str(port)
