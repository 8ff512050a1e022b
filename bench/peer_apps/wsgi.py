"""Plain WSGI app of the peer benchmark: ``/``, ``/64k`` and ``/upload`` (see __init__)."""

HELLO = b"Hello, world!\n"
BIG = bytes(range(256)) * 256  # 64 KiB
assert len(BIG) == 65536

_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
_BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", _HELLO_HEADERS)
        return [HELLO]
    if path == "/64k":
        start_response("200 OK", _BIG_HEADERS)
        return [BIG]
    if path == "/upload":
        stream = environ["wsgi.input"]
        total = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            total += len(chunk)
        body = b"%d\n" % total
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]
