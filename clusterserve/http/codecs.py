"""The WSGI worker's codec by the ``http`` setting.

Both codecs are imported with this module, which the arbiter imports before it
forks: a worker that imported its codec itself would pay for the import in
private memory (about 0.8 MiB of copied pages, measured with smaps_rollup).
"""

from __future__ import annotations

from clusterserve.http.codec import Codec
from clusterserve.http.h11_codec import H11Codec

try:
    from clusterserve.http.httptools_codec import HttptoolsCodec
except ImportError:  # httptools is in the optional `standard` extra
    HttptoolsCodec = None  # type: ignore[assignment,misc]  # `--http httptools` is refused at config time then


def codec_factory(http: str) -> type[Codec]:
    """The codec class for the ``http`` setting: httptools only when asked for by name."""
    if http == "httptools" and HttptoolsCodec is not None:
        return HttptoolsCodec
    return H11Codec
