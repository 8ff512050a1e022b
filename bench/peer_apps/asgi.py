"""Plain ASGI app of the peer benchmark: the same paths and bytes as ``wsgi.app``."""

from .wsgi import BIG, HELLO

_HELLO_START = {
    "type": "http.response.start", "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(HELLO))],
}
_HELLO_BODY = {"type": "http.response.body", "body": HELLO}
_BIG_START = {
    "type": "http.response.start", "status": 200,
    "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(BIG))],
}
_BIG_BODY = {"type": "http.response.body", "body": BIG}
_NOT_FOUND_START = {
    "type": "http.response.start", "status": 404,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"10")],
}
_NOT_FOUND_BODY = {"type": "http.response.body", "body": b"not found\n"}


async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":  # answer lifespan so every server starts the same way
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    path = scope["path"]
    if path == "/":
        await send(_HELLO_START)
        await send(_HELLO_BODY)
    elif path == "/64k":
        await send(_BIG_START)
        await send(_BIG_BODY)
    elif path == "/upload":
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            total += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"%d\n" % total
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    else:
        await send(_NOT_FOUND_START)
        await send(_NOT_FOUND_BODY)
