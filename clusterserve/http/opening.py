"""What comes before a connection's first request: a PROXY header, a TLS handshake.

Both run in the WSGI worker's event loop without blocking, one readiness
event at a time, so a client that stalls in either holds nothing but its
own socket until the head timeout closes it.  The PROXY header (from a
trusted proxy) comes first, in clear, then the TLS handshake.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from clusterserve.http.connection import error_response
from clusterserve.http.environ import TrustedProxies
from clusterserve.http.proxy_protocol import ProxyHeaderError, ProxyHeaderReader


class OpeningFailed(Exception):
    """The connection cannot carry requests; it is to be closed."""


class Opening:
    """Drives one connection through its PROXY header and TLS handshake.

    ``advance`` is called when the socket is readable; once it returns True,
    ``sock`` (wrapped for TLS), ``peer`` (the PROXY header's source) and
    ``leftover`` (request bytes already read) are what the connection carries on with.
    """

    def __init__(self, sock: socket.socket, peer: Any, proxy: ProxyHeaderReader | None,
                 tls: ssl.SSLContext | None, suppress_ragged_eofs: bool) -> None:
        self.sock: Any = sock
        self.peer = peer
        self.leftover = b""
        self._proxy = proxy
        self._tls = tls
        self._suppress_ragged_eofs = suppress_ragged_eofs
        self._wrapped = False
        self.done = False

    def advance(self) -> bool:
        """One step; True when done. Raises ``OpeningFailed``."""
        if self._proxy is not None and not self._read_proxy_header(self._proxy):
            return False
        if self._tls is not None:
            if self.leftover:
                self._refuse_plain_http()
            if not self._handshake(self._tls):
                return False
        self.done = True
        return True

    def _read_proxy_header(self, proxy: ProxyHeaderReader) -> bool:
        try:
            result = proxy.read(self.sock)
        except ProxyHeaderError as err:
            self._send_clear(error_response(400, f"bad PROXY protocol header: {err}"))
            raise OpeningFailed(str(err)) from None
        except OSError as err:
            raise OpeningFailed(str(err)) from None
        if result is None:
            return False
        info, self.leftover = result
        if info is not None and info.source is not None:
            self.peer = info.source
        self._proxy = None
        return True

    def _handshake(self, tls: ssl.SSLContext) -> bool:
        if not self._wrapped:
            self.sock = tls.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False,
                                        suppress_ragged_eofs=self._suppress_ragged_eofs)
            self._wrapped = True
        try:
            self.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            # A handshake that wants to write has a full send buffer: it goes on
            # when the client reads and answers, which makes the socket readable.
            return False
        except ssl.SSLError as err:
            if err.reason == "HTTP_REQUEST":
                self._refuse_plain_http()
            raise OpeningFailed(f"TLS handshake failed: {err.reason or err}") from None
        except OSError as err:
            raise OpeningFailed(f"TLS handshake failed: {err}") from None
        return True

    def _refuse_plain_http(self) -> None:
        self._send_clear(error_response(400, "this port speaks HTTPS"))
        raise OpeningFailed("plain HTTP on a TLS port")

    def _send_clear(self, data: bytes) -> None:
        """Best effort, unencrypted, never blocking: the peer is not speaking TLS."""
        try:
            os.write(self.sock.fileno(), data)
        except OSError:
            pass


class OpeningPolicy:
    """Which connections need an ``Opening``, and what it does for them."""

    def __init__(self, proxy_mode: str, proxy_allow: TrustedProxies, tls: ssl.SSLContext | None,
                 suppress_ragged_eofs: bool) -> None:
        self.proxy_mode = proxy_mode
        self.proxy_allow = proxy_allow
        self.tls = tls
        self.suppress_ragged_eofs = suppress_ragged_eofs

    def opening_for(self, sock: socket.socket, peer: Any) -> Opening | None:
        """An ``Opening`` for this new connection, or None when it goes straight to HTTP."""
        proxy = None
        if self.proxy_mode != "off":
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            if self.proxy_allow.trust(address):
                proxy = ProxyHeaderReader(self.proxy_mode)
        if proxy is None and self.tls is None:
            return None
        return Opening(sock, peer, proxy, self.tls, self.suppress_ragged_eofs)
