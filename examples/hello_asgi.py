"""The smallest ASGI app: ``clusterserve examples.hello_asgi:app -w 4``."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # this bare app does not use lifespan events
    body = b"Hello, world!\n"
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
