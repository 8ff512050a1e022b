"""TLS: the one place an ``ssl.SSLContext`` is made from the settings.

The config loader builds it once to validate the files and options (a bad
path is a config error naming its setting), and each worker builds its own
after the fork, as gunicorn does.  Both workers use the same context: the
WSGI worker wraps accepted sockets itself, the ASGI worker hands it to
asyncio.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from clusterserve.config.settings import SSL_VERSIONS

OBSOLETE_VERSIONS = ("TLSv1", "TLSv1_1")


class TlsSettingError(ValueError):
    """A TLS setting that cannot be used; ``setting`` names it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def tls_enabled(settings: Mapping[str, Any]) -> bool:
    return bool(settings["certfile"] or settings["keyfile"])


def obsolete_version_warning(settings: Mapping[str, Any]) -> str | None:
    """A warning when ``ssl_version`` lets clients use a TLS version the IETF deprecated (RFC 8996)."""
    version = settings["ssl_version"]
    if tls_enabled(settings) and version in OBSOLETE_VERSIONS:
        return (f"setting 'ssl_version' is {version}: TLS 1.0 and 1.1 are obsolete (RFC 8996); "
                "clients may use them, and OpenSSL may refuse them anyway")
    return None


def _require_file(settings: Mapping[str, Any], name: str) -> str:
    path: str = settings[name]
    if not os.path.isfile(path):
        raise TlsSettingError(name, f"no such file: {path!r}")
    return path


def server_context(settings: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The server-side context the settings describe, or the ``ssl_context`` hook
    returns (given the settings and a factory of that default); None when TLS is off."""
    if not tls_enabled(settings):
        return None
    hook = settings.get("ssl_context")
    if hook is None:
        return _default_context(settings)
    try:
        context = hook(SimpleNamespace(**settings), lambda: _default_context(settings))
    except TlsSettingError:
        raise
    except Exception as err:  # noqa: BLE001 - the hook is user code
        raise TlsSettingError("ssl_context", f"the hook failed: {type(err).__name__}: {err}") from None
    if not isinstance(context, ssl.SSLContext):
        raise TlsSettingError("ssl_context", f"the hook returned {type(context).__name__}, "
                                             "not an ssl.SSLContext")
    return context


def _default_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    if not settings["certfile"]:
        raise TlsSettingError("keyfile", "needs certfile too")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    minimum = SSL_VERSIONS[settings["ssl_version"]]
    if minimum is not None:
        context.minimum_version = ssl.TLSVersion[minimum]
    certfile = _require_file(settings, "certfile")
    keyfile = _require_file(settings, "keyfile") if settings["keyfile"] else None
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as err:
        raise TlsSettingError("keyfile" if keyfile else "certfile",
                              f"cannot load the certificate and key: {err}") from None
    cert_reqs = settings["cert_reqs"]
    if settings["ca_certs"]:
        try:
            context.load_verify_locations(cafile=_require_file(settings, "ca_certs"))
        except (ssl.SSLError, OSError) as err:
            raise TlsSettingError("ca_certs", f"cannot load the CA certificates: {err}") from None
    elif cert_reqs != ssl.CERT_NONE:
        raise TlsSettingError("cert_reqs", f"{cert_reqs} checks client certificates: set ca_certs "
                                           "to the CA certificates that issue them")
    context.verify_mode = ssl.VerifyMode(cert_reqs)
    if settings["ciphers"]:
        try:
            context.set_ciphers(settings["ciphers"])
        except ssl.SSLError:
            raise TlsSettingError("ciphers", f"OpenSSL knows no cipher in {settings['ciphers']!r}") from None
    return context
