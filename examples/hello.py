"""The smallest WSGI app: ``clusterserve examples.hello:app -w 4``."""


def app(environ, start_response):
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
