"""HTTP/1.1 on h11 for the WSGI worker: connections, environ, body, response."""
