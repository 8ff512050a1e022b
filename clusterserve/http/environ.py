"""Building the PEP 3333 ``environ`` for one request."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from clusterserve import __version__
from clusterserve.http.codec import RequestHead
from clusterserve.http.forwarded import apply_proxy_headers
from clusterserve.logs import log

SERVER_SOFTWARE = f"clusterserve/{__version__}"



class ErrorStream:
    """``wsgi.errors``: text written here goes to the error log's streams.

    What a stream cannot take (a full disk, a stream closed meanwhile) is lost, as
    ``logging`` loses a line it cannot write: a write here never fails the request.
    """

    def _handlers(self) -> list[logging.StreamHandler[Any]]:
        return [h for h in log.handlers if isinstance(h, logging.StreamHandler)]

    def write(self, text: str) -> int:
        handlers = self._handlers()
        if not handlers:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(text)
        for handler in handlers:
            handler.acquire()
            try:
                with contextlib.suppress(OSError, ValueError):
                    handler.stream.write(text)
                    handler.stream.flush()
            finally:
                handler.release()
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        for handler in self._handlers():
            with contextlib.suppress(OSError, ValueError):
                handler.flush()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


class TrustedProxies:
    """``forwarded_allow_ips``: addresses and networks, or ``*`` for all."""

    def __init__(self, entries: list[str]) -> None:
        self.everyone = "*" in entries
        self._networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
        # Parsing an address costs more than the rest of the check; peers repeat.
        self.trust = functools.lru_cache(maxsize=4096)(self._trust)

    def trust_hop(self, address: str) -> bool:
        """A hop named in X-Forwarded-For or Forwarded (an empty one is never a proxy)."""
        return self.everyone or (bool(address) and self.trust(address))

    def _trust(self, address: str) -> bool:
        if self.everyone:
            return True
        if not address:
            return True  # a unix socket peer: only local processes can connect, as gunicorn trusts them
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


@dataclass(frozen=True)
class ServerInfo:
    """What every environ of one worker shares."""

    multithread: bool
    multiprocess: bool
    proxies: TrustedProxies
    file_wrapper: Any
    secure_scheme_headers: dict[str, str]  # the setting: header name -> the value meaning HTTPS
    url_scheme: str = "http"  # https on a TLS listener
    keep_underscores: bool = False  # header_map=dangerous


def _peer_address(peer: Any) -> tuple[str, str]:
    if isinstance(peer, tuple):
        return str(peer[0]), str(peer[1])
    return "", ""


def _server_address(sock_name: Any) -> tuple[str, str]:
    if isinstance(sock_name, tuple):
        return str(sock_name[0]), str(sock_name[1])
    return str(sock_name), ""


def _split_host(host_header: str, scheme: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host header (``name``, ``name:port``, ``[v6]:port``)."""
    if host_header.startswith("["):
        host, _, rest = host_header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = host_header.partition(":")
    return host, port or ("443" if scheme == "https" else "80")


def build_environ(
    request: RequestHead,
    local_address: Callable[[], Any],
    peer: Any,
    info: ServerInfo,
    body: Any,
    errors: ErrorStream,
) -> dict[str, Any]:
    target = request.target.decode("latin-1")
    # check_head let through a path, an http(s) URL, or * (for OPTIONS).
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
    elif target == "*":
        path, query = "*", ""
    else:
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    remote_addr, remote_port = _peer_address(peer)

    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": target,
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_NAME": "",  # from Host, or else the address the client connected to (below)
        "SERVER_PORT": "",
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": info.url_scheme,
        "wsgi.input": body,
        "wsgi.errors": errors,
        "wsgi.multithread": info.multithread,
        "wsgi.multiprocess": info.multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": info.file_wrapper,
    }
    script_name_header = None
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").upper()
        value = raw_value.decode("latin-1")
        if "_" in name:
            # "X_Forwarded_For" would collide with "X-Forwarded-For" in the
            # environ: drop such headers (header_map=drop, gunicorn's default)
            # unless header_map=dangerous; header_map=refuse never gets here.
            if name == "SCRIPT_NAME":
                script_name_header = value
                continue
            if not info.keep_underscores:
                continue
        if name in ("CONTENT-TYPE", "CONTENT-LENGTH"):
            environ[name.replace("-", "_")] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value

    trusted = info.proxies.trust(remote_addr)
    if trusted:
        apply_proxy_headers(environ, info.proxies.trust_hop, info.secure_scheme_headers)
    if "HTTP_HOST" in environ:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(
            environ["HTTP_HOST"], environ["wsgi.url_scheme"]
        )
    else:  # HTTP/1.0 without Host: ask the kernel (a system call saved on every other request)
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_address(local_address())
    script_name = script_name_header if trusted and script_name_header else os.environ.get("SCRIPT_NAME", "")
    if script_name:
        script_name = script_name.rstrip("/")
        environ["SCRIPT_NAME"] = script_name
        path_info = environ["PATH_INFO"]
        if path_info == script_name or path_info.startswith(script_name + "/"):
            environ["PATH_INFO"] = path_info[len(script_name) :]
    return environ
